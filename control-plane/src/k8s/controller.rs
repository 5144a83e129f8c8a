//! `hookmesh controller`: kube-runtime controllers for the three kinds. Each reconcile reads the
//! object, its references and its control-plane copy, asks [`reconcile::plan`] what to write,
//! writes it through the REST API, and records [`reconcile::conclude`]'s status and Kubernetes
//! Events. Failures requeue with a per-object exponential back-off.

use super::client::{ClientError, ControlPlaneClient};
use super::crd::{EventType, WebhookEndpoint, WebhookSource};
use super::desired::{Managed, Resolver};
use super::reconcile::{self, conclude, plan, Current, Outcome, Unresolved, FINALIZER};
use axum::http::Method;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType as Severity, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A reconcile that could not finish; the error policy retries it with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed (a conflict on the finalizer, a lost connection …).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The control plane could not be reached.
    #[error(transparent)]
    ControlPlane(ClientError),
    /// An object without a namespace or name.
    #[error("{0}")]
    Object(String),
}

impl Error {
    /// A fixed name per variant, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::ControlPlane(_) => "control_plane",
            Error::Object(_) => "object",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    kube: kube::Client,
    cp: ControlPlaneClient,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context publishing Events as `hookmesh-controller` (`instance`: the pod's name).
    pub fn new(kube: kube::Client, cp: ControlPlaneClient, instance: Option<String>) -> Context {
        let recorder = Recorder::new(
            kube.clone(),
            Reporter {
                controller: "hookmesh-controller".into(),
                instance,
            },
        );
        Context {
            kube,
            cp,
            recorder,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_owned()).or_insert(0);
        *n = (*n + 1).min(10);
        // 1 s, 2 s, 4 s … at most 5 min.
        Duration::from_secs((1u64 << (*n - 1)).min(300))
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Runs the three controllers until `shutdown` resolves; `namespace` limits them to one.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    futures::join!(
        run_kind::<WebhookSource>(ctx.clone(), namespace.clone(), shutdown.clone()),
        run_kind::<WebhookEndpoint>(ctx.clone(), namespace.clone(), shutdown.clone()),
        run_kind::<EventType>(ctx, namespace, shutdown),
    );
}

fn api<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_kind<K: Managed>(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let controller = Controller::new(api::<K>(&ctx.kube, ns), watcher::Config::default());
    let store = controller.store();
    // A Secret's change concerns the objects of its namespace that reference it; only its
    // metadata is watched, so no secret value is cached here.
    let by_secret = store.clone();
    let secrets = api::<PartialObjectMeta<Secret>>(&ctx.kube, ns);
    let controller = controller.watches(secrets, watcher::Config::default(), move |s| {
        referencing(&by_secret, &s.namespace().unwrap_or_default(), |o: &K| {
            o.secret_names().contains(&s.name_any())
        })
    });
    // A hub source follows the endpoints it routes to (their ids come with their status).
    let by_endpoint = store.clone();
    let endpoints = api::<WebhookEndpoint>(&ctx.kube, ns);
    let controller = controller.watches(endpoints, watcher::Config::default(), move |e| {
        referencing(&by_endpoint, &e.namespace().unwrap_or_default(), |o: &K| {
            o.endpoint_names().contains(&e.name_any())
        })
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile stream");
            }
        })
        .await;
}

fn referencing<K: Managed>(
    store: &kube::runtime::reflector::Store<K>,
    namespace: &str,
    references: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace) && references(o))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

fn error_policy<K: Managed>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key_of(obj.as_ref()));
    tracing::warn!(object = %key_of(obj.as_ref()), error = %error, kind = error.label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// One reconcile of one object.
///
/// # Errors
/// Kubernetes API failures and an unreachable control plane (retried with back-off).
pub async fn reconcile<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj
        .namespace()
        .ok_or_else(|| Error::Object(format!("{} without a namespace", key_of(obj.as_ref()))))?;
    let uid = obj.uid().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.kube.clone(), &namespace);
    let deleting = obj.meta().deletion_timestamp.is_some();
    let status = obj.sync_status().cloned().unwrap_or_default();
    let resolver = Resolver {
        secrets: Api::namespaced(ctx.kube.clone(), &namespace),
        endpoints: Api::namespaced(ctx.kube.clone(), &namespace),
    };
    let desired = if deleting {
        Err(Unresolved {
            reason: "Deleting",
            message: String::new(),
        })
    } else {
        match tenant_id(&ctx.cp, obj.tenant().unwrap_or(&namespace)).await {
            Ok(t) => obj.desired(&t, &resolver).await,
            Err(ClientError::Refused { message, .. }) => Err(Unresolved {
                reason: "TenantRefused",
                message,
            }),
            Err(e) => return Err(Error::ControlPlane(e)),
        }
    };
    let current = find::<K>(&ctx.cp, status.id.as_deref(), &uid)
        .await
        .map_err(Error::ControlPlane)?;
    let observed = reconcile::Observed {
        generation: obj.meta().generation.unwrap_or_default(),
        deleting,
        has_finalizer: obj.finalizers().iter().any(|f| f == FINALIZER),
        status,
        desired,
        current,
    };
    let outcome = apply(&ctx, &api, obj.as_ref(), &uid, &observed).await?;
    if deleting {
        // The object is gone once its finalizer is: no status to write.
        return match outcome {
            Outcome::Applied { .. } => Ok(Action::await_change()),
            Outcome::Refused { message, .. } | Outcome::Unavailable { message } => {
                Err(Error::ControlPlane(ClientError::Unavailable(message)))
            }
        };
    }
    let now = crate::ids::rfc3339(crate::ids::now_ms());
    let (status, requeue) = conclude(&observed, &outcome, &now);
    announce(&ctx, obj.as_ref(), &observed, &outcome).await;
    if obj.sync_status() != Some(&status) {
        api.patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    match outcome {
        Outcome::Unavailable { message } => {
            Err(Error::ControlPlane(ClientError::Unavailable(message)))
        }
        _ => {
            ctx.succeeded(&key_of(obj.as_ref()));
            // A periodic look also catches a copy changed or deleted in the control plane.
            Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(600))))
        }
    }
}

/// The tenant's id, created when the name is new.
async fn tenant_id(cp: &ControlPlaneClient, name: &str) -> Result<String, ClientError> {
    if let Some(t) = cp.find("/v1/tenants", |t| t["name"] == name).await? {
        return Ok(t["id"].as_str().unwrap_or_default().to_owned());
    }
    let created = cp
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&json!({"name": name})),
            &[],
        )
        .await?;
    Ok(created.json["id"].as_str().unwrap_or_default().to_owned())
}

fn current_of(json: &Value, uid: &str) -> Current {
    Current {
        id: json["id"].as_str().unwrap_or_default().to_owned(),
        // Event types call their ETag `etag_version` (`version` is the schema's).
        version: json["etag_version"]
            .as_i64()
            .or_else(|| json["version"].as_i64())
            .unwrap_or_default(),
        owned: json["managed_by"]["uid"] == uid,
    }
}

/// The copy: by the id the status remembers, else by ownership mark (a status lost after a
/// create must not create a second copy).
async fn find<K: Managed>(
    cp: &ControlPlaneClient,
    id: Option<&str>,
    uid: &str,
) -> Result<Option<Current>, ClientError> {
    if let Some(id) = id {
        let a = cp
            .call(Method::GET, &format!("{}/{id}", K::COLLECTION), None, &[])
            .await?;
        return Ok((a.status != 404).then(|| current_of(&a.json, uid)));
    }
    Ok(cp
        .find(K::COLLECTION, |r| r["managed_by"]["uid"] == uid)
        .await?
        .map(|found| current_of(&found, uid)))
}

/// Runs the planned writes in order; the first refusal or outage stops them.
async fn apply<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    uid: &str,
    observed: &reconcile::Observed,
) -> Result<Outcome, Error> {
    let manager = [("hookmesh-manager", uid)];
    let mut current = observed.current.clone();
    let mut rotated = false;
    for action in plan(observed) {
        let result = match action {
            reconcile::Action::AddFinalizer | reconcile::Action::RemoveFinalizer => {
                let mut finalizers: Vec<String> = obj
                    .finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect();
                if action == reconcile::Action::AddFinalizer {
                    finalizers.push(FINALIZER.into());
                }
                // The resourceVersion makes this a compare-and-swap: a concurrent change gets
                // 409 from the API server and a retry.
                let patch = json!({"metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": obj.resource_version(),
                }});
                api.patch(
                    &obj.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                continue;
            }
            reconcile::Action::Create { body } => ctx
                .cp
                .call(Method::POST, K::COLLECTION, Some(&body), &[])
                .await
                .map(|a| {
                    current = Some(current_of(&a.json, uid));
                }),
            reconcile::Action::Replace { id, version, body } => {
                let etag = format!("\"{version}\"");
                let mut headers = manager.to_vec();
                headers.push(("if-match", etag.as_str()));
                ctx.cp
                    .call(
                        Method::PUT,
                        &format!("{}/{id}", K::COLLECTION),
                        Some(&body),
                        &headers,
                    )
                    .await
                    .map(|a| current = Some(current_of(&a.json, uid)))
            }
            reconcile::Action::RotateSecret { id, secret } => {
                rotated = true;
                ctx.cp
                    .call(
                        Method::POST,
                        &format!("/v1/endpoints/{id}/secret/rotate"),
                        Some(&json!({"key": secret})),
                        &manager,
                    )
                    .await
                    .map(|_| ())
            }
            reconcile::Action::Delete { id } => ctx
                .cp
                .call(
                    Method::DELETE,
                    &format!("{}/{id}", K::COLLECTION),
                    None,
                    &manager,
                )
                .await
                .map(|_| current = None),
        };
        match result {
            Ok(()) => {}
            Err(ClientError::Refused {
                status, message, ..
            }) => return Ok(Outcome::Refused { status, message }),
            Err(ClientError::Unavailable(message)) => return Ok(Outcome::Unavailable { message }),
        }
    }
    if rotated {
        // A rotation moves the version on; creates and replaces answered with theirs.
        if let Some(c) = &current {
            let a = ctx
                .cp
                .call(
                    Method::GET,
                    &format!("{}/{}", K::COLLECTION, c.id),
                    None,
                    &[],
                )
                .await;
            match a {
                Ok(a) if a.status != 404 => current = Some(current_of(&a.json, uid)),
                Ok(_) => current = None,
                Err(e) => {
                    return Ok(Outcome::Unavailable {
                        message: e.to_string(),
                    })
                }
            }
        }
    }
    let propagation = match current.as_ref().filter(|c| c.owned && K::PROPAGATES) {
        Some(c) => match propagation(&ctx.cp, c).await {
            Ok(p) => Some(p),
            Err(e) => {
                return Ok(Outcome::Unavailable {
                    message: e.to_string(),
                })
            }
        },
        None => None,
    };
    Ok(Outcome::Applied {
        current,
        propagation,
    })
}

/// The published configuration version, and whether it carries `source` as written and every
/// connected Envoy that serves all tenants acknowledged it (tenant-scoped Envoys run their own
/// version of it).
async fn propagation(
    cp: &ControlPlaneClient,
    source: &Current,
) -> Result<(String, Result<bool, String>), ClientError> {
    let published = cp
        .call(Method::GET, "/v1/config/version", None, &[])
        .await?
        .json;
    let version = published["version"].as_str().unwrap_or_default().to_owned();
    if published["source_versions"][&source.id] != source.version {
        // Not rebuilt since the write yet: the version shown may not carry it.
        return Ok((version, Ok(false)));
    }
    let envoys = cp.call(Method::GET, "/v1/envoys", None, &[]).await?.json;
    let mut all_acked = true;
    for e in envoys["data"].as_array().into_iter().flatten() {
        if e["connected"] != true || !e["tenant"].is_null() {
            continue;
        }
        if e["last_nack"]["version"] == version.as_str() {
            let refusal = format!(
                "Envoy {} rejected configuration {version}: {}",
                e["node_id"].as_str().unwrap_or_default(),
                e["last_nack"]["error"].as_str().unwrap_or_default()
            );
            return Ok((version, Err(refusal)));
        }
        all_acked &= e["acked_version"] == version.as_str();
    }
    Ok((version, Ok(all_acked)))
}

/// Kubernetes Events for what people should know: refusals and missing references (Warning),
/// and each write to the control plane (Normal).
async fn announce<K: Managed>(
    ctx: &Context,
    obj: &K,
    observed: &reconcile::Observed,
    outcome: &Outcome,
) {
    let (severity, reason, note) = match (&observed.desired, outcome) {
        (Err(u), _) => (Severity::Warning, u.reason.to_owned(), u.message.clone()),
        (_, Outcome::Refused { status, message }) => (
            Severity::Warning,
            if *status == 409 {
                "Conflict"
            } else {
                "Invalid"
            }
            .to_owned(),
            message.clone(),
        ),
        (_, Outcome::Unavailable { message }) => (
            Severity::Warning,
            "ControlPlaneUnavailable".into(),
            message.clone(),
        ),
        (
            _,
            Outcome::Applied {
                current: Some(c), ..
            },
        ) if Some(c.version) != observed.status.applied_version && c.owned => (
            Severity::Normal,
            "Applied".into(),
            format!("stored as {} version {}", c.id, c.version),
        ),
        _ => return,
    };
    let event = Event {
        type_: severity,
        reason,
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, object = %key_of(obj), "publishing an event failed");
    }
}
