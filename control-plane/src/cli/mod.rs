//! Command-line interface.

pub mod controller;
pub mod crds;
pub mod serve;
pub mod sig;

use clap::{Parser, Subcommand};

/// hookmesh: webhook management for the service mesh.
#[derive(Debug, Parser)]
#[command(name = "hookmesh", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (applies migrations first).
    Serve(Box<serve::ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(serve::DbArgs),
    /// Re-seal every stored secret under the current master key (after a key rotation).
    Rekey(serve::RekeyArgs),
    /// Sign or verify webhook signatures with the filter's own code (debugging aid).
    #[command(subcommand)]
    Sig(sig::SigCommand),
    /// Reconcile the Kubernetes custom resources into a control plane (docs/kubernetes.md).
    Controller(Box<controller::ControllerArgs>),
    /// Print the Kubernetes custom resource definitions (k8s/crds/ holds them).
    Crds(crds::CrdsArgs),
}
