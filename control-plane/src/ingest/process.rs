//! One webhook through a source's pipeline: parse, find its duplicate key, validate,
//! transform, route. Pure apart from reading the endpoint cache and circuit states; the caller
//! stores what it returns (group commit) before answering the provider.

use super::config::{DedupKey, InvalidPolicy, Pipeline, Transform};
use super::SourcePipeline;
use crate::delivery::Engine;
use crate::store::{InboundRow, NewDelivery, NewEvent, NewInbound};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hookmesh_filter::SchemeName;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A request as the ingest received it from Envoy.
#[derive(Debug, Clone)]
pub struct Received {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string without `?`.
    pub query: String,
    /// As received (hyper's, not copied); the ingest token is not among them.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
    /// The client address.
    pub client_ip: Option<String>,
    /// Unix ms.
    pub received_at: i64,
    /// Run again from the store: the stored row's `updated_at` as read. The new outcome
    /// replaces that row only if nothing changed it since (another replay, a release, a delete).
    pub stored: Option<i64>,
}

impl Received {
    /// The first value of a header, read as it is stored (invalid UTF-8 replaced).
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    }

    /// The stored inbound event's request.
    pub fn from_row(row: &InboundRow) -> Received {
        let stored: BTreeMap<String, Value> =
            serde_json::from_str(&row.headers).unwrap_or_default();
        let mut headers = HeaderMap::with_capacity(stored.len());
        // Every stored name and value came from a request, so each converts back.
        for (name, value) in stored {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_str().unwrap_or_default().as_bytes()),
            ) {
                headers.append(name, value);
            }
        }
        Received {
            method: row.method.clone(),
            path: row.path.clone(),
            query: row.query.clone(),
            headers,
            body: row.body.clone(),
            client_ip: row.client_ip.clone(),
            received_at: row.received_at,
            stored: Some(row.updated_at),
        }
    }
}

/// What to do with a webhook.
#[derive(Debug)]
pub enum Verdict {
    /// Store it (with its outbound events) and answer 2xx.
    Store(Box<NewInbound>, Vec<NewEvent>),
    /// Answer 400 with this reason; nothing is stored.
    Reject(String),
}

/// How a webhook is run: first arrival, a replay through the current rules, or the release of
/// a quarantined one (validation skipped: an operator accepted it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// First arrival.
    Arrival,
    /// Again through the current rules.
    Replay,
    /// Out of quarantine.
    Release,
}

const ALWAYS_MASKED: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// The headers to store and show, sorted by name; borrowed from the request unless masked or
/// joined.
fn masked_headers<'a>(rx: &'a Received, p: &Pipeline) -> BTreeMap<&'a str, Cow<'a, str>> {
    let mut out: BTreeMap<&str, Cow<str>> = BTreeMap::new();
    for (name, value) in &rx.headers {
        let name = name.as_str();
        let value = String::from_utf8_lossy(value.as_bytes());
        let masked = ALWAYS_MASKED.contains(&name) || p.mask_headers.iter().any(|m| m == name);
        let value = if masked {
            Cow::Owned(crate::secrets::mask(&value))
        } else {
            value
        };
        // A repeated header keeps its values, comma-joined as HTTP allows.
        out.entry(name)
            .and_modify(|v| {
                let joined = v.to_mut();
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// `$meta` for jq programs and templates.
fn meta(src: &SourcePipeline, rx: &Received, headers: &BTreeMap<&str, Cow<str>>) -> Value {
    let query: serde_json::Map<String, Value> = url::form_urlencoded::parse(rx.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    json!({
        "source": src.name,
        "source_id": src.id,
        "received_at": crate::ids::rfc3339(rx.received_at),
        "client_ip": rx.client_ip,
        "method": rx.method,
        "path": rx.path,
        "query": query,
        "headers": headers,
    })
}

/// What a route decided for a webhook, as the inbound event's `routing` shows it. The fields
/// are in the order of their names, as the JSON objects this replaced were written.
#[derive(Debug, Default, serde::Serialize)]
struct Decision<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    destinations: Option<Vec<Destination>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_key_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    route: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sampled_out: bool,
}

/// One destination of a matched route.
#[derive(Debug, Default, serde::Serialize)]
struct Destination {
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_id: Option<String>,
    endpoint_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    failover_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'static str>,
}

/// Delivery-id headers, most specific first.
const ID_HEADERS: [&str; 5] = [
    "webhook-id",
    "svix-id",
    "x-github-delivery",
    "x-shopify-event-id",
    "x-shopify-webhook-id",
];

fn dedup_key(
    key: &DedupKey,
    scheme: Option<SchemeName>,
    rx: &Received,
    doc: Option<&Value>,
) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let key = match key {
        DedupKey::Off => None,
        DedupKey::Header(h) => rx.header(&h.to_ascii_lowercase()).map(Cow::into_owned),
        DedupKey::Pointer(p) => doc.and_then(|d| d.pointer(p)).and_then(text),
        DedupKey::Auto => ID_HEADERS
            .iter()
            .find_map(|h| rx.header(h))
            .map(Cow::into_owned)
            .or_else(|| {
                let pointer = match scheme? {
                    SchemeName::Stripe => "/id",
                    SchemeName::Slack | SchemeName::Paddle => "/event_id",
                    _ => return None,
                };
                doc.and_then(|d| d.pointer(pointer)).and_then(text)
            }),
    };
    key.filter(|k| !k.is_empty() && k.len() <= 512)
}

fn valid_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A stable draw in 0..10,000 from the inbound id and the route's name.
fn draw(inbound_id: &str, route: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(inbound_id)
        .chain_update([0])
        .chain_update(route)
        .finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 10_000
}

/// Runs `rx` through the source's pipeline. `id` is the inbound event's id (new, or the
/// stored one for a replay or release).
pub async fn run(
    engine: &Engine,
    src: &SourcePipeline,
    mut rx: Received,
    id: String,
    how: Run,
) -> Verdict {
    let p = &src.pipeline;
    let headers = masked_headers(&rx, p);
    // Built only when a program or the template reads it.
    let meta = if p.needs_meta {
        meta(src, &rx, &headers)
    } else {
        Value::Null
    };
    let mut row = InboundRow {
        id,
        tenant_id: src.tenant_id.clone(),
        source_id: src.id.clone(),
        source_name: src.name.clone(),
        status: "routed".into(),
        dedup_key: None,
        headers: serde_json::to_string(&headers).unwrap_or_else(|_| "{}".into()),
        // Nothing below reads these from `rx` again.
        method: std::mem::take(&mut rx.method),
        path: std::mem::take(&mut rx.path),
        query: std::mem::take(&mut rx.query),
        // The body moves into the stored row; everything below reads it there.
        body: std::mem::take(&mut rx.body),
        client_ip: rx.client_ip.take(),
        received_at: rx.received_at,
        event_type: None,
        result: None,
        routing: "[]".into(),
        error: None,
        duplicates: 0,
        updated_at: crate::ids::now_ms(),
    };
    let content_type = rx.header("content-type");
    let parsed = super::parse::document(content_type.as_deref(), &row.body).await;
    let mut dedup_until = None;
    if how == Run::Arrival {
        if let Some((key, window)) = &p.dedup {
            row.dedup_key = dedup_key(key, src.scheme, &rx, parsed.as_ref().ok());
            dedup_until = row.dedup_key.as_ref().map(|_| rx.received_at + window);
        }
    }
    let store = |row: InboundRow, events: Vec<NewEvent>| {
        let n = events.len();
        Verdict::Store(
            Box::new(NewInbound {
                row,
                dedup_until,
                events: 0..n,
                replaces: rx.stored,
            }),
            events,
        )
    };
    // An invalid payload: refused, or kept aside, as the source says.
    let policy = p
        .validate
        .as_ref()
        .map_or(InvalidPolicy::Reject, |(_, policy, _)| *policy);
    let invalid = |mut row: InboundRow, reason: String| {
        if policy == InvalidPolicy::Reject && how == Run::Arrival {
            return Verdict::Reject(reason);
        }
        row.status = "quarantined".into();
        row.error = Some(reason);
        store(row, Vec::new())
    };
    let doc = match parsed {
        Ok(d) => d,
        Err(reason) => return invalid(row, reason),
    };
    if how != Run::Release {
        if let Some((Some(validator), _, event_type)) = &p.validate {
            let problems: Vec<String> = validator
                .iter_errors(&doc)
                .take(5)
                .map(|e| {
                    format!(
                        "{}: {e}",
                        if e.instance_path.as_str().is_empty() {
                            "/"
                        } else {
                            e.instance_path.as_str()
                        }
                    )
                })
                .collect();
            if !problems.is_empty() {
                return invalid(
                    row,
                    format!(
                        "the payload does not match the schema of `{event_type}`: {}",
                        problems.join("; ")
                    ),
                );
            }
        }
    }
    let input = super::jq::Input::new(&doc, &meta);
    let failed = |mut row: InboundRow, reason: String| {
        row.status = "failed".into();
        row.error = Some(reason);
        store(row, Vec::new())
    };
    // The transformation's result is wanted only as the events' payload text.
    let payload = match &p.transform {
        Transform::Identity => doc.to_string(),
        Transform::Jq(program) => match program.first(&input) {
            Ok(Some(v)) => v.to_string(),
            Ok(None) => return failed(row, "the transformation produced no output".into()),
            Err(e) => return failed(row, format!("the transformation failed: {e}")),
        },
        Transform::Template(t) => {
            match crate::delivery::body::render_json(t, &json!({"payload": doc, "meta": meta})) {
                Ok(v) => v.to_string(),
                Err(e) => return failed(row, e),
            }
        }
    };
    let event_type = match &p.event_type {
        None => src.name.clone(),
        Some(program) => match program.first(&input) {
            Ok(Some(Value::String(t))) if valid_event_type(&t) => t,
            Ok(other) => {
                return failed(
                    row,
                    format!(
                    "the event type program gave {}, not 1 to 128 letters, digits, `_`, `.` or `-`",
                    other.map_or("nothing".into(), |v| v.to_string())
                ),
                )
            }
            Err(e) => return failed(row, format!("the event type program failed: {e}")),
        },
    };
    // An identity transformation's result is the document, which the detail shows parsed from
    // the stored body: a second copy of every payload is not kept.
    row.result = match p.transform {
        Transform::Identity => None,
        _ => Some(payload.clone()),
    };
    row.event_type = Some(event_type.clone());
    let now = crate::ids::now_ms();
    let mut decisions = Vec::new();
    let mut events = Vec::new();
    for route in &p.routes {
        let mut decision = Decision {
            route: &route.name,
            ..Decision::default()
        };
        if !crate::api::event_type_matches(&route.event_types, &event_type) {
            decision.reason = Some("event type not selected");
            decisions.push(decision);
            continue;
        }
        if let Some(when) = &route.when {
            match when.matches(&input) {
                Ok(true) => {}
                Ok(false) => {
                    decisions.push(decision);
                    continue;
                }
                Err(e) => {
                    decision.error = Some(format!("the condition failed: {e}"));
                    decisions.push(decision);
                    continue;
                }
            }
        }
        decision.matched = true;
        if draw(&row.id, &route.name) >= route.sample {
            decision.sampled_out = true;
            decisions.push(decision);
            if route.stop {
                break;
            }
            continue;
        }
        let order_key = match &route.order_key {
            None => None,
            Some(program) => match program.first(&input) {
                Ok(Some(Value::String(s))) => Some(s),
                Ok(Some(Value::Number(n))) => Some(n.to_string()),
                Ok(_) => None,
                Err(e) => {
                    decision.order_key_error = Some(e);
                    None
                }
            },
        };
        let mut destinations = Vec::new();
        let mut deliveries = Vec::new();
        for primary in &route.to {
            let healthy = |id: &str| {
                engine
                    .endpoints
                    .get(id)
                    .filter(|e| e.enabled && e.tenant_id == src.tenant_id)
                    .filter(|e| !engine.circuit_open(&e.id, now))
            };
            let chosen = match healthy(primary) {
                Some(e) => Some((e, None)),
                None => match route.failover.as_deref().and_then(healthy) {
                    Some(f) => Some((f, Some(primary.clone()))),
                    // Nothing better: the primary keeps it (it retries, or dead-letters).
                    None => engine
                        .endpoints
                        .get(primary)
                        .filter(|e| e.tenant_id == src.tenant_id)
                        .map(|e| (e, None)),
                },
            };
            let Some((endpoint, instead_of)) = chosen else {
                destinations.push(Destination {
                    endpoint_id: primary.clone(),
                    skipped: Some("no such endpoint"),
                    ..Destination::default()
                });
                continue;
            };
            if deliveries
                .iter()
                .any(|d: &NewDelivery| d.endpoint_id == endpoint.id)
            {
                continue;
            }
            let delivery_id = crate::ids::new_sequential_id("dlv");
            destinations.push(Destination {
                delivery_id: Some(delivery_id.clone()),
                endpoint_id: endpoint.id.clone(),
                failover_for: instead_of,
                skipped: None,
            });
            deliveries.push(NewDelivery {
                id: delivery_id,
                endpoint_id: endpoint.id.clone(),
                ordered: endpoint.ordered || order_key.is_some(),
                order_key: order_key.clone(),
                leased_until: None,
            });
        }
        if !deliveries.is_empty() {
            let event_id = crate::ids::new_id("evt");
            decision.event_id = Some(event_id.clone());
            events.push(NewEvent {
                id: event_id,
                tenant_id: src.tenant_id.clone(),
                event_type: event_type.clone(),
                payload: payload.clone(),
                dedup_key: None,
                created_at: now,
                deliveries,
                deliver_at: now,
                priority: route.priority,
            });
        }
        if let Some(k) = order_key {
            decision.order_key = Some(k);
        }
        decision.destinations = Some(destinations);
        decisions.push(decision);
        if route.stop {
            break;
        }
    }
    row.routing = serde_json::to_string(&decisions).unwrap_or_else(|_| "[]".into());
    store(row, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(headers: &[(&str, &str)]) -> Received {
        Received {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        HeaderValue::from_str(v).unwrap(),
                    )
                })
                .collect(),
            body: Vec::new(),
            client_ip: None,
            received_at: 0,
            stored: None,
        }
    }

    #[test]
    fn auto_keys_prefer_delivery_id_headers_then_the_vendor_body_id() {
        let doc = json!({"id": "evt_1", "event_id": "Ev9"});
        let r = rx(&[("x-github-delivery", "abc")]);
        assert_eq!(
            dedup_key(&DedupKey::Auto, None, &r, Some(&doc)).as_deref(),
            Some("abc")
        );
        let r = rx(&[]);
        assert_eq!(
            dedup_key(&DedupKey::Auto, Some(SchemeName::Stripe), &r, Some(&doc)).as_deref(),
            Some("evt_1")
        );
        assert_eq!(
            dedup_key(&DedupKey::Auto, Some(SchemeName::Slack), &r, Some(&doc)).as_deref(),
            Some("Ev9")
        );
        assert_eq!(
            dedup_key(&DedupKey::Auto, Some(SchemeName::Github), &r, Some(&doc)),
            None
        );
        assert_eq!(
            dedup_key(&DedupKey::Pointer("/event_id".into()), None, &r, Some(&doc)).as_deref(),
            Some("Ev9")
        );
        let r = rx(&[("x-id", "7")]);
        assert_eq!(
            dedup_key(&DedupKey::Header("X-Id".into()), None, &r, None).as_deref(),
            Some("7")
        );
        assert_eq!(dedup_key(&DedupKey::Off, None, &r, Some(&doc)), None);
    }

    #[test]
    fn routing_decisions_read_as_sorted_json_objects() {
        let decisions = [
            Decision {
                route: "all",
                matched: true,
                event_id: Some("evt_1".into()),
                order_key: Some("cus_9".into()),
                destinations: Some(vec![
                    Destination {
                        delivery_id: Some("dlv_1".into()),
                        endpoint_id: "ep_2".into(),
                        failover_for: Some("ep_1".into()),
                        skipped: None,
                    },
                    Destination {
                        endpoint_id: "ep_gone".into(),
                        skipped: Some("no such endpoint"),
                        ..Destination::default()
                    },
                ]),
                ..Decision::default()
            },
            Decision {
                route: "other",
                reason: Some("event type not selected"),
                ..Decision::default()
            },
            Decision {
                route: "some",
                matched: true,
                sampled_out: true,
                ..Decision::default()
            },
        ];
        let expected = json!([
            {"route": "all", "matched": true, "event_id": "evt_1", "order_key": "cus_9", "destinations": [
                {"endpoint_id": "ep_2", "delivery_id": "dlv_1", "failover_for": "ep_1"},
                {"endpoint_id": "ep_gone", "skipped": "no such endpoint"}]},
            {"route": "other", "matched": false, "reason": "event type not selected"},
            {"route": "some", "matched": true, "sampled_out": true}
        ]);
        assert_eq!(
            serde_json::to_string(&decisions).unwrap(),
            expected.to_string()
        );
    }

    #[test]
    fn sampling_is_stable_and_roughly_proportional() {
        assert_eq!(draw("inb_1", "r"), draw("inb_1", "r"));
        let kept = (0..10_000)
            .filter(|i| draw(&format!("inb_{i}"), "r") < 2_500)
            .count();
        assert!((2_200..2_800).contains(&kept), "{kept}");
    }

    #[test]
    fn type_patterns() {
        assert!(crate::api::event_type_matches(&[], "a.b"));
        assert!(crate::api::event_type_matches(
            &["invoice.*".into()],
            "invoice.paid"
        ));
        assert!(!crate::api::event_type_matches(
            &["invoice.*".into()],
            "charge.paid"
        ));
        assert!(!valid_event_type("has space"));
    }

    #[test]
    fn secrets_are_masked_and_repeats_joined() {
        let p = crate::ingest::config::IngestConfig {
            mask_headers: vec!["x-api-key".into()],
            ..Default::default()
        }
        .compile(&|_| true, &|_| Some(None))
        .unwrap();
        let r = rx(&[
            ("authorization", "Bearer supersecret"),
            ("x-api-key", "k-123456"),
            ("x-tag", "a"),
            ("x-tag", "b"),
        ]);
        let h = masked_headers(&r, &p);
        assert!(!h["authorization"].contains("supersecret"));
        assert!(!h["x-api-key"].contains("k-123456"));
        assert_eq!(h["x-tag"], "a, b");
    }
}
