//! `/v1/event_types`: named, versioned payload schemas. Several versions of a name live side by
//! side; each schema must itself be valid JSON Schema.

use super::auth::{Access, Area, Principal};
use super::error::ApiError;
use super::extract::{AppJson, AppQuery, IfMatch, Page, PageParams};
use super::resource::{
    check_if_match, delete, insert_audited, keep_manager, list_page, load, require_tenant,
    update_audited, with_etag, ManagedBy, Manager,
};
use super::AppState;
use crate::ids::{new_id, now_ms, rfc3339};
use crate::store::{Kind, Resource};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Create or replace an event type.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeInput {
    /// Owning tenant (required with a global key; defaults to the key's tenant).
    pub tenant_id: Option<String>,
    /// Name such as `invoice.paid` (letters, digits, `_`, `.`, `-`; up to 128).
    pub name: String,
    /// Schema version, from 1 (default 1).
    #[serde(default = "first_version")]
    pub version: u32,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the payload.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// Marks the event type as owned by a manager (the Kubernetes controller); only it can
    /// change or delete it afterwards.
    #[serde(default)]
    pub managed_by: Option<ManagedBy>,
}

fn first_version() -> u32 {
    1
}

/// An event type.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventType {
    /// Id (`evt_type_…`).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Schema version.
    pub version: u32,
    /// Free text.
    pub description: String,
    /// JSON Schema of the payload.
    pub schema: Option<serde_json::Value>,
    /// The manager that owns it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<ManagedBy>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The `ETag` (changes on every update; not the schema version).
    pub etag_version: i64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    version: u32,
    description: String,
    schema: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    managed_by: Option<ManagedBy>,
}

fn validate(input: &EventTypeInput) -> Result<(), ApiError> {
    let ok = !input.name.is_empty()
        && input.name.len() <= 128
        && input
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        return Err(ApiError::field(
            "name",
            "1 to 128 letters, digits, `_`, `.` or `-`",
        ));
    }
    if input.version == 0 {
        return Err(ApiError::field("version", "versions start at 1"));
    }
    if let Some(schema) = &input.schema {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(ApiError::field(
                "schema",
                "a JSON Schema is an object or a boolean",
            ));
        }
        // Building a validator checks the schema against its meta-schema.
        if let Err(e) = jsonschema::validator_for(schema) {
            let at = e.instance_path.to_string();
            return Err(ApiError::field(
                format!("schema{}", at.replace('/', ".")),
                format!("not valid JSON Schema: {e}"),
            ));
        }
    }
    Ok(())
}

fn view(r: &Resource) -> Result<EventType, ApiError> {
    let s: Stored = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    Ok(EventType {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        name: s.name,
        version: s.version,
        description: s.description,
        schema: s.schema,
        managed_by: s.managed_by,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        etag_version: r.version,
    })
}

fn unique_key(tenant: &str, name: &str, version: u32) -> String {
    format!("{tenant}/{name}/v{version}")
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, replace, remove))
}

/// List event types.
#[utoipa::path(get, path = "/v1/event_types", tag = "event_types", params(PageParams),
    responses((status = 200, body = Page<EventType>), (status = 401, body = super::error::Problem), (status = 403, body = super::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(page): AppQuery<PageParams>,
) -> Result<AppJson<Page<EventType>>, ApiError> {
    who.require(Area::EventTypes, Access::Read)?;
    Ok(AppJson(
        list_page(&state, &who, Kind::EventType, &page, view, |x| x.id.clone()).await?,
    ))
}

/// Create an event type (a new name, or a new version of one).
#[utoipa::path(post, path = "/v1/event_types", tag = "event_types", request_body = EventTypeInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 201, body = EventType), (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<EventTypeInput>,
) -> Result<Response, ApiError> {
    who.require(Area::EventTypes, Access::Write)?;
    validate(&input)?;
    if let Some(m) = &input.managed_by {
        m.validate()?;
    }
    let tenant = who.tenant_for_create(input.tenant_id.as_deref())?;
    require_tenant(&state, &who, &tenant).await?;
    let id = new_id("evt_type");
    let key = unique_key(&tenant, &input.name, input.version);
    let body = serde_json::to_value(Stored {
        name: input.name,
        version: input.version,
        description: input.description,
        schema: input.schema,
        managed_by: input.managed_by,
    })
    .map_err(ApiError::internal)?;
    let now = now_ms();
    let r = Resource {
        kind: Kind::EventType,
        id: id.clone(),
        tenant_id: tenant.clone(),
        unique_key: key,
        body: body.clone(),
        secrets: None,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    insert_audited(&state, &who, &r).await?;
    state.caches.schemas.clear();
    Ok(with_etag(StatusCode::CREATED, 1, view(&r)?))
}

/// Get an event type.
#[utoipa::path(get, path = "/v1/event_types/{id}", tag = "event_types", params(("id" = String, Path)),
    responses((status = 200, body = EventType), (status = 404, body = super::error::Problem)))]
async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require(Area::EventTypes, Access::Read)?;
    let r = load(&state, &who, Kind::EventType, &id).await?;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Replace the description and schema of an event type (name and version are fixed).
#[utoipa::path(put, path = "/v1/event_types/{id}", tag = "event_types", request_body = EventTypeInput,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "The ETag last read"), ("Hookmesh-Manager" = Option<String>, Header, description = "The owner's uid, for a resource with `managed_by`")),
    responses((status = 200, body = EventType), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 412, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn replace(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    manager: Manager,
    AppJson(input): AppJson<EventTypeInput>,
) -> Result<Response, ApiError> {
    who.require(Area::EventTypes, Access::Write)?;
    validate(&input)?;
    let old = load(&state, &who, Kind::EventType, &id).await?;
    check_if_match(if_match, old.version)?;
    let managed_by = keep_manager(&old, &manager, input.managed_by)?;
    let before: Stored = serde_json::from_value(old.body.clone()).map_err(ApiError::internal)?;
    if before.name != input.name || before.version != input.version {
        return Err(ApiError::field(
            "name",
            "name and version cannot change: create a new version instead",
        ));
    }
    let body = serde_json::to_value(Stored {
        name: input.name,
        version: input.version,
        description: input.description,
        schema: input.schema,
        managed_by,
    })
    .map_err(ApiError::internal)?;
    let r = Resource {
        body: body.clone(),
        version: old.version + 1,
        updated_at: now_ms(),
        ..old.clone()
    };
    update_audited(&state, &who, &old, &r).await?;
    state.caches.schemas.clear();
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Delete an event type version.
#[utoipa::path(delete, path = "/v1/event_types/{id}", tag = "event_types", params(("id" = String, Path), ("If-Match" = Option<String>, Header), ("Hookmesh-Manager" = Option<String>, Header, description = "The owner's uid, for a resource with `managed_by`")),
    responses((status = 204), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 412, body = super::error::Problem)))]
async fn remove(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    manager: Manager,
) -> Result<StatusCode, ApiError> {
    who.require(Area::EventTypes, Access::Write)?;
    delete(&state, &who, Kind::EventType, &id, if_match, &manager).await?;
    state.caches.schemas.clear();
    Ok(StatusCode::NO_CONTENT)
}
