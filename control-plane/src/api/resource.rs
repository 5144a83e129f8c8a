//! What every resource handler shares: loading with tenant checks, audit entries, ETags.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{etag, AppJson};
use super::AppState;
use crate::store::{AuditEntry, Kind, Resource};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An audit entry for an action of `who` on a resource.
pub fn audit(
    who: &Principal,
    action: &str,
    kind: Kind,
    id: &str,
    tenant_id: Option<&str>,
    diff: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        id: crate::ids::new_id("aud"),
        tenant_id: tenant_id.filter(|t| !t.is_empty()).map(str::to_owned),
        actor: who.key_id.clone(),
        action: action.to_owned(),
        resource_type: kind.as_str().to_owned(),
        resource_id: id.to_owned(),
        diff,
        at: crate::ids::now_ms(),
    }
}

/// Stores a new resource with its "create" audit entry.
///
/// # Errors
/// A conflict on its unique key, or storage failures.
pub async fn insert_audited(
    state: &AppState,
    who: &Principal,
    r: &Resource,
) -> Result<(), ApiError> {
    let entry = audit(
        who,
        "create",
        r.kind,
        &r.id,
        Some(&r.tenant_id),
        serde_json::json!({"after": r.body}),
    );
    state.store.insert(r, &entry).await?;
    Ok(())
}

/// Stores `r` as the next version of `old`, with an "update" audit entry holding both bodies.
///
/// # Errors
/// A concurrent change (412), a unique-key conflict, or storage failures.
pub async fn update_audited(
    state: &AppState,
    who: &Principal,
    old: &Resource,
    r: &Resource,
) -> Result<(), ApiError> {
    let entry = audit(
        who,
        "update",
        r.kind,
        &r.id,
        Some(&old.tenant_id),
        serde_json::json!({"before": old.body, "after": r.body}),
    );
    state.store.update(r, old.version, &entry).await?;
    Ok(())
}

/// Loads a resource the caller may see; another tenant's is "not found".
///
/// # Errors
/// 404, or a storage failure.
pub async fn load(
    state: &AppState,
    who: &Principal,
    kind: Kind,
    id: &str,
) -> Result<Resource, ApiError> {
    let r = state.store.get(kind, id).await?.ok_or(ApiError::NotFound)?;
    who.see(&r.tenant_id)?;
    Ok(r)
}

/// Checks that the tenant a resource is created in exists (and is visible).
///
/// # Errors
/// 404 for an unknown tenant.
pub async fn require_tenant(
    state: &AppState,
    who: &Principal,
    tenant_id: &str,
) -> Result<(), ApiError> {
    load(state, who, Kind::Tenant, tenant_id).await.map(|_| ())
}

/// Fails with 412 when `If-Match` names another version.
///
/// # Errors
/// 412.
pub fn check_if_match(if_match: Option<i64>, current: i64) -> Result<(), ApiError> {
    match if_match {
        Some(v) if v != current => Err(ApiError::PreconditionFailed),
        _ => Ok(()),
    }
}

/// A JSON response carrying the resource's `ETag`.
pub fn with_etag<T: Serialize>(status: StatusCode, version: i64, body: T) -> Response {
    let mut resp = (status, AppJson(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// One page of a tenant-owned kind, as the caller may see it.
///
/// # Errors
/// A bad limit, another tenant asked for, or storage failures.
pub async fn list_page<T>(
    state: &AppState,
    who: &Principal,
    kind: Kind,
    page: &super::extract::PageParams,
    view: impl Fn(&Resource) -> Result<T, ApiError>,
    id: impl Fn(&T) -> String,
) -> Result<super::extract::Page<T>, ApiError> {
    let limit = page.limit()?;
    let q = crate::store::ListQuery {
        kind,
        tenant_id: who.tenant_filter(page.tenant_id.as_deref())?,
        after: page.after.clone(),
        limit: limit + 1,
    };
    let items = state
        .store
        .list(&q)
        .await?
        .iter()
        .map(view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(super::extract::Page::from_fetched(items, limit, id))
}

/// Deletes a resource the caller may see, honouring `If-Match`, with its audit entry; returns
/// what was deleted.
///
/// # Errors
/// 404, 412, or storage failures.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    kind: Kind,
    id: &str,
    if_match: Option<i64>,
) -> Result<Resource, ApiError> {
    let old = load(state, who, kind, id).await?;
    check_if_match(if_match, old.version)?;
    let entry = audit(
        who,
        "delete",
        kind,
        id,
        Some(&old.tenant_id),
        serde_json::json!({"before": old.body}),
    );
    state
        .store
        .delete(kind, id, Some(old.version), &entry)
        .await?;
    Ok(old)
}
