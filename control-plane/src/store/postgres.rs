//! PostgreSQL, for several control-plane replicas sharing one database.

use super::sql::{
    claim_sql, inbound_listing, parse_kind, replay_listing, shaped_chunks, sql_store, Arg, DbTypes,
    Filtered,
};
use super::{
    AttemptRow, AuditEntry, AuditQuery, Completion, DeliveryQuery, DeliveryRow, EventRow,
    Exclusive, IdempotentResponse, InboundQuery, InboundRow, Kind, ListQuery, NewEvent, NewInbound,
    ReplayFilter, Reservation, Resource, Store, StoreError, Written,
};
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
    /// The same pool: PostgreSQL runs writers concurrently.
    pub(super) writer: sqlx::PgPool,
}

impl DbTypes for PgStore {
    type Db = sqlx::Postgres;
    type Row = sqlx::postgres::PgRow;
}

impl PgStore {
    /// Delivered to every listener when the writing transaction commits.
    const CHANGE_NOTIFY: Option<&'static str> = Some("SELECT pg_notify('hookmesh_changes', $1)");

    /// Listens for other replicas' changes on a connection of its own, reconnecting as needed.
    async fn listen_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen("hookmesh_changes").await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                // `recv` reconnects after a lost connection; notifications sent meanwhile are
                // lost, which the periodic refreshes cover.
                match listener.recv().await {
                    Ok(n) => {
                        if tx.send(n.payload().to_owned()).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for changes failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    /// A session-level advisory lock on a connection taken out of the pool for as long as it
    /// is held: dropping the holder closes the connection, and the server releases the lock
    /// with the session, also when the process dies.
    async fn take_exclusive(&self, name: &str) -> Result<Option<Exclusive>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let granted: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(format!("hookmesh:{name}"))
            .fetch_one(&mut *conn)
            .await?;
        Ok(granted.then(|| Exclusive {
            _held: Some(Box::new(conn.detach())),
        }))
    }

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

impl PgStore {
    async fn claim_backend(
        &self,
        claim: &'static str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(claim)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.writer)
            .await?;
        rows.iter().map(Self::delivery).collect()
    }
}

// Several replicas claim concurrently: SKIP LOCKED hands each its own rows without waiting.
sql_store!(
    PgStore,
    "postgres",
    "BEGIN",
    claim_sql!(" FOR UPDATE SKIP LOCKED")
);
