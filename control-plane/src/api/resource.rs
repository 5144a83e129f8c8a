//! What every resource handler shares: loading with tenant checks, audit entries, ETags.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{etag, AppJson};
use super::AppState;
use crate::store::{AuditEntry, Kind, Resource};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Who owns a resource besides the API. The Kubernetes controller marks what it creates, and
/// the API then refuses changes that do not come from it: one place to change a resource, no
/// split brain between `kubectl` and REST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagedBy {
    /// The manager, e.g. `kubernetes`.
    pub manager: String,
    /// The owning object, for people: `WebhookSource payments/stripe`.
    pub object: String,
    /// The owner's unique id (a Kubernetes uid); changes must present it in the
    /// `Hookmesh-Manager` header.
    pub uid: String,
}

impl ManagedBy {
    /// Checks the fields' sizes.
    ///
    /// # Errors
    /// 422 naming the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        for (field, value) in [
            ("managed_by.manager", &self.manager),
            ("managed_by.object", &self.object),
            ("managed_by.uid", &self.uid),
        ] {
            if value.is_empty() || value.len() > 256 {
                return Err(ApiError::field(field, "1 to 256 characters"));
            }
        }
        Ok(())
    }
}

/// The `Hookmesh-Manager` header: the uid of the manager a change comes from.
pub struct Manager(pub Option<String>);

/// The header a manager identifies itself with.
pub const MANAGER_HEADER: &str = "hookmesh-manager";

impl<S: Send + Sync> FromRequestParts<S> for Manager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get(MANAGER_HEADER) {
            None => Ok(Manager(None)),
            Some(v) => v
                .to_str()
                .map(|s| Manager(Some(s.trim().to_owned())))
                .map_err(|_| ApiError::BadRequest("Hookmesh-Manager is not text".into())),
        }
    }
}

/// The manager a stored resource names, if any.
pub fn managed_of(r: &Resource) -> Option<ManagedBy> {
    r.body
        .get("managed_by")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Refuses a change to a managed resource that does not come from its manager.
///
/// # Errors
/// 409 `managed`, naming the owner.
pub fn require_manager(r: &Resource, manager: &Manager) -> Result<(), ApiError> {
    match managed_of(r) {
        Some(m) if manager.0.as_deref() != Some(m.uid.as_str()) => Err(ApiError::Managed(format!(
            "managed by {} ({}): change it there; the API changes it only with its Hookmesh-Manager header",
            m.manager, m.object
        ))),
        _ => Ok(()),
    }
}

/// What a replace stores as the manager: the stored one. The request may repeat it but never
/// change it, add one to an unmanaged resource, or drop it.
///
/// # Errors
/// 409 `managed` for a change of owner.
pub fn keep_manager(
    old: &Resource,
    manager: &Manager,
    claimed: Option<ManagedBy>,
) -> Result<Option<ManagedBy>, ApiError> {
    require_manager(old, manager)?;
    let stored = managed_of(old);
    match (&stored, claimed) {
        (_, None) => Ok(stored),
        (Some(s), Some(c)) if *s == c => Ok(stored),
        (None, Some(_)) => Err(ApiError::Managed(
            "an existing resource cannot be taken over by a manager: it creates its own".into(),
        )),
        (Some(_), Some(_)) => Err(ApiError::Managed(
            "the manager of a resource cannot change".into(),
        )),
    }
}

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
    state.store.update(r, old.version, Some(&entry)).await?;
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
    manager: &Manager,
) -> Result<Resource, ApiError> {
    let old = load(state, who, kind, id).await?;
    check_if_match(if_match, old.version)?;
    require_manager(&old, manager)?;
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
        .delete(kind, id, Some(old.version), Some(&entry))
        .await?;
    Ok(old)
}
