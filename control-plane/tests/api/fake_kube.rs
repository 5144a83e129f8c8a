//! A Kubernetes API server as kube's client sees it, behind tower-test's mock service. Objects
//! live in memory; lists, watch streams, merge patches (with the API server's resourceVersion
//! check), the status subresource, finalizer-aware deletion and Events behave as the real one
//! does, and answers have its shapes: `…List` kinds, `PartialObjectMetadataList` for metadata
//! requests, `Status` objects for 404 and 409.

use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

type Key = (String, String, String);
type RespBody = BoxBody<Bytes, Infallible>;

struct Watcher {
    plural: String,
    namespace: Option<String>,
    metadata_only: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    version: u64,
    watchers: Vec<Watcher>,
    events: Vec<Value>,
    conflicts: BTreeMap<Key, u32>,
    requests: Vec<String>,
}

/// The fake API server and a client talking to it.
#[derive(Clone)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
    /// A kube client whose every request reaches this fake.
    pub client: kube::Client,
}

fn type_of(plural: &str) -> (&'static str, &'static str) {
    match plural {
        "webhooksources" => ("hookmesh.dev/v1alpha1", "WebhookSource"),
        "webhookendpoints" => ("hookmesh.dev/v1alpha1", "WebhookEndpoint"),
        "eventtypes" => ("hookmesh.dev/v1alpha1", "EventType"),
        "secrets" => ("v1", "Secret"),
        "events" => ("events.k8s.io/v1", "Event"),
        _ => ("v1", "Unknown"),
    }
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn metadata_view(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
}

impl State {
    fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn notify(&mut self, plural: &str, kind: &str, obj: &Value) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.watchers.retain(|w| {
            if w.plural != plural || w.namespace.as_ref().is_some_and(|n| *n != ns) {
                return true;
            }
            let object = if w.metadata_only {
                metadata_view(obj)
            } else {
                obj.clone()
            };
            let line = format!("{}\n", json!({"type": kind, "object": object}));
            w.tx.send(Bytes::from(line)).is_ok()
        });
    }

    /// Stores `obj`, or removes it when it is marked deleted and no finalizer holds it.
    fn save(&mut self, key: Key, mut obj: Value) -> Value {
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = rv.into();
        let held = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let event = if !obj["metadata"]["deletionTimestamp"].is_null() && !held {
            self.objects.remove(&key);
            "DELETED"
        } else if self.objects.insert(key.clone(), obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.notify(&key.0, event, &obj);
        obj
    }
}

impl FakeKube {
    /// Starts the fake; its answers are served from a task for as long as the client lives.
    pub fn start() -> FakeKube {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<RespBody>>();
        let state = Arc::new(Mutex::new(State::default()));
        let fake = FakeKube {
            state: state.clone(),
            client: kube::Client::new(service, "default"),
        };
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let state = state.clone();
                tokio::spawn(async move {
                    respond.send_response(answer(&state, request).await);
                });
            }
        });
        fake
    }

    /// Creates or updates an object as `kubectl apply` would: a new object gets a uid and
    /// generation 1; a changed spec moves the generation on.
    pub fn apply(&self, plural: &str, mut obj: Value) {
        let (api_version, kind) = type_of(plural);
        obj["apiVersion"] = api_version.into();
        obj["kind"] = kind.into();
        let key = key_of(plural, &obj);
        let mut s = self.state.lock().unwrap();
        match s.objects.get(&key).cloned() {
            Some(old) => {
                for field in [
                    "uid",
                    "generation",
                    "finalizers",
                    "creationTimestamp",
                    "deletionTimestamp",
                ] {
                    obj["metadata"][field] = old["metadata"][field].clone();
                }
                if old.get("status").is_some() && obj.get("status").is_none() {
                    obj["status"] = old["status"].clone();
                }
                if old["spec"] != obj["spec"] {
                    obj["metadata"]["generation"] =
                        (old["metadata"]["generation"].as_i64().unwrap_or(1) + 1).into();
                }
            }
            None => {
                obj["metadata"]["uid"] = format!("uid-{}-{}", plural, key.2).into();
                obj["metadata"]["generation"] = 1.into();
                obj["metadata"]["creationTimestamp"] = "2026-11-29T10:00:00Z".into();
            }
        }
        s.save(key, obj);
    }

    /// `kubectl delete`: held by finalizers, the object is only marked.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let key = (plural.to_owned(), namespace.to_owned(), name.to_owned());
        let mut s = self.state.lock().unwrap();
        if let Some(mut obj) = s.objects.get(&key).cloned() {
            obj["metadata"]["deletionTimestamp"] = "2026-11-29T11:00:00Z".into();
            s.save(key, obj);
        }
    }

    /// The object as stored now.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (plural.to_owned(), namespace.to_owned(), name.to_owned());
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    /// The next patch of this object is refused with 409, as when someone else changed it.
    pub fn conflict_once(&self, plural: &str, namespace: &str, name: &str) {
        let key = (plural.to_owned(), namespace.to_owned(), name.to_owned());
        *self.state.lock().unwrap().conflicts.entry(key).or_default() += 1;
    }

    /// Events recorded so far.
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    /// Requests seen (`METHOD path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits up to 20 s for `check` to hold on the object.
    pub async fn wait_for(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let obj = self.get(plural, namespace, name);
            if check(obj.as_ref()) {
                return obj;
            }
            assert!(
                Instant::now() < deadline,
                "{plural} {namespace}/{name}: {what} never happened; now {obj:#?}\nrequests: {:#?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The condition `kind` of an object's status.
pub fn condition(obj: Option<&Value>, kind: &str) -> Option<Value> {
    obj?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

fn key_of(plural: &str, obj: &Value) -> Key {
    (
        plural.to_owned(),
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn reply(code: StatusCode, body: &Value) -> Response<RespBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

/// What a request path names.
struct Route {
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

/// `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/{sub}]]` or the same under `/apis/{g}/{v}`.
fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/api/v1/").or_else(|| {
        path.strip_prefix("/apis/")
            .and_then(|p| p.splitn(3, '/').nth(2))
    })?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (namespace, parts) = match parts.as_slice() {
        ["namespaces", ns, rest @ ..] => (Some((*ns).to_owned()), rest.to_vec()),
        _ => (None, parts),
    };
    Some(Route {
        namespace,
        plural: (*parts.first()?).to_owned(),
        name: parts.get(1).map(|s| (*s).to_owned()),
        subresource: parts.get(2).map(|s| (*s).to_owned()),
    })
}

async fn answer(state: &Mutex<State>, request: Request<kube::client::Body>) -> Response<RespBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let metadata_only = parts
        .headers
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("PartialObjectMetadata"));
    let mut s = state.lock().unwrap();
    s.requests.push(format!("{} {path}?{query}", parts.method));
    let Some(Route {
        namespace: ns,
        plural,
        name,
        subresource: sub,
    }) = route(&path)
    else {
        return reply(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", format!("no route {path}")),
        );
    };
    let (api_version, kind) = type_of(&plural);
    match (parts.method.as_str(), name) {
        ("GET", None) if query.contains("watch=true") => {
            let (tx, rx) = mpsc::unbounded_channel();
            s.watchers.push(Watcher {
                plural,
                namespace: ns,
                metadata_only,
                tx,
            });
            let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let body = StreamBody::new(futures::StreamExt::map(stream, |b| {
                Ok::<_, Infallible>(Frame::data(b))
            }));
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BodyExt::boxed(body))
                .unwrap()
        }
        ("GET", None) => {
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|(k, _)| k.0 == plural && ns.as_ref().is_none_or(|n| *n == k.1))
                .map(|(_, v)| {
                    if metadata_only {
                        metadata_view(v)
                    } else {
                        v.clone()
                    }
                })
                .collect();
            let (list_version, list_kind) = if metadata_only {
                ("meta.k8s.io/v1", "PartialObjectMetadataList".to_owned())
            } else {
                (api_version, format!("{kind}List"))
            };
            let rv = s.version.to_string();
            reply(
                StatusCode::OK,
                &json!({"apiVersion": list_version, "kind": list_kind,
                                          "metadata": {"resourceVersion": rv}, "items": items}),
            )
        }
        ("POST", None) => {
            let mut obj: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if plural == "events" {
                obj["metadata"]["name"] = format!("event-{}", s.events.len()).into();
                s.events.push(obj.clone());
            }
            reply(StatusCode::CREATED, &obj)
        }
        ("PATCH", Some(_)) if plural == "events" => reply(
            StatusCode::OK,
            &serde_json::from_slice(&body).unwrap_or(Value::Null),
        ),
        ("GET", Some(name)) => {
            let key = (plural.clone(), ns.unwrap_or_default(), name.clone());
            match s.objects.get(&key) {
                Some(obj) => reply(StatusCode::OK, obj),
                None => reply(
                    StatusCode::NOT_FOUND,
                    &status(404, "NotFound", format!("{plural} \"{name}\" not found")),
                ),
            }
        }
        ("PATCH", Some(name)) => {
            let key = (plural.clone(), ns.unwrap_or_default(), name.clone());
            let Some(mut obj) = s.objects.get(&key).cloned() else {
                return reply(
                    StatusCode::NOT_FOUND,
                    &status(404, "NotFound", format!("{plural} \"{name}\" not found")),
                );
            };
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let stale = patch["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|v| Some(v) != obj["metadata"]["resourceVersion"].as_str());
            let injected = s
                .conflicts
                .get_mut(&key)
                .filter(|n| **n > 0)
                .map(|n| *n -= 1)
                .is_some();
            if stale || injected {
                return reply(StatusCode::CONFLICT, &status(409, "Conflict", format!(
                    "Operation cannot be fulfilled on {plural}.hookmesh.dev \"{name}\": the object has been modified; please apply your changes to the latest version and try again")));
            }
            if sub.as_deref() == Some("status") {
                merge(&mut obj["status"], &patch["status"]);
            } else {
                let mut patch = patch;
                patch.as_object_mut().map(|p| p.remove("status"));
                if let Some(m) = patch["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                merge(&mut obj, &patch);
            }
            let saved = s.save(key, obj);
            reply(StatusCode::OK, &saved)
        }
        (method, _) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(405, "MethodNotAllowed", format!("{method} {path}")),
        ),
    }
}
