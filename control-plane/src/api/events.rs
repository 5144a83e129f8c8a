//! `/v1/events` (publish, list) and `/v1/deliveries` (list, get, attempts, retry).

use super::auth::{Access, Area, Principal};
use super::error::{ApiError, FieldError};
use super::extract::{AppJson, AppQuery, Page, PageParams};
use super::AppState;
use crate::delivery::PublishRequest;
use crate::ids::{now_ms, parse_rfc3339, rfc3339};
use crate::store::{DeliveryQuery, Kind};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Events per batch at most.
pub const MAX_BATCH: usize = 1000;

/// Publish an event.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// Owning tenant (required with a global key; defaults to the key's tenant).
    pub tenant_id: Option<String>,
    /// Event type, e.g. `invoice.paid`; endpoints subscribe to it.
    pub event_type: String,
    /// The payload, sent as the request body.
    pub payload: serde_json::Value,
    /// Your id for the event: publishing the same id again creates nothing.
    #[serde(default)]
    pub id: Option<String>,
    /// RFC 3339: deliver no earlier.
    #[serde(default)]
    pub deliver_at: Option<String>,
    /// `high` is delivered before `normal`.
    #[serde(default)]
    pub priority: Priority,
}

/// Delivery priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The default.
    #[default]
    Normal,
    /// Before normal events.
    High,
}

/// Publish up to 1000 events at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// The events.
    pub events: Vec<EventInput>,
}

/// What publishing did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublishResult {
    /// The event id (the earlier one, for a duplicate).
    pub id: String,
    /// Deliveries created (one per subscribed endpoint).
    pub deliveries: usize,
    /// An event with the same `id` had been published before.
    pub duplicate: bool,
}

/// Batch result, in request order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchResult {
    /// One per event.
    pub data: Vec<PublishResult>,
}

/// A stored event.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Type.
    pub event_type: String,
    /// Payload.
    pub payload: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
}

/// A delivery of an event to an endpoint.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Id.
    pub id: String,
    /// Event.
    pub event_id: String,
    /// Endpoint.
    pub endpoint_id: String,
    /// `pending`, `leased` (in flight), `succeeded` or `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// RFC 3339: next attempt (pending).
    pub next_attempt_at: String,
    /// The last failure.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// One attempt.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: i64,
    /// RFC 3339.
    pub started_at: String,
    /// Milliseconds.
    pub duration_ms: i64,
    /// HTTP status, when a response came.
    pub status_code: Option<i64>,
    /// Request headers, secrets masked.
    pub request_headers: serde_json::Value,
    /// Response headers.
    pub response_headers: Option<serde_json::Value>,
    /// Response body, at most 8 KiB.
    pub response_body: Option<String>,
    /// `status`, `timeout`, `connect`, `refused_destination`, `gone`, …
    pub error_class: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

/// Delivery list filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
    /// Only this event's.
    pub event_id: Option<String>,
    /// `pending`, `leased`, `succeeded` or `dead`.
    pub status: Option<String>,
    /// Only this tenant's (global keys).
    pub tenant_id: Option<String>,
    /// 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// Items after this id.
    pub after: Option<String>,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events, publish))
        .routes(routes!(publish_batch))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(list_attempts))
        .routes(routes!(retry_delivery))
}

/// The compiled schema of the newest version of an event type, cached.
async fn schema_for(
    state: &AppState,
    tenant: &str,
    name: &str,
) -> Result<Option<Arc<jsonschema::Validator>>, crate::store::StoreError> {
    let key = (tenant.to_owned(), name.to_owned());
    if let Some(v) = state.caches.schemas.get(&key) {
        return Ok(v);
    }
    let validator = newest_schema(&state.store.list_all(Kind::EventType).await?, tenant, name);
    state.caches.schemas.put(key, validator.clone());
    Ok(validator)
}

/// The compiled schema of the newest version of a tenant's event type among `event_types`;
/// `None` when it has none.
pub fn newest_schema(
    event_types: &[crate::store::Resource],
    tenant: &str,
    name: &str,
) -> Option<Arc<jsonschema::Validator>> {
    let prefix = format!("{tenant}/{name}/v");
    let mut newest: Option<(u64, serde_json::Value)> = None;
    for r in event_types
        .iter()
        .filter(|r| r.unique_key.starts_with(&prefix))
    {
        let v: u64 = r.unique_key[prefix.len()..].parse().unwrap_or(0);
        if newest.as_ref().is_none_or(|(best, _)| v >= *best) {
            newest = Some((
                v,
                r.body
                    .get("schema")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
            ));
        }
    }
    newest
        .map(|(_, s)| s)
        .filter(|s| !s.is_null())
        .and_then(|s| jsonschema::validator_for(&s).ok())
        .map(Arc::new)
}

/// Validates one event (and its payload against its event type's schema) into a request.
async fn prepare(
    state: &AppState,
    who: &Principal,
    e: EventInput,
    at: &str,
) -> Result<PublishRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut bad = |f: &str, m: String| {
        errors.push(FieldError {
            field: format!("{at}{f}"),
            message: m,
        })
    };
    let tenant = match who.tenant_for_create(e.tenant_id.as_deref()) {
        Ok(t) => t,
        Err(_) => {
            bad(
                "tenant_id",
                "required with a global key, and must be the key's own tenant otherwise".into(),
            );
            String::new()
        }
    };
    let name_ok = !e.event_type.is_empty()
        && e.event_type.len() <= 128
        && e.event_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !name_ok {
        bad(
            "event_type",
            "1 to 128 letters, digits, `_`, `.` or `-`".into(),
        );
    }
    if e.id
        .as_ref()
        .is_some_and(|id| id.is_empty() || id.len() > 255)
    {
        bad("id", "1 to 255 characters".into());
    }
    let deliver_at = match &e.deliver_at {
        None => None,
        Some(t) => match parse_rfc3339(t) {
            Some(ms) => Some(ms),
            None => {
                bad("deliver_at", "not an RFC 3339 time".into());
                None
            }
        },
    };
    if name_ok && !tenant.is_empty() {
        match schema_for(state, &tenant, &e.event_type).await {
            Ok(Some(validator)) => {
                for err in validator.iter_errors(&e.payload) {
                    bad(
                        &format!("payload{}", err.instance_path.to_string().replace('/', ".")),
                        err.to_string(),
                    );
                }
            }
            Ok(None) => {}
            Err(err) => bad(
                "event_type",
                format!("its schema could not be loaded: {err}"),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PublishRequest {
        tenant_id: tenant,
        event_type: e.event_type,
        payload: e.payload,
        dedup_key: e.id,
        deliver_at,
        priority: if e.priority == Priority::High { 1 } else { 0 },
    })
}

/// Publish an event: stored with one delivery per subscribed endpoint before the 202.
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 202, body = PublishResult)))]
async fn publish(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<EventInput>,
) -> Result<(StatusCode, AppJson<PublishResult>), ApiError> {
    who.require(Area::Events, Access::Write)?;
    // Bulk jobs give way while publishes come in (api/jobs.rs).
    let _live = state.metrics.publishing();
    let req = prepare(&state, &who, input, "")
        .await
        .map_err(ApiError::Validation)?;
    let mut out = state.delivery.publish(vec![req]).await?;
    let p = out
        .pop()
        .ok_or_else(|| ApiError::internal(crate::store::StoreError::Corrupt("no result".into())))?;
    Ok((
        StatusCode::ACCEPTED,
        AppJson(PublishResult {
            id: p.id,
            deliveries: p.deliveries,
            duplicate: p.duplicate,
        }),
    ))
}

/// Publish up to 1000 events; all are validated first, and none is stored if one is invalid.
#[utoipa::path(post, path = "/v1/events/batch", tag = "events", request_body = BatchInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 202, body = BatchResult)))]
async fn publish_batch(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<BatchInput>,
) -> Result<(StatusCode, AppJson<BatchResult>), ApiError> {
    who.require(Area::Events, Access::Write)?;
    // Bulk jobs give way while publishes come in (api/jobs.rs).
    let _live = state.metrics.publishing();
    if input.events.is_empty() || input.events.len() > MAX_BATCH {
        return Err(ApiError::field("events", "1 to 1000 events"));
    }
    let mut reqs = Vec::with_capacity(input.events.len());
    let mut errors = Vec::new();
    for (i, e) in input.events.into_iter().enumerate() {
        match prepare(&state, &who, e, &format!("events[{i}].")).await {
            Ok(r) => reqs.push(r),
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let data = state
        .delivery
        .publish(reqs)
        .await?
        .into_iter()
        .map(|p| PublishResult {
            id: p.id,
            deliveries: p.deliveries,
            duplicate: p.duplicate,
        })
        .collect();
    Ok((StatusCode::ACCEPTED, AppJson(BatchResult { data })))
}

/// List events.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(PageParams), responses((status = 200, body = Page<Event>)))]
async fn list_events(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(page): AppQuery<PageParams>,
) -> Result<AppJson<Page<Event>>, ApiError> {
    who.require(Area::Events, Access::Read)?;
    let limit = page.limit()?;
    let tenant = who.tenant_filter(page.tenant_id.as_deref())?;
    let rows = state
        .store
        .list_events(tenant.as_deref(), page.after.as_deref(), limit + 1)
        .await?;
    let items = rows
        .into_iter()
        .map(|e| Event {
            id: e.id,
            tenant_id: e.tenant_id,
            event_type: e.event_type,
            payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            created_at: rfc3339(e.created_at),
        })
        .collect();
    Ok(AppJson(Page::from_fetched(items, limit, |e| e.id.clone())))
}

pub(super) fn delivery_view(d: crate::store::DeliveryRow) -> Delivery {
    Delivery {
        id: d.id,
        event_id: d.event_id,
        endpoint_id: d.endpoint_id,
        status: d.status,
        attempts: d.attempts,
        next_attempt_at: rfc3339(d.next_attempt_at),
        last_error: d.last_error,
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
    }
}

/// List deliveries.
#[utoipa::path(get, path = "/v1/deliveries", tag = "events", params(DeliveryParams), responses((status = 200, body = Page<Delivery>)))]
async fn list_deliveries(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(p): AppQuery<DeliveryParams>,
) -> Result<AppJson<Page<Delivery>>, ApiError> {
    who.require(Area::Events, Access::Read)?;
    let limit = PageParams {
        limit: p.limit,
        after: None,
        tenant_id: None,
    }
    .limit()?;
    if p.status
        .as_deref()
        .is_some_and(|s| !["pending", "leased", "succeeded", "dead"].contains(&s))
    {
        return Err(ApiError::BadRequest(
            "status: one of pending, leased, succeeded, dead".into(),
        ));
    }
    let q = DeliveryQuery {
        tenant_id: who.tenant_filter(p.tenant_id.as_deref())?,
        endpoint_id: p.endpoint_id,
        event_id: p.event_id,
        status: p.status,
        after: p.after,
        limit: limit + 1,
    };
    let items = state
        .store
        .list_deliveries(&q)
        .await?
        .into_iter()
        .map(delivery_view)
        .collect();
    Ok(AppJson(Page::from_fetched(items, limit, |d| d.id.clone())))
}

async fn load_delivery(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<crate::store::DeliveryRow, ApiError> {
    let d = state
        .store
        .get_delivery(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    who.see(&d.tenant_id)?;
    Ok(d)
}

/// Get a delivery.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "events", params(("id" = String, Path)), responses((status = 200, body = Delivery)))]
async fn get_delivery(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<AppJson<Delivery>, ApiError> {
    who.require(Area::Events, Access::Read)?;
    Ok(AppJson(delivery_view(
        load_delivery(&state, &who, &id).await?,
    )))
}

/// The attempts of a delivery: request headers (secrets masked), response, timing, error.
#[utoipa::path(get, path = "/v1/deliveries/{id}/attempts", tag = "events", params(("id" = String, Path)), responses((status = 200, body = Vec<Attempt>)))]
async fn list_attempts(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<AppJson<Vec<Attempt>>, ApiError> {
    who.require(Area::Events, Access::Read)?;
    load_delivery(&state, &who, &id).await?;
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
    let out = state
        .store
        .list_attempts(&id)
        .await?
        .into_iter()
        .map(|a| Attempt {
            attempt: a.attempt,
            started_at: rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            request_headers: parse(&a.request_headers),
            response_headers: a.response_headers.as_deref().map(parse),
            response_body: a.response_body,
            error_class: a.error_class,
            error: a.error,
        })
        .collect();
    Ok(AppJson(out))
}

/// Attempt a delivery again now (also a dead-lettered one).
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "events", params(("id" = String, Path)), responses((status = 202, body = Delivery)))]
async fn retry_delivery(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, AppJson<Delivery>), ApiError> {
    who.require(Area::Events, Access::Write)?;
    load_delivery(&state, &who, &id).await?;
    state.store.retry_delivery(&id, now_ms()).await?;
    state.delivery.wake();
    Ok((
        StatusCode::ACCEPTED,
        AppJson(delivery_view(load_delivery(&state, &who, &id).await?)),
    ))
}
