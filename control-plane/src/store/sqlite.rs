//! SQLite, the embedded default: one file in the data directory, WAL mode.

use super::sql::{
    claim_sql, inbound_listing, parse_kind, replay_listing, shaped_chunks, sql_store, Arg, DbTypes,
    Filtered,
};
use super::{
    AttemptRow, AuditEntry, AuditQuery, Completion, DeliveryQuery, DeliveryRow, EventRow,
    Exclusive, IdempotentResponse, InboundQuery, InboundRow, Kind, ListQuery, NewEvent, NewInbound,
    ReplayFilter, Reservation, Resource, Store, StoreError, Written,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    /// Readers (WAL: they never wait for the writer).
    pool: sqlx::SqlitePool,
    /// The one connection that writes. SQLite has one writer at a time; writers queued here
    /// wait their turn in order, where several writing connections would poll the file lock
    /// with sleeps of a millisecond and more.
    writer: sqlx::SqlitePool,
}

impl SqliteStore {
    /// The group commit on the calling thread (the store writer's own), against the writing
    /// connection's handle: see `sqlite_direct`.
    async fn write_batch_backend(
        &self,
        events: &[NewEvent],
        inbound: &[NewInbound],
        done: &[Completion],
        now: i64,
    ) -> Result<Written, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut handle = conn.lock_handle().await?;
        let raw = handle.as_raw_handle();
        // SAFETY: `lock_handle` keeps sqlx's thread off this connection until `handle` drops,
        // and the borrowed rusqlite connection is gone before that (dropping it finalizes the
        // statements it cached for the batch). It never closes the handle: sqlx owns it.
        let db = unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) }?;
        let written = super::sqlite_direct::write_batch(&db, events, inbound, done, now);
        drop(db);
        drop(handle);
        written
    }
}

impl DbTypes for SqliteStore {
    type Db = sqlx::Sqlite;
    type Row = sqlx::sqlite::SqliteRow;
}

impl SqliteStore {
    /// One process owns the file: nobody else to tell.
    const CHANGE_NOTIFY: Option<&'static str> = None;

    async fn listen_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
        Ok(None)
    }

    /// One process owns the file: always granted.
    async fn take_exclusive(&self, _name: &str) -> Result<Option<Exclusive>, StoreError> {
        Ok(Some(Exclusive { _held: None }))
    }

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
        // sqlx pings a connection before lending it out: for SQLite that is a round trip to
        // the connection's thread and back, which found nothing wrong with an in-process
        // database but cost the writer two thread switches per group commit.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool, writer })
    }
}

// One dispatcher per process claims on SQLite, so a plain UPDATE … RETURNING is enough.
sql_store!(
    SqliteStore,
    "sqlite",
    // Write transactions take the write lock up front: a read that later upgrades fails with
    // SQLITE_BUSY_SNAPSHOT instead of waiting when another writer went first.
    "BEGIN IMMEDIATE",
    claim_sql!("")
);
