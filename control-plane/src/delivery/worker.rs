//! The dispatch loop: lease due deliveries, attempt them concurrently (bounded), and hand each
//! outcome to a writer that records them in batches. At-least-once: a crash loses nothing
//! stored, and leases in flight expire and are delivered again.

use super::retry::{default_policy, next_delay, parse_retry_after};
use super::send::Outcome;
use super::Engine;
use crate::store::{AttemptRow, Completion, DeliveryRow, EventRow};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a claimed delivery stays leased: longer than any endpoint timeout.
pub(super) const LEASE_MS: i64 = 120_000;
const CLAIM_BATCH: usize = 256;
/// A claim waits until this many attempt slots are free: claiming a row or two at a time
/// would cost a write transaction each.
const CLAIM_MIN: usize = 32;
/// The store is looked at this often (ms) for deliveries that fell due without a wake-up.
const IDLE_MS: u64 = 250;

/// An event and its body, shared by its deliveries.
pub(super) struct Loaded {
    /// The event; its payload moved into `body`.
    pub(super) row: EventRow,
    body: bytes::Bytes,
}

impl Loaded {
    pub(super) fn new(mut row: EventRow) -> Loaded {
        let body = bytes::Bytes::from(std::mem::take(&mut row.payload).into_bytes());
        Loaded { row, body }
    }

    /// The JSON payload as text (it came from a `String`).
    fn payload(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_default()
    }
}

/// A fresh delivery, leased when its event was stored, with the event in memory.
pub(super) struct Hot {
    pub(super) row: DeliveryRow,
    pub(super) event: Arc<Loaded>,
}

/// Fresh deliveries on their way from the committer to the dispatcher, bounded by `room`:
/// when the dispatcher falls behind, new deliveries are stored pending and claimed later.
pub(super) struct HotQueue {
    tx: mpsc::UnboundedSender<Vec<Hot>>,
    room: AtomicUsize,
}

impl HotQueue {
    pub(super) fn new(room: usize) -> (HotQueue, mpsc::UnboundedReceiver<Vec<Hot>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = HotQueue {
            tx,
            room: AtomicUsize::new(room),
        };
        (queue, rx)
    }

    /// Takes room for up to `want` deliveries; returns how many it got.
    pub(super) fn take(&self, want: usize) -> usize {
        let mut got = 0;
        let _ = self
            .room
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |room| {
                got = room.min(want);
                Some(room - got)
            });
        got
    }

    pub(super) fn give_back(&self, n: usize) {
        if n > 0 {
            self.room.fetch_add(n, AtomicOrdering::AcqRel);
        }
    }

    pub(super) fn send(&self, batch: Vec<Hot>) {
        // Without a dispatcher the leases expire and the claim path delivers them.
        let _ = self.tx.send(batch);
    }
}

pub(super) async fn dispatch(
    engine: Arc<Engine>,
    done: mpsc::Sender<Completion>,
    mut hot: mpsc::UnboundedReceiver<Vec<Hot>>,
) {
    // Whether the store may hold due deliveries: at start, after a wake-up or a timer.
    let mut backlog = true;
    // When the earliest deferred delivery falls due (unix ms).
    let mut soonest: Option<i64> = None;
    // Fresh deliveries and the store's due ones (retries, deferred, high priority) take turns,
    // so a steady stream of publishes cannot starve retries.
    let mut hot_turn = true;
    // Retries fall due without a wake-up: the store is looked at this often at least.
    let mut last_look = tokio::time::Instant::now();
    loop {
        if engine.store_due.swap(false, AtomicOrdering::AcqRel)
            || last_look.elapsed() >= Duration::from_millis(IDLE_MS)
            || soonest.is_some_and(|at| at <= crate::ids::now_ms())
        {
            backlog = true;
        }
        let turn = hot_turn;
        hot_turn = !turn || !backlog;
        if let Some(batch) = turn.then(|| hot.try_recv().ok()).flatten() {
            let n = batch.len();
            let deliveries = batch.into_iter().map(|h| (h.row, Some(h.event)));
            let launched = launch(&engine, &done, deliveries, &mut soonest).await;
            engine.hot.give_back(n);
            if !launched {
                return;
            }
            continue;
        }
        let free = engine.permits.available_permits();
        let total = engine.concurrency;
        if backlog && free < CLAIM_MIN.min(total) {
            // Claim once enough slots are free, or launch fresh deliveries meanwhile.
            tokio::select! {
                permits = engine.permits.acquire_many(CLAIM_MIN.min(total) as u32) => {
                    if permits.is_err() { return; }
                }
                Some(batch) = hot.recv() => {
                    let n = batch.len();
                    let deliveries = batch.into_iter().map(|h| (h.row, Some(h.event)));
                    let launched = launch(&engine, &done, deliveries, &mut soonest).await;
                    engine.hot.give_back(n);
                    if !launched { return; }
                }
            }
            continue;
        }
        let now = crate::ids::now_ms();
        let claimed = if backlog {
            let limit = free.min(CLAIM_BATCH);
            last_look = tokio::time::Instant::now();
            match engine
                .store
                .claim_deliveries(now, now + LEASE_MS, limit as i64)
                .await
            {
                Ok(c) => {
                    backlog = c.len() == limit;
                    c
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming deliveries failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        if claimed.is_empty() {
            // Idle: wake on fresh deliveries, a publish left for the claim path, when a
            // deferred delivery falls due, or after 250 ms (retries, other replicas' work).
            let idle = soonest
                .take()
                .map_or(IDLE_MS as i64, |at| (at - now).clamp(1, IDLE_MS as i64));
            tokio::select! {
                Some(batch) = hot.recv() => {
                    let n = batch.len();
                    let deliveries = batch.into_iter().map(|h| (h.row, Some(h.event)));
                    let launched = launch(&engine, &done, deliveries, &mut soonest).await;
                    engine.hot.give_back(n);
                    if !launched { return; }
                }
                _ = engine.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(idle as u64)) => backlog = true,
            }
            continue;
        }
        let mut ids: Vec<String> = claimed.iter().map(|d| d.event_id.clone()).collect();
        ids.sort();
        ids.dedup();
        // The body once per event, shared by its deliveries to every endpoint.
        let events: HashMap<String, Arc<Loaded>> = match engine.store.events_by_id(&ids).await {
            Ok(rows) => rows
                .into_iter()
                .map(|e| (e.id.clone(), Arc::new(Loaded::new(e))))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "loading events failed; the leases will expire and be retried");
                continue;
            }
        };
        let deliveries = claimed.into_iter().map(|d| {
            let event = events.get(&d.event_id).cloned();
            (d, event)
        });
        if !launch(&engine, &done, deliveries, &mut soonest).await {
            return;
        }
    }
}

/// Starts an attempt for each leased delivery, each holding a global slot (waiting for one
/// when all are taken). A delivery its endpoint's limits hold back goes back to the store due
/// shortly, without counting as an attempt. False once the engine is shutting down.
async fn launch(
    engine: &Arc<Engine>,
    done: &mpsc::Sender<Completion>,
    deliveries: impl Iterator<Item = (DeliveryRow, Option<Arc<Loaded>>)>,
    soonest: &mut Option<i64>,
) -> bool {
    let now = crate::ids::now_ms();
    let mut deferred = Vec::new();
    for (d, event) in deliveries {
        let mut slot = None;
        if let Some(ep) = engine.endpoints.get(&d.endpoint_id) {
            if let super::breaker::Gate::Wait(until) = engine.breaker_gate(&ep.id, now) {
                deferred.push((d.id, until));
                continue;
            }
            // The slot first: a delivery deferred for concurrency must not spend a token.
            if let Some(limit) = ep.max_concurrency {
                match engine.endpoint_slot(&ep.id, limit) {
                    Some(s) => slot = Some(s),
                    None => {
                        deferred.push((d.id, now + 20));
                        continue;
                    }
                }
            }
            if let Some(rate) = ep.rate_limit_per_sec {
                if let Err(wait) = engine.endpoint_token(&ep.id, rate, now) {
                    deferred.push((d.id, now + wait));
                    continue;
                }
            }
        }
        let Ok(permit) = engine.permits.clone().acquire_owned().await else {
            return false;
        };
        let (engine, done) = (engine.clone(), done.clone());
        tokio::spawn(async move {
            let endpoint = d.endpoint_id.clone();
            let completion = attempt(&engine, d, event).await;
            engine.observe(&endpoint, &completion).await;
            let _ = done.send(completion).await;
            drop((permit, slot));
        });
    }
    if !deferred.is_empty() {
        let first = deferred.iter().map(|(_, at)| *at).min();
        *soonest = (*soonest).min(first).or(first);
        if let Err(e) = engine.store.defer_deliveries(&deferred, now).await {
            tracing::warn!(error = %e, "deferring deliveries failed; their leases will expire");
        }
    }
    true
}

/// A JSON payload as `application/x-www-form-urlencoded`: one field per top-level member
/// (strings as they are, other values as JSON text); a payload that is not an object becomes
/// the single field `payload`.
fn form_body(payload: &str) -> bytes::Bytes {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(members)) => {
            for (name, value) in &members {
                match value {
                    serde_json::Value::String(s) => form.append_pair(name, s),
                    other => form.append_pair(name, &other.to_string()),
                };
            }
        }
        _ => {
            form.append_pair("payload", payload);
        }
    }
    bytes::Bytes::from(form.finish())
}

fn gzip(body: &[u8]) -> bytes::Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2 + 32),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    bytes::Bytes::from(enc.finish().unwrap_or_default())
}

fn mask_headers(headers: &[(String, String)]) -> String {
    let masked: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(n, v)| {
            let lower = n.to_ascii_lowercase();
            let secret = [
                "authorization",
                "proxy-authorization",
                "cookie",
                "x-api-key",
            ]
            .contains(&lower.as_str())
                || ["secret", "token", "password", "api-key", "apikey"]
                    .iter()
                    .any(|s| lower.contains(s));
            (
                n.clone(),
                serde_json::Value::String(if secret { "***".into() } else { v.clone() }),
            )
        })
        .collect();
    serde_json::Value::Object(masked).to_string()
}

async fn attempt(engine: &Engine, d: DeliveryRow, event: Option<Arc<Loaded>>) -> Completion {
    let now = crate::ids::now_ms();
    let n = d.attempts + 1;
    let mut row = AttemptRow {
        id: crate::ids::new_id("att"),
        delivery_id: d.id.clone(),
        attempt: n,
        started_at: now,
        duration_ms: 0,
        status_code: None,
        request_headers: "{}".into(),
        response_headers: None,
        response_body: None,
        error_class: None,
        error: None,
    };
    let dead = |mut row: AttemptRow, class: &'static str, why: String| {
        row.error_class = Some(class.into());
        row.error = Some(why.clone());
        Completion {
            attempt: row,
            status: "dead",
            next_attempt_at: now,
            last_error: Some(why),
        }
    };
    let Some(event) = event else {
        return dead(row, "event_missing", "the event no longer exists".into());
    };
    let Some(endpoint) = engine.endpoints.get(&d.endpoint_id) else {
        return dead(row, "endpoint_missing", "the endpoint was deleted".into());
    };
    if !endpoint.enabled {
        return dead(row, "endpoint_disabled", "the endpoint is disabled".into());
    }
    // The signature covers the body as the receiver's framework hands it over: the form for
    // form endpoints, the JSON otherwise (before any compression).
    let (payload, content_type) = if endpoint.form {
        (
            form_body(event.payload()),
            "application/x-www-form-urlencoded",
        )
    } else {
        (event.body.clone(), "application/json")
    };
    let mut headers = match super::sign::headers(
        &event.row.id,
        now / 1000,
        &payload,
        &endpoint.secrets,
        endpoint.svix_headers,
    ) {
        Ok(h) => h,
        Err(e) => return dead(row, "signing", e.to_string()),
    };
    headers.push(("content-type".to_owned(), content_type.to_owned()));
    headers.extend(endpoint.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    // GET carries the payload in the query; the signature still covers the same payload bytes.
    let mut query: Vec<(&str, &str)> = endpoint
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = if endpoint.method == "GET" {
        query.push(("payload", event.payload()));
        bytes::Bytes::new()
    } else if endpoint.gzip {
        headers.push(("content-encoding".to_owned(), "gzip".to_owned()));
        gzip(&payload)
    } else {
        payload
    };
    row.request_headers = mask_headers(&headers);
    let out: Outcome = engine
        .sender
        .send(
            &endpoint.method,
            &endpoint.url,
            &query,
            &headers,
            body,
            endpoint.timeout,
        )
        .await;
    row.duration_ms = out.duration.as_millis() as i64;
    row.status_code = out.status.map(i64::from);
    if out.status.is_some() {
        let h: serde_json::Map<String, serde_json::Value> = out
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        row.response_headers = Some(serde_json::Value::Object(h).to_string());
        row.response_body = Some(out.body);
    }
    let failure = match (out.status, &out.error) {
        (Some(s), _) if (200..300).contains(&s) => {
            return Completion {
                attempt: row,
                status: "succeeded",
                next_attempt_at: now,
                last_error: None,
            };
        }
        (Some(410), _) => {
            // Standard Webhooks: 410 Gone means the receiver wants no more deliveries.
            if let Err(e) = crate::api::disable_endpoint(
                &*engine.store,
                &endpoint.id,
                "the endpoint answered 410 Gone",
            )
            .await
            {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "could not disable the endpoint");
            }
            engine.endpoints.changed();
            return dead(
                row,
                "gone",
                "the endpoint answered 410 Gone and was disabled".into(),
            );
        }
        (Some(s), _) => ("status", format!("the endpoint answered {s}")),
        (None, Some((class, msg))) => (*class, msg.clone()),
        (None, None) => ("request", "no response".into()),
    };
    row.error_class = Some(failure.0.into());
    row.error = Some(failure.1.clone());
    let retry_after = match out.status {
        Some(429 | 502 | 503 | 504) => out
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, now / 1000)),
        _ => None,
    };
    let policy = endpoint.retry_policy.clone().unwrap_or_else(default_policy);
    let age = Duration::from_millis(now.saturating_sub(event.row.created_at).max(0) as u64);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    match next_delay(&policy, n as u32, age, retry_after, jitter) {
        Some(delay) => Completion {
            attempt: row,
            status: "pending",
            next_attempt_at: now + delay.as_millis() as i64,
            last_error: Some(failure.1),
        },
        None => {
            let why = format!("attempts exhausted after {n}: {}", failure.1);
            Completion {
                attempt: row,
                status: "dead",
                next_attempt_at: now,
                last_error: Some(why),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::form_body;

    #[test]
    fn payloads_that_are_not_objects_travel_whole_in_one_field() {
        assert_eq!(&form_body("[1,2]")[..], b"payload=%5B1%2C2%5D");
        assert_eq!(&form_body("\"a b\"")[..], b"payload=%22a+b%22");
        assert_eq!(&form_body(r#"{"a":null,"b":"x y"}"#)[..], b"a=null&b=x+y");
    }
}
