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
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long a connection waits for SQLite's file lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    /// Readers (WAL: they never wait for the writer).
    pool: sqlx::SqlitePool,
    /// The one connection that writes. SQLite has one writer at a time; writers queued here
    /// wait their turn in order, where several writing connections would poll the file lock
    /// with sleeps of a millisecond and more.
    writer: sqlx::SqlitePool,
    /// The group commit's own connection to the same file (the delivery engine's claims use it
    /// too), opened on first use. It keeps its compiled statements from one commit to the next:
    /// a connection borrowed from sqlx must finalize them before handing the handle back (sqlx
    /// panics when it closes a handle with statements left open), and compiling them again for
    /// every commit cost about 5 % of the control plane's CPU on the routed path. It writes only
    /// while holding `writer`'s one connection, so SQLite's writers still take turns in the
    /// pool's queue instead of polling the file lock.
    batch: Arc<Mutex<Option<rusqlite::Connection>>>,
    file: Arc<PathBuf>,
}

impl SqliteStore {
    /// The group commit on the calling thread (the store writer's own), on the batch
    /// connection: see `sqlite_direct`.
    async fn write_batch_backend(
        &self,
        events: &[NewEvent],
        inbound: &[NewInbound],
        done: &[Completion],
        now: i64,
    ) -> Result<Written, StoreError> {
        // Held, unused, for its place in the writers' queue.
        let _turn = self.writer.acquire().await?;
        with_batch_connection(&self.batch, &self.file, |db| {
            super::sqlite_direct::write_batch(db, events, inbound, done, now)
        })
    }

    /// A claim on the group commit's connection, in the writers' queue like a group commit.
    /// On sqlx's connection, each of the two writing connections dropped its whole page cache
    /// whenever the other had written since (WAL mode), and read the pages back: while a
    /// backlog was claimed, that was a fifth of what the writers did.
    async fn claim_backend(
        &self,
        claim: &'static str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let _turn = self.writer.acquire().await?;
        let (batch, file) = (self.batch.clone(), self.file.clone());
        // A write with its fsync: off the async workers, as sqlx runs its statements.
        tokio::task::spawn_blocking(move || {
            with_batch_connection(&batch, &file, |db| {
                super::sqlite_direct::claim(db, claim, now, lease_until, limit)
            })
        })
        .await
        .map_err(|e| StoreError::Backend(format!("the claim stopped: {e}")))?
    }
}

/// Runs `f` on the batch connection, opening it on first use. The caller holds the writers'
/// turn.
fn with_batch_connection<T>(
    batch: &Mutex<Option<rusqlite::Connection>>,
    file: &Path,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut slot = batch.lock().unwrap_or_else(PoisonError::into_inner);
    let db = match &mut *slot {
        Some(db) => db,
        empty => empty.insert(open_batch_connection(file)?),
    };
    f(db)
}

/// A connection with the settings `connect` gives sqlx's (WAL is a property of the file).
fn open_batch_connection(file: &Path) -> Result<rusqlite::Connection, StoreError> {
    let db = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    db.busy_timeout(BUSY_TIMEOUT)?;
    // Room for every statement of a group commit, so none is compiled twice.
    db.set_prepared_statement_cache_capacity(32);
    Ok(db)
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
            .busy_timeout(BUSY_TIMEOUT)
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
        // The file as SQLite resolved it, for the group commit's own connection. An in-memory
        // database has none, and a second connection could not share it anyway.
        let file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&writer)
                .await?;
        if file.is_empty() {
            return Err(StoreError::InMemory(url.to_owned()));
        }
        let file = Arc::new(PathBuf::from(file));
        Ok(SqliteStore {
            pool,
            writer,
            batch: Arc::default(),
            file,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_the_reason() {
        for url in ["sqlite::memory:", "sqlite://hooks?mode=memory"] {
            let Err(e) = SqliteStore::connect(url).await else {
                panic!("{url} was accepted");
            };
            assert!(matches!(e, StoreError::InMemory(_)), "{url}: {e}");
            assert!(e.to_string().contains("give a file"), "{e}");
        }
    }
}
