//! A hub source's processing settings (`ingest` on `/v1/sources`), and their compiled form.
//!
//! They belong to the control plane, not the filter: the filter verifies at the edge, and this
//! says what happens to what it accepted. Validation names the failing field the way the
//! source's `spec` does (`ingest.routes[1].when: …`).

use super::jq::Program;
use crate::api::error::FieldError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What the hub does with a source's accepted webhooks.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Duplicate detection (default: the provider's delivery id, kept 24 hours).
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Validation of the parsed payload against an event type's JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<ValidateConfig>,
    /// Reshaping of the parsed payload into the outbound event.
    #[serde(default)]
    pub transform: TransformConfig,
    /// Routes, evaluated in order; every matching route delivers (until one with `stop`).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Request headers stored masked besides `authorization`, `cookie` and
    /// `proxy-authorization` (lower-case names).
    #[serde(default)]
    pub mask_headers: Vec<String>,
}

/// Duplicate detection.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Where the key comes from.
    #[serde(default)]
    pub key: DedupKey,
    /// How long a key is remembered, in seconds (1 to 2,592,000; default 86,400).
    #[serde(default = "default_window")]
    pub window_secs: u64,
}

fn default_window() -> u64 {
    86_400
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            key: DedupKey::Auto,
            window_secs: default_window(),
        }
    }
}

/// The duplicate-detection key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DedupKey {
    /// The provider's delivery id: `webhook-id`, `svix-id`, `x-github-delivery`,
    /// `x-shopify-event-id`, `x-shopify-webhook-id`; for Stripe the event's `/id`, for Slack
    /// and Paddle its `/event_id`. Webhooks without one are never duplicates.
    #[default]
    Auto,
    /// No duplicate detection.
    Off,
    /// A request header (case-insensitive).
    Header(String),
    /// A JSON pointer into the parsed payload (`/data/id`).
    Pointer(String),
}

/// A string (`auto`, `off`) or an object (`{"header": …}`, `{"pointer": …}`): structural
/// schemas cannot say "one or the other", so the value is kept as written and validated by the
/// control plane.
impl schemars::JsonSchema for DedupKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DedupKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The duplicate-detection key: `auto` (the provider's delivery id, default), `off`, `{\"header\": \"<name>\"}` or `{\"pointer\": \"/json/pointer\"}`.",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

/// Schema validation.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// The event type (of the source's tenant) whose newest version's schema applies.
    pub event_type: String,
    /// What an invalid payload gets.
    #[serde(default)]
    pub on_invalid: InvalidPolicy,
}

/// What happens to a payload that fails validation (or cannot be parsed).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum InvalidPolicy {
    /// 400 to the provider; nothing is stored.
    #[default]
    Reject,
    /// Stored as `quarantined` (2xx to the provider) until released or deleted.
    Quarantine,
}

/// The transformation.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// jq program computing the outbound payload from the parsed one (default `.`), with
    /// `$meta` = `{source, source_id, received_at, client_ip, method, path, query, headers}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jq: Option<String>,
    /// MiniJinja template rendering the outbound payload as JSON text instead, with `payload`
    /// and `meta` in scope. Strict on undefined fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// jq program computing the event type (default: the source's name), e.g. `.type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
}

/// One route.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name, shown in routing decisions.
    pub name: String,
    /// jq condition on the parsed payload (with `$meta`, whose `headers` are the request's);
    /// the route applies when its first output is neither `false`, `null` nor absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Only these event types (`invoice.*` matches `invoice.paid`); empty: any.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Destination endpoints: ids (`ep_…`) of the source's tenant; in a Kubernetes
    /// `WebhookSource`, names of `WebhookEndpoint`s in its namespace.
    pub to: Vec<String>,
    /// Used instead of a destination while its circuit is open or it is disabled (an id, or in
    /// a `WebhookSource` a `WebhookEndpoint`'s name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    /// Delivered ahead of normal-priority work.
    #[serde(default)]
    pub high_priority: bool,
    /// Share of matching webhooks delivered, 0 to 100 (default 100). Chosen by the inbound
    /// event's id, so a replay decides the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_percent: Option<f64>,
    /// jq program computing an ordering key (e.g. `.data.object.customer`): webhooks with the
    /// same key are delivered to each destination one after another, in arrival order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_key: Option<String>,
    /// Evaluate no further routes after this one matched.
    #[serde(default)]
    pub stop: bool,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub(super) name: String,
    pub(super) when: Option<Program>,
    pub(super) event_types: Vec<String>,
    pub(super) to: Vec<String>,
    pub(super) failover: Option<String>,
    pub(super) priority: i64,
    /// Out of 10,000.
    pub(super) sample: u32,
    pub(super) order_key: Option<Program>,
    pub(super) stop: bool,
}

/// A compiled transformation.
#[derive(Debug)]
pub enum Transform {
    /// The parsed payload as it is.
    Identity,
    /// A jq program.
    Jq(Program),
    /// A MiniJinja template (its source; rendered with a fuel budget).
    Template(Arc<str>),
}

/// A source's compiled settings.
#[derive(Debug)]
pub struct Pipeline {
    pub(super) dedup: Option<(DedupKey, i64)>,
    pub(super) validate: Option<(Option<Arc<jsonschema::Validator>>, InvalidPolicy, String)>,
    pub(super) transform: Transform,
    pub(super) event_type: Option<Program>,
    pub(super) routes: Vec<Route>,
    pub(super) mask_headers: Vec<String>,
    /// Whether a program or the template reads the request's metadata.
    pub(super) needs_meta: bool,
}

fn jq(code: &str, field: String, errors: &mut Vec<FieldError>) -> Option<Program> {
    match Program::compile(code) {
        Ok(p) => Some(p),
        Err(message) => {
            errors.push(FieldError { field, message });
            None
        }
    }
}

impl IngestConfig {
    /// Validates and compiles. `endpoint_ok` says whether an id names an endpoint of the
    /// source's tenant; `schema` finds an event type's newest schema (`None`: no such type).
    ///
    /// # Errors
    /// Every invalid field, under `ingest.`.
    pub fn compile(
        &self,
        endpoint_ok: &dyn Fn(&str) -> bool,
        schema: &dyn Fn(&str) -> Option<Option<Arc<jsonschema::Validator>>>,
    ) -> Result<Pipeline, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: &str| {
            errors.push(FieldError {
                field: format!("ingest.{field}"),
                message: message.to_owned(),
            })
        };
        if !(1..=2_592_000).contains(&self.dedup.window_secs) {
            bad(
                "dedup.window_secs",
                "must be 1 to 2,592,000 seconds (30 days)",
            );
        }
        match &self.dedup.key {
            DedupKey::Header(h) if h.is_empty() || h.contains([' ', ':']) => {
                bad("dedup.key.header", "not a header name")
            }
            DedupKey::Pointer(p) if !p.starts_with('/') => {
                bad("dedup.key.pointer", "a JSON pointer starts with `/`")
            }
            _ => {}
        }
        let validate = match &self.validate {
            None => None,
            Some(v) => match schema(&v.event_type) {
                None => {
                    bad(
                        "validate.event_type",
                        "no such event type in the source's tenant",
                    );
                    None
                }
                Some(validator) => Some((validator, v.on_invalid, v.event_type.clone())),
            },
        };
        for (i, h) in self.mask_headers.iter().enumerate() {
            if h.is_empty() || h.contains([' ', ':']) {
                bad(&format!("mask_headers[{i}]"), "not a header name");
            }
        }
        if self.transform.jq.is_some() && self.transform.template.is_some() {
            bad("transform", "give `jq` or `template`, not both");
        }
        if self.routes.len() > 64 {
            bad("routes", "at most 64 routes");
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.name.is_empty() || r.name.len() > 64 {
                bad(&format!("routes[{i}].name"), "1 to 64 characters");
            } else if !names.insert(r.name.as_str()) {
                bad(&format!("routes[{i}].name"), "another route has this name");
            }
            if r.to.is_empty() || r.to.len() > 16 {
                bad(&format!("routes[{i}].to"), "1 to 16 endpoint ids");
            }
            for (j, id) in r.to.iter().enumerate() {
                if !endpoint_ok(id) {
                    bad(
                        &format!("routes[{i}].to[{j}]"),
                        "no such endpoint in the source's tenant",
                    );
                }
            }
            if let Some(f) = &r.failover {
                if !endpoint_ok(f) {
                    bad(
                        &format!("routes[{i}].failover"),
                        "no such endpoint in the source's tenant",
                    );
                } else if r.to.contains(f) {
                    bad(
                        &format!("routes[{i}].failover"),
                        "the failover must not be one of the destinations",
                    );
                }
            }
            if r.sample_percent
                .is_some_and(|p| !(0.0..=100.0).contains(&p) || p.is_nan())
            {
                bad(&format!("routes[{i}].sample_percent"), "0 to 100");
            }
        }
        if let Some(t) = &self.transform.template {
            if let Err(e) = crate::delivery::body::check_template(t) {
                errors.push(FieldError {
                    field: "ingest.transform.template".into(),
                    message: e,
                });
            }
        }
        let transform = match (&self.transform.jq, &self.transform.template) {
            (Some(code), _) => jq(code, "ingest.transform.jq".into(), &mut errors)
                .map_or(Transform::Identity, Transform::Jq),
            (None, Some(t)) => Transform::Template(Arc::from(t.as_str())),
            (None, None) => Transform::Identity,
        };
        let event_type = self
            .transform
            .event_type
            .as_deref()
            .and_then(|c| jq(c, "ingest.transform.event_type".into(), &mut errors));
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            routes.push(Route {
                name: r.name.clone(),
                when: r
                    .when
                    .as_deref()
                    .and_then(|c| jq(c, format!("ingest.routes[{i}].when"), &mut errors)),
                event_types: r.event_types.clone(),
                to: r.to.clone(),
                failover: r.failover.clone(),
                priority: i64::from(r.high_priority),
                sample: (r.sample_percent.unwrap_or(100.0).clamp(0.0, 100.0) * 100.0).round()
                    as u32,
                order_key: r
                    .order_key
                    .as_deref()
                    .and_then(|c| jq(c, format!("ingest.routes[{i}].order_key"), &mut errors)),
                stop: r.stop,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let needs_meta = {
            let mut programs = std::iter::once(match &transform {
                Transform::Jq(p) => Some(p),
                _ => None,
            })
            .chain(std::iter::once(event_type.as_ref()))
            .chain(
                routes
                    .iter()
                    .flat_map(|r| [r.when.as_ref(), r.order_key.as_ref()]),
            )
            .flatten();
            matches!(transform, Transform::Template(_)) || programs.any(|p| p.uses_meta())
        };
        Ok(Pipeline {
            needs_meta,
            dedup: match self.dedup.key {
                DedupKey::Off => None,
                ref k => Some((k.clone(), self.dedup.window_secs as i64 * 1000)),
            },
            validate,
            transform,
            event_type,
            routes,
            mask_headers: self
                .mask_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        })
    }
}
