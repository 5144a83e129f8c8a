//! SQLite, the embedded default: one file in the data directory, WAL mode.

use super::sql::{parse_kind, sql_store, DbTypes};
use super::{
    AuditEntry, AuditQuery, IdempotentResponse, Kind, ListQuery, Reservation, Resource, Store,
    StoreError,
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

sql_store!(SqliteStore, "sqlite");
