//! `/v1/inbound_events` (list, detail, replay) and `/v1/quarantine` (list, release, delete):
//! what the hub received and what it did with it.

use super::auth::{Access, Area, Principal};
use super::error::ApiError;
use super::events::{delivery_view, Delivery};
use super::extract::{time_field, time_param, AppJson, AppQuery, Page, PageParams};
use super::jobs::{self, InboundWork, Job, Work};
use super::AppState;
use crate::ids::rfc3339;
use crate::ingest::process::Run;
use crate::store::{DeliveryQuery, InboundFilter, InboundQuery, InboundRow};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// An inbound webhook, as listed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboundSummary {
    /// Id (`inb_…`).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Source id.
    pub source_id: String,
    /// Source name.
    pub source_name: String,
    /// `routed`, `quarantined` or `failed`.
    pub status: String,
    /// The computed event type.
    pub event_type: Option<String>,
    /// The duplicate-detection key.
    pub dedup_key: Option<String>,
    /// Copies received later and dropped.
    pub duplicates: i64,
    /// Why it was quarantined or failed.
    pub error: Option<String>,
    /// RFC 3339.
    pub received_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// The request as received (headers masked).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RawRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Headers, secrets masked.
    pub headers: serde_json::Value,
    /// The body as text, when it is UTF-8.
    pub body: Option<String>,
    /// The body in base64, when it is not UTF-8.
    pub body_base64: Option<String>,
    /// The client address Envoy saw.
    pub client_ip: Option<String>,
}

/// An inbound webhook in full: request, parsed document, transformation result, routing
/// decisions and the deliveries they made.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboundDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: InboundSummary,
    /// The request.
    pub request: RawRequest,
    /// The body parsed into JSON (null when it does not parse).
    pub document: serde_json::Value,
    /// The transformation's output: the outbound payload.
    pub result: Option<serde_json::Value>,
    /// Every route considered and what it decided.
    pub routing: serde_json::Value,
    /// The deliveries of the outbound events the routes made.
    pub deliveries: Vec<Delivery>,
}

/// Inbound event filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboundParams {
    /// Only this source's.
    pub source_id: Option<String>,
    /// `routed`, `quarantined` or `failed`.
    pub status: Option<String>,
    /// Only webhooks of this computed event type.
    pub event_type: Option<String>,
    /// RFC 3339: received at or after.
    pub since: Option<String>,
    /// RFC 3339: received before.
    pub until: Option<String>,
    /// Only this tenant's (global keys).
    pub tenant_id: Option<String>,
    /// 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// Items after this id.
    pub after: Option<String>,
}

/// Which inbound webhooks a bulk replay or release covers. Webhooks received after the job
/// starts are left alone (they take their own way through the current rules).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundSelection {
    /// Tenant (a bound key's own; global keys may omit it to cover every tenant).
    pub tenant_id: Option<String>,
    /// Only this source's.
    pub source_id: Option<String>,
    /// `routed`, `quarantined` or `failed` (a replay); a release takes quarantined ones only.
    pub status: Option<String>,
    /// Only webhooks of this computed event type.
    pub event_type: Option<String>,
    /// RFC 3339: received at or after.
    pub since: Option<String>,
    /// RFC 3339: received before.
    pub until: Option<String>,
    /// Webhooks run at once while no webhook is arriving, 1–64 (default 64): more finish sooner
    /// and cost less CPU each. While webhooks arrive, the job runs one at a time
    /// (docs/inbound.md).
    pub concurrency: Option<u32>,
}

impl InboundSelection {
    /// What the bulk job covers (webhooks in `status`) and how many it runs at once.
    fn work(self, who: &Principal, status: Option<String>) -> Result<InboundWork, ApiError> {
        let concurrency = match self.concurrency {
            None => jobs::DEFAULT_CONCURRENCY,
            Some(n @ 1..=64) => n as usize,
            Some(_) => return Err(ApiError::field("concurrency", "between 1 and 64")),
        };
        let now = crate::ids::now_ms();
        let inbound = InboundFilter {
            tenant_id: who.tenant_filter(self.tenant_id.as_deref())?,
            source_id: self.source_id,
            status,
            event_type: self.event_type,
            since: time_field("since", self.since.as_deref())?,
            until: Some(time_field("until", self.until.as_deref())?.map_or(now, |t| t.min(now))),
        };
        Ok(InboundWork {
            inbound,
            concurrency,
        })
    }
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(replay))
        .routes(routes!(replay_many))
        .routes(routes!(list_quarantine))
        .routes(routes!(release))
        .routes(routes!(release_many))
        .routes(routes!(remove))
}

fn summary(r: &InboundRow) -> InboundSummary {
    InboundSummary {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        source_id: r.source_id.clone(),
        source_name: r.source_name.clone(),
        status: r.status.clone(),
        event_type: r.event_type.clone(),
        dedup_key: r.dedup_key.clone(),
        duplicates: r.duplicates,
        error: r.error.clone(),
        received_at: rfc3339(r.received_at),
        updated_at: rfc3339(r.updated_at),
    }
}

const STATUSES: [&str; 3] = ["routed", "quarantined", "failed"];

fn check_status(status: Option<&str>) -> Result<(), &'static str> {
    match status {
        Some(s) if !STATUSES.contains(&s) => Err("one of routed, quarantined, failed"),
        _ => Ok(()),
    }
}

async fn page(
    state: &AppState,
    who: &Principal,
    p: InboundParams,
    status: Option<String>,
) -> Result<Page<InboundSummary>, ApiError> {
    who.require(Area::Events, Access::Read)?;
    let limit = PageParams {
        limit: p.limit,
        after: None,
        tenant_id: None,
    }
    .limit()?;
    let status = status.or(p.status);
    check_status(status.as_deref()).map_err(|e| ApiError::BadRequest(format!("status: {e}")))?;
    let q = InboundQuery {
        filter: InboundFilter {
            tenant_id: who.tenant_filter(p.tenant_id.as_deref())?,
            source_id: p.source_id,
            status,
            event_type: p.event_type,
            since: time_param("since", p.since.as_deref())?,
            until: time_param("until", p.until.as_deref())?,
        },
        after: p.after,
        limit: limit + 1,
    };
    let items = state
        .store
        .list_inbound(&q)
        .await?
        .iter()
        .map(summary)
        .collect();
    Ok(Page::from_fetched(items, limit, |s| s.id.clone()))
}

/// List inbound webhooks.
#[utoipa::path(get, path = "/v1/inbound_events", tag = "inbound", params(InboundParams), responses((status = 200, body = Page<InboundSummary>)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(p): AppQuery<InboundParams>,
) -> Result<AppJson<Page<InboundSummary>>, ApiError> {
    Ok(AppJson(page(&state, &who, p, None).await?))
}

async fn load(state: &AppState, who: &Principal, id: &str) -> Result<InboundRow, ApiError> {
    let r = state
        .store
        .get_inbound(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    who.see(&r.tenant_id)?;
    Ok(r)
}

async fn detail(state: &AppState, r: InboundRow) -> Result<InboundDetail, ApiError> {
    let content_type = serde_json::from_str::<serde_json::Value>(&r.headers)
        .ok()
        .and_then(|h| {
            h.get("content-type")
                .and_then(|v| v.as_str().map(str::to_owned))
        });
    let document = crate::ingest::parse::document(content_type.as_deref(), &r.body)
        .await
        .unwrap_or(serde_json::Value::Null);
    // A routed webhook without a stored result had the identity transformation.
    let result = match r.result.as_deref() {
        Some(text) => serde_json::from_str(text).ok(),
        None if r.status == "routed" => Some(document.clone()),
        None => None,
    };
    let routing: serde_json::Value =
        serde_json::from_str(&r.routing).unwrap_or(serde_json::Value::Null);
    let mut deliveries = Vec::new();
    let event_ids = routing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("event_id").and_then(|e| e.as_str()));
    for event_id in event_ids {
        let q = DeliveryQuery {
            event_id: Some(event_id.to_owned()),
            limit: 100,
            ..DeliveryQuery::default()
        };
        deliveries.extend(
            state
                .store
                .list_deliveries(&q)
                .await?
                .into_iter()
                .map(delivery_view),
        );
    }
    let (body, body_base64) = match String::from_utf8(r.body.clone()) {
        Ok(s) => (Some(s), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&r.body)),
        ),
    };
    Ok(InboundDetail {
        summary: summary(&r),
        request: RawRequest {
            method: r.method.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            headers: serde_json::from_str(&r.headers).unwrap_or(serde_json::Value::Null),
            body,
            body_base64,
            client_ip: r.client_ip.clone(),
        },
        document,
        result,
        routing,
        deliveries,
    })
}

/// Get an inbound webhook in full.
#[utoipa::path(get, path = "/v1/inbound_events/{id}", tag = "inbound", params(("id" = String, Path)), responses((status = 200, body = InboundDetail)))]
async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<AppJson<InboundDetail>, ApiError> {
    who.require(Area::Events, Access::Read)?;
    let r = load(&state, &who, &id).await?;
    Ok(AppJson(detail(&state, r).await?))
}

/// Run an inbound webhook through its source's current rules again: new routing decisions
/// and new deliveries (validation applies; a quarantined webhook is released instead).
#[utoipa::path(post, path = "/v1/inbound_events/{id}/replay", tag = "inbound", params(("id" = String, Path)), responses((status = 202, body = InboundDetail)))]
async fn replay(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, AppJson<InboundDetail>), ApiError> {
    who.require(Area::Events, Access::Write)?;
    let r = load(&state, &who, &id).await?;
    let updated = state.ingest.rerun(&r, Run::Replay).await?;
    Ok((
        StatusCode::ACCEPTED,
        AppJson(detail(&state, updated).await?),
    ))
}

/// Run every inbound webhook a filter selects through its source's current rules again, as
/// `POST /v1/inbound_events/{id}/replay` does one; runs in the background (`GET /v1/jobs/{id}`).
#[utoipa::path(post, path = "/v1/inbound_events/replay", tag = "inbound", request_body = InboundSelection,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 202, body = Job)))]
async fn replay_many(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<InboundSelection>,
) -> Result<Response, ApiError> {
    who.require(Area::Events, Access::Write)?;
    let status = input.status.clone();
    check_status(status.as_deref()).map_err(|e| ApiError::field("status", e))?;
    let work = input.work(&who, status)?;
    let tenant = work.inbound.tenant_id.clone();
    jobs::start(&state, &who, tenant, Work::InboundReplay(work)).await
}

/// Release every quarantined webhook a filter selects, as `POST /v1/quarantine/{id}/release`
/// does one; runs in the background (`GET /v1/jobs/{id}`).
#[utoipa::path(post, path = "/v1/quarantine/release", tag = "inbound", request_body = InboundSelection,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 202, body = Job)))]
async fn release_many(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<InboundSelection>,
) -> Result<Response, ApiError> {
    who.require(Area::Events, Access::Write)?;
    if input.status.as_deref().is_some_and(|s| s != "quarantined") {
        return Err(ApiError::field(
            "status",
            "a release takes only `quarantined` webhooks",
        ));
    }
    let work = input.work(&who, Some("quarantined".into()))?;
    let tenant = work.inbound.tenant_id.clone();
    jobs::start(&state, &who, tenant, Work::QuarantineRelease(work)).await
}

/// List quarantined inbound webhooks (payloads that failed their source's schema).
#[utoipa::path(get, path = "/v1/quarantine", tag = "inbound", params(InboundParams), responses((status = 200, body = Page<InboundSummary>)))]
async fn list_quarantine(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(p): AppQuery<InboundParams>,
) -> Result<AppJson<Page<InboundSummary>>, ApiError> {
    if p.status.as_deref().is_some_and(|s| s != "quarantined") {
        return Err(ApiError::BadRequest(
            "status: the quarantine lists only `quarantined` webhooks".into(),
        ));
    }
    Ok(AppJson(
        page(&state, &who, p, Some("quarantined".into())).await?,
    ))
}

async fn load_quarantined(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<InboundRow, ApiError> {
    let r = load(state, who, id).await?;
    if r.status != "quarantined" {
        return Err(ApiError::NotFound);
    }
    Ok(r)
}

/// Release a quarantined webhook: it is transformed and routed as if it had been valid.
#[utoipa::path(post, path = "/v1/quarantine/{id}/release", tag = "inbound", params(("id" = String, Path)), responses((status = 202, body = InboundDetail)))]
async fn release(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, AppJson<InboundDetail>), ApiError> {
    who.require(Area::Events, Access::Write)?;
    let r = load_quarantined(&state, &who, &id).await?;
    let updated = state.ingest.rerun(&r, Run::Release).await?;
    Ok((
        StatusCode::ACCEPTED,
        AppJson(detail(&state, updated).await?),
    ))
}

/// Delete a quarantined webhook.
#[utoipa::path(delete, path = "/v1/quarantine/{id}", tag = "inbound", params(("id" = String, Path)), responses((status = 204)))]
async fn remove(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Area::Events, Access::Write)?;
    load_quarantined(&state, &who, &id).await?;
    if !state.store.delete_inbound(&id, "quarantined").await? {
        return Err(ApiError::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}
