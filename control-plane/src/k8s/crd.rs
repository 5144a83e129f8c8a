//! The custom resources (group `hookmesh.dev`, version `v1alpha1`, namespaced): one per REST
//! resource, with the same fields and the same types (the filter's `SourceConfig`, the hub's
//! `IngestConfig`, the endpoint's `RetryPolicy` …), so the two APIs cannot drift apart. What
//! differs is what Kubernetes needs:
//! - the tenant is named (`tenant`, default: the namespace's name), not given by id;
//! - a secret is a reference `<secret-name>/<key>` to a `Secret` in the same namespace, never
//!   its value (the schema's pattern refuses anything else);
//! - a hub route's destinations name `WebhookEndpoint`s of the namespace, not endpoint ids;
//! - `status` reports the sync with the control plane in Kubernetes' own shape (camelCase
//!   conditions), so `kubectl wait --for=condition=Ready` works.

// Each `printcolumn(…)` of kube's derive names a `type_`: clippy reads them as one attribute
// repeated.
#![allow(clippy::duplicated_attributes)]

use crate::api::{Batching, RetryPolicy};
use crate::ingest::config::IngestConfig;
use hookmesh_filter::config::{Secret, SourceConfig};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An inbound webhook source: the filter configuration every Envoy sidecar enforces, and for
/// hub sources what the control plane does with accepted webhooks.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hookmesh.dev",
    version = "v1alpha1",
    kind = "WebhookSource",
    namespaced,
    status = "SyncStatus",
    shortname = "whsource",
    category = "hookmesh",
    doc = "An inbound webhook source, verified by the Envoy filter (docs/filter-config.md, docs/kubernetes.md).",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Path",
        type_ = "string",
        json_path = ".spec.source.match.path_prefix"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.configVersion",
        description = "The filter configuration version that carries this generation"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.ingest) || (has(self.source.mode) && self.source.mode == 'hub')",
     "message": "ingest settings need source.mode: hub"},
]))]
pub struct WebhookSourceSpec {
    /// The control plane tenant's name; defaults to the namespace's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "tenant is immutable: create the resource anew"},
    ]))]
    pub tenant: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The filter configuration of this source; its secrets are Secret references.
    pub source: SourceConfig,
    /// Hub sources: dedup, validation, transformation and routes to `WebhookEndpoint`s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestConfig>,
}

/// An outbound destination that events are delivered to, signed, with retries.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hookmesh.dev",
    version = "v1alpha1",
    kind = "WebhookEndpoint",
    namespaced,
    status = "SyncStatus",
    shortname = "whendpoint",
    category = "hookmesh",
    doc = "An outbound webhook destination (docs/delivery.md, docs/kubernetes.md).",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".status.appliedVersion",
        description = "The control plane's version of the endpoint"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.batch) || !(has(self.ordered) && self.ordered)", "message": "batch is not possible with ordered (FIFO) delivery"},
    {"rule": "!has(self.batch) || (!has(self.template) && (!has(self.format) || self.format == 'json'))",
     "message": "batches are JSON arrays: not with a template or another format"},
    {"rule": "!has(self.method) || self.method != 'GET' || !has(self.format) || self.format == 'json'",
     "message": "form and xml need a method with a body, not GET"},
]))]
pub struct WebhookEndpointSpec {
    /// The control plane tenant's name; defaults to the namespace's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "tenant is immutable: create the resource anew"},
    ]))]
    pub tenant: Option<String>,
    /// Destination URL (http or https).
    #[schemars(pattern(r"^https?://[^/?#\s]+([/?#]\S*)?$"))]
    pub url: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Subscribed event types; `invoice.*` matches every `invoice.` type; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Retry policy; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Deliveries per second at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub rate_limit_per_sec: Option<f64>,
    /// Per-attempt timeout in seconds (default 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_secs: Option<u64>,
    /// Attempts in flight to this endpoint at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrency: Option<u32>,
    /// FIFO: one delivery in flight at a time, in order.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
    /// HTTP method (default POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["POST", "PUT", "PATCH", "DELETE", "GET"]))]
    pub method: Option<String>,
    /// Extra query parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// `standard` (`webhook-*` headers, default) or `svix` (`svix-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["standard", "svix"]))]
    pub header_style: Option<String>,
    /// `gzip` compresses request bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["gzip"]))]
    pub compression: Option<String>,
    /// Body format: `json` (default), `form` or `xml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["json", "form", "xml"]))]
    pub format: Option<String>,
    /// A MiniJinja template rendering the body from `event` and `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub template: Option<String>,
    /// Deliver events in batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batching>,
    /// Disabled endpoints receive nothing (default true).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The signing secret (`whsec_…`), as a Secret reference; the control plane generates one
    /// when absent. Changing the Secret rotates it, the previous one staying valid for a day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
}

fn enabled() -> bool {
    true
}

/// A named, versioned payload schema, used by hub validation and shown to consumers.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hookmesh.dev",
    version = "v1alpha1",
    kind = "EventType",
    namespaced,
    status = "SyncStatus",
    shortname = "whevtype",
    category = "hookmesh",
    doc = "A named, versioned event payload schema (docs/kubernetes.md).",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Event", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Schema", type_ = "integer", json_path = ".spec.version"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.name == oldSelf.name && self.version == oldSelf.version",
     "message": "name and version are immutable: create another EventType for a new version"},
]))]
pub struct EventTypeSpec {
    /// The control plane tenant's name; defaults to the namespace's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "tenant is immutable: create the resource anew"},
    ]))]
    pub tenant: Option<String>,
    /// Name such as `invoice.paid`.
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// Schema version, from 1.
    #[serde(default = "first_version")]
    #[schemars(range(min = 1))]
    pub version: u32,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// JSON Schema of the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub schema: Option<serde_json::Value>,
}

fn first_version() -> u32 {
    1
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "A JSON Schema document.",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// How a resource stands with the control plane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// `Synced` (stored in the control plane), `Ready` (synced and, for sources, applied by
    /// every connected Envoy), `Degraded` (something needs attention).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The control plane's id of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The control plane's version of the resource (its ETag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<i64>,
    /// Sources: the version of the filter configuration pushed to the Envoys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// A digest of what was applied (the spec with its Secrets' values): the controller
    /// rewrites the control plane's copy only when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
}

/// A status condition, as Kubernetes' `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Synced` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
