//! Running the control plane: open the store, migrate, make sure an admin key exists, serve
//! until shutdown.

use crate::api::auth::{generate_key, hash_key, KeyRecord, Principal};
use crate::api::{self, AppState, Shared};
use crate::delivery::{DeliveryError, DeliverySettings, Engine};
use crate::ingest::Ingest;
use crate::secrets::MasterKeys;
use crate::store::{self, Kind, Store};
use crate::telemetry::Metrics;
use crate::xds::{Publisher, Registry, SnapshotError, XdsSettings};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database.
    #[error("database")]
    Store(#[from] store::StoreError),
    /// The master key.
    #[error("master key")]
    Secrets(#[from] crate::secrets::SecretsError),
    /// Creating the bootstrap key.
    #[error("bootstrap admin key: {0}")]
    Bootstrap(String),
    /// The listener.
    #[error("serving")]
    Io(#[from] std::io::Error),
    /// The stored sources do not make a filter configuration.
    #[error("filter configuration")]
    Snapshot(#[from] SnapshotError),
    /// The delivery engine.
    #[error("delivery")]
    Delivery(#[from] DeliveryError),
    /// The xDS server.
    #[error("xds")]
    Xds(#[from] tonic::transport::Error),
}

/// The default database: `hookmesh.db` in the data directory.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("hookmesh.db").display())
}

/// Opens and migrates the store.
///
/// # Errors
/// Connection or migration failures.
pub async fn open_store(url: &str, data_dir: &Path) -> Result<Arc<dyn Store>, ServeError> {
    if !url.starts_with("postgres") {
        std::fs::create_dir_all(data_dir)?;
    }
    let store = store::open(url).await?;
    store.migrate().await?;
    Ok(store)
}

/// Makes sure an admin key exists: `HOOKMESH_ADMIN_KEY` if given, else a generated one when the
/// store has none. Returns a generated key so the caller can print it once.
///
/// # Errors
/// Storage failures.
pub async fn bootstrap_admin(
    state: &AppState,
    configured: Option<&str>,
) -> Result<Option<String>, ServeError> {
    let system = Principal::new("system", None, &["admin"]);
    let (secret, generated) = match configured {
        Some(k)
            if state
                .store
                .get_by_key(Kind::ApiKey, &hash_key(k))
                .await?
                .is_some() =>
        {
            return Ok(None)
        }
        Some(k) => (k.to_owned(), false),
        None if !state.store.list_all(Kind::ApiKey).await?.is_empty() => return Ok(None),
        None => (generate_key(), true),
    };
    let record = KeyRecord {
        name: if generated {
            "bootstrap (generated)".into()
        } else {
            "bootstrap (HOOKMESH_ADMIN_KEY)".into()
        },
        tenant_id: None,
        scopes: vec!["admin".into()],
        prefix: secret.chars().take(10).collect(),
        expires_at: None,
        revoked_at: None,
    };
    api::keys_insert(state, &system, record, &secret)
        .await
        .map_err(|e| ServeError::Bootstrap(e.to_string()))?;
    Ok(generated.then_some(secret))
}

/// Makes sure the in-process Kubernetes controller's key ([`MasterKeys::controller_key`]) is
/// an admin key, and returns it.
///
/// # Errors
/// Storage failures.
///
/// [`MasterKeys::controller_key`]: crate::secrets::MasterKeys::controller_key
pub async fn bootstrap_controller_key(state: &AppState) -> Result<String, ServeError> {
    let secret = state.keys.controller_key().to_owned();
    if state
        .store
        .get_by_key(Kind::ApiKey, &hash_key(&secret))
        .await?
        .is_none()
    {
        let record = KeyRecord {
            name: "kubernetes controller (in-process)".into(),
            tenant_id: None,
            scopes: vec!["admin".into()],
            prefix: secret.chars().take(10).collect(),
            expires_at: None,
            revoked_at: None,
        };
        let system = Principal::new("system", None, &["admin"]);
        api::keys_insert(state, &system, record, &secret)
            .await
            .map_err(|e| ServeError::Bootstrap(e.to_string()))?;
    }
    Ok(secret)
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = api::router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Where the ingest listens: a TCP address, or a Unix socket (`unix:/path`) for an Envoy on the
/// same host. The socket skips the TCP/IP stack for every forwarded webhook, and its file
/// permissions (owner and group) decide who may connect, besides the filter's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestAddress {
    /// `HOST:PORT`.
    Tcp(SocketAddr),
    /// `unix:/absolute/path`.
    Unix(PathBuf),
}

impl std::str::FromStr for IngestAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{s}`: a Unix socket needs an absolute path, e.g. unix:/run/hookmesh/ingest.sock"
                ));
            }
            return Ok(IngestAddress::Unix(path.into()));
        }
        s.parse().map(IngestAddress::Tcp).map_err(|_| {
            format!("`{s}` is neither IP:PORT (e.g. 127.0.0.1:8081) nor unix:/absolute/path")
        })
    }
}

impl std::fmt::Display for IngestAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestAddress::Tcp(a) => write!(f, "{a}"),
            IngestAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A bound ingest listener.
#[derive(Debug)]
pub enum IngestListener {
    /// On a TCP address.
    Tcp(TcpListener),
    /// On a Unix socket, removed again when serving ends.
    Unix(UnixListener, PathBuf),
}

impl IngestListener {
    /// Binds `address`. A socket file left by an earlier run is replaced; any other file at
    /// that path is an error, never removed.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(address: &IngestAddress) -> std::io::Result<IngestListener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match address {
            IngestAddress::Tcp(a) => Ok(IngestListener::Tcp(TcpListener::bind(a).await?)),
            IngestAddress::Unix(path) => {
                match std::fs::symlink_metadata(path) {
                    Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
                    Ok(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                let listener = UnixListener::bind(path)?;
                // Connecting needs write permission: the owner and its group (Envoy's) only.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(IngestListener::Unix(listener, path.clone()))
            }
        }
    }

    /// What it listens on, for the log.
    pub fn describe(&self) -> String {
        match self {
            IngestListener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp ({e})"), |a| a.to_string()),
            IngestListener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// Serves the inbound hub's ingest on `listener` until `shutdown` completes.
///
/// # Errors
/// When the listener fails.
pub async fn serve_ingest(
    listener: IngestListener,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    match listener {
        IngestListener::Tcp(l) => Ok(axum::serve(
            l,
            axum::ServiceExt::into_make_service(ingest.service()),
        )
        .with_graceful_shutdown(shutdown)
        .await?),
        IngestListener::Unix(l, path) => {
            let served = axum::serve(l, axum::ServiceExt::into_make_service(ingest.service()))
                .with_graceful_shutdown(shutdown)
                .await;
            let _ = std::fs::remove_file(&path);
            Ok(served?)
        }
    }
}

/// Builds the state from an opened store and the master keys.
///
/// # Errors
/// When the stored sources do not build a filter configuration.
pub async fn state(store: Arc<dyn Store>, keys: MasterKeys) -> Result<AppState, ServeError> {
    state_with(
        store,
        keys,
        XdsSettings::default(),
        DeliverySettings::default(),
    )
    .await
}

/// Builds the state with the given xDS settings.
///
/// # Errors
/// When the stored sources do not build a filter configuration.
pub async fn state_with(
    store: Arc<dyn Store>,
    keys: MasterKeys,
    settings: XdsSettings,
    delivery: DeliverySettings,
) -> Result<AppState, ServeError> {
    let keys = Arc::new(keys);
    let trusted_hops = settings.trusted_hops;
    let config = Publisher::new(store.clone(), keys.clone(), settings).await?;
    let delivery = Engine::start(store.clone(), keys.clone(), delivery).await?;
    let metrics = Arc::new(Metrics::default());
    let ingest = Ingest::start(
        store.clone(),
        keys.clone(),
        delivery.clone(),
        metrics.clone(),
        trusted_hops,
    )
    .await?;
    follow_other_replicas(&*store, &config, &delivery, &ingest).await;
    Ok(AppState::new(Shared {
        store,
        keys,
        metrics,
        config,
        envoys: Arc::new(Registry::default()),
        delivery,
        caches: Arc::default(),
        ingest,
    }))
}

/// Sources and endpoints changed by other replicas reach this one's xDS snapshot and endpoint
/// cache as they commit (PostgreSQL `NOTIFY`); the 2 s refreshes stay as the safety net.
async fn follow_other_replicas(
    store: &dyn Store,
    config: &Arc<Publisher>,
    delivery: &Arc<Engine>,
    ingest: &Arc<Ingest>,
) {
    let mut changes = match store.changes().await {
        Ok(Some(changes)) => changes,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "not listening for other replicas' changes; refreshing every 2 s");
            return;
        }
    };
    let (config, endpoints) = (Arc::downgrade(config), Arc::downgrade(&delivery.endpoints));
    let ingest = Arc::downgrade(ingest);
    tokio::spawn(async move {
        while let Some(kind) = changes.recv().await {
            let (Some(config), Some(endpoints), Some(ingest)) =
                (config.upgrade(), endpoints.upgrade(), ingest.upgrade())
            else {
                return;
            };
            if kind == Kind::Source.as_str() || kind == Kind::EventType.as_str() {
                ingest.changed();
            }
            if kind == Kind::Source.as_str() {
                if let Err(e) = config.rebuild().await {
                    tracing::error!(error = %e, "not publishing: keeping the previous filter configuration");
                }
            } else if kind == Kind::Endpoint.as_str() {
                endpoints.changed();
            }
        }
    });
}

/// Re-seals every secret under the current master key. Returns how many were re-sealed.
///
/// # Errors
/// A secret no configured key opens, or storage failures.
pub async fn rekey(state: &AppState) -> Result<usize, ServeError> {
    let system = Principal::new("system", None, &["admin"]);
    let mut n = 0;
    for kind in [Kind::Source, Kind::Endpoint] {
        for r in state.store.list_all(kind).await? {
            let Some(sealed) = &r.secrets else { continue };
            if !state.keys.is_stale(sealed) {
                continue;
            }
            let plain = state.keys.open(sealed, &r.id)?;
            let updated = store::Resource {
                secrets: Some(state.keys.seal(&plain, &r.id)),
                version: r.version + 1,
                updated_at: crate::ids::now_ms(),
                ..r.clone()
            };
            let audit = api::audit_entry(
                &system,
                "rekey",
                kind,
                &r.id,
                Some(&r.tenant_id),
                serde_json::json!({"secrets": "re-sealed under the current master key"}),
            );
            state
                .store
                .update(&updated, r.version, Some(&audit))
                .await?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::{IngestAddress, IngestListener};
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hookmesh-server-{name}-{}-{}",
            std::process::id(),
            crate::ids::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn ingest_addresses_are_ip_ports_or_absolute_unix_paths() {
        assert_eq!(
            "127.0.0.1:8081".parse(),
            Ok(IngestAddress::Tcp(([127, 0, 0, 1], 8081).into()))
        );
        assert_eq!(
            "unix:/run/hookmesh/ingest.sock".parse(),
            Ok(IngestAddress::Unix("/run/hookmesh/ingest.sock".into()))
        );
        let relative = "unix:ingest.sock".parse::<IngestAddress>().unwrap_err();
        assert!(relative.contains("absolute path"), "{relative}");
        let neither = "localhost:8081".parse::<IngestAddress>().unwrap_err();
        assert!(neither.contains("neither IP:PORT"), "{neither}");
        assert_eq!(
            IngestAddress::Unix("/x.sock".into()).to_string(),
            "unix:/x.sock"
        );
    }

    #[tokio::test]
    async fn the_socket_is_group_only_replaces_a_stale_socket_and_never_another_file() {
        let dir = scratch("sock");
        let path = dir.join("ingest.sock");
        let address = IngestAddress::Unix(path.clone());
        let first = IngestListener::bind(&address).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        // A crashed run leaves its socket behind: the next start takes the path over.
        drop(first);
        let second = IngestListener::bind(&address).await.unwrap();
        assert_eq!(second.describe(), format!("unix:{}", path.display()));
        drop(second);
        // A file that is not a socket is someone else's: refused and left as it was.
        let other = dir.join("data.db");
        std::fs::write(&other, b"keep me").unwrap();
        let err = IngestListener::bind(&IngestAddress::Unix(other.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
