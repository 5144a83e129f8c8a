//! Durable outbound delivery.
//!
//! `POST /v1/events` stores the event and one delivery per subscribed endpoint in one
//! transaction, shared with concurrent publishers (group commit), before answering 202. The
//! dispatcher leases due deliveries (`FOR UPDATE SKIP LOCKED` on PostgreSQL; one dispatcher
//! per process on SQLite), sends them signed (Standard Webhooks) over a pooled client, and a
//! writer records every attempt and the next step: done, retry at the policy's next time, or
//! dead letter.
//!
//! - [`retry`]: the pure retry schedule, `Retry-After` handling.
//! - [`sign`]: Standard Webhooks headers with the filter crate's code.
//! - [`send`]: the HTTP client and its SSRF guard.
//! - `worker`: the dispatch loop and the attempts.
//! - `publish`: fan-out, and the hand-over of fresh deliveries to the dispatcher.
//! - `writer`: group commit of events and attempt outcomes.
//! - `endpoints`: the decrypted endpoint cache.

pub mod body;
pub mod breaker;
mod endpoints;
pub(crate) mod headers;
pub mod limit;
mod publish;
pub mod retry;
pub mod send;
pub mod sign;
mod worker;
mod writer;

pub use endpoints::EndpointCache;
pub use publish::{PublishRequest, Published};

use crate::secrets::MasterKeys;
use crate::store::{Store, StoreError};
use hookmesh_filter::Cidr;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Destination CIDRs allowed despite being internal (tests: 127.0.0.0/8).
    pub allow_destination_cidrs: Vec<Cidr>,
    /// CA certificates trusted for HTTPS destinations besides the Mozilla roots (a private or
    /// mesh CA).
    pub trusted_cas: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Attempts in flight at most (the adaptive limit's upper bound).
    pub concurrency: usize,
    /// Consecutive failures that open an endpoint's circuit.
    pub breaker_threshold: u32,
    /// Share of the last `breaker_window` attempts failing that opens it (above 1: never).
    pub breaker_failure_ratio: f64,
    /// Attempts the failure ratio is taken over (1 to 64).
    pub breaker_window: u32,
    /// First cooldown of an open circuit (doubling on each failed probe, at most 10 min).
    pub breaker_cooldown: Duration,
    /// An endpoint failing continuously this long is disabled.
    pub disable_after: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            allow_destination_cidrs: Vec::new(),
            trusted_cas: Vec::new(),
            concurrency: 256,
            breaker_threshold: 5,
            breaker_failure_ratio: 0.5,
            breaker_window: 20,
            breaker_cooldown: Duration::from_secs(30),
            disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

/// Attempts in flight at first (or the operator's bound, when lower).
const MIN_IN_FLIGHT: usize = 64;

/// The dispatcher's observations for the limit controller.
#[derive(Default)]
struct WindowStats {
    saturated: std::sync::atomic::AtomicBool,
    completed: std::sync::atomic::AtomicU64,
    latency_ms: std::sync::atomic::AtomicU64,
}

impl WindowStats {
    fn attempt_done(&self, duration_ms: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.completed.fetch_add(1, Relaxed);
        self.latency_ms
            .fetch_add(duration_ms.max(0) as u64, Relaxed);
    }

    fn take(&self) -> limit::Window {
        use std::sync::atomic::Ordering::Relaxed;
        limit::Window {
            saturated: self.saturated.swap(false, Relaxed),
            completed: self.completed.swap(0, Relaxed),
            latency_ms: self.latency_ms.swap(0, Relaxed),
        }
    }
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Loading endpoints.
    #[error("loading endpoints: {0}")]
    Store(#[from] StoreError),
    /// The HTTP client's TLS stack.
    #[error("building the HTTP client: {0}")]
    Client(#[from] rustls::Error),
    /// The writer thread.
    #[error("starting the store writer thread: {0}")]
    Thread(std::io::Error),
}

/// The delivery engine.
pub struct Engine {
    store: Arc<dyn Store>,
    /// The endpoints as delivered to.
    pub endpoints: Arc<EndpointCache>,
    sender: send::Sender,
    permits: Arc<Semaphore>,
    /// The operator's bound on attempts in flight; the permits follow [`limit`]'s controller
    /// below it.
    concurrency: usize,
    /// What the dispatcher saw since the controller last looked.
    window: WindowStats,
    /// Fresh deliveries leased at publish, on their way to the dispatcher.
    hot: worker::HotQueue,
    wake: Notify,
    /// Set with every wake-up, so a dispatcher busy with fresh deliveries sees it too.
    store_due: std::sync::atomic::AtomicBool,
    committer: mpsc::Sender<publish::Batch>,
    /// Per-endpoint concurrency: the semaphore and the limit it was made for.
    in_flight: std::sync::Mutex<HashMap<String, (Arc<Semaphore>, u32)>>,
    /// Per-endpoint token buckets (the filter crate's arithmetic).
    buckets: std::sync::Mutex<hookmesh_filter::ratelimit::LocalRateLimitStore>,
    /// Deliveries waiting to fill a batch, per batching endpoint.
    gathering: std::sync::Mutex<HashMap<String, worker::Gathering>>,
    /// Circuits open in the store (any replica's), by endpoint: open until (unix ms).
    shared_circuits: std::sync::RwLock<HashMap<String, i64>>,
    /// Per-endpoint circuit breakers (per process).
    breakers: std::sync::Mutex<HashMap<String, breaker::Breaker>>,
    breaker_policy: breaker::Policy,
    disable_after_ms: i64,
}

impl Engine {
    /// Builds the engine and starts its tasks (committer, dispatcher, writer, cache refresher).
    ///
    /// # Errors
    /// When endpoints cannot be loaded or the client cannot be built.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: Arc<MasterKeys>,
        settings: DeliverySettings,
    ) -> Result<Arc<Engine>, DeliveryError> {
        if store.backend() == "sqlite" {
            // One process owns a SQLite file: leases left behind are a crashed run's, and are
            // delivered again at once instead of after they expire.
            let n = store.release_leases(crate::ids::now_ms()).await?;
            if n > 0 {
                tracing::info!(deliveries = n, "released the leases of a previous run");
            }
        }
        let endpoints = EndpointCache::new(store.clone(), keys).await?;
        endpoints.spawn_refresher(Duration::from_secs(2));
        let (commit_tx, commit_rx) = mpsc::channel(4096);
        let (done_tx, done_rx) = mpsc::channel(4096);
        let concurrency = settings.concurrency.max(1);
        let controller = limit::Controller::new(MIN_IN_FLIGHT, concurrency);
        // Room for 16 rounds of attempts (a few MiB): fewer fresh deliveries take the slower way
        // through the store when publishing outpaces delivery.
        let (hot, hot_rx) = worker::HotQueue::new(16 * concurrency);
        let engine = Arc::new(Engine {
            store,
            endpoints,
            sender: send::Sender::new(
                send::DestinationGuard::new(settings.allow_destination_cidrs),
                settings.concurrency,
                settings.trusted_cas,
            )?,
            permits: Arc::new(Semaphore::new(controller.limit())),
            concurrency,
            window: WindowStats::default(),
            hot,
            wake: Notify::new(),
            store_due: std::sync::atomic::AtomicBool::new(true),
            committer: commit_tx,
            in_flight: std::sync::Mutex::default(),
            buckets: std::sync::Mutex::default(),
            breakers: std::sync::Mutex::default(),
            gathering: std::sync::Mutex::default(),
            shared_circuits: std::sync::RwLock::default(),
            breaker_policy: breaker::Policy {
                consecutive: settings.breaker_threshold,
                ratio: settings.breaker_failure_ratio,
                window: settings.breaker_window,
                cooldown_ms: i64::try_from(settings.breaker_cooldown.as_millis())
                    .unwrap_or(i64::MAX),
            }
            .normalized(),
            disable_after_ms: settings.disable_after.as_millis() as i64,
        });
        engine.spawn_circuit_refresher(Duration::from_millis(500));
        engine.spawn_limit_controller(controller);
        let sqlite = engine.store.backend() == "sqlite";
        let writers = writer::run(
            Arc::downgrade(&engine),
            commit_rx,
            done_rx,
            if sqlite { 1 } else { 4 },
        );
        if sqlite {
            // SQLite has one writer, and each statement is a round trip to its thread. Run
            // from a thread of their own, write transactions do not wait behind the HTTP work
            // in the runtime's queues between statements (+15 % events/s, docs/benchmarks.md).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(DeliveryError::Thread)?;
            std::thread::Builder::new()
                .name("hookmesh-writer".into())
                .spawn(move || rt.block_on(writers))
                .map_err(DeliveryError::Thread)?;
        } else {
            tokio::spawn(writers);
        }
        tokio::spawn(worker::dispatch(engine.clone(), done_tx, hot_rx));
        Ok(engine)
    }

    /// A slot for one attempt to an endpoint with a concurrency limit, if one is free.
    fn endpoint_slot(
        &self,
        endpoint: &str,
        limit: u32,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map
                .entry(endpoint.to_owned())
                .or_insert_with(|| (Arc::new(Semaphore::new(limit as usize)), limit));
            if entry.1 != limit {
                // The limit changed: new attempts count against a fresh semaphore.
                *entry = (Arc::new(Semaphore::new(limit as usize)), limit);
            }
            entry.0.clone()
        };
        sem.try_acquire_owned().ok()
    }

    /// Takes a token for an endpoint with a rate limit; the wait in ms when there is none.
    fn endpoint_token(&self, endpoint: &str, rate: f64, now_ms: i64) -> Result<(), i64> {
        use hookmesh_filter::ratelimit::{RateLimitStore, TokenBucket};
        let burst = rate.ceil().clamp(1.0, 1_000_000.0) as u32;
        let Ok(bucket) = TokenBucket::new(rate, burst) else {
            return Ok(());
        };
        let mut store = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        store
            .take(endpoint, &bucket, (now_ms.max(0) as u64) * 1_000_000)
            .map_err(|_| ((1000.0 / rate).ceil() as i64).max(10))
    }

    /// Whether a delivery to an endpoint may be attempted now (its circuit breaker).
    fn breaker_gate(&self, endpoint: &str, now: i64) -> breaker::Gate {
        let local = {
            let mut map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
            map.get_mut(endpoint)
                .map_or(breaker::Gate::Pass, |b| b.gate(now))
        };
        if local != breaker::Gate::Pass {
            // This process's own breaker decides its probes.
            return local;
        }
        // Another replica may have opened the circuit.
        let shared = self
            .shared_circuits
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match shared.get(endpoint) {
            Some(&until) if until > now => breaker::Gate::Wait(until),
            _ => breaker::Gate::Pass,
        }
    }

    /// Every 200 ms, moves the number of attempt slots to the controller's limit.
    fn spawn_limit_controller(self: &Arc<Self>, mut controller: limit::Controller) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            // Slots to remove that were in use when the limit went down.
            let mut owed = 0usize;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Some(engine) = me.upgrade() else { return };
                let before = controller.limit();
                let after = controller.next(&engine.window.take());
                if after > before {
                    let cancel = owed.min(after - before);
                    owed -= cancel;
                    engine.permits.add_permits(after - before - cancel);
                } else {
                    owed += before - after;
                }
                if owed > 0 {
                    owed -= engine.permits.forget_permits(owed);
                }
                if after != before {
                    tracing::debug!(from = before, to = after, "attempts in flight at most");
                }
            }
        });
    }

    /// Keeps the circuits other replicas opened in view, until the engine is gone.
    fn spawn_circuit_refresher(self: &Arc<Self>, period: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(engine) = me.upgrade() else { return };
                match engine.store.open_circuits(crate::ids::now_ms()).await {
                    Ok(open) => {
                        *engine
                            .shared_circuits
                            .write()
                            .unwrap_or_else(|p| p.into_inner()) = open.into_iter().collect();
                    }
                    Err(e) => tracing::warn!(error = %e, "reading shared circuit states failed"),
                }
            }
        });
    }

    /// Shares a transition of this process's breaker with the other replicas.
    async fn share_circuit(&self, endpoint_id: &str, transition: breaker::Transition, now: i64) {
        let open_until = match transition {
            breaker::Transition::Opened => self
                .breakers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(endpoint_id)
                .and_then(breaker::Breaker::open_until),
            breaker::Transition::Closed => None,
        };
        if let Err(e) = self.store.set_circuit(endpoint_id, open_until, now).await {
            tracing::warn!(endpoint = %endpoint_id, error = %e, "sharing the circuit state failed");
        }
        let mut shared = self
            .shared_circuits
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match open_until {
            Some(until) => shared.insert(endpoint_id.to_owned(), until),
            None => shared.remove(endpoint_id),
        };
    }

    /// Feeds an attempt's outcome to the endpoint's breaker; announces transitions and disables
    /// an endpoint that has failed continuously for too long.
    async fn observe(&self, endpoint_id: &str, c: &crate::store::Completion) {
        let ok = c.status == "succeeded";
        // Only the endpoint's own failures count, not a missing event or a refused signature.
        let failed = matches!(
            c.attempt.error_class.as_deref(),
            Some("status" | "timeout" | "connect" | "request" | "refused_destination")
        );
        if !ok && !failed {
            return;
        }
        let now = crate::ids::now_ms();
        let (transition, failing_since) = {
            let mut map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
            // Successes count too (for the failure ratio); the key is only allocated once.
            let b = match map.get_mut(endpoint_id) {
                Some(b) => b,
                None => map.entry(endpoint_id.to_owned()).or_default(),
            };
            (b.record(ok, now, &self.breaker_policy), b.failing_since)
        };
        if let Some(t) = transition {
            self.share_circuit(endpoint_id, t, now).await;
        }
        let Some(ep) = self.endpoints.get(endpoint_id) else {
            return;
        };
        match transition {
            Some(breaker::Transition::Opened) => {
                self.operational(&ep, "hookmesh.endpoint.circuit_opened", now)
                    .await
            }
            Some(breaker::Transition::Closed) => {
                self.operational(&ep, "hookmesh.endpoint.circuit_closed", now)
                    .await
            }
            None => {}
        }
        if failing_since.is_some_and(|since| now - since >= self.disable_after_ms) && ep.enabled {
            let reason = format!(
                "failing continuously for over {} s",
                self.disable_after_ms / 1000
            );
            if let Err(e) = crate::api::disable_endpoint(&*self.store, &ep.id, &reason).await {
                tracing::warn!(endpoint = %ep.id, error = %e, "could not disable the endpoint");
                return;
            }
            self.breakers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(endpoint_id);
            let _ = self.endpoints.refresh().await;
            self.operational(&ep, "hookmesh.endpoint.disabled", now)
                .await;
        }
    }

    /// Publishes an operational event to the tenant's endpoints subscribed to it by name.
    async fn operational(&self, ep: &crate::api::EndpointRuntime, event_type: &str, now: i64) {
        tracing::warn!(endpoint = %ep.id, event = event_type, "endpoint health changed");
        let payload = serde_json::json!({"type": event_type, "endpoint_id": ep.id, "url": ep.url, "at": crate::ids::rfc3339(now)});
        let req = PublishRequest {
            tenant_id: ep.tenant_id.clone(),
            event_type: event_type.to_owned(),
            payload,
            dedup_key: None,
            deliver_at: None,
            priority: 1,
        };
        if let Err(e) = self.publish(vec![req]).await {
            tracing::error!(error = %e, "could not publish an operational event");
        }
    }

    /// Whether an endpoint's circuit is open now, in this process or any replica: deliveries
    /// to it wait, and an inbound route uses its failover instead.
    pub fn circuit_open(&self, endpoint: &str, now: i64) -> bool {
        let local = self
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .and_then(breaker::Breaker::open_until)
            .is_some_and(|until| until > now);
        local
            || self
                .shared_circuits
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(endpoint)
                .is_some_and(|&until| until > now)
    }

    /// Tells the dispatcher that the store holds a delivery due now.
    pub fn wake(&self) {
        self.store_due
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }
}
