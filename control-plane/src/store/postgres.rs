//! PostgreSQL, for several control-plane replicas sharing one database.

use super::sql::{parse_kind, sql_store, DbTypes};
use super::{
    AttemptRow, AuditEntry, AuditQuery, Completion, DeliveryQuery, DeliveryRow, EventRow,
    IdempotentResponse, Kind, ListQuery, NewEvent, ReplayFilter, Reservation, Resource, Store,
    StoreError, Stored,
};
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
}

impl DbTypes for PgStore {
    type Db = sqlx::Postgres;
    type Row = sqlx::postgres::PgRow;
}

impl PgStore {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

    /// Connects to a `postgres://` URL.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses the credentials.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(PgStore { pool })
    }
}

// Several replicas claim concurrently: SKIP LOCKED hands each its own rows without waiting.
sql_store!(
    PgStore,
    "postgres",
    "BEGIN",
    "UPDATE deliveries SET status = 'leased', lease_until = $1, updated_at = $2 WHERE id IN (\
     SELECT d.id FROM deliveries d WHERE ((d.status = 'pending' AND d.next_attempt_at <= $2) OR (d.status = 'leased' AND d.lease_until < $2)) \
     AND (NOT d.ordered OR NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id AND p.id < d.id AND p.status IN ('pending', 'leased'))) \
     ORDER BY d.priority DESC, d.next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *"
);
