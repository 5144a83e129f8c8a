//! PostgreSQL's group commit: events with their deliveries, inbound events (duplicates
//! dropped) and attempt outcomes in one transaction, as multi-row statements of a few fixed
//! shapes. Several such transactions run at once (`delivery::writer`). SQLite's counterpart is
//! `sqlite_direct`.

use super::sql::shaped_chunks;
use super::{Completion, NewDelivery, NewEvent, NewInbound, PgStore, StoreError, Stored, Written};

impl PgStore {
    /// `suppressed[i]` names the inbound event whose duplicate made event `i`: not stored.
    async fn insert_events_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        events: &[NewEvent],
        suppressed: &[Option<String>],
    ) -> Result<Vec<Stored>, StoreError> {
        use sqlx::Row as _;
        let mut out = Vec::with_capacity(events.len());
        let mut fresh: Vec<&NewEvent> = Vec::with_capacity(events.len());
        let mut in_batch: std::collections::HashMap<(&str, &str), &str> =
            std::collections::HashMap::new();
        for (i, e) in events.iter().enumerate() {
            if let Some(Some(first)) = suppressed.get(i) {
                out.push(Stored::Duplicate(first.clone()));
                continue;
            }
            if let Some(key) = &e.dedup_key {
                if let Some(id) = in_batch.get(&(e.tenant_id.as_str(), key.as_str())) {
                    out.push(Stored::Duplicate((*id).to_owned()));
                    continue;
                }
                let existing =
                    sqlx::query("SELECT id FROM events WHERE tenant_id = $1 AND dedup_key = $2")
                        .bind(&e.tenant_id)
                        .bind(key)
                        .fetch_optional(&mut **tx)
                        .await?;
                if let Some(row) = existing {
                    out.push(Stored::Duplicate(row.try_get("id")?));
                    continue;
                }
                in_batch.insert((e.tenant_id.as_str(), key.as_str()), e.id.as_str());
            }
            fresh.push(e);
            out.push(Stored::Created);
        }
        // Multi-row inserts: one statement per 500 rows instead of one per row.
        for chunk in shaped_chunks(&fresh) {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO events (id, tenant_id, event_type, payload, dedup_key, created_at) ",
            );
            q.push_values(chunk, |mut row, e| {
                row.push_bind(&e.id)
                    .push_bind(&e.tenant_id)
                    .push_bind(&e.event_type)
                    .push_bind(&e.payload)
                    .push_bind(&e.dedup_key)
                    .push_bind(e.created_at);
            });
            q.build().execute(&mut **tx).await?;
        }
        let deliveries: Vec<(&NewEvent, &NewDelivery)> = fresh
            .iter()
            .flat_map(|e| e.deliveries.iter().map(move |d| (*e, d)))
            .collect();
        for chunk in shaped_chunks(&deliveries) {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, status, attempts, next_attempt_at, lease_until, priority, last_error, created_at, updated_at, ordered, order_key) ",
            );
            q.push_values(chunk, |mut row, (e, d)| {
                row.push_bind(&d.id)
                    .push_bind(&e.id)
                    .push_bind(&d.endpoint_id)
                    .push_bind(&e.tenant_id)
                    .push_bind(if d.leased_until.is_some() {
                        "leased"
                    } else {
                        "pending"
                    })
                    .push_bind(0i64)
                    .push_bind(e.deliver_at)
                    .push_bind(d.leased_until)
                    .push_bind(e.priority)
                    .push_bind(None::<String>)
                    .push_bind(e.created_at)
                    .push_bind(e.created_at)
                    .push_bind(d.ordered)
                    .push_bind(&d.order_key);
            });
            q.build().execute(&mut **tx).await?;
        }
        Ok(out)
    }

    /// Stores inbound events, dropping those whose key is still in its window (the first
    /// copy's duplicate count goes up instead).
    async fn inbound_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        inbound: &[NewInbound],
        now: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        use sqlx::Row as _;
        const INSERT_INBOUND: &str = "INSERT INTO inbound_events (id, tenant_id, source_id, source_name, status, dedup_key, method, path, query, headers, body, client_ip, received_at, event_type, result, routing, error, duplicates, updated_at, dedup_until) ";
        const KEY_TAKEN: &str = " ON CONFLICT (source_id, dedup_key) DO NOTHING";
        fn values<'a, 'q>(
            mut row: sqlx::query_builder::Separated<'_, 'q, sqlx::Postgres, &'static str>,
            n: &'a NewInbound,
        ) where
            'a: 'q,
        {
            let r = &n.row;
            row.push_bind(&r.id)
                .push_bind(&r.tenant_id)
                .push_bind(&r.source_id)
                .push_bind(&r.source_name)
                .push_bind(&r.status)
                .push_bind(&r.dedup_key)
                .push_bind(&r.method)
                .push_bind(&r.path)
                .push_bind(&r.query)
                .push_bind(&r.headers)
                .push_bind(&r.body)
                .push_bind(&r.client_ip)
                .push_bind(r.received_at)
                .push_bind(&r.event_type)
                .push_bind(&r.result)
                .push_bind(&r.routing)
                .push_bind(&r.error)
                .push_bind(r.duplicates)
                .push_bind(r.updated_at)
                .push_bind(n.dedup_until);
        }
        let mut out: Vec<Option<Stored>> = vec![None; inbound.len()];
        let mut bumps: Vec<String> = Vec::new();
        let mut candidates: Vec<(usize, &NewInbound)> = Vec::with_capacity(inbound.len());
        let mut in_batch: std::collections::HashMap<(&str, &str), &str> =
            std::collections::HashMap::new();
        for (i, n) in inbound.iter().enumerate() {
            let r = &n.row;
            if let Some(read) = n.replaces {
                let changed = sqlx::query("UPDATE inbound_events SET status = $1, event_type = $2, result = $3, routing = $4, error = $5, updated_at = $6 WHERE id = $7 AND updated_at = $8")
                    .bind(&r.status)
                    .bind(&r.event_type)
                    .bind(&r.result)
                    .bind(&r.routing)
                    .bind(&r.error)
                    .bind(r.updated_at)
                    .bind(&r.id)
                    .bind(read)
                    .execute(&mut **tx)
                    .await?;
                out[i] = Some(if changed.rows_affected() == 1 {
                    Stored::Created
                } else {
                    Stored::Duplicate(r.id.clone())
                });
                continue;
            }
            if let Some(key) = &r.dedup_key {
                if let Some(first) = in_batch.get(&(r.source_id.as_str(), key.as_str())) {
                    bumps.push((*first).to_owned());
                    out[i] = Some(Stored::Duplicate((*first).to_owned()));
                    continue;
                }
                in_batch.insert((r.source_id.as_str(), key.as_str()), r.id.as_str());
            }
            candidates.push((i, n));
        }
        // Every row at once; those whose key is taken are not inserted, and only the
        // inserted come back.
        let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::new();
        for chunk in shaped_chunks(&candidates) {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(INSERT_INBOUND);
            q.push_values(chunk, |row, (_, n)| values(row, n));
            q.push(KEY_TAKEN);
            q.push(" RETURNING id");
            for row in q.build().fetch_all(&mut **tx).await? {
                inserted.insert(row.try_get("id")?);
            }
        }
        for (i, n) in candidates {
            let r = &n.row;
            if inserted.contains(&r.id) {
                out[i] = Some(Stored::Created);
                continue;
            }
            let holder = sqlx::query("SELECT id, dedup_until FROM inbound_events WHERE source_id = $1 AND dedup_key = $2")
                .bind(&r.source_id)
                .bind(&r.dedup_key)
                .fetch_one(&mut **tx)
                .await?;
            let first: String = holder.try_get("id")?;
            let until: Option<i64> = holder.try_get("dedup_until")?;
            if until.is_some_and(|u| u > now) {
                bumps.push(first.clone());
                out[i] = Some(Stored::Duplicate(first));
                continue;
            }
            // The old copy's window has ended: this one starts a new window.
            sqlx::query("UPDATE inbound_events SET dedup_key = NULL WHERE id = $1")
                .bind(&first)
                .execute(&mut **tx)
                .await?;
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(INSERT_INBOUND);
            q.push_values([n], values);
            q.build().execute(&mut **tx).await?;
            out[i] = Some(Stored::Created);
        }
        for id in bumps {
            sqlx::query("UPDATE inbound_events SET duplicates = duplicates + 1 WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(out
            .into_iter()
            .map(|s| s.unwrap_or(Stored::Created))
            .collect())
    }

    /// The group commit, statement by statement through sqlx; several run at once.
    pub(super) async fn write_batch_backend(
        &self,
        events: &[NewEvent],
        inbound: &[NewInbound],
        done: &[Completion],
        now: i64,
    ) -> Result<Written, StoreError> {
        let mut tx = self.writer.begin().await?;
        let inbound_stored = Self::inbound_in(&mut tx, inbound, now).await?;
        let mut suppressed: Vec<Option<String>> = Vec::new();
        for (n, s) in inbound.iter().zip(&inbound_stored) {
            if let Stored::Duplicate(first) = s {
                suppressed.resize(events.len(), None);
                for slot in suppressed.get_mut(n.events.clone()).into_iter().flatten() {
                    *slot = Some(first.clone());
                }
            }
        }
        let stored = Self::insert_events_in(&mut tx, events, &suppressed).await?;
        Self::complete_in(&mut tx, done, now).await?;
        tx.commit().await?;
        Ok(Written {
            events: stored,
            inbound: inbound_stored,
        })
    }

    async fn complete_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        done: &[Completion],
        now: i64,
    ) -> Result<(), StoreError> {
        for chunk in shaped_chunks(done) {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO attempts (id, delivery_id, attempt, started_at, duration_ms, status_code, request_headers, response_headers, response_body, error_class, error) ",
            );
            q.push_values(chunk, |mut row, c| {
                let a = &c.attempt;
                row.push_bind(&a.id)
                    .push_bind(&a.delivery_id)
                    .push_bind(a.attempt)
                    .push_bind(a.started_at)
                    .push_bind(a.duration_ms)
                    .push_bind(a.status_code)
                    .push_bind(&a.request_headers)
                    .push_bind(&a.response_headers)
                    .push_bind(&a.response_body)
                    .push_bind(&a.error_class)
                    .push_bind(&a.error);
            });
            q.build().execute(&mut **tx).await?;
        }
        // Successes all change the same way: one statement per 500 of them.
        let (ok, other): (Vec<&Completion>, Vec<&Completion>) =
            done.iter().partition(|c| c.status == "succeeded");
        for chunk in shaped_chunks(&ok) {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("UPDATE deliveries SET status = 'succeeded', attempts = attempts + 1, lease_until = NULL, last_error = NULL, updated_at = ");
            q.push_bind(now);
            q.push(" WHERE id IN (");
            let mut ids = q.separated(", ");
            for c in chunk {
                ids.push_bind(&c.attempt.delivery_id);
            }
            q.push(")");
            q.build().execute(&mut **tx).await?;
        }
        for c in other {
            let a = &c.attempt;
            sqlx::query("UPDATE deliveries SET status = $1, attempts = $2, next_attempt_at = $3, lease_until = NULL, last_error = $4, updated_at = $5 WHERE id = $6")
                .bind(c.status)
                .bind(a.attempt)
                .bind(c.next_attempt_at)
                .bind(&c.last_error)
                .bind(now)
                .bind(&a.delivery_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}
