//! The SQL shared by both backends, instantiated per backend by [`sql_store!`].
//!
//! Placeholders are `$1, $2, …` and must first appear in increasing order: PostgreSQL reads
//! them as positions, SQLite as named parameters numbered by first appearance. Nullable
//! filters use `CAST($n AS TEXT) IS NULL`, which both type-check.

/// Implements [`Store`](super::Store) for a struct with a `pool` field of the backend's pool.
macro_rules! sql_store {
    ($store:ident, $backend:literal) => {
        impl $store {
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
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                Self::MIGRATOR.run(&self.pool).await?;
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
                let mut tx = self.pool.begin().await?;
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
                let rows = sqlx::query(
                    "SELECT * FROM resources WHERE kind = $1 \
                     AND (CAST($2 AS TEXT) IS NULL OR tenant_id = $2) \
                     AND (CAST($3 AS TEXT) IS NULL OR id > $3) \
                     ORDER BY id LIMIT $4",
                )
                .bind(q.kind.as_str())
                .bind(&q.tenant_id)
                .bind(&q.after)
                .bind(q.limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::resource).collect()
            }

            async fn list_all(&self, kind: Kind) -> Result<Vec<Resource>, StoreError> {
                let rows = sqlx::query("SELECT * FROM resources WHERE kind = $1 ORDER BY id")
                    .bind(kind.as_str())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::resource).collect()
            }

            async fn update(&self, r: &Resource, expected_version: i64, audit: &AuditEntry) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
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
                Self::write_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete(&self, kind: Kind, id: &str, expected_version: Option<i64>, audit: &AuditEntry) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
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
                Self::write_audit(&mut tx, audit).await?;
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
                let rows = sqlx::query(
                    "SELECT * FROM audit_log WHERE (CAST($1 AS TEXT) IS NULL OR tenant_id = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR resource_type = $2) \
                     AND (CAST($3 AS TEXT) IS NULL OR resource_id = $3) \
                     AND (CAST($4 AS TEXT) IS NULL OR actor = $4) \
                     AND (CAST($5 AS BIGINT) IS NULL OR at >= $5) \
                     AND (CAST($6 AS BIGINT) IS NULL OR at < $6) \
                     AND (CAST($7 AS TEXT) IS NULL OR id > $7) \
                     ORDER BY id LIMIT $8",
                )
                .bind(&q.tenant_id)
                .bind(&q.resource_type)
                .bind(&q.resource_id)
                .bind(&q.actor)
                .bind(q.since)
                .bind(q.until)
                .bind(&q.after)
                .bind(q.limit)
                .fetch_all(&self.pool)
                .await?;
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
                .execute(&self.pool)
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
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn idempotency_release(&self, key: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM idempotency WHERE key = $1").bind(key).execute(&self.pool).await?;
                Ok(())
            }

            async fn idempotency_purge(&self, before: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(super) use sql_store;

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
        other => {
            return Err(super::StoreError::Corrupt(format!(
                "unknown kind `{other}`"
            )))
        }
    })
}
