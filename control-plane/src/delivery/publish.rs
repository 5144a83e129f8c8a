//! Publishing: fan an event out to the tenant's subscribed endpoints and store the event with
//! its deliveries before acknowledging. Concurrent publishers share commits (group commit):
//! while one transaction runs, the next batch gathers, so durability costs no throughput.

use super::Engine;
use crate::store::{NewEvent, StoreError, Stored};
use tokio::sync::{mpsc, oneshot};

/// Events per transaction at most.
const COMMIT_BATCH: usize = 2000;

/// One event to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Tenant.
    pub tenant_id: String,
    /// Event type name.
    pub event_type: String,
    /// JSON payload.
    pub payload: serde_json::Value,
    /// Caller id: a second publish with it is a duplicate.
    pub dedup_key: Option<String>,
    /// First attempt not before (unix ms).
    pub deliver_at: Option<i64>,
    /// Higher first.
    pub priority: i64,
}

/// What publishing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event id (the existing one for a duplicate).
    pub id: String,
    /// Deliveries created.
    pub deliveries: usize,
    /// Whether an event with the same id already existed.
    pub duplicate: bool,
}

pub(super) type Batch = (
    Vec<NewEvent>,
    oneshot::Sender<Result<Vec<Stored>, StoreError>>,
);

pub(super) async fn commit(engine: std::sync::Arc<Engine>, mut rx: mpsc::Receiver<Batch>) {
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        let mut n = batches[0].0.len();
        while n < COMMIT_BATCH {
            match rx.try_recv() {
                Ok(b) => {
                    n += b.0.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let all: Vec<NewEvent> = batches
            .iter()
            .flat_map(|(e, _)| e.iter().cloned())
            .collect();
        let result = engine.store.insert_events(&all).await;
        match result {
            Ok(stored) => {
                let mut rest = stored.into_iter();
                for (events, reply) in batches {
                    let _ = reply.send(Ok(rest.by_ref().take(events.len()).collect()));
                }
                engine.wake.notify_one();
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(error = %message, events = all.len(), "storing events failed");
                for (_, reply) in batches {
                    let _ = reply.send(Err(StoreError::Corrupt(format!(
                        "storing events failed: {message}"
                    ))));
                }
            }
        }
    }
}

impl Engine {
    /// Stores events with one delivery per subscribed, enabled endpoint; returns once durable.
    ///
    /// # Errors
    /// When the store fails: nothing is acknowledged then.
    pub async fn publish(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<Published>, StoreError> {
        let now = crate::ids::now_ms();
        let events: Vec<NewEvent> = requests
            .into_iter()
            .map(|r| {
                let deliveries = self
                    .endpoints
                    .subscribers(&r.tenant_id, &r.event_type)
                    .iter()
                    .map(|e| (crate::ids::new_id("dlv"), e.id.clone(), e.ordered))
                    .collect();
                NewEvent {
                    id: crate::ids::new_id("evt"),
                    tenant_id: r.tenant_id,
                    event_type: r.event_type,
                    payload: r.payload.to_string(),
                    dedup_key: r.dedup_key,
                    created_at: now,
                    deliveries,
                    deliver_at: r.deliver_at.unwrap_or(now),
                    priority: r.priority,
                }
            })
            .collect();
        // Only ids and counts are needed back: the events themselves go to the committer.
        let summary: Vec<(String, usize)> = events
            .iter()
            .map(|e| (e.id.clone(), e.deliveries.len()))
            .collect();
        let (tx, rx) = oneshot::channel();
        self.committer
            .send((events, tx))
            .await
            .map_err(|_| StoreError::Corrupt("the committer stopped".into()))?;
        let stored = rx
            .await
            .map_err(|_| StoreError::Corrupt("the committer stopped".into()))??;
        Ok(summary
            .into_iter()
            .zip(stored)
            .map(|((id, deliveries), s)| match s {
                Stored::Created => Published {
                    id,
                    deliveries,
                    duplicate: false,
                },
                Stored::Duplicate(id) => Published {
                    id,
                    deliveries: 0,
                    duplicate: true,
                },
            })
            .collect())
    }
}
