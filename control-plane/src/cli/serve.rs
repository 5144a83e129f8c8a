//! `hookmesh serve`, `migrate` and `rekey`: settings from flags or `HOOKMESH_*` variables.

use crate::secrets::MasterKeys;
use crate::server;
use crate::xds::{ModuleSource, XdsSettings};
use anyhow::Context;
use clap::Args;
use hookmesh_filter::config::DefaultAction;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the data lives.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Data directory (SQLite database, generated master key).
    #[arg(long, env = "HOOKMESH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Database URL: `postgres://user:pass@host/db`, or `sqlite://path` (default: hookmesh.db in
    /// the data directory).
    #[arg(long, env = "HOOKMESH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DbArgs {
    fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| server::default_database_url(&self.data_dir))
    }
}

/// Master keys for secrets at rest.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Master key for secrets at rest (base64 of 32 bytes); default: a key file generated in the
    /// data directory with mode 0600.
    #[arg(long, env = "HOOKMESH_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Former master keys (comma-separated), still accepted for reading until `hookmesh rekey`.
    #[arg(
        long,
        env = "HOOKMESH_PREVIOUS_MASTER_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub previous_master_keys: Vec<String>,
}

/// `hookmesh serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the REST API.
    #[arg(long, env = "HOOKMESH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the inbound hub's ingest, where Envoy forwards `hub` sources' webhooks
    /// (the `hookmesh_ingest` cluster): IP:PORT, or `unix:/absolute/path` for an Envoy on the
    /// same host (the socket is made mode 0660). Requests without the filter's token are refused.
    #[arg(long, env = "HOOKMESH_INGEST_LISTEN", default_value = "127.0.0.1:8081")]
    pub ingest_listen: server::IngestAddress,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Admin API key to accept (created if absent); when unset and no key exists, one is
    /// generated and printed once.
    #[arg(long, env = "HOOKMESH_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Log filter, e.g. `info` or `hookmesh=debug,tower_http=debug`.
    #[arg(long, env = "HOOKMESH_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as JSON.
    #[arg(long, env = "HOOKMESH_LOG_JSON")]
    pub log_json: bool,
    #[command(flatten)]
    pub xds: XdsArgs,
    /// Destination networks allowed for deliveries although internal (loopback, private, …),
    /// comma-separated CIDRs; by default such destinations are refused.
    #[arg(long, env = "HOOKMESH_ALLOW_DESTINATION_CIDRS", value_delimiter = ',')]
    pub allow_destination_cidrs: Vec<String>,
    /// A PEM file of CA certificates to trust for HTTPS endpoints besides the Mozilla roots,
    /// e.g. a private or service-mesh CA.
    #[arg(long, env = "HOOKMESH_DELIVERY_CA_FILE")]
    pub delivery_ca_file: Option<std::path::PathBuf>,
    /// Disable an endpoint after it has failed continuously for this many hours (an operational
    /// event `hookmesh.endpoint.disabled` tells whoever subscribes to it).
    #[arg(
        long,
        env = "HOOKMESH_DISABLE_FAILING_ENDPOINTS_AFTER_HOURS",
        default_value_t = 120
    )]
    pub disable_failing_endpoints_after_hours: u64,
    /// Delivery attempts in flight at most. The engine starts at 64 and doubles towards this
    /// while every slot is busy with slow receivers, shrinking back when calm.
    #[arg(long, env = "HOOKMESH_DELIVERY_CONCURRENCY", default_value_t = 256)]
    pub delivery_concurrency: usize,
    /// Open an endpoint's circuit after this many failed attempts in a row.
    #[arg(
        long,
        env = "HOOKMESH_BREAKER_CONSECUTIVE_FAILURES",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub breaker_consecutive_failures: u32,
    /// Open it too when this share of the last `--breaker-window` attempts failed (0 < ratio ≤ 1;
    /// above 1 turns the rule off).
    #[arg(long, env = "HOOKMESH_BREAKER_FAILURE_RATIO", default_value_t = 0.5, value_parser = failure_ratio)]
    pub breaker_failure_ratio: f64,
    /// Attempts the failure ratio is taken over.
    #[arg(
        long,
        env = "HOOKMESH_BREAKER_WINDOW",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub breaker_window: u32,
    /// First cooldown of an open circuit, in seconds (doubled after each failed probe, at most
    /// ten minutes).
    #[arg(long, env = "HOOKMESH_BREAKER_COOLDOWN_SECS", default_value_t = 30)]
    pub breaker_cooldown_secs: u64,
    /// How long events (with their deliveries and attempts) and inbound webhooks are kept:
    /// `30d`, `12h`, `90m`, `45s`, or `off` to keep them forever. An event with a delivery
    /// still pending stays until it finishes; an inbound webhook stays while its duplicate
    /// window lasts.
    #[arg(long, env = "HOOKMESH_RETENTION", default_value = "30d")]
    pub retention: crate::retention::Retention,
    /// Also run the Kubernetes controller in this process (in a pod with a service account,
    /// or with KUBECONFIG). Run it in one replica only.
    #[arg(long, env = "HOOKMESH_KUBERNETES_CONTROLLER")]
    pub kubernetes_controller: bool,
    /// With `--kubernetes-controller`: watch this namespace only (default: all).
    #[arg(
        long,
        env = "HOOKMESH_KUBERNETES_NAMESPACE",
        requires = "kubernetes_controller"
    )]
    pub kubernetes_namespace: Option<String>,
}

fn failure_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        Ok(_) => Err(format!("{s} is not a ratio above 0 (e.g. 0.5 for half)")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

/// The xDS server and what it pushes.
#[derive(Debug, Args)]
pub struct XdsArgs {
    /// Address of the xDS (ADS/ECDS) gRPC server the Envoys connect to.
    #[arg(long, env = "HOOKMESH_XDS_LISTEN", default_value = "127.0.0.1:18000")]
    pub xds_listen: SocketAddr,
    /// Path of hookmesh_filter.wasm as the Envoys see it (sidecars on this host, or a mounted
    /// volume); made absolute.
    #[arg(
        long,
        env = "HOOKMESH_WASM_MODULE",
        default_value = "hookmesh_filter.wasm"
    )]
    pub wasm_module: PathBuf,
    /// Serve the module to remote Envoys over HTTP instead: its URL (needs --wasm-module-sha256
    /// and --wasm-module-cluster).
    #[arg(long, env = "HOOKMESH_WASM_MODULE_URL", requires_all = ["wasm_module_sha256", "wasm_module_cluster"])]
    pub wasm_module_url: Option<String>,
    /// Hex SHA-256 of the module at --wasm-module-url; Envoy refuses anything else.
    #[arg(long, env = "HOOKMESH_WASM_MODULE_SHA256")]
    pub wasm_module_sha256: Option<String>,
    /// The Envoy cluster that reaches --wasm-module-url's host.
    #[arg(long, env = "HOOKMESH_WASM_MODULE_CLUSTER")]
    pub wasm_module_cluster: Option<String>,
    /// Name of the filter in the Envoy listeners (the ECDS resource name).
    #[arg(long, env = "HOOKMESH_FILTER_NAME", default_value = "hookmesh")]
    pub filter_name: String,
    /// Requests matching no source: reject (404) or pass.
    #[arg(long, env = "HOOKMESH_UNMATCHED", default_value = "reject", value_parser = ["reject", "pass"])]
    pub unmatched: String,
    /// Trusted proxies in front of the Envoys (must equal their xff_num_trusted_hops).
    #[arg(long, env = "HOOKMESH_TRUSTED_HOPS", default_value_t = 0)]
    pub trusted_hops: u8,
}

impl XdsArgs {
    fn settings(&self) -> anyhow::Result<XdsSettings> {
        let module = match (
            &self.wasm_module_url,
            &self.wasm_module_sha256,
            &self.wasm_module_cluster,
        ) {
            (Some(url), Some(sha256), Some(cluster)) => {
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    anyhow::bail!("--wasm-module-sha256: expected 64 hexadecimal characters");
                }
                ModuleSource::Remote {
                    url: url.clone(),
                    sha256: sha256.to_ascii_lowercase(),
                    cluster: cluster.clone(),
                }
            }
            _ => {
                let path = std::path::absolute(&self.wasm_module)
                    .with_context(|| format!("--wasm-module {}", self.wasm_module.display()))?;
                if !path.is_file() {
                    tracing::warn!(path = %path.display(), "--wasm-module: no such file here; Envoys on this host will refuse the configuration");
                }
                ModuleSource::File(path.display().to_string())
            }
        };
        Ok(XdsSettings {
            filter_name: self.filter_name.clone(),
            module,
            default_action: if self.unmatched == "pass" {
                DefaultAction::Pass
            } else {
                DefaultAction::Reject
            },
            trusted_hops: self.trusted_hops,
        })
    }
}

/// `hookmesh rekey`.
#[derive(Debug, Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

fn keys(db: &DbArgs, k: &KeyArgs) -> anyhow::Result<MasterKeys> {
    Ok(MasterKeys::load(
        &db.data_dir,
        k.master_key.as_deref(),
        &k.previous_master_keys,
    )?)
}

/// The CA certificates in `path` (PEM), each checked to be usable as a trust anchor.
fn trusted_cas(
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let name = || format!("--delivery-ca-file {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(name)?;
    if certs.is_empty() {
        anyhow::bail!("{}: no PEM certificate in the file", name());
    }
    let mut check = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .with_context(|| format!("{}: certificate {}", name(), i + 1))?;
    }
    Ok(certs)
}

/// Runs `serve` until SIGINT or SIGTERM.
///
/// # Errors
/// Start-up failures, each naming the setting at fault.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging(&args.log, args.log_json);
    let store = server::open_store(&args.db.url(), &args.db.data_dir)
        .await
        .context("--database-url")?;
    let allow = args
        .allow_destination_cidrs
        .iter()
        .map(|c| {
            c.parse()
                .map_err(|e| anyhow::anyhow!("--allow-destination-cidrs {c}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let delivery = crate::delivery::DeliverySettings {
        allow_destination_cidrs: allow,
        trusted_cas: match &args.delivery_ca_file {
            Some(path) => trusted_cas(path)?,
            None => Vec::new(),
        },
        concurrency: args.delivery_concurrency,
        breaker_threshold: args.breaker_consecutive_failures,
        breaker_failure_ratio: args.breaker_failure_ratio,
        breaker_window: args.breaker_window,
        breaker_cooldown: std::time::Duration::from_secs(args.breaker_cooldown_secs),
        disable_after: std::time::Duration::from_secs(
            args.disable_failing_endpoints_after_hours
                .saturating_mul(3600),
        ),
    };
    let state = server::state_with(
        store,
        keys(&args.db, &args.keys).context("--master-key")?,
        args.xds.settings()?,
        delivery,
    )
    .await
    .context("building the filter configuration from the stored sources")?;
    if let Some(key) = server::bootstrap_admin(&state, args.admin_key.as_deref()).await? {
        println!("hookmesh: generated the first admin API key (shown only this once):\n{key}");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let xds_listener = tokio::net::TcpListener::bind(args.xds.xds_listen)
        .await
        .with_context(|| format!("--xds-listen {}", args.xds.xds_listen))?;
    let ingest_listener = server::IngestListener::bind(&args.ingest_listen)
        .await
        .with_context(|| format!("--ingest-listen {}", args.ingest_listen))?;
    tracing::info!(listen = %listener.local_addr()?, xds = %xds_listener.local_addr()?, ingest = %ingest_listener.describe(), database = state.store.backend(), "hookmesh control plane serving");
    let _refresher = state
        .config
        .spawn_refresher(std::time::Duration::from_secs(2));
    let _housekeeping =
        crate::retention::spawn(state.store.clone(), args.retention, state.metrics.clone());
    let _jobs = crate::api::spawn_job_keeper(state.clone());
    // One signal stops both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let xds = crate::xds::Xds::new(state.config.clone(), state.envoys.clone());
    let xds_task = tokio::spawn(crate::xds::serve(
        xds_listener,
        xds,
        stopped(stop_rx.clone()),
    ));
    let ingest_task = tokio::spawn(server::serve_ingest(
        ingest_listener,
        state.ingest.clone(),
        stopped(stop_rx.clone()),
    ));
    if args.kubernetes_controller {
        let kube = kube::Client::try_default().await.context(
            "--kubernetes-controller: no Kubernetes configuration (a pod's service account, or KUBECONFIG)",
        )?;
        let key = server::bootstrap_controller_key(&state).await?;
        let cp = crate::k8s::client::ControlPlaneClient::in_process(
            crate::api::router(state.clone()),
            key,
        );
        let ctx = std::sync::Arc::new(crate::k8s::controller::Context::new(
            kube,
            cp,
            std::env::var("POD_NAME").ok(),
        ));
        tokio::spawn(crate::k8s::controller::run(
            ctx,
            args.kubernetes_namespace.clone(),
            stopped(stop_rx.clone()),
        ));
        tracing::info!("kubernetes controller running in-process");
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    server::serve(listener, state, stopped(stop_rx)).await?;
    xds_task
        .await
        .context("xds server task")?
        .context("xds server")?;
    ingest_task
        .await
        .context("ingest server task")?
        .context("ingest server")?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs `migrate`.
///
/// # Errors
/// Connection or migration failures.
pub async fn migrate(args: DbArgs) -> anyhow::Result<()> {
    let store = server::open_store(&args.url(), &args.data_dir)
        .await
        .context("--database-url")?;
    println!("migrations applied ({})", store.backend());
    Ok(())
}

/// Runs `rekey`.
///
/// # Errors
/// Secrets no configured key opens, or storage failures.
pub async fn rekey(args: RekeyArgs) -> anyhow::Result<()> {
    let store = server::open_store(&args.db.url(), &args.db.data_dir)
        .await
        .context("--database-url")?;
    let state = server::state(store, keys(&args.db, &args.keys)?).await?;
    let n = server::rekey(&state).await?;
    println!("re-sealed {n} secret bundle(s) under the current master key");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: draining in-flight requests");
}
