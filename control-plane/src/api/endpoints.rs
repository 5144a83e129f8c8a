//! `/v1/endpoints`: outbound destinations. Each has a `whsec_` signing secret (generated unless
//! given, sealed at rest) that can be read with `GET …/secret` and rotated with an overlap
//! during which the previous one stays valid.

use super::auth::{Access, Area, Principal};
use super::error::{ApiError, FieldError};
use super::extract::{AppJson, AppQuery, IfMatch, Page, PageParams};
use super::resource::{
    audit, check_if_match, delete, insert_audited, keep_manager, list_page, load, require_manager,
    require_tenant, update_audited, with_etag, ManagedBy, Manager,
};
use super::AppState;
use crate::ids::{new_id, now_ms, random_bytes, rfc3339};
use crate::store::{Kind, Resource};
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest overlap a rotation may keep the previous secret valid: 30 days.
const MAX_OVERLAP_SECS: u64 = 30 * 24 * 3600;

/// How failed deliveries are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RetryPolicy {
    /// Delays growing by `multiplier` from `initial_secs` up to `max_secs`.
    Exponential {
        /// First delay.
        initial_secs: u64,
        /// Growth factor (≥ 1).
        multiplier: f64,
        /// Longest delay.
        max_secs: u64,
        /// Attempts before dead-lettering.
        max_attempts: u32,
        /// Give up after this long since the first attempt.
        max_age_secs: Option<u64>,
    },
    /// Explicit delays between attempts.
    Schedule {
        /// Delay before each retry.
        delays_secs: Vec<u64>,
    },
}

/// Kubernetes' structural schemas have no tagged unions: one object with both variants' fields,
/// `type` choosing, and CEL rules for what each requires.
impl schemars::JsonSchema for RetryPolicy {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetryPolicy".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "How failed deliveries are retried: `exponential` delays, or an explicit `schedule`.",
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["exponential", "schedule"]},
                "initial_secs": {"type": "integer", "minimum": 0, "description": "exponential: first delay."},
                "multiplier": {"type": "number", "minimum": 1, "description": "exponential: growth factor."},
                "max_secs": {"type": "integer", "minimum": 0, "description": "exponential: longest delay."},
                "max_attempts": {"type": "integer", "minimum": 1, "description": "exponential: attempts before dead-lettering."},
                "max_age_secs": {"type": "integer", "minimum": 0, "description": "exponential: give up after this long since the first attempt."},
                "delays_secs": {"type": "array", "items": {"type": "integer", "minimum": 0}, "description": "schedule: the delay before each retry."},
            },
            "x-kubernetes-validations": [
                {"rule": "self.type != 'exponential' || (has(self.initial_secs) && has(self.multiplier) && has(self.max_secs) && has(self.max_attempts))",
                 "message": "exponential needs initial_secs, multiplier, max_secs and max_attempts"},
                {"rule": "self.type != 'schedule' || has(self.delays_secs)", "message": "schedule needs delays_secs"},
                {"rule": "self.type == 'schedule' || !has(self.delays_secs)", "message": "delays_secs belongs to schedule"},
            ],
        })
    }
}

/// Create or replace an endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// Owning tenant (required with a global key; defaults to the key's tenant).
    pub tenant_id: Option<String>,
    /// Destination URL (http or https).
    pub url: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Subscribed event types; `invoice.*` matches every `invoice.` type; empty means all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Retry policy; the server default when absent.
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
    /// Deliveries per second at most.
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
    /// Per-attempt timeout in seconds, 1 to 300 (default 15).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Attempts in flight to this endpoint at most, 1 to 10000 (default: no limit of its own).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// FIFO: each event waits until the previous one to this endpoint succeeded or was
    /// dead-lettered (one delivery in flight at a time).
    #[serde(default)]
    pub ordered: bool,
    /// HTTP method: POST (default), PUT, PATCH, DELETE, or GET (the payload then travels in the
    /// `payload` query parameter).
    #[serde(default)]
    pub method: Option<String>,
    /// Extra query parameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// `standard` (`webhook-*` headers, default) or `svix` (`svix-*`, for receivers using Svix's
    /// libraries).
    #[serde(default)]
    pub header_style: Option<String>,
    /// `gzip` compresses request bodies (`content-encoding: gzip`); the signature covers the
    /// uncompressed payload.
    #[serde(default)]
    pub compression: Option<String>,
    /// Body format: `json` (default), `form` (`application/x-www-form-urlencoded`: one field
    /// per top-level payload member, nested values as JSON text) or `xml` (`application/xml`).
    /// The signature covers the body as sent.
    #[serde(default)]
    pub format: Option<String>,
    /// A MiniJinja template that renders the body from `event` (`id`, `type`, `created_at`)
    /// and `payload`; with format `json` its output must be JSON (`tojson` quotes values).
    #[serde(default)]
    pub template: Option<String>,
    /// Deliver events in batches: one request carries up to `max_events` as a JSON array.
    #[serde(default)]
    pub batch: Option<Batching>,
    /// Disabled endpoints receive nothing.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Signing secret (`whsec_` + base64 of 24 to 64 bytes); generated when absent. Ignored by
    /// replace: rotate instead.
    #[serde(default)]
    pub secret: Option<String>,
    /// Marks the endpoint as owned by a manager (the Kubernetes controller); only it can change
    /// or delete the endpoint afterwards.
    #[serde(default)]
    pub managed_by: Option<ManagedBy>,
}

fn enabled() -> bool {
    true
}

/// Batched delivery: a request goes out when `max_events` are waiting, or `max_wait_ms` after
/// the first of them. The body is a JSON array of `{"id", "type", "created_at", "data"}`; the
/// batch succeeds or fails as one, and each event in it records the attempt.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Events per request at most, 2 to 1000.
    pub max_events: u32,
    /// Longest wait for a batch to fill, 1 to 60000 ms.
    pub max_wait_ms: u64,
}

/// An endpoint (its secret is read separately).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// Id (`ep_…`).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Destination URL.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Subscribed event types.
    pub event_types: Vec<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Retry policy, when not the default.
    pub retry_policy: Option<RetryPolicy>,
    /// Deliveries per second at most.
    pub rate_limit_per_sec: Option<f64>,
    /// Per-attempt timeout in seconds (default 15).
    pub timeout_secs: Option<u64>,
    /// Attempts in flight to this endpoint at most.
    pub max_concurrency: Option<u32>,
    /// FIFO delivery.
    pub ordered: bool,
    /// HTTP method.
    pub method: Option<String>,
    /// Extra query parameters.
    pub query: BTreeMap<String, String>,
    /// `standard` or `svix` header names.
    pub header_style: Option<String>,
    /// `gzip` when request bodies are compressed.
    pub compression: Option<String>,
    /// `json`, `form` or `xml`.
    pub format: Option<String>,
    /// The body template, when the payload is reshaped.
    pub template: Option<String>,
    /// Batching, when enabled.
    pub batch: Option<Batching>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Free-form labels.
    pub metadata: BTreeMap<String, String>,
    /// The manager that owns it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<ManagedBy>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The `ETag`.
    pub version: i64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    url: String,
    description: String,
    event_types: Vec<String>,
    headers: BTreeMap<String, String>,
    retry_policy: Option<RetryPolicy>,
    rate_limit_per_sec: Option<f64>,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    ordered: bool,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    header_style: Option<String>,
    #[serde(default)]
    compression: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    batch: Option<Batching>,
    enabled: bool,
    metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    managed_by: Option<ManagedBy>,
}

/// The signing secrets of an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointSecret {
    /// The current secret: deliveries are signed with it.
    pub key: String,
    /// Previous secrets still valid during a rotation overlap.
    pub previous: Vec<PreviousSecret>,
}

/// A rotated-out secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PreviousSecret {
    /// The secret.
    pub key: String,
    /// RFC 3339 time it stops being used.
    pub expires_at: String,
}

/// Rotate the signing secret.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// The new secret; generated when absent.
    #[serde(default)]
    pub key: Option<String>,
    /// How long the previous secret stays valid (default 86400, at most 30 days).
    #[serde(default)]
    pub overlap_secs: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct SealedSecrets {
    current: String,
    previous: Vec<(String, i64)>,
}

fn validate(input: &EndpointInput) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: &str| {
        errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        })
    };
    match url::Url::parse(&input.url) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {}
        Ok(_) => bad("url", "must be an http or https URL with a host"),
        Err(e) => bad("url", &format!("not a URL: {e}")),
    }
    for (i, t) in input.event_types.iter().enumerate() {
        let name = t.strip_suffix(".*").unwrap_or(t);
        let ok = t == "*"
            || (!name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
        if !ok {
            bad(&format!("event_types[{i}]"), "an event type name (letters, digits, `_`, `.`, `-`), optionally ending in `.*`, or `*`");
        }
    }
    for (name, value) in &input.headers {
        let lower = name.to_ascii_lowercase();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            bad(&format!("headers.{name}"), "not a valid header name");
        } else if [
            "host",
            "content-length",
            "content-type",
            "transfer-encoding",
            "connection",
        ]
        .contains(&lower.as_str())
            || lower.starts_with("webhook-")
            || lower.starts_with("svix-")
        {
            bad(&format!("headers.{name}"), "set by hookmesh itself");
        } else if HeaderValue::try_from(value.as_str()).is_err() {
            bad(
                &format!("headers.{name}"),
                "not a valid header value (no control characters such as line breaks)",
            );
        }
    }
    if input
        .rate_limit_per_sec
        .is_some_and(|r| !(r.is_finite() && r > 0.0))
    {
        bad("rate_limit_per_sec", "must be a positive number");
    }
    if input.timeout_secs.is_some_and(|t| !(1..=300).contains(&t)) {
        bad("timeout_secs", "must be 1 to 300");
    }
    if input
        .max_concurrency
        .is_some_and(|c| !(1..=10_000).contains(&c))
    {
        bad("max_concurrency", "must be 1 to 10000");
    }
    if input
        .method
        .as_deref()
        .is_some_and(|m| !["POST", "PUT", "PATCH", "DELETE", "GET"].contains(&m))
    {
        bad("method", "one of POST, PUT, PATCH, DELETE, GET");
    }
    if input
        .header_style
        .as_deref()
        .is_some_and(|h| h != "standard" && h != "svix")
    {
        bad("header_style", "standard or svix");
    }
    if input.compression.as_deref().is_some_and(|c| c != "gzip") {
        bad("compression", "gzip, or absent for none");
    }
    use crate::delivery::body::{check_template, Format};
    match Format::parse(input.format.as_deref()) {
        None => bad("format", "json, form or xml"),
        Some(Format::Form | Format::Xml) if input.method.as_deref() == Some("GET") => {
            bad("format", "form and xml need a method with a body, not GET");
        }
        Some(_) => {}
    }
    if let Some(template) = &input.template {
        if template.len() > 64 * 1024 {
            bad("template", "at most 64 KiB");
        } else if let Err(e) = check_template(template) {
            bad("template", &e);
        }
    }
    if let Some(b) = &input.batch {
        if !(2..=1000).contains(&b.max_events) {
            bad("batch.max_events", "2 to 1000");
        }
        if !(1..=60_000).contains(&b.max_wait_ms) {
            bad("batch.max_wait_ms", "1 to 60000");
        }
        if input.ordered {
            bad("batch", "not with ordered (FIFO) delivery");
        }
        if input.template.is_some() || !matches!(input.format.as_deref(), None | Some("json")) {
            bad(
                "batch",
                "batches are JSON arrays: not with a template or another format",
            );
        }
        if input.method.as_deref() == Some("GET") {
            bad("batch", "batches need a method with a body, not GET");
        }
    }
    match &input.retry_policy {
        Some(RetryPolicy::Exponential {
            initial_secs,
            multiplier,
            max_secs,
            max_attempts,
            ..
        }) => {
            if *initial_secs == 0 || initial_secs > max_secs {
                bad(
                    "retry_policy.initial_secs",
                    "must be at least 1 and at most max_secs",
                );
            }
            if !(multiplier.is_finite() && *multiplier >= 1.0) {
                bad("retry_policy.multiplier", "must be at least 1");
            }
            if *max_attempts == 0 || *max_attempts > 100 {
                bad("retry_policy.max_attempts", "must be 1 to 100");
            }
        }
        Some(RetryPolicy::Schedule { delays_secs })
            if delays_secs.is_empty() || delays_secs.len() > 100 =>
        {
            bad("retry_policy.delays_secs", "must list 1 to 100 delays");
        }
        _ => {}
    }
    if let Some(s) = &input.secret {
        if let Err(m) = check_secret(s) {
            bad("secret", m);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn check_secret(s: &str) -> Result<(), &'static str> {
    let raw = s.strip_prefix("whsec_").ok_or("must start with `whsec_`")?;
    let bytes = STANDARD
        .decode(raw)
        .map_err(|_| "must be `whsec_` followed by base64")?;
    if (24..=64).contains(&bytes.len()) {
        Ok(())
    } else {
        Err("must encode 24 to 64 bytes")
    }
}

fn generate_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random_bytes(32)))
}

fn stored(input: EndpointInput, managed_by: Option<ManagedBy>) -> Stored {
    Stored {
        url: input.url,
        description: input.description,
        event_types: input.event_types,
        headers: input.headers,
        retry_policy: input.retry_policy,
        rate_limit_per_sec: input.rate_limit_per_sec,
        timeout_secs: input.timeout_secs,
        max_concurrency: input.max_concurrency,
        ordered: input.ordered,
        method: input.method,
        query: input.query,
        header_style: input.header_style,
        compression: input.compression,
        format: input.format,
        template: input.template,
        batch: input.batch,
        enabled: input.enabled,
        metadata: input.metadata,
        managed_by,
    }
}

fn view(r: &Resource) -> Result<Endpoint, ApiError> {
    let s: Stored = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    Ok(Endpoint {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        url: s.url,
        description: s.description,
        event_types: s.event_types,
        headers: s.headers,
        retry_policy: s.retry_policy,
        rate_limit_per_sec: s.rate_limit_per_sec,
        timeout_secs: s.timeout_secs,
        max_concurrency: s.max_concurrency,
        ordered: s.ordered,
        method: s.method,
        query: s.query,
        header_style: s.header_style,
        compression: s.compression,
        format: s.format,
        template: s.template,
        batch: s.batch,
        enabled: s.enabled,
        metadata: s.metadata,
        managed_by: s.managed_by,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        version: r.version,
    })
}

fn open_secrets(state: &AppState, r: &Resource) -> Result<SealedSecrets, ApiError> {
    let sealed = r.secrets.as_deref().ok_or_else(|| {
        ApiError::internal(crate::store::StoreError::Corrupt(
            "endpoint without secret".into(),
        ))
    })?;
    serde_json::from_slice(&state.keys.open(sealed, &r.id).map_err(ApiError::internal)?)
        .map_err(ApiError::internal)
}

fn seal_secrets(state: &AppState, id: &str, s: &SealedSecrets) -> Result<Vec<u8>, ApiError> {
    Ok(state
        .keys
        .seal(&serde_json::to_vec(s).map_err(ApiError::internal)?, id))
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, replace, remove))
        .routes(routes!(get_secret))
        .routes(routes!(rotate_secret))
}

/// List endpoints.
#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", params(PageParams),
    responses((status = 200, body = Page<Endpoint>), (status = 401, body = super::error::Problem), (status = 403, body = super::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(page): AppQuery<PageParams>,
) -> Result<AppJson<Page<Endpoint>>, ApiError> {
    who.require(Area::Endpoints, Access::Read)?;
    Ok(AppJson(
        list_page(&state, &who, Kind::Endpoint, &page, view, |x| x.id.clone()).await?,
    ))
}

/// Create an endpoint.
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = EndpointInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 201, body = Endpoint), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<EndpointInput>,
) -> Result<Response, ApiError> {
    who.require(Area::Endpoints, Access::Write)?;
    validate(&input)?;
    if let Some(m) = &input.managed_by {
        m.validate()?;
    }
    let tenant = who.tenant_for_create(input.tenant_id.as_deref())?;
    require_tenant(&state, &who, &tenant).await?;
    let id = new_id("ep");
    let secrets = SealedSecrets {
        current: input.secret.clone().unwrap_or_else(generate_secret),
        previous: Vec::new(),
    };
    let managed_by = input.managed_by.clone();
    let body = serde_json::to_value(stored(input, managed_by)).map_err(ApiError::internal)?;
    let now = now_ms();
    let r = Resource {
        kind: Kind::Endpoint,
        id: id.clone(),
        tenant_id: tenant.clone(),
        unique_key: id.clone(),
        body: body.clone(),
        secrets: Some(seal_secrets(&state, &id, &secrets)?),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    insert_audited(&state, &who, &r).await?;
    refresh_delivery(&state).await;
    Ok(with_etag(StatusCode::CREATED, 1, view(&r)?))
}

/// Get an endpoint.
#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = Endpoint), (status = 404, body = super::error::Problem)))]
async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require(Area::Endpoints, Access::Read)?;
    let r = load(&state, &who, Kind::Endpoint, &id).await?;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Replace an endpoint (its secret is kept; rotate it separately). Honours `If-Match`.
#[utoipa::path(put, path = "/v1/endpoints/{id}", tag = "endpoints", request_body = EndpointInput,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "The ETag last read"), ("Hookmesh-Manager" = Option<String>, Header, description = "The owner's uid, for a resource with `managed_by`")),
    responses((status = 200, body = Endpoint), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 412, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn replace(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    manager: Manager,
    AppJson(input): AppJson<EndpointInput>,
) -> Result<Response, ApiError> {
    who.require(Area::Endpoints, Access::Write)?;
    validate(&input)?;
    let old = load(&state, &who, Kind::Endpoint, &id).await?;
    check_if_match(if_match, old.version)?;
    let managed_by = keep_manager(&old, &manager, input.managed_by.clone())?;
    if input
        .tenant_id
        .as_ref()
        .is_some_and(|t| *t != old.tenant_id)
    {
        return Err(ApiError::field(
            "tenant_id",
            "an endpoint cannot move to another tenant",
        ));
    }
    let body = serde_json::to_value(stored(input, managed_by)).map_err(ApiError::internal)?;
    let r = Resource {
        body: body.clone(),
        version: old.version + 1,
        updated_at: now_ms(),
        ..old.clone()
    };
    update_audited(&state, &who, &old, &r).await?;
    refresh_delivery(&state).await;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Delete an endpoint.
#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path), ("If-Match" = Option<String>, Header), ("Hookmesh-Manager" = Option<String>, Header, description = "The owner's uid, for a resource with `managed_by`")),
    responses((status = 204), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 412, body = super::error::Problem)))]
async fn remove(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    manager: Manager,
) -> Result<StatusCode, ApiError> {
    who.require(Area::Endpoints, Access::Write)?;
    delete(&state, &who, Kind::Endpoint, &id, if_match, &manager).await?;
    refresh_delivery(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

fn secret_view(s: &SealedSecrets, now: i64) -> EndpointSecret {
    EndpointSecret {
        key: s.current.clone(),
        previous: s
            .previous
            .iter()
            .filter(|(_, exp)| *exp > now)
            .map(|(k, exp)| PreviousSecret {
                key: k.clone(),
                expires_at: rfc3339(*exp),
            })
            .collect(),
    }
}

/// Read the signing secret (needs write access to endpoints: it lets the holder forge deliveries).
#[utoipa::path(get, path = "/v1/endpoints/{id}/secret", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = EndpointSecret), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)))]
async fn get_secret(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<AppJson<EndpointSecret>, ApiError> {
    who.require(Area::Endpoints, Access::Write)?;
    let r = load(&state, &who, Kind::Endpoint, &id).await?;
    Ok(AppJson(secret_view(&open_secrets(&state, &r)?, now_ms())))
}

/// Rotate the signing secret; the previous one stays valid for `overlap_secs`.
#[utoipa::path(post, path = "/v1/endpoints/{id}/secret/rotate", tag = "endpoints", request_body = RotateInput,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request"), ("Hookmesh-Manager" = Option<String>, Header, description = "The owner's uid, for a resource with `managed_by`")),
    responses((status = 200, body = EndpointSecret), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn rotate_secret(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    manager: Manager,
    AppJson(input): AppJson<RotateInput>,
) -> Result<AppJson<EndpointSecret>, ApiError> {
    who.require(Area::Endpoints, Access::Write)?;
    if let Some(k) = &input.key {
        check_secret(k).map_err(|m| ApiError::field("key", m))?;
    }
    let overlap = input.overlap_secs.unwrap_or(86_400);
    if overlap > MAX_OVERLAP_SECS {
        return Err(ApiError::field("overlap_secs", "at most 2592000 (30 days)"));
    }
    let old = load(&state, &who, Kind::Endpoint, &id).await?;
    require_manager(&old, &manager)?;
    let mut secrets = open_secrets(&state, &old)?;
    let now = now_ms();
    let new_key = input.key.unwrap_or_else(generate_secret);
    secrets.previous.retain(|(_, exp)| *exp > now);
    let replaced = std::mem::replace(&mut secrets.current, new_key);
    if overlap > 0 {
        secrets
            .previous
            .push((replaced, now + (overlap as i64) * 1000));
    }
    let r = Resource {
        secrets: Some(seal_secrets(&state, &id, &secrets)?),
        version: old.version + 1,
        updated_at: now,
        ..old.clone()
    };
    let diff = serde_json::json!({"secret": "rotated", "overlap_secs": overlap});
    state
        .store
        .update(
            &r,
            old.version,
            Some(&audit(
                &who,
                "rotate",
                Kind::Endpoint,
                &id,
                Some(&old.tenant_id),
                diff,
            )),
        )
        .await?;
    refresh_delivery(&state).await;
    Ok(AppJson(secret_view(&secrets, now)))
}

/// An endpoint as the delivery engine uses it: settings and the secrets valid now.
#[derive(Debug, Clone)]
pub struct EndpointRuntime {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Destination.
    pub url: String,
    /// The destination parsed once (`None` if a stored URL no longer parses).
    pub target: Option<crate::delivery::send::Target>,
    /// Subscriptions (`*`, `invoice.*`, exact names; empty = all).
    pub event_types: Vec<String>,
    /// Extra headers, parsed once for every request (or why one cannot be sent).
    pub headers: Result<Vec<(HeaderName, HeaderValue)>, String>,
    /// Retry policy, when not the default.
    pub retry_policy: Option<RetryPolicy>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// The current secret first, then previous ones still within their overlap, prepared for
    /// signing (or why they cannot sign).
    pub signers: Result<Vec<hookmesh_filter::StandardSigner>, String>,
    /// Per-attempt timeout.
    pub timeout: std::time::Duration,
    /// Attempts in flight at most, when limited.
    pub max_concurrency: Option<u32>,
    /// Deliveries per second at most, when limited.
    pub rate_limit_per_sec: Option<f64>,
    /// FIFO delivery.
    pub ordered: bool,
    /// HTTP method.
    pub method: String,
    /// Extra query parameters.
    pub query: BTreeMap<String, String>,
    /// Sign with `svix-*` header names.
    pub svix_headers: bool,
    /// Compress request bodies with gzip.
    pub gzip: bool,
    /// The body format.
    pub format: crate::delivery::body::Format,
    /// The body template.
    pub template: Option<std::sync::Arc<str>>,
    /// Batching.
    pub batch: Option<Batching>,
}

impl EndpointRuntime {
    /// Whether the endpoint subscribes to `event_type`.
    pub fn subscribes(&self, event_type: &str) -> bool {
        // Operational events (`hookmesh.…`) go only to endpoints that name them.
        if event_type.starts_with("hookmesh.") {
            return self.event_types.iter().any(|p| {
                p == event_type
                    || p.strip_suffix('*').is_some_and(|prefix| {
                        prefix.starts_with("hookmesh.") && event_type.starts_with(prefix)
                    })
            });
        }
        type_matches(&self.event_types, event_type)
    }
}

/// Whether an event type is selected by patterns: none selects all; `*` any; `invoice.*` any
/// type under `invoice.`; anything else itself.
pub fn type_matches(patterns: &[String], event_type: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| {
            p == "*"
                || p == event_type
                || p.strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('.') && event_type.starts_with(prefix))
        })
}

/// The runtime view of a stored endpoint.
///
/// # Errors
/// Undecryptable secrets or a corrupt row.
pub fn runtime(
    keys: &crate::secrets::MasterKeys,
    r: &Resource,
    now: i64,
) -> Result<EndpointRuntime, ApiError> {
    let s: Stored = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    let sealed = r.secrets.as_deref().ok_or_else(|| {
        ApiError::internal(crate::store::StoreError::Corrupt(
            "endpoint without secret".into(),
        ))
    })?;
    let secrets: SealedSecrets =
        serde_json::from_slice(&keys.open(sealed, &r.id).map_err(ApiError::internal)?)
            .map_err(ApiError::internal)?;
    let mut all = vec![secrets.current];
    all.extend(
        secrets
            .previous
            .into_iter()
            .filter(|(_, exp)| *exp > now)
            .map(|(k, _)| k),
    );
    Ok(EndpointRuntime {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        target: crate::delivery::send::Target::parse(&s.url),
        url: s.url,
        event_types: s.event_types,
        headers: header_values(&s.headers),
        retry_policy: s.retry_policy,
        enabled: s.enabled,
        signers: all
            .iter()
            .map(|s| hookmesh_filter::StandardSigner::new(s))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string()),
        timeout: std::time::Duration::from_secs(s.timeout_secs.unwrap_or(15)),
        max_concurrency: s.max_concurrency,
        rate_limit_per_sec: s.rate_limit_per_sec,
        ordered: s.ordered,
        method: s.method.unwrap_or_else(|| "POST".into()),
        query: s.query,
        svix_headers: s.header_style.as_deref() == Some("svix"),
        gzip: s.compression.as_deref() == Some("gzip"),
        format: crate::delivery::body::Format::parse(s.format.as_deref()).unwrap_or_default(),
        template: s.template.map(std::sync::Arc::from),
        batch: s.batch,
    })
}

/// Disables an endpoint on the system's behalf (it answered 410 Gone), with an audit entry.
///
/// # Errors
/// Storage failures; an endpoint already gone is not an error.
pub async fn disable(
    store: &dyn crate::store::Store,
    id: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let Some(old) = store.get(Kind::Endpoint, id).await? else {
        return Ok(());
    };
    let mut s: Stored = serde_json::from_value(old.body.clone()).map_err(ApiError::internal)?;
    if !s.enabled {
        return Ok(());
    }
    s.enabled = false;
    let body = serde_json::to_value(s).map_err(ApiError::internal)?;
    let r = Resource {
        body,
        version: old.version + 1,
        updated_at: now_ms(),
        ..old.clone()
    };
    let system = Principal::new("system", None, &["admin"]);
    store
        .update(
            &r,
            old.version,
            Some(&audit(
                &system,
                "disable",
                Kind::Endpoint,
                id,
                Some(&old.tenant_id),
                serde_json::json!({"reason": reason}),
            )),
        )
        .await?;
    Ok(())
}

/// Publishing right after an endpoint change must see it: reload the engine's endpoints now
/// (other replicas pick it up within their refresh period).
async fn refresh_delivery(state: &AppState) {
    if let Err(e) = state.delivery.endpoints.refresh().await {
        tracing::warn!(error = %e, "endpoint cache refresh failed; the periodic refresh will retry");
    }
}

/// An endpoint's extra headers, parsed once for every request it gets.
fn header_values(
    headers: &BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let mut parsed = HeaderValue::try_from(value.as_str())
                .map_err(|_| format!("header {name}: not a valid header value"))?;
            // Kept out of Debug output, and never indexed by HTTP/2's header compression.
            parsed.set_sensitive(crate::delivery::headers::is_secret(name));
            Ok((
                HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("header {name:?} is not a valid header name"))?,
                parsed,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_headers_are_parsed_once_with_credentials_marked_sensitive() {
        let headers = BTreeMap::from([
            ("Authorization".to_owned(), "Bearer downstream".to_owned()),
            ("x-team".to_owned(), "billing".to_owned()),
        ]);
        let parsed = header_values(&headers).unwrap();
        assert_eq!(parsed[0].0, "authorization");
        assert!(parsed[0].1.is_sensitive());
        assert_eq!(parsed[1].1, "billing");
        assert!(!parsed[1].1.is_sensitive());
        let bad = BTreeMap::from([("x-split".to_owned(), "a\r\nx-injected: 1".to_owned())]);
        assert_eq!(
            header_values(&bad).unwrap_err(),
            "header x-split: not a valid header value"
        );
    }

    #[test]
    fn subscriptions_match_exact_wildcard_and_all() {
        let mut e = EndpointRuntime {
            id: "ep".into(),
            tenant_id: "t".into(),
            url: "https://x".into(),
            target: None,
            event_types: vec![],
            headers: Ok(vec![]),
            retry_policy: None,
            enabled: true,
            signers: Ok(vec![]),
            timeout: std::time::Duration::from_secs(15),
            max_concurrency: None,
            rate_limit_per_sec: None,
            ordered: false,
            method: "POST".into(),
            query: BTreeMap::new(),
            svix_headers: false,
            gzip: false,
            format: Default::default(),
            template: None,
            batch: None,
        };
        assert!(e.subscribes("anything"));
        e.event_types = vec!["invoice.*".into(), "user.created".into()];
        assert!(
            e.subscribes("invoice.paid")
                && e.subscribes("invoice.line.added")
                && e.subscribes("user.created")
        );
        assert!(
            !e.subscribes("invoices.paid")
                && !e.subscribes("invoice")
                && !e.subscribes("user.deleted")
        );
        e.event_types = vec!["*".into()];
        assert!(e.subscribes("x"));
    }
}
