//! The REST API under `/v1`, plus health, metrics and the OpenAPI document.
//!
//! One module per resource, each exposing `routes()`; they are registered through utoipa-axum,
//! so the OpenAPI document is built from the same routes the server answers.

mod audit;
pub mod auth;
mod docs;
mod endpoints;
pub mod error;
mod event_types;
pub mod extract;
mod health;
mod idempotency;
mod keys;
mod resource;
mod sources;
mod tenants;

use crate::secrets::MasterKeys;
use crate::store::Store;
use crate::telemetry::Metrics;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use std::sync::Arc;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use idempotency::RETENTION_MS as IDEMPOTENCY_RETENTION_MS;
pub use keys::insert_key as keys_insert;
pub use resource::audit as audit_entry;
pub use sources::open_spec as open_source_spec;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Shared state of every handler: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Configuration storage.
    pub store: Arc<dyn Store>,
    /// Seals secrets at rest.
    pub keys: Arc<MasterKeys>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hookmesh control plane", description = "Webhook sources, endpoints, event types, API keys and the audit log. Errors are RFC 7807 problem documents."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::Problem, error::FieldError))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(Clone, Copy)]
struct PrefixedRequestId;

impl MakeRequestId for PrefixedRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        crate::ids::new_id("req").parse().ok().map(RequestId::new)
    }
}

/// The authenticated `/v1` routes and their OpenAPI document.
fn v1() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(tenants::routes())
        .merge(sources::routes())
        .merge(endpoints::routes())
        .merge(event_types::routes())
        .merge(keys::routes())
        .merge(audit::routes())
        .split_for_parts()
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = v1();
    doc.merge(health::openapi());
    doc
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (v1, _) = v1();
    let doc = Arc::new(openapi());
    let v1 = v1
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(v1)
        .merge(health::routes())
        .merge(docs::routes(doc))
        .fallback(|| async { error::ApiError::NotFound })
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state, crate::telemetry::track))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, PrefixedRequestId))
}
