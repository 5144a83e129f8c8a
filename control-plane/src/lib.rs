//! hookmesh control plane: one binary that stores webhook configuration, pushes it to the
//! Envoy filters, and delivers webhooks.
//!
//! # Layout
//! - [`cli`]: the command line; `main.rs` only parses and dispatches.
//! - [`server`]: start-up (store, migrations, bootstrap admin key) and graceful serving.
//! - [`api`]: the REST API, one module per resource, problem+json errors, OpenAPI.
//! - [`delivery`]: durable outbound delivery: group commit, leases, signing, retries.
//! - [`store`]: the `Store` trait with SQLite and PostgreSQL implementations.
//! - [`retention`]: how long events and inbound webhooks are kept, and the purge.
//! - [`secrets`]: AEAD sealing of secrets at rest under a master key.
//! - [`telemetry`]: logging and Prometheus metrics.
//! - [`xds`]: the ADS/ECDS server pushing the filter configuration to every Envoy.
//! - [`ids`]: time-ordered prefixed ids, random tokens, time.
//! - [`k8s`]: custom resources and the controller that reconciles them into the control plane.
//!
//! The signature schemes are not reimplemented here: [`hookmesh_filter`] is the one
//! implementation, used by the Envoy filter to verify and by this crate to sign and debug.

pub mod api;
pub mod cli;
pub mod delivery;
pub mod ids;
pub mod ingest;
pub mod k8s;
pub mod retention;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod xds;
