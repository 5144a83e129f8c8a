//! SQLite's group commit and the delivery engine's claims, run on the calling thread.
//!
//! sqlx drives each SQLite connection from a thread of its own, and every statement is a
//! message to that thread and back: for a round of small inserts, most of the writer's time was
//! those hops (profiled: 54 % of the control plane's CPU in the writer and sqlx's thread, and a
//! fifth of all samples switching threads). Here the writer thread runs the transaction itself
//! through rusqlite, on a connection of its own (`SqliteStore::batch`). It writes the same rows
//! with the same outcomes as PostgreSQL's `postgres_write`; the API tests run both.

use super::{Completion, DeliveryRow, NewEvent, NewInbound, StoreError, Stored, Written};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                StoreError::Duplicate
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// One transaction: inbound events (duplicates dropped), events with their deliveries, attempt
/// outcomes. Each statement is compiled when first needed and kept in the connection's cache
/// for the batches after.
pub(super) fn write_batch(
    db: &Connection,
    events: &[NewEvent],
    inbound: &[NewInbound],
    done: &[Completion],
    now: i64,
) -> Result<Written, StoreError> {
    db.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let result = (|| {
        let inbound_stored = insert_inbound(db, inbound, now)?;
        let mut suppressed: Vec<Option<&str>> = Vec::new();
        for (n, s) in inbound.iter().zip(&inbound_stored) {
            if let Stored::Duplicate(first) = s {
                suppressed.resize(events.len(), None);
                for slot in suppressed.get_mut(n.events.clone()).into_iter().flatten() {
                    *slot = Some(first.as_str());
                }
            }
        }
        let stored = insert_events(db, events, &suppressed)?;
        complete(db, done, now)?;
        Ok::<_, StoreError>(Written {
            events: stored,
            inbound: inbound_stored,
        })
    })();
    let commit = |w| -> Result<Written, StoreError> {
        db.prepare_cached("COMMIT")?.execute([])?;
        Ok(w)
    };
    match result.and_then(commit) {
        Ok(w) => Ok(w),
        Err(e) => {
            // The next batch begins its own transaction on this connection.
            if !db.is_autocommit() {
                let _ = db.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

/// Leases due deliveries with `claim` (one `UPDATE … RETURNING *`, its own transaction):
/// `$1` the lease's end, `$2` now, `$3` the most to lease.
pub(super) fn claim(
    db: &Connection,
    claim: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let mut stmt = db.prepare_cached(claim)?;
    let rows = stmt.query_map(
        rusqlite::named_params! {"$1": lease_until, "$2": now, "$3": limit},
        |row| {
            Ok(DeliveryRow {
                id: row.get("id")?,
                event_id: row.get("event_id")?,
                endpoint_id: row.get("endpoint_id")?,
                tenant_id: row.get("tenant_id")?,
                status: row.get("status")?,
                attempts: row.get("attempts")?,
                next_attempt_at: row.get("next_attempt_at")?,
                last_error: row.get("last_error")?,
                created_at: row.get("created_at")?,
                updated_at: row.get("updated_at")?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const INSERT_INBOUND: &str = "INSERT INTO inbound_events (id, tenant_id, source_id, source_name, status, dedup_key, method, path, query, headers, body, client_ip, received_at, event_type, result, routing, error, duplicates, updated_at, dedup_until) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) ON CONFLICT (source_id, dedup_key) DO NOTHING";

fn insert_inbound(
    db: &Connection,
    inbound: &[NewInbound],
    now: i64,
) -> Result<Vec<Stored>, StoreError> {
    let mut out = Vec::with_capacity(inbound.len());
    if inbound.is_empty() {
        return Ok(out);
    }
    let mut insert = db.prepare_cached(INSERT_INBOUND)?;
    let bump = |id: &str| {
        db.prepare_cached("UPDATE inbound_events SET duplicates = duplicates + 1 WHERE id = ?1")?
            .execute(params![id])
    };
    let mut in_batch: HashMap<(&str, &str), &str> = HashMap::new();
    for n in inbound {
        let r = &n.row;
        if let Some(read) = n.replaces {
            let changed = db
                .prepare_cached(
                    "UPDATE inbound_events SET status = ?1, event_type = ?2, result = ?3, routing = ?4, error = ?5, updated_at = ?6 WHERE id = ?7 AND updated_at = ?8",
                )?
                .execute(params![r.status, r.event_type, r.result, r.routing, r.error, r.updated_at, r.id, read])?;
            out.push(if changed == 1 {
                Stored::Created
            } else {
                Stored::Duplicate(r.id.clone())
            });
            continue;
        }
        let key = r.dedup_key.as_deref();
        if let Some(first) = key.and_then(|k| in_batch.get(&(r.source_id.as_str(), k))) {
            let first = (*first).to_owned();
            bump(&first)?;
            out.push(Stored::Duplicate(first));
            continue;
        }
        if row_values(&mut insert, n)? == 0 {
            // The key is taken: a duplicate while the holder's window lasts.
            let (first, until): (String, Option<i64>) = db
                .prepare_cached(
                    "SELECT id, dedup_until FROM inbound_events WHERE source_id = ?1 AND dedup_key = ?2",
                )?
                .query_row(params![r.source_id, key], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            if until.is_some_and(|u| u > now) {
                bump(&first)?;
                out.push(Stored::Duplicate(first));
                continue;
            }
            // Its window has ended: this copy starts a new one.
            db.prepare_cached("UPDATE inbound_events SET dedup_key = NULL WHERE id = ?1")?
                .execute(params![first])?;
            row_values(&mut insert, n)?;
        }
        if let Some(k) = key {
            in_batch.insert((r.source_id.as_str(), k), r.id.as_str());
        }
        out.push(Stored::Created);
    }
    Ok(out)
}

fn row_values(stmt: &mut rusqlite::Statement<'_>, n: &NewInbound) -> rusqlite::Result<usize> {
    let r = &n.row;
    stmt.execute(params![
        r.id,
        r.tenant_id,
        r.source_id,
        r.source_name,
        r.status,
        r.dedup_key,
        r.method,
        r.path,
        r.query,
        r.headers,
        r.body,
        r.client_ip,
        r.received_at,
        r.event_type,
        r.result,
        r.routing,
        r.error,
        r.duplicates,
        r.updated_at,
        n.dedup_until,
    ])
}

fn insert_events(
    db: &Connection,
    events: &[NewEvent],
    suppressed: &[Option<&str>],
) -> Result<Vec<Stored>, StoreError> {
    let mut out = Vec::with_capacity(events.len());
    if events.is_empty() {
        return Ok(out);
    }
    let mut event = db.prepare_cached(
        "INSERT INTO events (id, tenant_id, event_type, payload, dedup_key, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut delivery = db.prepare_cached(
        "INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, status, attempts, next_attempt_at, lease_until, priority, last_error, created_at, updated_at, ordered, order_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, NULL, ?9, ?9, ?10, ?11)",
    )?;
    let mut in_batch: HashMap<(&str, &str), &str> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(Some(first)) = suppressed.get(i) {
            out.push(Stored::Duplicate((*first).to_owned()));
            continue;
        }
        if let Some(key) = &e.dedup_key {
            let first = match in_batch.get(&(e.tenant_id.as_str(), key.as_str())) {
                Some(first) => Some((*first).to_owned()),
                None => db
                    .prepare_cached(
                        "SELECT id FROM events WHERE tenant_id = ?1 AND dedup_key = ?2",
                    )?
                    .query_row(params![e.tenant_id, key], |row| row.get::<_, String>(0))
                    .optional()?,
            };
            if let Some(first) = first {
                out.push(Stored::Duplicate(first));
                continue;
            }
            in_batch.insert((e.tenant_id.as_str(), key.as_str()), e.id.as_str());
        }
        event.execute(params![
            e.id,
            e.tenant_id,
            e.event_type,
            e.payload,
            e.dedup_key,
            e.created_at
        ])?;
        for d in &e.deliveries {
            delivery.execute(params![
                d.id,
                e.id,
                d.endpoint_id,
                e.tenant_id,
                if d.leased_until.is_some() {
                    "leased"
                } else {
                    "pending"
                },
                e.deliver_at,
                d.leased_until,
                e.priority,
                e.created_at,
                d.ordered,
                d.order_key,
            ])?;
        }
        out.push(Stored::Created);
    }
    Ok(out)
}

fn complete(db: &Connection, done: &[Completion], now: i64) -> Result<(), StoreError> {
    if done.is_empty() {
        return Ok(());
    }
    let mut attempt = db.prepare_cached(
        "INSERT INTO attempts (id, delivery_id, attempt, started_at, duration_ms, status_code, request_headers, response_headers, response_body, error_class, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for c in done {
        let a = &c.attempt;
        attempt.execute(params![
            a.id,
            a.delivery_id,
            a.attempt,
            a.started_at,
            a.duration_ms,
            a.status_code,
            a.request_headers,
            a.response_headers,
            a.response_body,
            a.error_class,
            a.error,
        ])?;
        if c.status == "succeeded" {
            db.prepare_cached(
                "UPDATE deliveries SET status = 'succeeded', attempts = attempts + 1, lease_until = NULL, last_error = NULL, updated_at = ?1 WHERE id = ?2",
            )?
            .execute(params![now, a.delivery_id])?;
        } else {
            db.prepare_cached(
                "UPDATE deliveries SET status = ?1, attempts = ?2, next_attempt_at = ?3, lease_until = NULL, last_error = ?4, updated_at = ?5 WHERE id = ?6",
            )?
            .execute(params![
                c.status,
                a.attempt,
                c.next_attempt_at,
                c.last_error,
                now,
                a.delivery_id
            ])?;
        }
    }
    Ok(())
}
