//! `hookmesh controller`: the Kubernetes controller as its own process, writing to a remote
//! control plane through its REST API.

use crate::k8s::client::ControlPlaneClient;
use crate::k8s::controller::{run as run_controllers, Context};
use anyhow::Context as _;
use std::sync::Arc;

/// Arguments of `hookmesh controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// The control plane's REST API.
    #[arg(
        long,
        env = "HOOKMESH_CONTROL_PLANE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub control_plane: url::Url,
    /// An API key with the `admin` scope (tenants are created by name).
    #[arg(long, env = "HOOKMESH_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Watch this namespace only (default: all namespaces).
    #[arg(long, env = "HOOKMESH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Log filter.
    #[arg(long, env = "HOOKMESH_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines.
    #[arg(long, env = "HOOKMESH_LOG_JSON")]
    pub log_json: bool,
}

/// Runs the controllers until SIGINT or SIGTERM.
///
/// # Errors
/// No Kubernetes configuration (in-cluster service account or kubeconfig).
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging(&args.log, args.log_json);
    let kube = kube::Client::try_default().await.context(
        "no Kubernetes configuration: run in a pod with a service account, or set KUBECONFIG",
    )?;
    let cp = ControlPlaneClient::remote(args.control_plane.clone(), args.api_key)
        .context("HTTP client")?;
    let ctx = Arc::new(Context::new(kube, cp, std::env::var("POD_NAME").ok()));
    tracing::info!(control_plane = %args.control_plane, namespace = args.namespace.as_deref().unwrap_or("(all)"), "hookmesh controller running");
    run_controllers(ctx, args.namespace, super::serve::shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}
