//! The SQL shared by both backends, instantiated per backend by [`sql_store!`].
//!
//! Placeholders are `$1, $2, …` and must first appear in increasing order: PostgreSQL reads
//! them as positions, SQLite as named parameters numbered by first appearance. Listings with
//! optional filters are written by [`Filtered`], with only the conditions that apply.

/// Implements [`Store`](super::Store) for a struct with a `pool` field of the backend's pool.
macro_rules! sql_store {
    ($store:ident, $backend:literal, $begin:expr, $claim:expr) => {
        impl $store {
            /// The statement with its values bound.
            fn filtered<'q>(
                f: &'q Filtered<'q>,
            ) -> sqlx::query::Query<'q, <Self as DbTypes>::Db, <<Self as DbTypes>::Db as sqlx::Database>::Arguments<'q>> {
                f.args.iter().fold(sqlx::query(&f.sql), |q, arg| match arg {
                    Arg::Text(s) => q.bind(*s),
                    Arg::Owned(s) => q.bind(s.as_str()),
                    Arg::Int(n) => q.bind(*n),
                })
            }

            fn inbound(row: &<Self as DbTypes>::Row) -> Result<InboundRow, StoreError> {
                use sqlx::Row as _;
                Ok(InboundRow {
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    source_id: row.try_get("source_id")?,
                    source_name: row.try_get("source_name")?,
                    status: row.try_get("status")?,
                    dedup_key: row.try_get("dedup_key")?,
                    method: row.try_get("method")?,
                    path: row.try_get("path")?,
                    query: row.try_get("query")?,
                    headers: row.try_get("headers")?,
                    body: row.try_get("body")?,
                    client_ip: row.try_get("client_ip")?,
                    received_at: row.try_get("received_at")?,
                    event_type: row.try_get("event_type")?,
                    result: row.try_get("result")?,
                    routing: row.try_get("routing")?,
                    error: row.try_get("error")?,
                    duplicates: row.try_get("duplicates")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            /// `head`, then the ids as one bound list, then `)`.
            fn id_list<'a>(head: &str, ids: &'a [String]) -> sqlx::QueryBuilder<'a, <Self as DbTypes>::Db> {
                let mut q = sqlx::QueryBuilder::new(head);
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(id);
                }
                q.push(")");
                q
            }

            /// The `id` column of each row.
            fn ids(rows: &[<Self as DbTypes>::Row]) -> Result<Vec<String>, StoreError> {
                use sqlx::Row as _;
                rows.iter()
                    .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
                    .collect()
            }

            fn delivery(row: &<Self as DbTypes>::Row) -> Result<DeliveryRow, StoreError> {
                use sqlx::Row as _;
                Ok(DeliveryRow {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    endpoint_id: row.try_get("endpoint_id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    status: row.try_get("status")?,
                    attempts: row.try_get("attempts")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn event(row: &<Self as DbTypes>::Row) -> Result<EventRow, StoreError> {
                use sqlx::Row as _;
                Ok(EventRow {
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    event_type: row.try_get("event_type")?,
                    payload: row.try_get("payload")?,
                    created_at: row.try_get("created_at")?,
                })
            }

            fn attempt(row: &<Self as DbTypes>::Row) -> Result<AttemptRow, StoreError> {
                use sqlx::Row as _;
                Ok(AttemptRow {
                    id: row.try_get("id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    attempt: row.try_get("attempt")?,
                    started_at: row.try_get("started_at")?,
                    duration_ms: row.try_get("duration_ms")?,
                    status_code: row.try_get("status_code")?,
                    request_headers: row.try_get("request_headers")?,
                    response_headers: row.try_get("response_headers")?,
                    response_body: row.try_get("response_body")?,
                    error_class: row.try_get("error_class")?,
                    error: row.try_get("error")?,
                })
            }

            fn resource(row: &<Self as DbTypes>::Row) -> Result<Resource, StoreError> {
                use sqlx::Row as _;
                let kind: String = row.try_get("kind")?;
                let body: String = row.try_get("body")?;
                Ok(Resource {
                    kind: parse_kind(&kind)?,
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    unique_key: row.try_get("unique_key")?,
                    body: serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    secrets: row.try_get("secrets")?,
                    version: row.try_get("version")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn audit_entry(row: &<Self as DbTypes>::Row) -> Result<AuditEntry, StoreError> {
                use sqlx::Row as _;
                let diff: String = row.try_get("diff")?;
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    resource_type: row.try_get("resource_type")?,
                    resource_id: row.try_get("resource_id")?,
                    diff: serde_json::from_str(&diff).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    at: row.try_get("at")?,
                })
            }

            async fn write_audit<'c>(
                tx: &mut sqlx::Transaction<'c, <Self as DbTypes>::Db>,
                a: &AuditEntry,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO audit_log (id, tenant_id, actor, action, resource_type, resource_id, diff, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&a.id)
                .bind(&a.tenant_id)
                .bind(&a.actor)
                .bind(&a.action)
                .bind(&a.resource_type)
                .bind(&a.resource_id)
                .bind(a.diff.to_string())
                .bind(a.at)
                .execute(&mut **tx)
                .await?;
                // Every change is audited, so this is where other replicas hear of it.
                if let Some(notify) = Self::CHANGE_NOTIFY {
                    sqlx::query(notify).bind(&a.resource_type).execute(&mut **tx).await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
                self.listen_changes().await
            }

            async fn exclusive(&self, name: &str) -> Result<Option<Exclusive>, StoreError> {
                self.take_exclusive(name).await
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                Self::MIGRATOR.run(&self.writer).await?;
                Ok(())
            }

            async fn ready(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT COUNT(*) FROM resources WHERE kind = $1")
                    .bind("readiness")
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            fn pool_stats(&self) -> (u32, u32) {
                let idle = self.pool.num_idle() as u32;
                (self.pool.size().saturating_sub(idle), idle)
            }

            async fn insert(&self, r: &Resource, audit: &AuditEntry) -> Result<(), StoreError> {
                let mut tx = self.writer.begin_with($begin).await?;
                sqlx::query(
                    "INSERT INTO resources (kind, id, tenant_id, unique_key, body, secrets, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(r.kind.as_str())
                .bind(&r.id)
                .bind(&r.tenant_id)
                .bind(&r.unique_key)
                .bind(r.body.to_string())
                .bind(&r.secrets)
                .bind(r.version)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(&mut *tx)
                .await?;
                Self::write_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get(&self, kind: Kind, id: &str) -> Result<Option<Resource>, StoreError> {
                let row = sqlx::query("SELECT * FROM resources WHERE kind = $1 AND id = $2")
                    .bind(kind.as_str())
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::resource).transpose()
            }

            async fn get_by_key(&self, kind: Kind, key: &str) -> Result<Option<Resource>, StoreError> {
                let row = sqlx::query("SELECT * FROM resources WHERE kind = $1 AND unique_key = $2")
                    .bind(kind.as_str())
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::resource).transpose()
            }

            async fn list(&self, q: &ListQuery) -> Result<Vec<Resource>, StoreError> {
                let f = Filtered::new("SELECT * FROM resources")
                    .and("kind = ?", Some(q.kind.as_str()))
                    .and("tenant_id = ?", q.tenant_id.as_deref())
                    .and("id > ?", q.after.as_deref())
                    .page(q.limit);
                let rows = Self::filtered(&f).fetch_all(&self.pool).await?;
                rows.iter().map(Self::resource).collect()
            }

            async fn list_all(&self, kind: Kind) -> Result<Vec<Resource>, StoreError> {
                let rows = sqlx::query("SELECT * FROM resources WHERE kind = $1 ORDER BY id")
                    .bind(kind.as_str())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::resource).collect()
            }

            async fn update(&self, r: &Resource, expected_version: i64, audit: Option<&AuditEntry>) -> Result<(), StoreError> {
                let mut tx = self.writer.begin_with($begin).await?;
                let done = sqlx::query(
                    "UPDATE resources SET unique_key = $1, body = $2, secrets = $3, version = $4, updated_at = $5 \
                     WHERE kind = $6 AND id = $7 AND version = $8",
                )
                .bind(&r.unique_key)
                .bind(r.body.to_string())
                .bind(&r.secrets)
                .bind(r.version)
                .bind(r.updated_at)
                .bind(r.kind.as_str())
                .bind(&r.id)
                .bind(expected_version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    let exists = sqlx::query("SELECT version FROM resources WHERE kind = $1 AND id = $2")
                        .bind(r.kind.as_str())
                        .bind(&r.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Err(if exists.is_some() { StoreError::VersionConflict } else { StoreError::NotFound });
                }
                if let Some(audit) = audit {
                    Self::write_audit(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn delete(&self, kind: Kind, id: &str, expected_version: Option<i64>, audit: Option<&AuditEntry>) -> Result<(), StoreError> {
                let mut tx = self.writer.begin_with($begin).await?;
                let done = sqlx::query(
                    "DELETE FROM resources WHERE kind = $1 AND id = $2 AND (CAST($3 AS BIGINT) IS NULL OR version = $3)",
                )
                .bind(kind.as_str())
                .bind(id)
                .bind(expected_version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    let exists = sqlx::query("SELECT version FROM resources WHERE kind = $1 AND id = $2")
                        .bind(kind.as_str())
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Err(if exists.is_some() { StoreError::VersionConflict } else { StoreError::NotFound });
                }
                if let Some(audit) = audit {
                    Self::write_audit(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn count(&self, kind: Kind, tenant_id: &str) -> Result<i64, StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT COUNT(*) AS n FROM resources WHERE kind = $1 AND tenant_id = $2")
                    .bind(kind.as_str())
                    .bind(tenant_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get::<i64, _>("n")?)
            }

            async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
                let f = Filtered::new("SELECT * FROM audit_log")
                    .and("tenant_id = ?", q.tenant_id.as_deref())
                    .and("resource_type = ?", q.resource_type.as_deref())
                    .and("resource_id = ?", q.resource_id.as_deref())
                    .and("actor = ?", q.actor.as_deref())
                    .and("at >= ?", q.since)
                    .and("at < ?", q.until)
                    .and("id > ?", q.after.as_deref())
                    .page(q.limit);
                let rows = Self::filtered(&f).fetch_all(&self.pool).await?;
                rows.iter().map(Self::audit_entry).collect()
            }

            async fn idempotency_reserve(&self, key: &str, fingerprint: &str, now: i64) -> Result<Reservation, StoreError> {
                use sqlx::Row as _;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency (key, fingerprint, status, created_at) VALUES ($1, $2, 0, $3) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(fingerprint)
                .bind(now)
                .execute(&self.writer)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(Reservation::Reserved);
                }
                let row = sqlx::query("SELECT fingerprint, status, content_type, body FROM idempotency WHERE key = $1")
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(Reservation::Existing(IdempotentResponse {
                    fingerprint: row.try_get("fingerprint")?,
                    status: row.try_get("status")?,
                    content_type: row.try_get("content_type")?,
                    body: row.try_get("body")?,
                }))
            }

            async fn idempotency_complete(&self, key: &str, status: i64, content_type: Option<&str>, body: &[u8]) -> Result<(), StoreError> {
                sqlx::query("UPDATE idempotency SET status = $1, content_type = $2, body = $3 WHERE key = $4")
                    .bind(status)
                    .bind(content_type)
                    .bind(body)
                    .bind(key)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn idempotency_release(&self, key: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM idempotency WHERE key = $1").bind(key).execute(&self.writer).await?;
                Ok(())
            }

            async fn write_batch(&self, events: &[NewEvent], inbound: &[NewInbound], done: &[Completion], now: i64) -> Result<Written, StoreError> {
                self.write_batch_backend(events, inbound, done, now).await
            }


            async fn list_inbound(&self, q: &InboundQuery) -> Result<Vec<InboundRow>, StoreError> {
                let f = inbound_listing(q, $backend);
                let rows = Self::filtered(&f).fetch_all(&self.pool).await?;
                rows.iter().map(Self::inbound).collect()
            }

            async fn get_inbound(&self, id: &str) -> Result<Option<InboundRow>, StoreError> {
                let row = sqlx::query("SELECT * FROM inbound_events WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::inbound).transpose()
            }

            async fn delete_inbound(&self, id: &str, status: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM inbound_events WHERE id = $1 AND status = $2").bind(id).bind(status).execute(&self.writer).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn claim_deliveries(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
                self.claim_backend($claim, now, lease_until, limit).await
            }

            async fn release_leases(&self, now: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_until = NULL, updated_at = $1 WHERE status = 'leased'")
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn defer_deliveries(&self, deferred: &[(String, i64)], now: i64) -> Result<(), StoreError> {
                let mut tx = self.writer.begin_with($begin).await?;
                for (id, at) in deferred {
                    sqlx::query("UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_until = NULL, updated_at = $2 WHERE id = $3")
                        .bind(at)
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn find_deliveries(&self, f: &ReplayFilter, after: Option<&str>, limit: i64) -> Result<Vec<String>, StoreError> {
                let f = replay_listing(f, after, limit);
                let rows = Self::filtered(&f).fetch_all(&self.pool).await?;
                Self::ids(&rows)
            }

            async fn requeue_deliveries(&self, ids: &[String], now: i64, changed_before: i64) -> Result<u64, StoreError> {
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut requeued = 0;
                for chunk in shaped_chunks(ids) {
                    let mut q = sqlx::QueryBuilder::<<Self as DbTypes>::Db>::new("UPDATE deliveries SET status = 'pending', next_attempt_at = ");
                    q.push_bind(now);
                    q.push(", updated_at = ");
                    q.push_bind(now);
                    q.push(" WHERE status <> 'leased' AND updated_at < ");
                    q.push_bind(changed_before);
                    q.push(" AND id IN (");
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(id);
                    }
                    q.push(")");
                    requeued += q.build().execute(&self.writer).await?.rows_affected();
                }
                Ok(requeued)
            }

            async fn events_by_id(&self, ids: &[String]) -> Result<Vec<EventRow>, StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut out = Vec::with_capacity(ids.len());
                for chunk in shaped_chunks(ids) {
                    for row in Self::id_list("SELECT * FROM events WHERE id IN (", chunk)
                        .build().fetch_all(&self.pool).await? {
                        out.push(Self::event(&row)?);
                    }
                }
                Ok(out)
            }

            async fn set_circuit(&self, endpoint_id: &str, open_until: Option<i64>, now: i64) -> Result<(), StoreError> {
                match open_until {
                    Some(until) => sqlx::query(
                        "INSERT INTO endpoint_circuits (endpoint_id, open_until, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (endpoint_id) DO UPDATE SET open_until = excluded.open_until, updated_at = excluded.updated_at",
                    )
                    .bind(endpoint_id)
                    .bind(until)
                    .bind(now)
                    .execute(&self.writer)
                    .await?,
                    None => sqlx::query("DELETE FROM endpoint_circuits WHERE endpoint_id = $1")
                        .bind(endpoint_id)
                        .execute(&self.writer)
                        .await?,
                };
                Ok(())
            }

            async fn open_circuits(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query("SELECT endpoint_id, open_until FROM endpoint_circuits WHERE open_until > $1")
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("endpoint_id")?, r.try_get("open_until")?)))
                    .collect()
            }

            async fn retry_delivery(&self, id: &str, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_until = NULL, updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_events(&self, tenant_id: Option<&str>, after: Option<&str>, limit: i64) -> Result<Vec<EventRow>, StoreError> {
                let f = Filtered::new("SELECT * FROM events")
                    .and("tenant_id = ?", tenant_id)
                    .and("id > ?", after)
                    .page(limit);
                let rows = Self::filtered(&f).fetch_all(&self.pool).await?;
                rows.iter().map(Self::event).collect()
            }

            async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRow>, StoreError> {
                let f = Filtered::new("SELECT * FROM deliveries")
                    .and("tenant_id = ?", q.tenant_id.as_deref())
                    .and("endpoint_id = ?", q.endpoint_id.as_deref())
                    .and("event_id = ?", q.event_id.as_deref())
                    .and("status = ?", q.status.as_deref())
                    .and("id > ?", q.after.as_deref())
                    .page(q.limit);
                let rows = Self::filtered(&f).fetch_all(&self.pool).await?;
                rows.iter().map(Self::delivery).collect()
            }

            async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
                let row = sqlx::query("SELECT * FROM deliveries WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::delivery).transpose()
            }

            async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
                let rows = sqlx::query("SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY attempt").bind(delivery_id).fetch_all(&self.pool).await?;
                rows.iter().map(Self::attempt).collect()
            }

            async fn idempotency_purge(&self, before: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn aged_events(&self, after: &str, before: &str, limit: i64) -> Result<Vec<String>, StoreError> {
                // Read, oldest first through the id's own index: the writing connection is taken
                // only when there is something to delete.
                let rows = sqlx::query(
                    "SELECT e.id FROM events e WHERE e.id > $1 AND e.id < $2 \
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN ('pending', 'leased')) \
                     ORDER BY e.id LIMIT $3",
                )
                .bind(after)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Self::ids(&rows)
            }

            async fn purge_events(&self, ids: &[String]) -> Result<u64, StoreError> {
                let mut tx = self.writer.begin_with($begin).await?;
                let mut deleted = 0;
                for chunk in shaped_chunks(ids) {
                    // Finished deliveries go with their attempts; an event goes once it has no
                    // delivery left. Each statement checks again: a replay may have reopened
                    // a delivery since the read.
                    let mut attempts = Self::id_list(
                        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE status NOT IN ('pending', 'leased') AND event_id IN (",
                        chunk,
                    );
                    attempts.push(")");
                    attempts.build().execute(&mut *tx).await?;
                    Self::id_list("DELETE FROM deliveries WHERE status NOT IN ('pending', 'leased') AND event_id IN (", chunk)
                        .build()
                        .execute(&mut *tx)
                        .await?;
                    deleted += Self::id_list(
                        "DELETE FROM events WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id) AND id IN (",
                        chunk,
                    )
                    .build()
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(deleted)
            }

            async fn aged_inbound(&self, after: &str, before: &str, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id FROM inbound_events WHERE id > $1 AND id < $2 \
                     AND (dedup_until IS NULL OR dedup_until <= $3) ORDER BY id LIMIT $4",
                )
                .bind(after)
                .bind(before)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Self::ids(&rows)
            }

            async fn purge_inbound(&self, ids: &[String], now: i64) -> Result<u64, StoreError> {
                let mut tx = self.writer.begin_with($begin).await?;
                let mut deleted = 0;
                for chunk in shaped_chunks(ids) {
                    let mut q = Self::id_list("DELETE FROM inbound_events WHERE id IN (", chunk);
                    q.push(" AND (dedup_until IS NULL OR dedup_until <= ");
                    q.push_bind(now);
                    q.push(")");
                    deleted += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(deleted)
            }
        }
    };
}

pub(super) use sql_store;

/// Rows per multi-row statement at most.
const CHUNK: usize = 256;

/// Splits a batch into chunks of [`CHUNK`] rows, then powers of two: multi-row statements come
/// in at most eight shapes, so the prepared-statement cache holds a few small programs instead
/// of one large program per batch size seen (which held 30 MB on SQLite under load).
pub(super) fn shaped_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let n = if items.len() >= CHUNK {
            CHUNK
        } else {
            // The largest power of two that fits.
            1 << (usize::BITS - 1 - items.len().leading_zeros())
        };
        let (chunk, rest) = items.split_at(n);
        items = rest;
        Some(chunk)
    })
}

/// The claim statement: lease up to `$3` due deliveries until `$1` (now is `$2`), `$lock`
/// appended to each row source (`FOR UPDATE SKIP LOCKED` where replicas compete).
///
/// One index range per priority, each already in `next_attempt_at` order, instead of one
/// `ORDER BY priority, next_attempt_at` over every due row: that sort read the whole backlog on
/// every claim. A FIFO delivery is due only once nothing earlier to its endpoint is open.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE deliveries SET status = 'leased', lease_until = $1, updated_at = $2 WHERE id IN (",
            "SELECT id FROM (SELECT d.id FROM deliveries d WHERE d.status = 'pending' AND d.priority = 1 AND d.next_attempt_at <= $2 AND ",
            crate::store::sql::fifo_ready!(),
            " ORDER BY d.next_attempt_at LIMIT $3",
            $lock,
            ") high UNION ALL SELECT id FROM (SELECT d.id FROM deliveries d WHERE d.status = 'leased' AND d.lease_until < $2 LIMIT $3",
            $lock,
            ") expired UNION ALL SELECT id FROM (SELECT d.id FROM deliveries d WHERE d.status = 'pending' AND d.priority = 0 AND d.next_attempt_at <= $2 AND ",
            crate::store::sql::fifo_ready!(),
            " ORDER BY d.next_attempt_at LIMIT $3",
            $lock,
            ") normal LIMIT $3) RETURNING *"
        )
    };
}

macro_rules! fifo_ready {
    () => {
        "(NOT d.ordered OR NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id AND p.id < d.id AND p.ordered AND p.status IN ('pending', 'leased') AND (d.order_key IS NULL OR p.order_key IS NULL OR p.order_key = d.order_key)))"
    };
}

pub(super) use claim_sql;
pub(super) use fifo_ready;

/// A listing's statement with only the conditions that apply, and its values.
///
/// A condition left in the text as `($n IS NULL OR column = $n)` costs every page a scan:
/// SQLite plans a statement before it sees the values, and such a disjunction can use no index
/// (neither the filter's nor the cursor's range on the primary key), so each page of a listing
/// or of a bulk job read the table from its first row.
pub(super) struct Filtered<'a> {
    pub(super) sql: String,
    pub(super) args: Vec<Arg<'a>>,
    /// The text has a `WHERE` (the head's own, or the first condition's).
    filtered: bool,
}

/// A value to bind.
pub(super) enum Arg<'a> {
    Text(&'a str),
    Owned(String),
    Int(i64),
}

impl From<String> for Arg<'_> {
    fn from(s: String) -> Self {
        Arg::Owned(s)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Text(s)
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

impl<'a> Filtered<'a> {
    /// `head`: the `SELECT … FROM …`, with a `WHERE` of its own or none.
    pub(super) fn new(head: &str) -> Filtered<'a> {
        Filtered {
            sql: head.to_owned(),
            args: Vec::new(),
            filtered: head.contains(" WHERE "),
        }
    }

    /// Adds `condition` (its one `?` is the value's placeholder) when there is a value.
    pub(super) fn and(
        mut self,
        condition: &str,
        value: Option<impl Into<Arg<'a>>>,
    ) -> Filtered<'a> {
        let Some(value) = value else { return self };
        let joint = if self.filtered { " AND " } else { " WHERE " };
        self.filtered = true;
        let (before, after) = condition.split_once('?').unwrap_or((condition, ""));
        self.args.push(value.into());
        self.sql.push_str(joint);
        self.sql.push_str(before);
        self.sql.push_str(&format!("${}", self.args.len()));
        self.sql.push_str(after);
        self
    }

    /// Oldest first, at most `limit`.
    pub(super) fn page(self, limit: i64) -> Filtered<'a> {
        let mut f = self;
        f.args.push(Arg::Int(limit));
        f.sql
            .push_str(&format!(" ORDER BY id LIMIT ${}", f.args.len()));
        f
    }
}

/// The inbound listing on `backend`: ids begin with their receive time, read just after
/// `received_at`, so bounds on the id (a second wider, for a clock step between the two reads)
/// let a time range start and end on the primary key.
pub(super) fn inbound_listing<'a>(q: &'a super::InboundQuery, backend: &str) -> Filtered<'a> {
    let f = &q.filter;
    let floor = f
        .since
        .map(|ms| crate::ids::floor_id("inb", ms.saturating_sub(1000)));
    let after = q.after.clone().max(floor);
    let before = f
        .until
        .map(|ms| crate::ids::floor_id("inb", ms.saturating_add(1000)));
    Filtered::new("SELECT * FROM inbound_events")
        .and("tenant_id = ?", f.tenant_id.as_deref())
        // SQLite would read a source's webhooks through the duplicate-key index (source_id,
        // dedup_key), all of them, and sort them for every page. The unary plus keeps that
        // index out, and the page is read from the primary key at the cursor, already in order.
        .and(
            if backend == "sqlite" {
                "+source_id = ?"
            } else {
                "source_id = ?"
            },
            f.source_id.as_deref(),
        )
        .and("status = ?", f.status.as_deref())
        .and("event_type = ?", f.event_type.as_deref())
        .and("received_at >= ?", f.since)
        .and("received_at < ?", f.until)
        .and("id > ?", after)
        .and("id < ?", before)
        .page(q.limit)
}

/// The deliveries a bulk replay requeues, a page after `after`. The event type is looked up
/// per delivery by the event's key: as `event_id IN (SELECT … WHERE event_type = ?)`, SQLite
/// scanned every event and sorted every matching delivery for each page.
pub(super) fn replay_listing<'a>(
    f: &'a super::ReplayFilter,
    after: Option<&'a str>,
    limit: i64,
) -> Filtered<'a> {
    Filtered::new("SELECT id FROM deliveries WHERE status <> 'leased'")
        .and("tenant_id = ?", f.tenant_id.as_deref())
        .and("endpoint_id = ?", f.endpoint_id.as_deref())
        .and("status = ?", f.status.as_deref())
        .and(
            "EXISTS (SELECT 1 FROM events WHERE events.id = deliveries.event_id AND events.event_type = ?)",
            f.event_type.as_deref(),
        )
        .and("created_at >= ?", f.since)
        .and("created_at < ?", f.until)
        .and("id > ?", after)
        .page(limit)
}

/// The database types of a backend, so the shared code can name its rows and transactions.
pub(super) trait DbTypes {
    type Db: sqlx::Database;
    type Row;
}

pub(super) fn parse_kind(s: &str) -> Result<super::Kind, super::StoreError> {
    use super::Kind;
    Ok(match s {
        "tenant" => Kind::Tenant,
        "source" => Kind::Source,
        "endpoint" => Kind::Endpoint,
        "event_type" => Kind::EventType,
        "api_key" => Kind::ApiKey,
        "job" => Kind::Job,
        other => {
            return Err(super::StoreError::Corrupt(format!(
                "unknown kind `{other}`"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{inbound_listing, replay_listing, shaped_chunks, Filtered};
    use crate::store::{InboundFilter, InboundQuery, ReplayFilter};

    #[test]
    fn batches_split_into_few_statement_shapes() {
        for n in 0..300 {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = shaped_chunks(&items).collect();
            assert_eq!(chunks.concat(), items, "every row once, in order");
            assert!(chunks
                .iter()
                .all(|c| c.len() == 256 || (c.len() < 256 && c.len().is_power_of_two())));
        }
    }

    /// SQLite's plan for `sql`, one detail per line.
    fn plan(sql: &str) -> String {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            db.execute_batch(&std::fs::read_to_string(f).unwrap())
                .unwrap();
        }
        let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // The plan is made before any value is seen: bind nothing in particular.
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        let rows = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        rows.join("\n")
    }

    #[test]
    fn a_page_after_a_cursor_starts_on_an_index_instead_of_scanning_from_the_first_row() {
        let page = |filter: InboundFilter| {
            let q = InboundQuery {
                filter,
                after: Some("inb_01M98Z9BNKC8VZZF9QWT9R19CH".into()),
                limit: 100,
            };
            plan(&inbound_listing(&q, "sqlite").sql)
        };
        let by_source = page(InboundFilter {
            source_id: Some("src_1".into()),
            ..InboundFilter::default()
        });
        let everything = page(InboundFilter::default());
        assert_eq!(
            everything,
            "SEARCH inbound_events USING INDEX sqlite_autoindex_inbound_events_1 (id>?)"
        );
        // Not all of the source's webhooks, sorted, for every page.
        assert_eq!(by_source, everything);
        let quarantined = page(InboundFilter {
            status: Some("quarantined".into()),
            until: Some(1_800_000_000_000),
            ..InboundFilter::default()
        });
        assert!(
            quarantined.starts_with("SEARCH inbound_events USING"),
            "{quarantined}"
        );

        let audit = Filtered::new("SELECT * FROM audit_log")
            .and("actor = ?", Some("key_1"))
            .and("id > ?", Some("aud_1"))
            .page(100);
        let audit = plan(&audit.sql);
        assert!(audit.starts_with("SEARCH audit_log USING"), "{audit}");
    }

    #[test]
    fn a_delivery_replay_by_event_type_reads_its_pages_in_key_order() {
        let f = ReplayFilter {
            tenant_id: Some("ten_1".into()),
            event_type: Some("invoice.paid".into()),
            ..ReplayFilter::default()
        };
        let plan = plan(&replay_listing(&f, Some("dlv_1"), 500).sql);
        assert_eq!(
            plan,
            "SEARCH deliveries USING INDEX sqlite_autoindex_deliveries_1 (id>?)\n\
             CORRELATED SCALAR SUBQUERY 1\n\
             SEARCH events USING INDEX sqlite_autoindex_events_1 (id=?)"
        );
    }
}
