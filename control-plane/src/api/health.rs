//! `/healthz` (the process answers), `/readyz` (the database answers, migrations applied) and
//! `/metrics` (Prometheus). No authentication: probes and scrapers call them.

use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz))]
struct HealthDoc;

pub(super) fn openapi() -> utoipa::openapi::OpenApi {
    HealthDoc::openapi()
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "The process is up")))]
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the database answers and migrations are applied.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready", body = super::error::Problem)))]
async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    match state.store.ready().await {
        Ok(()) => {
            axum::Json(serde_json::json!({"status": "ready", "database": state.store.backend()}))
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            let mut resp = ApiError::Conflict("database unavailable".into()).into_response();
            *resp.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            resp
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(state.store.pool_stats()),
    )
}
