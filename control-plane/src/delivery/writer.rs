//! The store writer: events from publishers and the outcomes of attempts, gathered while the
//! previous transaction ran and written together in the next one (group commit: one fsync for
//! everything that queued up). Publishers get their answer once their events are durable.

use super::publish::{hand_over, lease_fresh, Batch};
use super::Engine;
use crate::store::{Completion, NewEvent, NewInbound, StoreError, Written};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, Semaphore};

/// Events per transaction at most.
const EVENTS_PER_WRITE: usize = 2000;
/// Attempt outcomes per transaction at most.
const OUTCOMES_PER_WRITE: usize = 512;

/// Runs until the engine is gone and every attempt has reported, with up to `parallel`
/// transactions at once (1 for SQLite, which has one writer; more for PostgreSQL, where each
/// round gathers while the previous ones commit).
pub(super) async fn run(
    engine: Weak<Engine>,
    mut events: mpsc::Receiver<Batch>,
    mut outcomes: mpsc::Receiver<Completion>,
    parallel: usize,
) {
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    let (mut events_open, mut outcomes_open) = (true, true);
    while events_open || outcomes_open {
        // Gather only once a transaction can start: the longer the wait, the bigger the round.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batches: Vec<Batch> = Vec::new();
        let mut done: Vec<Completion> = Vec::new();
        tokio::select! {
            b = events.recv(), if events_open => match b {
                Some(b) => batches.push(b),
                None => events_open = false,
            },
            c = outcomes.recv(), if outcomes_open => match c {
                Some(c) => done.push(c),
                None => outcomes_open = false,
            },
        }
        // With one writer, everything queued shares the transaction (one fsync). Where
        // transactions run side by side, publishers' rounds do not wait behind outcome rows.
        let (take_events, take_outcomes) = if parallel > 1 {
            (!batches.is_empty(), !done.is_empty())
        } else {
            (true, true)
        };
        let size = |b: &Batch| b.events.len() + b.inbound.len();
        let mut n: usize = batches.iter().map(size).sum();
        while take_events && n < EVENTS_PER_WRITE {
            let Ok(b) = events.try_recv() else { break };
            n += size(&b);
            batches.push(b);
        }
        while take_outcomes && done.len() < OUTCOMES_PER_WRITE {
            let Ok(c) = outcomes.try_recv() else { break };
            done.push(c);
        }
        if batches.is_empty() && done.is_empty() {
            continue;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            write(&engine, batches, done).await;
            drop(slot);
        });
    }
}

async fn write(engine: &Engine, batches: Vec<Batch>, done: Vec<Completion>) {
    let mut all: Vec<NewEvent> = Vec::with_capacity(batches.iter().map(|b| b.events.len()).sum());
    let mut inbound: Vec<NewInbound> = Vec::new();
    let mut replies = Vec::with_capacity(batches.len());
    for b in batches {
        replies.push((b.events.len(), b.inbound.len(), b.reply));
        // The inbound events' ranges index into the combined list.
        let offset = all.len();
        inbound.extend(b.inbound.into_iter().map(|mut n| {
            n.events = n.events.start + offset..n.events.end + offset;
            n
        }));
        all.extend(b.events);
    }
    let now = crate::ids::now_ms();
    let (hot, backlog) = lease_fresh(engine, &mut all, now);
    let writes = !all.is_empty() || !inbound.is_empty();
    let result = match engine.store.write_batch(&all, &inbound, &done, now).await {
        Err(e) if writes && !done.is_empty() => {
            // Each half alone, so a failure in one does not hold back the other.
            tracing::warn!(error = %e, "a combined write failed; writing events and outcomes apart");
            record_outcomes(engine, &done, now).await;
            engine.store.write_batch(&all, &inbound, &[], now).await
        }
        Err(e) if !writes => {
            // The leases expire and these deliveries are attempted again: at-least-once.
            tracing::error!(error = %e, n = done.len(), "recording attempts failed");
            return;
        }
        other => other,
    };
    match result {
        Ok(written) => {
            hand_over(engine, all, &written.events, hot);
            let mut events = written.events.into_iter();
            let mut inbound = written.inbound.into_iter();
            for (n_events, n_inbound, reply) in replies {
                let _ = reply.send(Ok(Written {
                    events: events.by_ref().take(n_events).collect(),
                    inbound: inbound.by_ref().take(n_inbound).collect(),
                }));
            }
            if backlog {
                engine.wake();
            }
        }
        Err(e) => {
            engine.hot.give_back(hot);
            let message = e.to_string();
            tracing::error!(error = %message, events = all.len(), "storing events failed");
            for (_, _, reply) in replies {
                let _ = reply.send(Err(StoreError::Corrupt(format!(
                    "storing events failed: {message}"
                ))));
            }
        }
    }
}

async fn record_outcomes(engine: &Engine, done: &[Completion], now: i64) {
    if let Err(e) = engine.store.write_batch(&[], &[], done, now).await {
        // The leases expire and these deliveries are attempted again: at-least-once.
        tracing::error!(error = %e, n = done.len(), "recording attempts failed");
    }
}
