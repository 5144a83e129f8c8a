//! `hookmesh serve`, `migrate` and `rekey`: settings from flags or `HOOKMESH_*` variables.

use crate::secrets::MasterKeys;
use crate::server;
use anyhow::Context;
use clap::Args;
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

/// Runs `serve` until SIGINT or SIGTERM.
///
/// # Errors
/// Start-up failures, each naming the setting at fault.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging(&args.log, args.log_json);
    let store = server::open_store(&args.db.url(), &args.db.data_dir)
        .await
        .context("--database-url")?;
    let state = server::state(store, keys(&args.db, &args.keys).context("--master-key")?);
    if let Some(key) = server::bootstrap_admin(&state, args.admin_key.as_deref()).await? {
        println!("hookmesh: generated the first admin API key (shown only this once):\n{key}");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, database = state.store.backend(), "hookmesh control plane serving");
    server::serve(listener, state, shutdown_signal()).await?;
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
    let state = server::state(store, keys(&args.db, &args.keys)?);
    let n = server::rekey(&state).await?;
    println!("re-sealed {n} secret bundle(s) under the current master key");
    Ok(())
}

async fn shutdown_signal() {
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
