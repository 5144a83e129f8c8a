//! PostgreSQL, for several control-plane replicas sharing one database.

use super::sql::{claim_sql, parse_kind, shaped_chunks, sql_store, DbTypes};
use super::{
    AttemptRow, AuditEntry, AuditQuery, Completion, DeliveryQuery, DeliveryRow, EventRow,
    IdempotentResponse, Kind, ListQuery, NewDelivery, NewEvent, ReplayFilter, Reservation,
    Resource, Store, StoreError, Stored,
};
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
    /// The same pool: PostgreSQL runs writers concurrently.
    writer: sqlx::PgPool,
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
        Ok(PgStore {
            writer: pool.clone(),
            pool,
        })
    }
}

// Several replicas claim concurrently: SKIP LOCKED hands each its own rows without waiting.
sql_store!(
    PgStore,
    "postgres",
    "BEGIN",
    claim_sql!(" FOR UPDATE SKIP LOCKED")
);
