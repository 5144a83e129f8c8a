//! Publishing: fan an event out to the tenant's subscribed endpoints, hand the events to the
//! writer (`writer`, group commit) and acknowledge once they are durable. Deliveries due at once
//! are stored leased to this process and then handed to the dispatcher in memory.

use super::Engine;
use crate::store::{
    DeliveryRow, EventRow, NewDelivery, NewEvent, NewInbound, StoreError, Stored, Written,
};
use tokio::sync::oneshot;

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

/// What one caller hands the writer: events, and inbound events whose `events` ranges index
/// into them. The reply comes once they are durable.
pub(super) struct Batch {
    pub(super) events: Vec<NewEvent>,
    pub(super) inbound: Vec<NewInbound>,
    pub(super) reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// Marks the deliveries due now that the dispatcher has room for as leased to this process, so
/// they go to it in memory after the commit instead of being claimed back from the store.
/// Returns how many were leased, and whether any due delivery was left for the claim path.
pub(super) fn lease_fresh(engine: &Engine, events: &mut [NewEvent], now: i64) -> (usize, bool) {
    let due = || {
        events
            .iter()
            .filter(|e| e.deliver_at <= now)
            .flat_map(|e| e.deliveries.iter())
    };
    let all_due = due().count();
    // FIFO deliveries wait behind earlier ones, which only the claim path knows about.
    let granted = engine.hot.take(due().filter(|d| !d.ordered).count());
    let lease = now + super::worker::LEASE_MS;
    let leasable = events
        .iter_mut()
        .filter(|e| e.deliver_at <= now)
        .flat_map(|e| e.deliveries.iter_mut())
        .filter(|d| !d.ordered);
    for d in leasable.take(granted) {
        d.leased_until = Some(lease);
    }
    (granted, granted < all_due)
}

/// Sends the stored, leased deliveries to the dispatcher; room taken for duplicates (not
/// stored) is given back.
pub(super) fn hand_over(engine: &Engine, events: Vec<NewEvent>, stored: &[Stored], granted: usize) {
    let mut sent = 0;
    let mut batch = Vec::new();
    for (e, s) in events.into_iter().zip(stored) {
        if *s != Stored::Created || !e.deliveries.iter().any(|d| d.leased_until.is_some()) {
            continue;
        }
        let NewEvent {
            id,
            tenant_id,
            event_type,
            payload,
            created_at,
            deliveries,
            ..
        } = e;
        let loaded = std::sync::Arc::new(super::worker::Loaded::new(EventRow {
            id,
            tenant_id,
            event_type,
            payload,
            created_at,
        }));
        for d in deliveries {
            let Some(lease) = d.leased_until else {
                continue;
            };
            sent += 1;
            batch.push(super::worker::Hot {
                row: DeliveryRow {
                    id: d.id,
                    event_id: loaded.row.id.clone(),
                    endpoint_id: d.endpoint_id,
                    tenant_id: loaded.row.tenant_id.clone(),
                    status: "leased".into(),
                    attempts: 0,
                    next_attempt_at: lease,
                    last_error: None,
                    created_at,
                    updated_at: created_at,
                },
                event: loaded.clone(),
            });
        }
    }
    engine.hot.give_back(granted - sent);
    if !batch.is_empty() {
        engine.hot.send(batch);
    }
}

impl Engine {
    /// Stores events and inbound events in the next group commit; returns once they are
    /// durable. Deliveries due now go to this process's dispatcher in memory.
    ///
    /// # Errors
    /// When the store fails: nothing is acknowledged then.
    pub async fn write(
        &self,
        events: Vec<NewEvent>,
        inbound: Vec<NewInbound>,
    ) -> Result<Written, StoreError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || StoreError::Corrupt("the committer stopped".into());
        self.committer
            .send(Batch {
                events,
                inbound,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

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
                    .map(|e| NewDelivery {
                        id: crate::ids::new_id("dlv"),
                        endpoint_id: e.id.clone(),
                        ordered: e.ordered,
                        order_key: None,
                        leased_until: None,
                    })
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
        let stored = self.write(events, Vec::new()).await?.events;
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
