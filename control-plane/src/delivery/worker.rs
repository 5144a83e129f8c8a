//! The dispatch loop: lease due deliveries, attempt them concurrently (bounded), and hand each
//! outcome to a writer that records them in batches. At-least-once: a crash loses nothing
//! stored, and leases in flight expire and are delivered again.

use super::body::{self, EventView, Format};
use super::retry::{default_policy, next_delay, parse_retry_after};
use super::send::Outcome;
use super::Engine;
use crate::api::EndpointRuntime;
use crate::store::{AttemptRow, Completion, DeliveryRow, EventRow};
use axum::http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
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
        let next_batch = flush_due(&engine, &done).await;
        if engine.store_due.swap(false, AtomicOrdering::AcqRel)
            || last_look.elapsed() >= Duration::from_millis(IDLE_MS)
            || soonest.is_some_and(|at| at <= crate::ids::now_ms())
        {
            backlog = true;
        }
        let turn = hot_turn;
        hot_turn = !turn || !backlog;
        if let Some(batch) = turn.then(|| hot.try_recv().ok()).flatten() {
            if !launch_hot(&engine, &done, batch, &mut soonest).await {
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
                    if !launch_hot(&engine, &done, batch, &mut soonest).await { return; }
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
                .into_iter()
                .chain(next_batch)
                .min()
                .map_or(IDLE_MS as i64, |at| (at - now).clamp(1, IDLE_MS as i64));
            tokio::select! {
                Some(batch) = hot.recv() => {
                    if !launch_hot(&engine, &done, batch, &mut soonest).await { return; }
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

/// Launches fresh deliveries and gives their room back. False once the engine is shutting down.
async fn launch_hot(
    engine: &Arc<Engine>,
    done: &mpsc::Sender<Completion>,
    batch: Vec<Hot>,
    soonest: &mut Option<i64>,
) -> bool {
    let n = batch.len();
    let deliveries = batch.into_iter().map(|h| (h.row, Some(h.event)));
    let launched = launch(engine, done, deliveries, soonest).await;
    engine.hot.give_back(n);
    launched
}

/// Deliveries travelling in one request, with their events.
type BatchItems = Vec<(DeliveryRow, Arc<Loaded>)>;

/// Deliveries to a batching endpoint waiting for their batch to fill or fall due.
pub(super) struct Gathering {
    items: BatchItems,
    /// When the batch goes out even if not full (unix ms).
    due: i64,
}

/// Adds a delivery to its endpoint's batch; a full batch falls due at once.
fn gather(
    engine: &Engine,
    endpoint: &EndpointRuntime,
    batching: crate::api::Batching,
    d: DeliveryRow,
    event: Arc<Loaded>,
    now: i64,
) {
    let mut map = engine.gathering.lock().unwrap_or_else(|p| p.into_inner());
    let g = map.entry(endpoint.id.clone()).or_insert_with(|| Gathering {
        items: Vec::new(),
        due: now + batching.max_wait_ms as i64,
    });
    g.items.push((d, event));
    if g.items.len() >= batching.max_events as usize {
        g.due = now;
    }
}

/// Sends the batches that fell due; returns when the next one falls due.
async fn flush_due(engine: &Arc<Engine>, done: &mpsc::Sender<Completion>) -> Option<i64> {
    let now = crate::ids::now_ms();
    let due: Vec<(String, BatchItems)> = {
        let mut map = engine.gathering.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<String> = map
            .iter()
            .filter(|(_, g)| g.due <= now)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| map.remove(&id).map(|g| (id, g.items)))
            .collect()
    };
    for (endpoint_id, items) in due {
        let Some(endpoint) = engine.endpoints.get(&endpoint_id) else {
            // Deleted meanwhile: the one-by-one path dead-letters them with the reason.
            for (d, e) in items {
                spawn_attempt(engine, done, d, Some(e), None, None).await;
            }
            continue;
        };
        // The endpoint's own limits count requests: a batch waits for a slot and a token.
        let mut slot = None;
        let mut wait = None;
        if let Some(limit) = endpoint.max_concurrency {
            match engine.endpoint_slot(&endpoint.id, limit) {
                Some(s) => slot = Some(s),
                None => wait = Some(20),
            }
        }
        if let (None, Some(rate)) = (wait, endpoint.rate_limit_per_sec) {
            if let Err(w) = engine.endpoint_token(&endpoint.id, rate, now) {
                wait = Some(w);
            }
        }
        if let Some(w) = wait {
            let mut map = engine.gathering.lock().unwrap_or_else(|p| p.into_inner());
            let g = map.entry(endpoint_id).or_insert_with(|| Gathering {
                items: Vec::new(),
                due: now + w,
            });
            g.due = g.due.min(now + w);
            let mut items = items;
            items.append(&mut g.items);
            g.items = items;
            continue;
        }
        // Deliveries that queued while the batch waited for a slot make more than one.
        let per_request = endpoint
            .batch
            .map_or(items.len(), |b| b.max_events as usize)
            .max(1);
        let mut items = items;
        let rest = items.split_off(per_request.min(items.len()));
        if !rest.is_empty() {
            let mut map = engine.gathering.lock().unwrap_or_else(|p| p.into_inner());
            let g = map.entry(endpoint_id).or_insert_with(|| Gathering {
                items: Vec::new(),
                due: now,
            });
            let mut rest = rest;
            rest.append(&mut g.items);
            g.items = rest;
            g.due = now;
        }
        spawn_batch(engine, done, endpoint, items, slot).await;
    }
    let map = engine.gathering.lock().unwrap_or_else(|p| p.into_inner());
    map.values().map(|g| g.due).min()
}

/// A global attempt slot, noting when every slot was busy (the limit controller's signal).
async fn slot_for_attempt(engine: &Arc<Engine>) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if engine.permits.available_permits() == 0 {
        engine
            .window
            .saturated
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    engine.permits.clone().acquire_owned().await.ok()
}

async fn spawn_batch(
    engine: &Arc<Engine>,
    done: &mpsc::Sender<Completion>,
    endpoint: Arc<EndpointRuntime>,
    items: BatchItems,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let Some(permit) = slot_for_attempt(engine).await else {
        return;
    };
    let (engine, done) = (engine.clone(), done.clone());
    tokio::spawn(async move {
        let completions = attempt_batch(&engine, &endpoint, items).await;
        if let Some(first) = completions.first() {
            engine.window.attempt_done(first.attempt.duration_ms);
        }
        // The breaker sees one request, not one per event in it.
        if let Some(first) = completions.first() {
            engine.observe(&endpoint.id, first).await;
        }
        for c in completions {
            let _ = done.send(c).await;
        }
        drop((permit, slot));
    });
}

async fn spawn_attempt(
    engine: &Arc<Engine>,
    done: &mpsc::Sender<Completion>,
    d: DeliveryRow,
    event: Option<Arc<Loaded>>,
    endpoint: Option<Arc<EndpointRuntime>>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) -> bool {
    let Some(permit) = slot_for_attempt(engine).await else {
        return false;
    };
    let (engine, done) = (engine.clone(), done.clone());
    tokio::spawn(async move {
        let endpoint_id = d.endpoint_id.clone();
        let completion = attempt(&engine, d, event, endpoint).await;
        engine.window.attempt_done(completion.attempt.duration_ms);
        engine.observe(&endpoint_id, &completion).await;
        let _ = done.send(completion).await;
        drop((permit, slot));
    });
    true
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
        let endpoint = engine.endpoints.get_fresh(&d.endpoint_id).await;
        if let Some(ep) = &endpoint {
            if let super::breaker::Gate::Wait(until) = engine.breaker_gate(&ep.id, now) {
                deferred.push((d.id, until));
                continue;
            }
            if let (Some(batching), Some(e)) = (ep.batch, &event) {
                gather(engine, ep, batching, d, e.clone(), now);
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
        if !spawn_attempt(engine, done, d, event, endpoint, slot).await {
            return false;
        }
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

fn mask_headers(headers: &HeaderMap) -> String {
    super::headers::to_json(
        headers
            .iter()
            .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v.as_bytes()))),
        true,
    )
}

fn new_attempt(d: &DeliveryRow, now: i64) -> AttemptRow {
    AttemptRow {
        id: crate::ids::new_id("att"),
        delivery_id: d.id.clone(),
        attempt: d.attempts + 1,
        started_at: now,
        duration_ms: 0,
        status_code: None,
        request_headers: "{}".into(),
        response_headers: None,
        response_body: None,
        error_class: None,
        error: None,
    }
}

fn dead(mut row: AttemptRow, class: &'static str, why: String, now: i64) -> Completion {
    row.error_class = Some(class.into());
    row.error = Some(why.clone());
    Completion {
        attempt: row,
        status: "dead",
        next_attempt_at: now,
        last_error: Some(why),
    }
}

/// A signed request, ready to send.
struct Request<'a> {
    headers: HeaderMap,
    query: Vec<(&'a str, &'a str)>,
    body: bytes::Bytes,
}

/// Signs `payload` (as the receiver's framework hands it over: before any compression) and
/// adds the endpoint's headers, query and compression.
///
/// Fails with (class, message) for a dead letter: the same endpoint fails the same way again.
fn request<'a>(
    endpoint: &'a EndpointRuntime,
    message_id: &str,
    now: i64,
    payload: bytes::Bytes,
    get_payload: Option<&'a str>,
) -> Result<Request<'a>, (&'static str, String)> {
    let signers = endpoint
        .signers
        .as_deref()
        .map_err(|e| ("signing", e.clone()))?;
    let extra = endpoint
        .headers
        .as_deref()
        .map_err(|e| ("request", e.clone()))?;
    let mut headers = HeaderMap::with_capacity(5 + extra.len());
    let signed = super::sign::headers(
        message_id,
        now / 1000,
        &payload,
        signers,
        endpoint.svix_headers,
    )
    .map_err(|e| ("signing", format!("message id {message_id:?}: {e}")))?;
    for (name, value) in signed {
        headers.append(name, value);
    }
    headers.append(
        CONTENT_TYPE,
        HeaderValue::from_static(endpoint.format.content_type()),
    );
    for (name, value) in extra {
        headers.append(name.clone(), value.clone());
    }
    let mut query: Vec<(&str, &str)> = endpoint
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // GET carries the payload in the query; the signature still covers the same payload bytes.
    let body = if let Some(p) = get_payload {
        query.push(("payload", p));
        bytes::Bytes::new()
    } else if endpoint.gzip {
        headers.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        gzip(&payload)
    } else {
        payload
    };
    Ok(Request {
        headers,
        query,
        body,
    })
}

async fn send(engine: &Engine, endpoint: &EndpointRuntime, req: Request<'_>) -> Outcome {
    let Some(url) = &endpoint.target else {
        return Outcome {
            error: Some(("request", format!("bad URL: {}", endpoint.url))),
            ..Outcome::default()
        };
    };
    engine
        .sender
        .send(
            &endpoint.method,
            url,
            &req.query,
            req.headers,
            req.body,
            endpoint.timeout,
        )
        .await
}

/// What an attempt's response means for every delivery it carried.
enum Verdict {
    Succeeded,
    /// 410: the receiver wants no more.
    Gone,
    Failed {
        class: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
}

fn judge(out: &Outcome, now: i64) -> Verdict {
    let (class, message) = match (out.status, &out.error) {
        (Some(s), _) if (200..300).contains(&s) => return Verdict::Succeeded,
        // Standard Webhooks: 410 Gone means the receiver wants no more deliveries.
        (Some(410), _) => return Verdict::Gone,
        (Some(s), _) => ("status", format!("the endpoint answered {s}")),
        (None, Some((class, msg))) => (*class, msg.clone()),
        (None, None) => ("request", "no response".into()),
    };
    let retry_after = match out.status {
        Some(429 | 502 | 503 | 504) => out
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, now / 1000)),
        _ => None,
    };
    Verdict::Failed {
        class,
        message,
        retry_after,
    }
}

/// Records the request and response in the attempt row.
fn record(row: &mut AttemptRow, out: Outcome, request_headers: String) {
    row.request_headers = request_headers;
    row.duration_ms = out.duration.as_millis() as i64;
    row.status_code = out.status.map(i64::from);
    if out.status.is_some() {
        row.response_headers = Some(out.headers);
        row.response_body = Some(out.body);
    }
}

/// The next step for one delivery after an attempt: done, retry at the policy's next time, or
/// dead letter.
fn conclude(
    endpoint: &EndpointRuntime,
    mut row: AttemptRow,
    verdict: &Verdict,
    event_created_at: i64,
    now: i64,
) -> Completion {
    let (class, message, retry_after) = match verdict {
        Verdict::Succeeded => {
            return Completion {
                attempt: row,
                status: "succeeded",
                next_attempt_at: now,
                last_error: None,
            }
        }
        Verdict::Gone => {
            return dead(
                row,
                "gone",
                "the endpoint answered 410 Gone and was disabled".into(),
                now,
            )
        }
        Verdict::Failed {
            class,
            message,
            retry_after,
        } => (*class, message, *retry_after),
    };
    row.error_class = Some(class.into());
    row.error = Some(message.clone());
    let n = row.attempt;
    let policy = endpoint.retry_policy.clone().unwrap_or_else(default_policy);
    let age = Duration::from_millis(now.saturating_sub(event_created_at).max(0) as u64);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    match next_delay(&policy, n as u32, age, retry_after, jitter) {
        Some(delay) => Completion {
            attempt: row,
            status: "pending",
            next_attempt_at: now + delay.as_millis() as i64,
            last_error: Some(message.clone()),
        },
        None => Completion {
            attempt: row,
            status: "dead",
            next_attempt_at: now,
            last_error: Some(format!("attempts exhausted after {n}: {message}")),
        },
    }
}

async fn disable_gone(engine: &Engine, endpoint: &EndpointRuntime) {
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
}

fn view(event: &Loaded) -> EventView<'_> {
    EventView {
        id: &event.row.id,
        event_type: &event.row.event_type,
        created_at: event.row.created_at,
        payload: event.payload(),
    }
}

/// One attempt; `endpoint` is as the dispatcher found it (`None`: deleted).
async fn attempt(
    engine: &Engine,
    d: DeliveryRow,
    event: Option<Arc<Loaded>>,
    endpoint: Option<Arc<EndpointRuntime>>,
) -> Completion {
    let now = crate::ids::now_ms();
    let row = new_attempt(&d, now);
    let Some(event) = event else {
        return dead(
            row,
            "event_missing",
            "the event no longer exists".into(),
            now,
        );
    };
    let Some(endpoint) = endpoint else {
        return dead(
            row,
            "endpoint_missing",
            "the endpoint was deleted".into(),
            now,
        );
    };
    if !endpoint.enabled {
        return dead(
            row,
            "endpoint_disabled",
            "the endpoint is disabled".into(),
            now,
        );
    }
    let payload = if endpoint.format == Format::Json && endpoint.template.is_none() {
        event.body.clone()
    } else {
        match body::render(endpoint.format, endpoint.template.as_deref(), &view(&event)) {
            Ok(b) => bytes::Bytes::from(b),
            // The same event and template fail the same way: retrying cannot help.
            Err(e) => return dead(row, "template", e, now),
        }
    };
    let get_payload = (endpoint.method == "GET").then(|| event.payload());
    let req = match request(&endpoint, &event.row.id, now, payload, get_payload) {
        Ok(r) => r,
        Err((class, e)) => return dead(row, class, e, now),
    };
    let request_headers = mask_headers(&req.headers);
    let out = send(engine, &endpoint, req).await;
    let verdict = judge(&out, now);
    if matches!(verdict, Verdict::Gone) {
        disable_gone(engine, &endpoint).await;
    }
    let mut row = row;
    record(&mut row, out, request_headers);
    conclude(&endpoint, row, &verdict, event.row.created_at, now)
}

/// One request for a batch of deliveries to a batching endpoint; every delivery records it.
async fn attempt_batch(
    engine: &Engine,
    endpoint: &EndpointRuntime,
    items: BatchItems,
) -> Vec<Completion> {
    let now = crate::ids::now_ms();
    let fail_all = |class: &'static str, why: String| {
        items
            .iter()
            .map(|(d, _)| dead(new_attempt(d, now), class, why.clone(), now))
            .collect::<Vec<_>>()
    };
    if !endpoint.enabled {
        return fail_all("endpoint_disabled", "the endpoint is disabled".into());
    }
    let views: Vec<EventView> = items.iter().map(|(_, e)| view(e)).collect();
    let payload = bytes::Bytes::from(body::batch(&views));
    // Each request has its own message id: a retried event may travel in another batch, and
    // receivers deduplicating by webhook-id must not drop it. The events' ids are in the body.
    let message_id = crate::ids::new_id("msg");
    let req = match request(endpoint, &message_id, now, payload, None) {
        Ok(r) => r,
        Err((class, e)) => return fail_all(class, e),
    };
    let request_headers = mask_headers(&req.headers);
    let out = send(engine, endpoint, req).await;
    let verdict = judge(&out, now);
    if matches!(verdict, Verdict::Gone) {
        disable_gone(engine, endpoint).await;
    }
    items
        .iter()
        .map(|(d, e)| {
            let mut row = new_attempt(d, now);
            record(&mut row, out.clone(), request_headers.clone());
            conclude(endpoint, row, &verdict, e.row.created_at, now)
        })
        .collect()
}
