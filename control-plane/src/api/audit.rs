//! `/v1/audit_log`: every mutation, who made it, and what changed (secrets masked). Read-only.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{time_param, AppJson, AppQuery, Page};
use super::AppState;
use crate::ids::rfc3339;
use crate::store::AuditQuery;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Audit-log filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// `tenant`, `source`, `endpoint`, `event_type` or `api_key`.
    pub resource_type: Option<String>,
    /// One resource's entries.
    pub resource_id: Option<String>,
    /// One API key's actions.
    pub actor: Option<String>,
    /// RFC 3339: at or after.
    pub since: Option<String>,
    /// RFC 3339: before.
    pub until: Option<String>,
    /// Only this tenant's entries (global admin keys).
    pub tenant_id: Option<String>,
    /// Entries per page, 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// Entries after this id.
    pub after: Option<String>,
}

/// One recorded mutation.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Id (time-ordered).
    pub id: String,
    /// Tenant of the resource.
    pub tenant_id: Option<String>,
    /// API key id that acted.
    pub actor: String,
    /// `create`, `update`, `delete`, `rotate` or `revoke`.
    pub action: String,
    /// Resource kind.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// What changed, secrets masked.
    pub diff: serde_json::Value,
    /// RFC 3339.
    pub at: String,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Read the audit log (admin keys; a tenant's admin sees that tenant's entries).
#[utoipa::path(get, path = "/v1/audit_log", tag = "audit_log", params(AuditParams),
    responses((status = 200, body = Page<AuditRecord>), (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    AppQuery(p): AppQuery<AuditParams>,
) -> Result<AppJson<Page<AuditRecord>>, ApiError> {
    who.require_admin()?;
    let limit = super::extract::PageParams {
        limit: p.limit,
        after: None,
        tenant_id: None,
    }
    .limit()?;
    let q = AuditQuery {
        tenant_id: who.tenant_filter(p.tenant_id.as_deref())?,
        resource_type: p.resource_type.clone(),
        resource_id: p.resource_id.clone(),
        actor: p.actor.clone(),
        since: time_param("since", p.since.as_deref())?,
        until: time_param("until", p.until.as_deref())?,
        after: p.after.clone(),
        limit: limit + 1,
    };
    let items = state
        .store
        .list_audit(&q)
        .await?
        .into_iter()
        .map(|a| AuditRecord {
            id: a.id,
            tenant_id: a.tenant_id,
            actor: a.actor,
            action: a.action,
            resource_type: a.resource_type,
            resource_id: a.resource_id,
            diff: a.diff,
            at: rfc3339(a.at),
        })
        .collect();
    Ok(AppJson(Page::from_fetched(items, limit, |a| a.id.clone())))
}
