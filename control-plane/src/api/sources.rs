//! `/v1/sources`: inbound webhook sources, the configuration the edge filter enforces.
//!
//! The `spec` is the filter's own `SourceConfig`, validated by compiling it, together with
//! every other source, exactly as the filter will: what the API accepts, the filter accepts.
//! Secrets in the spec are sealed apart; responses and the stored body show them masked, and
//! a masked value sent back unchanged keeps the stored secret.

use super::auth::{Access, Area, Principal};
use super::error::ApiError;
use super::extract::{AppJson, AppQuery, IfMatch, Page, PageParams};
use super::resource::{
    check_if_match, delete, insert_audited, keep_manager, list_page, load, require_tenant,
    update_audited, with_etag, ManagedBy, Manager,
};
use super::AppState;
use crate::ids::{new_id, now_ms, rfc3339};
use crate::ingest::config::IngestConfig;
use crate::secrets::mask;
use crate::store::{Kind, Resource};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use hookmesh_filter::config::{FilterConfig, Secret, SourceConfig};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Create or replace a source.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceInput {
    /// Owning tenant (required with a global key; defaults to the key's tenant).
    pub tenant_id: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The filter configuration of this source (see docs/filter-config.md).
    pub spec: SourceConfig,
    /// What the hub does with accepted webhooks (only with `spec.mode: hub`; see
    /// docs/inbound.md).
    #[serde(default)]
    pub ingest: Option<IngestConfig>,
    /// Marks the source as owned by a manager (the Kubernetes controller); only it can change
    /// or delete the source afterwards.
    #[serde(default)]
    pub managed_by: Option<ManagedBy>,
}

/// A source, secrets masked.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    /// Id (`src_…`).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Free text.
    pub description: String,
    /// The filter configuration; secrets show only their last four characters.
    pub spec: SourceConfig,
    /// The hub's processing settings (hub sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestConfig>,
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
    description: String,
    /// Secrets replaced by their masks.
    spec: SourceConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ingest: Option<IngestConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    managed_by: Option<ManagedBy>,
}

/// A stored source's hub settings.
pub fn ingest_of(r: &Resource) -> Option<IngestConfig> {
    serde_json::from_value::<Stored>(r.body.clone())
        .ok()
        .and_then(|s| s.ingest)
}

/// Checks the hub settings against the source's mode, its tenant's endpoints and event types.
async fn validate_ingest(
    state: &AppState,
    tenant: &str,
    spec: &SourceConfig,
    ingest: Option<&IngestConfig>,
) -> Result<(), ApiError> {
    let Some(ingest) = ingest else {
        return Ok(());
    };
    if spec.mode != hookmesh_filter::config::SourceMode::Hub {
        return Err(ApiError::field(
            "ingest",
            "only hub sources (`spec.mode: hub`) have ingest settings",
        ));
    }
    let endpoints = state.store.list_all(Kind::Endpoint).await?;
    let event_types = state.store.list_all(Kind::EventType).await?;
    ingest
        .compile(
            &|id| {
                endpoints
                    .iter()
                    .any(|e| e.id == id && e.tenant_id == tenant)
            },
            &|name| {
                let prefix = format!("{tenant}/{name}/v");
                event_types
                    .iter()
                    .any(|r| r.unique_key.starts_with(&prefix))
                    .then(|| super::events::newest_schema(&event_types, tenant, name))
            },
        )
        .map(|_| ())
        .map_err(ApiError::Validation)
}

fn view(r: &Resource) -> Result<Source, ApiError> {
    let s: Stored = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    Ok(Source {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        description: s.description,
        spec: s.spec,
        ingest: s.ingest,
        managed_by: s.managed_by,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        version: r.version,
    })
}

/// The source's spec with its real secrets.
///
/// # Errors
/// Undecryptable secrets (a missing master key) or a corrupt row.
pub fn open_spec(
    keys: &crate::secrets::MasterKeys,
    r: &Resource,
) -> Result<SourceConfig, ApiError> {
    let s: Stored = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    let mut spec = s.spec;
    let secrets: Vec<String> = match &r.secrets {
        Some(sealed) => {
            serde_json::from_slice(&keys.open(sealed, &r.id).map_err(ApiError::internal)?)
                .map_err(ApiError::internal)?
        }
        None => Vec::new(),
    };
    for (slot, value) in spec.secrets_mut().into_iter().zip(secrets) {
        *slot = Secret(value);
    }
    Ok(spec)
}

/// Takes the secrets out of `spec` (leaving masks) and seals them for resource `id`.
fn seal_spec(
    state: &AppState,
    id: &str,
    spec: &mut SourceConfig,
) -> Result<Option<Vec<u8>>, ApiError> {
    let mut secrets = Vec::new();
    for slot in spec.secrets_mut() {
        secrets.push(std::mem::take(&mut slot.0));
        slot.0 = mask(secrets.last().map_or("", String::as_str));
    }
    if secrets.is_empty() {
        return Ok(None);
    }
    Ok(Some(state.keys.seal(
        &serde_json::to_vec(&secrets).map_err(ApiError::internal)?,
        id,
    )))
}

/// Compiles `candidate` together with every other source, as the filter will.
async fn validate_all(
    state: &AppState,
    id: &str,
    candidate: &SourceConfig,
) -> Result<(), ApiError> {
    let mut sources = Vec::new();
    for r in state.store.list_all(Kind::Source).await? {
        if r.id != id {
            sources.push(open_spec(&state.keys, &r)?);
        }
    }
    let own = format!("sources[{}]", sources.len());
    sources.push(candidate.clone());
    let config = FilterConfig {
        sources,
        ..FilterConfig::default()
    };
    config
        .compile()
        .map(|_| ())
        .map_err(|e| match e.field.strip_prefix(&own) {
            Some(rest) => ApiError::field(format!("spec{rest}"), e.message),
            None => ApiError::Conflict(format!("conflicts with another source: {}", e.message)),
        })
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, replace, remove))
}

/// List sources.
#[utoipa::path(get, path = "/v1/sources", tag = "sources", params(PageParams),
    responses((status = 200, body = Page<Source>), (status = 401, body = super::error::Problem), (status = 403, body = super::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(page): AppQuery<PageParams>,
) -> Result<AppJson<Page<Source>>, ApiError> {
    who.require(Area::Sources, Access::Read)?;
    Ok(AppJson(
        list_page(&state, &who, Kind::Source, &page, view, |x| x.id.clone()).await?,
    ))
}

/// Create a source.
#[utoipa::path(post, path = "/v1/sources", tag = "sources", request_body = SourceInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 201, body = Source), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<SourceInput>,
) -> Result<Response, ApiError> {
    who.require(Area::Sources, Access::Write)?;
    let tenant = who.tenant_for_create(input.tenant_id.as_deref())?;
    require_tenant(&state, &who, &tenant).await?;
    if let Some(m) = &input.managed_by {
        m.validate()?;
    }
    validate_all(&state, "", &input.spec).await?;
    validate_ingest(&state, &tenant, &input.spec, input.ingest.as_ref()).await?;
    let id = new_id("src");
    let mut spec = input.spec;
    let secrets = seal_spec(&state, &id, &mut spec)?;
    let name = spec.name.clone();
    let body = serde_json::to_value(Stored {
        description: input.description,
        spec,
        ingest: input.ingest,
        managed_by: input.managed_by,
    })
    .map_err(ApiError::internal)?;
    let now = now_ms();
    let r = Resource {
        kind: Kind::Source,
        id: id.clone(),
        tenant_id: tenant.clone(),
        unique_key: name,
        body: body.clone(),
        secrets,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    insert_audited(&state, &who, &r).await?;
    state.config.changed();
    state.ingest.changed();
    Ok(with_etag(StatusCode::CREATED, 1, view(&r)?))
}

/// Get a source.
#[utoipa::path(get, path = "/v1/sources/{id}", tag = "sources", params(("id" = String, Path)),
    responses((status = 200, body = Source), (status = 404, body = super::error::Problem)))]
async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require(Area::Sources, Access::Read)?;
    let r = load(&state, &who, Kind::Source, &id).await?;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Replace a source. Secrets sent back exactly as masked keep their stored value. Honours
/// `If-Match`.
#[utoipa::path(put, path = "/v1/sources/{id}", tag = "sources", request_body = SourceInput,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "The ETag last read"), ("Hookmesh-Manager" = Option<String>, Header, description = "The owner's uid, for a resource with `managed_by`")),
    responses((status = 200, body = Source), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 412, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn replace(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    manager: Manager,
    AppJson(input): AppJson<SourceInput>,
) -> Result<Response, ApiError> {
    who.require(Area::Sources, Access::Write)?;
    let old = load(&state, &who, Kind::Source, &id).await?;
    check_if_match(if_match, old.version)?;
    let managed_by = keep_manager(&old, &manager, input.managed_by)?;
    if input
        .tenant_id
        .as_ref()
        .is_some_and(|t| *t != old.tenant_id)
    {
        return Err(ApiError::field(
            "tenant_id",
            "a source cannot move to another tenant",
        ));
    }
    let old_stored: Stored =
        serde_json::from_value(old.body.clone()).map_err(ApiError::internal)?;
    let mut old_masked = old_stored.spec;
    let old_masks: Vec<String> = old_masked
        .secrets_mut()
        .into_iter()
        .map(|s| s.0.clone())
        .collect();
    let mut old_real = open_spec(&state.keys, &old)?;
    let old_secrets: Vec<String> = old_real
        .secrets_mut()
        .into_iter()
        .map(|s| s.0.clone())
        .collect();
    let mut spec = input.spec;
    for (i, slot) in spec.secrets_mut().into_iter().enumerate() {
        if old_masks.get(i) == Some(&slot.0) {
            if let Some(real) = old_secrets.get(i) {
                slot.0 = real.clone();
            }
        }
    }
    validate_all(&state, &id, &spec).await?;
    validate_ingest(&state, &old.tenant_id, &spec, input.ingest.as_ref()).await?;
    let secrets = seal_spec(&state, &id, &mut spec)?;
    let name = spec.name.clone();
    let body = serde_json::to_value(Stored {
        description: input.description,
        spec,
        ingest: input.ingest,
        managed_by,
    })
    .map_err(ApiError::internal)?;
    let r = Resource {
        unique_key: name,
        body: body.clone(),
        secrets,
        version: old.version + 1,
        updated_at: now_ms(),
        ..old.clone()
    };
    update_audited(&state, &who, &old, &r).await?;
    state.config.changed();
    state.ingest.changed();
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Delete a source.
#[utoipa::path(delete, path = "/v1/sources/{id}", tag = "sources", params(("id" = String, Path), ("If-Match" = Option<String>, Header), ("Hookmesh-Manager" = Option<String>, Header, description = "The owner's uid, for a resource with `managed_by`")),
    responses((status = 204), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem), (status = 412, body = super::error::Problem)))]
async fn remove(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    manager: Manager,
) -> Result<StatusCode, ApiError> {
    who.require(Area::Sources, Access::Write)?;
    delete(&state, &who, Kind::Source, &id, if_match, &manager).await?;
    state.config.changed();
    state.ingest.changed();
    Ok(StatusCode::NO_CONTENT)
}
