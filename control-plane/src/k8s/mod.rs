//! Kubernetes: custom resources generated from Rust types, and the controller that reconciles
//! them into the control plane.
//!
//! # Layout
//! - [`crd`]: the resource types (`WebhookSource`, `WebhookEndpoint`, `EventType`).
//! - [`reconcile`]: the controller's decisions, pure: observed state in, writes and status out.
//!
//! `hookmesh crds` prints the definitions; `k8s/crds/` holds them, checked against these types
//! by a test.

pub mod client;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod reconcile;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every custom resource definition, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        crd::WebhookSource::crd(),
        crd::WebhookEndpoint::crd(),
        crd::EventType::crd(),
    ]
}

/// A definition as YAML, the form `kubectl apply` takes and `k8s/crds/` holds.
///
/// # Errors
/// When the definition cannot be serialized (it always can: it is built from these types).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    Ok(format!(
        "# Generated from control-plane/src/k8s/crd.rs by `hookmesh crds`: do not edit.\n{}",
        serde_saphyr::to_string(crd)?
    ))
}

#[cfg(test)]
mod tests;
