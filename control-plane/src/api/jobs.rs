//! Bulk replay as a background job: `POST /v1/deliveries/replay` requeues every delivery a filter
//! matches (not those in flight), page by page, and `GET /v1/jobs/{id}` shows its progress. Jobs
//! are stored, so any replica can report on them.

use super::auth::{Access, Area, Principal};
use super::error::ApiError;
use super::extract::AppJson;
use super::resource::{audit, load, with_etag};
use super::AppState;
use crate::ids::{new_id, now_ms, parse_rfc3339, rfc3339};
use crate::store::{Kind, ReplayFilter, Resource};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const PAGE: i64 = 500;

/// Which deliveries to attempt again.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    /// Tenant (a bound key's own; global keys may omit it to cover every tenant).
    pub tenant_id: Option<String>,
    /// Only this endpoint's deliveries.
    pub endpoint_id: Option<String>,
    /// `dead` (retry dead letters), `succeeded` (resend) or `pending` (attempt now).
    pub status: Option<String>,
    /// Only deliveries of this event type.
    pub event_type: Option<String>,
    /// RFC 3339: created at or after.
    pub since: Option<String>,
    /// RFC 3339: created before.
    pub until: Option<String>,
}

/// A background job.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    /// Id (`job_…`).
    pub id: String,
    /// `replay`.
    pub kind: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// Deliveries requeued so far.
    pub requeued: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once finished.
    pub finished_at: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    kind: String,
    status: String,
    filter: ReplayFilter,
    requeued: u64,
    error: Option<String>,
    finished_at: Option<i64>,
}

fn view(r: &Resource) -> Result<Job, ApiError> {
    let s: Stored = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    Ok(Job {
        id: r.id.clone(),
        kind: s.kind,
        status: s.status,
        requeued: s.requeued,
        error: s.error,
        created_at: rfc3339(r.created_at),
        finished_at: s.finished_at.map(rfc3339),
    })
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(replay))
        .routes(routes!(get))
}

/// Attempt again, now, every delivery a filter matches; runs in the background.
#[utoipa::path(post, path = "/v1/deliveries/replay", tag = "events", request_body = ReplayInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 202, body = Job)))]
async fn replay(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<ReplayInput>,
) -> Result<Response, ApiError> {
    who.require(Area::Events, Access::Write)?;
    let tenant = match (&who.tenant_id, input.tenant_id.as_deref()) {
        (None, None) => None,
        (_, requested) => Some(who.tenant_for_create(requested)?),
    };
    if input
        .status
        .as_deref()
        .is_some_and(|s| !["dead", "succeeded", "pending"].contains(&s))
    {
        return Err(ApiError::field("status", "one of dead, succeeded, pending"));
    }
    let time = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| parse_rfc3339(t).ok_or_else(|| ApiError::field(field, "not an RFC 3339 time")))
            .transpose()
    };
    let filter = ReplayFilter {
        tenant_id: tenant.clone(),
        endpoint_id: input.endpoint_id,
        status: input.status,
        event_type: input.event_type,
        since: time("since", &input.since)?,
        until: time("until", &input.until)?,
    };
    let id = new_id("job");
    let now = now_ms();
    let body = serde_json::to_value(Stored {
        kind: "replay".into(),
        status: "running".into(),
        filter: filter.clone(),
        requeued: 0,
        error: None,
        finished_at: None,
    })
    .map_err(ApiError::internal)?;
    let r = Resource {
        kind: Kind::Job,
        id: id.clone(),
        tenant_id: tenant.clone().unwrap_or_default(),
        unique_key: id.clone(),
        body: body.clone(),
        secrets: None,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .insert(
            &r,
            &audit(
                &who,
                "create",
                Kind::Job,
                &id,
                tenant.as_deref(),
                serde_json::json!({"after": body}),
            ),
        )
        .await?;
    tokio::spawn(run(state.clone(), r.clone(), filter));
    Ok(with_etag(StatusCode::ACCEPTED, 1, view(&r)?))
}

/// A job's progress.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "events", params(("id" = String, Path)), responses((status = 200, body = Job)))]
async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require(Area::Events, Access::Read)?;
    let r = load(&state, &who, Kind::Job, &id).await?;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Requeues page by page, recording progress after each page.
async fn run(state: AppState, mut job: Resource, filter: ReplayFilter) {
    let system = Principal::new("system", None, &["admin"]);
    let mut requeued = 0u64;
    let mut after: Option<String> = None;
    let outcome: Result<(), String> = async {
        loop {
            let ids = state
                .store
                .find_deliveries(&filter, after.as_deref(), PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = ids.last().cloned() else {
                return Ok(());
            };
            requeued += state
                .store
                .requeue_deliveries(&ids, now_ms())
                .await
                .map_err(|e| e.to_string())?;
            state.delivery.wake();
            after = Some(last);
            job = save(&state, &system, job.clone(), "running", requeued, None)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    .await;
    let (status, error) = match outcome {
        Ok(()) => ("succeeded", None),
        Err(e) => ("failed", Some(e)),
    };
    if let Err(e) = save(&state, &system, job, status, requeued, error).await {
        tracing::error!(error = %e, "could not record the end of a replay job");
    }
}

async fn save(
    state: &AppState,
    who: &Principal,
    job: Resource,
    status: &str,
    requeued: u64,
    error: Option<String>,
) -> Result<Resource, ApiError> {
    let mut s: Stored = serde_json::from_value(job.body.clone()).map_err(ApiError::internal)?;
    s.status = status.into();
    s.requeued = requeued;
    s.error = error;
    if status != "running" {
        s.finished_at = Some(now_ms());
    }
    let body = serde_json::to_value(s).map_err(ApiError::internal)?;
    let next = Resource {
        body,
        version: job.version + 1,
        updated_at: now_ms(),
        ..job.clone()
    };
    let entry = audit(
        who,
        "update",
        Kind::Job,
        &job.id,
        Some(&job.tenant_id),
        serde_json::json!({"status": status, "requeued": requeued}),
    );
    state.store.update(&next, job.version, &entry).await?;
    Ok(next)
}
