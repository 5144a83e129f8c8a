//! SQLite, the embedded default: one file in the data directory, WAL mode.

use super::sql::{parse_kind, sql_store, DbTypes};
use super::{
    AttemptRow, AuditEntry, AuditQuery, Completion, DeliveryQuery, DeliveryRow, EventRow,
    IdempotentResponse, Kind, ListQuery, NewEvent, ReplayFilter, Reservation, Resource, Store,
    StoreError, Stored,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

impl DbTypes for SqliteStore {
    type Db = sqlx::Sqlite;
    type Row = sqlx::sqlite::SqliteRow;
}

impl SqliteStore {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

    /// Opens (creating if missing) the database at a `sqlite:` URL.
    ///
    /// # Errors
    /// A malformed URL or an unopenable file.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers run beside the writer; FULL sync makes every acknowledged
            // write survive power loss, not only a process crash.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool })
    }
}

// One dispatcher per process claims on SQLite, so a plain UPDATE … RETURNING is enough.
sql_store!(
    SqliteStore,
    "sqlite",
    // Write transactions take the write lock up front: a read that later upgrades fails with
    // SQLITE_BUSY_SNAPSHOT instead of waiting when another writer went first.
    "BEGIN IMMEDIATE",
    "UPDATE deliveries SET status = 'leased', lease_until = $1, updated_at = $2 WHERE id IN (\
     SELECT d.id FROM deliveries d WHERE ((d.status = 'pending' AND d.next_attempt_at <= $2) OR (d.status = 'leased' AND d.lease_until < $2)) \
     AND (NOT d.ordered OR NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id AND p.id < d.id AND p.status IN ('pending', 'leased'))) \
     ORDER BY d.priority DESC, d.next_attempt_at LIMIT $3) RETURNING *"
);
