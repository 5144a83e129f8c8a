//! Durable storage: one [`Store`] trait, implemented for SQLite (the embedded default) and
//! PostgreSQL (several replicas). The SQL is written once (`sql.rs`) in the dialect both
//! accept and instantiated per backend; the migrations differ, and so does the group commit of
//! events, inbound events and outcomes (`postgres_write`: multi-row statements through sqlx,
//! several at once; `sqlite_direct`: one writer running its transactions on its own thread).

mod postgres;
mod postgres_write;
mod sql;
mod sqlite;
mod sqlite_direct;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::sync::Arc;

/// The kinds of configuration resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A tenant (its `tenant_id` is its own id).
    Tenant,
    /// An inbound source.
    Source,
    /// An outbound endpoint.
    Endpoint,
    /// An event type (name + version).
    EventType,
    /// An API key (`unique_key` is the key's hash).
    ApiKey,
    /// A background job (bulk replay).
    Job,
}

impl Kind {
    /// Stored name, also used as `resource_type` in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Source => "source",
            Kind::Endpoint => "endpoint",
            Kind::EventType => "event_type",
            Kind::ApiKey => "api_key",
            Kind::Job => "job",
        }
    }
}

/// A stored configuration resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Kind.
    pub kind: Kind,
    /// Prefixed id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique per kind (a name, a hash...).
    pub unique_key: String,
    /// The resource without secrets.
    pub body: serde_json::Value,
    /// AEAD-encrypted secrets, if any.
    pub secrets: Option<Vec<u8>>,
    /// Incremented by every update (the ETag).
    pub version: i64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Prefixed id (time-ordered).
    pub id: String,
    /// Tenant of the resource, when it has one.
    pub tenant_id: Option<String>,
    /// API key id that acted.
    pub actor: String,
    /// `create`, `update`, `delete`, `rotate`, `revoke`.
    pub action: String,
    /// Resource kind.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// Before/after, with secrets masked.
    pub diff: serde_json::Value,
    /// Unix milliseconds.
    pub at: i64,
}

/// A page of resources of one kind.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Kind to list.
    pub kind: Kind,
    /// Only this tenant's.
    pub tenant_id: Option<String>,
    /// Ids strictly after this one.
    pub after: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// Audit-log filters.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this tenant's entries.
    pub tenant_id: Option<String>,
    /// Only this resource type.
    pub resource_type: Option<String>,
    /// Only this resource.
    pub resource_id: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// At or after (unix ms).
    pub since: Option<i64>,
    /// Before (unix ms).
    pub until: Option<i64>,
    /// Ids strictly after this one.
    pub after: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// A stored idempotent response.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotentResponse {
    /// Hash of method, path and body of the first request.
    pub fingerprint: String,
    /// HTTP status; 0 while the first request is still running.
    pub status: i64,
    /// Response content type.
    pub content_type: Option<String>,
    /// Response body.
    pub body: Option<Vec<u8>>,
}

/// What reserving an idempotency key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// The key is new and now reserved for this request.
    Reserved,
    /// The key was used before.
    Existing(IdempotentResponse),
}

/// An event to store with its deliveries (one per matching endpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Prefixed id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Event type name.
    pub event_type: String,
    /// JSON payload, as text.
    pub payload: String,
    /// Caller id or Idempotency-Key; a second event with the same key is not stored.
    pub dedup_key: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Deliveries to create.
    pub deliveries: Vec<NewDelivery>,
    /// First attempt not before (unix ms).
    pub deliver_at: i64,
    /// Higher first.
    pub priority: i64,
}

/// A delivery stored with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Prefixed id.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// Whether the delivery waits for earlier open ones to its endpoint (FIFO endpoint, or an
    /// inbound route's ordering key).
    pub ordered: bool,
    /// With `ordered`: wait only for earlier deliveries with this key (or none).
    pub order_key: Option<String>,
    /// Stored already leased to this process until then (unix ms): it is handed to the
    /// dispatcher in memory instead of being claimed back from the store.
    pub leased_until: Option<i64>,
}

/// What storing an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored with its deliveries.
    Created,
    /// An event with the same dedup key exists: its id.
    Duplicate(String),
}

/// An inbound webhook accepted by a hub source, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRow {
    /// Id (`inb_…`).
    pub id: String,
    /// Tenant of the source.
    pub tenant_id: String,
    /// The source.
    pub source_id: String,
    /// The source's name (as the filter reported it).
    pub source_name: String,
    /// `routed`, `quarantined` or `failed`.
    pub status: String,
    /// The duplicate-detection key, when the source has one.
    pub dedup_key: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string without `?`.
    pub query: String,
    /// JSON object, secrets masked.
    pub headers: String,
    /// The body as received.
    pub body: Vec<u8>,
    /// The client address Envoy saw.
    pub client_ip: Option<String>,
    /// Unix ms.
    pub received_at: i64,
    /// The computed event type.
    pub event_type: Option<String>,
    /// The transformation's output (JSON text).
    pub result: Option<String>,
    /// JSON array of routing decisions.
    pub routing: String,
    /// Why the event was quarantined or failed.
    pub error: Option<String>,
    /// Copies received since, acknowledged and dropped.
    pub duplicates: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// An inbound event to store, with the outbound events its routes made.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInbound {
    /// The row.
    pub row: InboundRow,
    /// The key's window ends then (unix ms); with `row.dedup_key`. A later copy with the same
    /// key is a duplicate until then.
    pub dedup_until: Option<i64>,
    /// Its outbound events: this range of the events written with it. They are not stored when
    /// the inbound event is a duplicate.
    pub events: std::ops::Range<usize>,
    /// Run again (replay, release): the stored row's `updated_at` as read. Its outcome then
    /// replaces that row's instead of being inserted, if the row is unchanged; otherwise
    /// nothing is written and it is stored as a duplicate of itself (its events are not).
    pub replaces: Option<i64>,
}

/// What a write stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Per event.
    pub events: Vec<Stored>,
    /// Per inbound event: a duplicate names the first copy.
    pub inbound: Vec<Stored>,
}

/// Which inbound webhooks: the list's filters, and what a bulk replay or release covers.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InboundFilter {
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Source.
    pub source_id: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Computed event type.
    pub event_type: Option<String>,
    /// Received at or after (unix ms).
    pub since: Option<i64>,
    /// Received before (unix ms).
    pub until: Option<i64>,
}

/// A page of inbound webhooks.
#[derive(Debug, Clone, Default)]
pub struct InboundQuery {
    /// Which.
    pub filter: InboundFilter,
    /// Ids after this.
    pub after: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Type.
    pub event_type: String,
    /// JSON text.
    pub payload: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A delivery, as claimed by a worker or listed by the API.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    /// Id.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// `pending`, `leased`, `succeeded` or `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// Unix ms.
    pub next_attempt_at: i64,
    /// Last failure.
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    /// Id.
    pub id: String,
    /// The delivery.
    pub delivery_id: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// Unix ms.
    pub started_at: i64,
    /// Milliseconds.
    pub duration_ms: i64,
    /// HTTP status, when a response came.
    pub status_code: Option<i64>,
    /// JSON object, secrets masked.
    pub request_headers: String,
    /// JSON object.
    pub response_headers: Option<String>,
    /// At most 8 KiB.
    pub response_body: Option<String>,
    /// `timeout`, `connect`, `status`, `refused_destination`, ….
    pub error_class: Option<String>,
    /// What happened.
    pub error: Option<String>,
}

/// The result of one attempt, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The attempt.
    pub attempt: AttemptRow,
    /// New status: `pending` (retry), `succeeded` or `dead`.
    pub status: &'static str,
    /// When to retry (for `pending`).
    pub next_attempt_at: i64,
    /// The failure, if any.
    pub last_error: Option<String>,
}

/// Which deliveries a bulk replay requeues.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplayFilter {
    /// Tenant (none: every tenant, global keys only).
    pub tenant_id: Option<String>,
    /// Endpoint.
    pub endpoint_id: Option<String>,
    /// Status (`dead`, `succeeded`, `pending`); leased deliveries are never touched.
    pub status: Option<String>,
    /// Event type of the delivered event.
    pub event_type: Option<String>,
    /// Created at or after (unix ms).
    pub since: Option<i64>,
    /// Created before (unix ms).
    pub until: Option<i64>,
}

/// Delivery filters.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Endpoint.
    pub endpoint_id: Option<String>,
    /// Event.
    pub event_id: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Ids after this.
    pub after: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such row.
    #[error("not found")]
    NotFound,
    /// A unique key is taken.
    #[error("already exists")]
    Duplicate,
    /// The row changed since it was read (version mismatch).
    #[error("version conflict")]
    VersionConflict,
    /// Stored data could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The database failed (outside sqlx: SQLite's direct write path).
    #[error("database error: {0}")]
    Backend(String),
    /// Migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A SQLite database that lives in memory only.
    #[error("database URL `{0}` is an in-memory SQLite database, which loses every stored webhook and delivery when the process ends: give a file, e.g. sqlite://data/hookmesh.db")]
    InMemory(String),
    /// A database URL of no supported kind.
    #[error("database URL `{0}` is neither postgres://… (or postgresql://…) nor sqlite://…")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate,
            _ => StoreError::Database(e),
        }
    }
}

/// Held while this process does what only one replica should do at a time
/// ([`Store::exclusive`]); released when dropped.
pub struct Exclusive {
    pub(super) _held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// Storage operations. A mutation writes its audit entry, when it has one, in the same
/// transaction: every change made through the API has one; a job recording its progress and
/// the retention purge have none.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// The resource types changed by any process sharing the store, as they commit; `None`
    /// where one process owns the store (SQLite), whose own changes are told in-process.
    async fn changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError>;
    /// Work that one process at a time should do (`name`, e.g. the retention purge): `None`
    /// while another replica holds it. Held until the returned value is dropped.
    async fn exclusive(&self, name: &str) -> Result<Option<Exclusive>, StoreError>;
    /// Checks the database answers and migrations are applied.
    async fn ready(&self) -> Result<(), StoreError>;
    /// Connections: (in use, idle).
    fn pool_stats(&self) -> (u32, u32);

    /// Inserts a resource.
    async fn insert(&self, r: &Resource, audit: &AuditEntry) -> Result<(), StoreError>;
    /// A resource by id.
    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Resource>, StoreError>;
    /// A resource by its unique key.
    async fn get_by_key(&self, kind: Kind, key: &str) -> Result<Option<Resource>, StoreError>;
    /// A page of resources, ordered by id.
    async fn list(&self, q: &ListQuery) -> Result<Vec<Resource>, StoreError>;
    /// Every resource of a kind (configuration compilation, re-encryption).
    async fn list_all(&self, kind: Kind) -> Result<Vec<Resource>, StoreError>;
    /// Replaces a resource if its stored version is `expected_version`; bumps nothing itself
    /// (`r.version` is the new version).
    async fn update(
        &self,
        r: &Resource,
        expected_version: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<(), StoreError>;
    /// Deletes a resource (if at `expected_version`, when given).
    async fn delete(
        &self,
        kind: Kind,
        id: &str,
        expected_version: Option<i64>,
        audit: Option<&AuditEntry>,
    ) -> Result<(), StoreError>;
    /// Resources of a kind owned by a tenant.
    async fn count(&self, kind: Kind, tenant_id: &str) -> Result<i64, StoreError>;

    /// Audit entries, ordered by id.
    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    /// Reserves an idempotency key, or returns what it stored.
    async fn idempotency_reserve(
        &self,
        key: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Reservation, StoreError>;
    /// Stores the response for a reserved key.
    async fn idempotency_complete(
        &self,
        key: &str,
        status: i64,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), StoreError>;
    /// Forgets a key (the request failed and may be retried).
    async fn idempotency_release(&self, key: &str) -> Result<(), StoreError>;
    /// Forgets keys older than `before` (unix ms).
    async fn idempotency_purge(&self, before: i64) -> Result<u64, StoreError>;
    /// Up to `limit` events with ids strictly between `after` and `before` whose deliveries
    /// have all finished, oldest first.
    async fn aged_events(
        &self,
        after: &str,
        before: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Deletes these events with their deliveries and attempts, each only if none of its
    /// deliveries is pending or in flight (again) by then; returns how many events went.
    async fn purge_events(&self, ids: &[String]) -> Result<u64, StoreError>;
    /// Up to `limit` inbound events with ids strictly between `after` and `before` whose
    /// duplicate window has ended by `now`, oldest first.
    async fn aged_inbound(
        &self,
        after: &str,
        before: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Deletes these inbound events, each only if its duplicate window has ended by `now`.
    async fn purge_inbound(&self, ids: &[String], now: i64) -> Result<u64, StoreError>;

    /// In one transaction (group commit): stores inbound events (dropping duplicates), events
    /// with their deliveries, and records attempts with their outcomes. Returns what became of
    /// each event and inbound event.
    async fn write_batch(
        &self,
        events: &[NewEvent],
        inbound: &[NewInbound],
        done: &[Completion],
        now: i64,
    ) -> Result<Written, StoreError>;
    /// A page of inbound events, newest last.
    async fn list_inbound(&self, q: &InboundQuery) -> Result<Vec<InboundRow>, StoreError>;
    /// An inbound event by id.
    async fn get_inbound(&self, id: &str) -> Result<Option<InboundRow>, StoreError>;
    /// Deletes an inbound event if its status is `status`; false when there was none.
    async fn delete_inbound(&self, id: &str, status: &str) -> Result<bool, StoreError>;

    /// Leases up to `limit` due deliveries (pending and due, or leased with an expired lease)
    /// until `lease_until`, highest priority first.
    async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError>;
    /// Makes every leased delivery pending again; returns how many. Only for a store owned by one
    /// process (SQLite), at start-up: the leases are then stale by definition.
    async fn release_leases(&self, now: i64) -> Result<u64, StoreError>;
    /// Puts leased deliveries back, due at the given times, without counting an attempt (an
    /// endpoint at its concurrency or rate limit).
    async fn defer_deliveries(
        &self,
        deferred: &[(String, i64)],
        now: i64,
    ) -> Result<(), StoreError>;
    /// Ids of deliveries matching a replay filter, after `after`, in id order.
    async fn find_deliveries(
        &self,
        f: &ReplayFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Makes deliveries due now, of those not in flight and unchanged since `changed_before`
    /// (unix ms); returns how many.
    async fn requeue_deliveries(
        &self,
        ids: &[String],
        now: i64,
        changed_before: i64,
    ) -> Result<u64, StoreError>;
    /// Events by id.
    async fn events_by_id(&self, ids: &[String]) -> Result<Vec<EventRow>, StoreError>;
    /// Records that an endpoint's circuit is open until then (unix ms), or closed (`None`).
    async fn set_circuit(
        &self,
        endpoint_id: &str,
        open_until: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// The circuits open at `now`: (endpoint id, open until).
    async fn open_circuits(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError>;
    /// Makes a delivery due now (manual retry); false when it does not exist.
    async fn retry_delivery(&self, id: &str, now: i64) -> Result<bool, StoreError>;
    /// A page of events.
    async fn list_events(
        &self,
        tenant_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError>;
    /// A page of deliveries.
    async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRow>, StoreError>;
    /// A delivery by id.
    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError>;
    /// The attempts of a delivery.
    async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError>;
}

/// Opens the store a database URL names: `postgres://…` or `sqlite:…`.
///
/// # Errors
/// An unsupported URL or a failed connection.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        // Never a file named after a typo (or a placeholder): say what is accepted.
        let shown = url.split_once('@').map_or(url, |(_, host)| host);
        Err(StoreError::UnsupportedUrl(shown.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_unsupported_url_is_refused_without_creating_a_file() {
        let dir = std::env::temp_dir().join(format!("hookmesh-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = dir.join("REPLACE-ME");
        let err = super::open(url.to_str().unwrap()).await.err().unwrap();
        assert!(err.to_string().contains("neither postgres://"), "{err}");
        assert!(!url.exists(), "a database file was created from a bad URL");
        let err = super::open("postgress://hookmesh:s3cret@db:5432/hookmesh")
            .await
            .err()
            .unwrap();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
