//! Retention: how long events, inbound webhooks and finished jobs are kept, and the task that
//! deletes them after that.
//!
//! The hub stores every webhook it accepts whole, and every event keeps its deliveries and
//! attempts: about 2.7 KB per routed webhook, megabytes a second at the hub's rate, so nothing
//! is kept forever unless asked. What is still needed is kept past its age:
//! an event with a delivery pending or in flight, and an inbound webhook whose duplicate window
//! is still open (without its key a late copy would be routed again), and a job still running.
//! The audit log and the configuration are not aged out.

use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// Rows found per step, deleted in one transaction: on SQLite the group commit waits behind it
/// for the one writing connection. Steps of 64 cost more CPU and did not lower the ingest's p99
/// (docs/benchmarks.md).
const STEP: i64 = 256;

/// How long stored events, inbound webhooks and finished jobs are kept; `None` keeps them
/// forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(Option<Duration>);

impl Retention {
    /// Kept for `keep`.
    pub fn keep(keep: Duration) -> Retention {
        Retention(Some(keep))
    }

    /// Kept forever.
    pub fn forever() -> Retention {
        Retention(None)
    }

    /// How often the purge runs: a tenth of the retention, between a second and a minute, so
    /// each pass deletes a small slice and the deletes keep pace with what arrives.
    fn interval(self) -> Duration {
        self.0.map_or(Duration::from_secs(60), |keep| {
            (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
        })
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    /// `30d`, `12h`, `90m`, `45s`, or `off` (also `0`) to keep everything.
    fn from_str(s: &str) -> Result<Retention, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") || s == "0" {
            return Ok(Retention::forever());
        }
        // clap names the flag and the value; the message says what was expected.
        let bad =
            || "expected a number and a unit (d, h, m or s), like 30d or 12h, or `off`".to_owned();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = s.split_at(split);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let unit_secs = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        // Up to a century: the cut-off must stay a time the ids can express.
        let secs = n
            .checked_mul(unit_secs)
            .filter(|secs| (1..=100 * 365 * 86_400).contains(secs))
            .ok_or_else(|| "expected between 1s and 100 years, or `off`".to_owned())?;
        Ok(Retention::keep(Duration::from_secs(secs)))
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Events, each with its deliveries and attempts.
    pub events: u64,
    /// Inbound webhooks.
    pub inbound: u64,
    /// Jobs (bulk replays and releases) finished before the cut-off.
    pub jobs: u64,
}

/// Deletes what was stored before `before` (unix ms) and is no longer needed at `now`: events
/// whose deliveries have all finished (succeeded or dead-lettered), with those deliveries and
/// their attempts, inbound webhooks whose duplicate window has ended, and jobs that finished.
/// Oldest first, a bounded step per transaction.
///
/// # Errors
/// The store failed; what earlier steps deleted stays deleted.
pub async fn purge(store: &dyn Store, before: i64, now: i64) -> Result<Purged, StoreError> {
    Ok(Purged {
        events: oldest_first(store, Table::Events, before, now).await?,
        inbound: oldest_first(store, Table::Inbound, before, now).await?,
        jobs: crate::api::purge_finished_jobs(store, before).await?,
    })
}

/// One pass of the housekeeping at `now` (unix ms): idempotency keys past their day, then what
/// is past `retention`. Every replica runs passes, one at a time does the work: `None` when
/// another replica is running one (on PostgreSQL; their deletes would only wait on the same
/// rows).
///
/// # Errors
/// The store failed; what earlier steps deleted stays deleted.
pub async fn pass(
    store: &dyn Store,
    retention: Retention,
    now: i64,
) -> Result<Option<Purged>, StoreError> {
    let Some(_only_here) = store.exclusive("housekeeping").await? else {
        return Ok(None);
    };
    if let Err(e) = store
        .idempotency_purge(now - crate::api::IDEMPOTENCY_RETENTION_MS)
        .await
    {
        tracing::warn!(error = %e, "idempotency purge failed");
    }
    let Some(keep) = retention.0 else {
        return Ok(Some(Purged::default()));
    };
    let before = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    purge(store, before, now).await.map(Some)
}

/// What ages out.
#[derive(Clone, Copy)]
enum Table {
    Events,
    Inbound,
}

/// Finds a step of rows of `table` made before `before` after the last one found, and deletes
/// them, until a step finds fewer than [`STEP`]; returns how many went.
async fn oldest_first(
    store: &dyn Store,
    table: Table,
    before: i64,
    now: i64,
) -> Result<u64, StoreError> {
    // Ids are time-ordered, so "made before" is a range of each table's primary key.
    let cut = crate::ids::floor_id(
        match table {
            Table::Events => "evt",
            Table::Inbound => "inb",
        },
        before,
    );
    let mut after = String::new();
    let mut deleted = 0;
    loop {
        let ids = match table {
            Table::Events => store.aged_events(&after, &cut, STEP).await?,
            Table::Inbound => store.aged_inbound(&after, &cut, now, STEP).await?,
        };
        if !ids.is_empty() {
            deleted += match table {
                Table::Events => store.purge_events(&ids).await?,
                Table::Inbound => store.purge_inbound(&ids, now).await?,
            };
        }
        match ids.last() {
            Some(last) if ids.len() as i64 == STEP => after.clone_from(last),
            _ => return Ok(deleted),
        }
        // Let the group commit have the writing connection between steps.
        tokio::task::yield_now().await;
    }
}

/// Runs the housekeeping for as long as the returned task lives: idempotency keys past their
/// day, and events and inbound webhooks past `retention`.
pub fn spawn(
    store: Arc<dyn Store>,
    retention: Retention,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(retention.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match pass(store.as_ref(), retention, crate::ids::now_ms()).await {
                Ok(None) => tracing::debug!("another replica is purging; skipped this pass"),
                Ok(Some(p)) => {
                    metrics.retention_deleted("event", p.events);
                    metrics.retention_deleted("inbound_event", p.inbound);
                    metrics.retention_deleted("job", p.jobs);
                    if p.events + p.inbound + p.jobs > 0 {
                        tracing::debug!(
                            events = p.events,
                            inbound = p.inbound,
                            jobs = p.jobs,
                            "deleted past the retention"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention purge failed; retrying next pass"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Retention;
    use std::time::Duration;

    #[test]
    fn retention_parses_units_and_off() {
        let days = |n: u64| Retention::keep(Duration::from_secs(n * 86_400));
        assert_eq!("30d".parse(), Ok(days(30)));
        assert_eq!(
            "12h".parse(),
            Ok(Retention::keep(Duration::from_secs(43_200)))
        );
        assert_eq!(
            "90m".parse(),
            Ok(Retention::keep(Duration::from_secs(5_400)))
        );
        assert_eq!("2s".parse(), Ok(Retention::keep(Duration::from_secs(2))));
        assert_eq!("off".parse(), Ok(Retention::forever()));
        assert_eq!("0".parse(), Ok(Retention::forever()));
        for bad in ["", "30", "d", "30 days", "-1d", "1.5h", "30D"] {
            let e = bad.parse::<Retention>().unwrap_err();
            assert!(e.contains("a number and a unit"), "{bad}: {e}");
        }
        for out_of_range in ["0h", "101000d", "999999999999999999d"] {
            let e = out_of_range.parse::<Retention>().unwrap_err();
            assert!(
                e.contains("between 1s and 100 years"),
                "{out_of_range}: {e}"
            );
        }
    }

    #[test]
    fn the_purge_runs_often_enough_for_short_retention_and_at_most_a_minute_apart() {
        let every = |s: &str| s.parse::<Retention>().unwrap().interval();
        assert_eq!(every("2s"), Duration::from_secs(1));
        assert_eq!(every("5m"), Duration::from_secs(30));
        assert_eq!(every("30d"), Duration::from_secs(60));
        assert_eq!(every("off"), Duration::from_secs(60));
    }
}
