//! `/v1/api_keys`: create (the key is shown once), list, get, revoke, rotate. Only admin keys
//! manage keys; a tenant's admin manages that tenant's keys, a global admin all of them.

use super::auth::{generate_key, hash_key, KeyRecord, Principal, SCOPES};
use super::error::{ApiError, FieldError};
use super::extract::{AppJson, AppQuery, Page, PageParams};
use super::resource::{audit, list_page, load, require_tenant, with_etag};
use super::AppState;
use crate::ids::{new_id, now_ms, parse_rfc3339, rfc3339};
use crate::store::{Kind, Resource};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Create an API key.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInput {
    /// Bind the key to this tenant; absent (global admins only) for a global key.
    pub tenant_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Scopes: `admin`, `write`, `read`, or `sources|endpoints|event_types` `:read|:write`.
    pub scopes: Vec<String>,
    /// RFC 3339 expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// An API key (never its secret value).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    /// Id (`key_…`), the actor in the audit log.
    pub id: String,
    /// Bound tenant; null for a global key.
    pub tenant_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// First characters of the key.
    pub prefix: String,
    /// RFC 3339 expiry.
    pub expires_at: Option<String>,
    /// RFC 3339 revocation time.
    pub revoked_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A key with its secret value, returned once at creation or rotation.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyWithSecret {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret to send as `Authorization: Bearer <secret>`; not retrievable later.
    pub secret: String,
}

fn view(r: &Resource) -> Result<ApiKey, ApiError> {
    let k: KeyRecord = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    Ok(ApiKey {
        id: r.id.clone(),
        tenant_id: k.tenant_id,
        name: k.name,
        scopes: k.scopes,
        prefix: k.prefix,
        expires_at: k.expires_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
        created_at: rfc3339(r.created_at),
    })
}

fn prefix_of(secret: &str) -> String {
    secret.chars().take(10).collect()
}

/// Inserts a key record; used by the API and by the bootstrap at start-up.
///
/// # Errors
/// Storage failures.
pub async fn insert_key(
    state: &AppState,
    actor: &Principal,
    record: KeyRecord,
    secret: &str,
) -> Result<Resource, ApiError> {
    let id = new_id("key");
    let now = now_ms();
    let body = serde_json::to_value(&record).map_err(ApiError::internal)?;
    let r = Resource {
        kind: Kind::ApiKey,
        id: id.clone(),
        tenant_id: record.tenant_id.clone().unwrap_or_default(),
        unique_key: hash_key(secret),
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
                actor,
                "create",
                Kind::ApiKey,
                &id,
                record.tenant_id.as_deref(),
                serde_json::json!({"after": body}),
            ),
        )
        .await?;
    Ok(r)
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, revoke))
        .routes(routes!(rotate))
}

/// List API keys.
#[utoipa::path(get, path = "/v1/api_keys", tag = "api_keys", params(PageParams),
    responses((status = 200, body = Page<ApiKey>), (status = 403, body = super::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(page): AppQuery<PageParams>,
) -> Result<AppJson<Page<ApiKey>>, ApiError> {
    who.require_admin()?;
    Ok(AppJson(
        list_page(&state, &who, Kind::ApiKey, &page, view, |k| k.id.clone()).await?,
    ))
}

/// Create an API key; the response carries its secret, shown this once.
#[utoipa::path(post, path = "/v1/api_keys", tag = "api_keys", request_body = ApiKeyInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 201, body = ApiKeyWithSecret), (status = 403, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    who: Principal,
    AppJson(input): AppJson<ApiKeyInput>,
) -> Result<Response, ApiError> {
    who.require_admin()?;
    let tenant_id = match (&who.tenant_id, input.tenant_id.as_deref()) {
        (None, None) => None,
        (_, requested) => Some(who.tenant_for_create(requested)?),
    };
    if let Some(t) = &tenant_id {
        require_tenant(&state, &who, t).await?;
    }
    let mut errors = Vec::new();
    if input.name.trim().is_empty() || input.name.chars().count() > 128 {
        errors.push(FieldError {
            field: "name".into(),
            message: "must be 1 to 128 characters".into(),
        });
    }
    if input.scopes.is_empty() {
        errors.push(FieldError {
            field: "scopes".into(),
            message: "at least one scope".into(),
        });
    }
    for (i, s) in input.scopes.iter().enumerate() {
        if !SCOPES.contains(&s.as_str()) {
            errors.push(FieldError {
                field: format!("scopes[{i}]"),
                message: format!("unknown scope `{s}`; one of: {}", SCOPES.join(", ")),
            });
        }
    }
    let expires_at = match &input.expires_at {
        None => None,
        Some(t) => match parse_rfc3339(t) {
            Some(ms) if ms > now_ms() => Some(ms),
            Some(_) => {
                errors.push(FieldError {
                    field: "expires_at".into(),
                    message: "must be in the future".into(),
                });
                None
            }
            None => {
                errors.push(FieldError {
                    field: "expires_at".into(),
                    message: "not an RFC 3339 time".into(),
                });
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let secret = generate_key();
    let record = KeyRecord {
        name: input.name,
        tenant_id,
        scopes: input.scopes,
        prefix: prefix_of(&secret),
        expires_at,
        revoked_at: None,
    };
    let r = insert_key(&state, &who, record, &secret).await?;
    state.caches.keys.clear();
    Ok(with_etag(
        StatusCode::CREATED,
        r.version,
        ApiKeyWithSecret {
            key: view(&r)?,
            secret,
        },
    ))
}

/// Get an API key.
#[utoipa::path(get, path = "/v1/api_keys/{id}", tag = "api_keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = super::error::Problem)))]
async fn get(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require_admin()?;
    let r = load(&state, &who, Kind::ApiKey, &id).await?;
    Ok(with_etag(StatusCode::OK, r.version, view(&r)?))
}

/// Revoke an API key (it stays listed, refused from now on).
#[utoipa::path(delete, path = "/v1/api_keys/{id}", tag = "api_keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
async fn revoke(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require_admin()?;
    let old = load(&state, &who, Kind::ApiKey, &id).await?;
    if old.id == who.key_id {
        // Revoking the key in use would lock its holder out mid-session.
        return Err(ApiError::Conflict(
            "an API key cannot revoke itself: use another admin key".into(),
        ));
    }
    let mut rec: KeyRecord =
        serde_json::from_value(old.body.clone()).map_err(ApiError::internal)?;
    if rec.revoked_at.is_some() {
        return Ok(StatusCode::NO_CONTENT);
    }
    rec.revoked_at = Some(now_ms());
    let body = serde_json::to_value(&rec).map_err(ApiError::internal)?;
    let r = Resource {
        body: body.clone(),
        version: old.version + 1,
        updated_at: now_ms(),
        ..old.clone()
    };
    state
        .store
        .update(
            &r,
            old.version,
            Some(&audit(
                &who,
                "revoke",
                Kind::ApiKey,
                &id,
                rec.tenant_id.as_deref(),
                serde_json::json!({"before": old.body, "after": body}),
            )),
        )
        .await?;
    state.caches.keys.clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate an API key: a new secret replaces the old one at once.
#[utoipa::path(post, path = "/v1/api_keys/{id}/rotate", tag = "api_keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKeyWithSecret), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem)))]
async fn rotate(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require_admin()?;
    let old = load(&state, &who, Kind::ApiKey, &id).await?;
    let mut rec: KeyRecord =
        serde_json::from_value(old.body.clone()).map_err(ApiError::internal)?;
    if rec.revoked_at.is_some() {
        return Err(ApiError::Conflict("a revoked key cannot be rotated".into()));
    }
    let secret = generate_key();
    rec.prefix = prefix_of(&secret);
    let body = serde_json::to_value(&rec).map_err(ApiError::internal)?;
    let r = Resource {
        unique_key: hash_key(&secret),
        body,
        version: old.version + 1,
        updated_at: now_ms(),
        ..old.clone()
    };
    state
        .store
        .update(
            &r,
            old.version,
            Some(&audit(
                &who,
                "rotate",
                Kind::ApiKey,
                &id,
                rec.tenant_id.as_deref(),
                serde_json::json!({"secret": "rotated"}),
            )),
        )
        .await?;
    state.caches.keys.clear();
    Ok(with_etag(
        StatusCode::OK,
        r.version,
        ApiKeyWithSecret {
            key: view(&r)?,
            secret,
        },
    ))
}
