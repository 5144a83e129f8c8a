//! `/v1/tenants`: every other resource belongs to one. Managed by global admin keys; a key
//! bound to a tenant sees only its own.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{AppJson, AppQuery, IfMatch, Page, PageParams};
use super::resource::{audit, check_if_match, insert_audited, load, update_audited, with_etag};
use super::AppState;
use crate::ids::{new_id, now_ms, rfc3339};
use crate::store::{Kind, ListQuery, Resource};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Create or replace a tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    /// Unique name, 1 to 128 characters.
    pub name: String,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A tenant.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    /// Id (`ten_…`).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free-form labels.
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Incremented on every change; also the `ETag`.
    pub version: i64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    metadata: BTreeMap<String, String>,
}

fn validate(input: &TenantInput) -> Result<(), ApiError> {
    if input.name.trim().is_empty() || input.name.chars().count() > 128 {
        return Err(ApiError::field("name", "must be 1 to 128 characters"));
    }
    Ok(())
}

fn view(r: &Resource) -> Result<Tenant, ApiError> {
    let s: Stored = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    Ok(Tenant {
        id: r.id.clone(),
        name: s.name,
        metadata: s.metadata,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        version: r.version,
    })
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, replace, remove))
}

/// List tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageParams),
    responses((status = 200, body = Page<Tenant>), (status = 401, body = super::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(page): AppQuery<PageParams>,
) -> Result<AppJson<Page<Tenant>>, ApiError> {
    let limit = page.limit()?;
    let rows = match &who.tenant_id {
        // A bound key sees its own tenant only.
        Some(own) => state
            .store
            .get(Kind::Tenant, own)
            .await?
            .into_iter()
            .filter(|r| page.after.as_ref().is_none_or(|a| &r.id > a))
            .collect(),
        None => {
            state
                .store
                .list(&ListQuery {
                    kind: Kind::Tenant,
                    tenant_id: None,
                    after: page.after.clone(),
                    limit: limit + 1,
                })
                .await?
        }
    };
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(AppJson(Page::from_fetched(items, limit, |t| t.id.clone())))
}

/// Create a tenant (global admin).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = TenantInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 201, body = Tenant), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<TenantInput>,
) -> Result<Response, ApiError> {
    who.require_global_admin()?;
    validate(&input)?;
    let now = now_ms();
    let id = new_id("ten");
    let body = serde_json::to_value(Stored {
        name: input.name.clone(),
        metadata: input.metadata,
    })
    .map_err(ApiError::internal)?;
    let r = Resource {
        kind: Kind::Tenant,
        id: id.clone(),
        tenant_id: id.clone(),
        unique_key: input.name,
        body: body.clone(),
        secrets: None,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    insert_audited(&state, &who, &r).await?;
    Ok(with_etag(StatusCode::CREATED, r.version, view(&r)?))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = super::error::Problem)))]
async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = load(&state, &who, Kind::Tenant, &id).await?;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Replace a tenant (global admin). Honours `If-Match`.
#[utoipa::path(put, path = "/v1/tenants/{id}", tag = "tenants", request_body = TenantInput,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses((status = 200, body = Tenant), (status = 404, body = super::error::Problem), (status = 412, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn replace(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    AppJson(input): AppJson<TenantInput>,
) -> Result<Response, ApiError> {
    who.require_global_admin()?;
    validate(&input)?;
    let old = load(&state, &who, Kind::Tenant, &id).await?;
    check_if_match(if_match, old.version)?;
    let body = serde_json::to_value(Stored {
        name: input.name.clone(),
        metadata: input.metadata,
    })
    .map_err(ApiError::internal)?;
    let r = Resource {
        unique_key: input.name,
        body: body.clone(),
        version: old.version + 1,
        updated_at: now_ms(),
        ..old.clone()
    };
    update_audited(&state, &who, &old, &r).await?;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Delete a tenant that owns nothing (global admin).
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
async fn remove(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, ApiError> {
    who.require_global_admin()?;
    let old = load(&state, &who, Kind::Tenant, &id).await?;
    check_if_match(if_match, old.version)?;
    for kind in [Kind::Source, Kind::Endpoint, Kind::EventType, Kind::ApiKey] {
        if state.store.count(kind, &id).await? > 0 {
            return Err(ApiError::Conflict(format!(
                "the tenant still owns {} resources: delete them first",
                kind.as_str()
            )));
        }
    }
    state
        .store
        .delete(
            Kind::Tenant,
            &id,
            Some(old.version),
            Some(&audit(
                &who,
                "delete",
                Kind::Tenant,
                &id,
                Some(&id),
                serde_json::json!({"before": old.body}),
            )),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
