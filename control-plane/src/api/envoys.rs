//! `/v1/envoys` and `/v1/config/version`: what the Envoys run. Infrastructure-wide, so global
//! keys only.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::AppJson;
use super::AppState;
use crate::xds::EnvoyStatus;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The published filter configuration.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigVersion {
    /// Content hash of the configuration pushed to Envoys.
    pub version: String,
    /// Sources in it.
    pub sources: usize,
    /// The version of each source resource (by id) whose settings it carries.
    pub source_versions: std::collections::BTreeMap<String, i64>,
}

/// Every Envoy seen.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnvoyList {
    /// By node id.
    pub data: Vec<EnvoyStatus>,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(version))
}

fn require_global(who: &Principal) -> Result<(), ApiError> {
    if who.tenant_id.is_some() {
        return Err(ApiError::Forbidden(
            "Envoys serve every tenant: use a global key".into(),
        ));
    }
    who.require(super::auth::Area::Sources, super::auth::Access::Read)
}

/// Every Envoy seen on an xDS stream: connection, acknowledged version, last refusal.
#[utoipa::path(get, path = "/v1/envoys", tag = "config", responses((status = 200, body = EnvoyList)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
) -> Result<AppJson<EnvoyList>, ApiError> {
    require_global(&who)?;
    Ok(AppJson(EnvoyList {
        data: state.envoys.list(),
    }))
}

/// The version of the filter configuration currently published.
#[utoipa::path(get, path = "/v1/config/version", tag = "config", responses((status = 200, body = ConfigVersion)))]
async fn version(
    State(state): State<AppState>,
    who: Principal,
) -> Result<AppJson<ConfigVersion>, ApiError> {
    require_global(&who)?;
    let applied = state.config.applied();
    Ok(AppJson(ConfigVersion {
        sources: applied.sources.len(),
        version: applied.version,
        source_versions: applied.sources,
    }))
}
