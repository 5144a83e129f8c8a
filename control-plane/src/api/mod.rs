//! The REST API under `/v1`, plus health, metrics and the OpenAPI document.
//!
//! One module per resource, each exposing `routes()`; they are registered through utoipa-axum,
//! so the OpenAPI document is built from the same routes the server answers.

mod audit;
pub mod auth;
pub mod cache;
mod docs;
mod endpoints;
mod envoys;
pub mod error;
mod event_types;
mod events;
pub mod extract;
mod health;
mod idempotency;
mod inbound;
mod jobs;
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

pub use endpoints::{
    disable as disable_endpoint, runtime as endpoint_runtime, type_matches as event_type_matches,
    Batching, EndpointRuntime, RetryPolicy,
};
pub use events::newest_schema;
pub use idempotency::RETENTION_MS as IDEMPOTENCY_RETENTION_MS;
pub use jobs::{purge_finished_jobs, resume_jobs, spawn_job_keeper, LEASE_MS as JOB_LEASE_MS};
pub use keys::insert_key as keys_insert;
pub use resource::audit as audit_entry;
pub use sources::{ingest_of as source_ingest, open_spec as open_source_spec};

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Shared state of every handler: one reference count to clone. Every request clones it a few
/// times (layers, extractors); one shared counter instead of seven halves what the two cores
/// spend bouncing cache lines on it.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares.
pub struct Shared {
    /// Configuration storage.
    pub store: Arc<dyn Store>,
    /// Seals secrets at rest.
    pub keys: Arc<MasterKeys>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The filter configuration pushed to Envoys; told about every source change.
    pub config: Arc<crate::xds::Publisher>,
    /// Envoys seen on xDS streams.
    pub envoys: Arc<crate::xds::Registry>,
    /// Outbound delivery: publishing, endpoint cache.
    pub delivery: Arc<crate::delivery::Engine>,
    /// API keys and schemas on the request path.
    pub caches: Arc<cache::Caches>,
    /// The inbound hub.
    pub ingest: Arc<crate::ingest::Ingest>,
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
        .merge(envoys::routes())
        .merge(events::routes())
        .merge(jobs::routes())
        .merge(inbound::routes())
        .split_for_parts()
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = v1();
    doc.merge(health::openapi());
    document_problems(&mut doc);
    doc
}

/// Declares, once for every operation, the problem responses the shared layers can give
/// (authentication, scopes, body parsing, idempotency, preconditions), all as
/// `application/problem+json`, so no handler can forget one.
fn document_problems(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("GET", &mut item.get),
            ("POST", &mut item.post),
            ("PUT", &mut item.put),
            ("DELETE", &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let mut codes: Vec<(&str, &str)> = Vec::new();
            if path.starts_with("/v1") {
                codes.extend([
                    ("400", "Malformed request: query, header or JSON syntax"),
                    ("401", "Missing, invalid, expired or revoked API key"),
                    ("403", "The API key lacks the scope this needs"),
                    ("404", "No such resource (or another tenant's)"),
                ]);
                if method == "POST" || method == "PUT" {
                    codes.extend([
                        ("409", "Conflicts with existing state, or the same Idempotency-Key is in flight"),
                        ("413", "Request body too large"),
                        ("415", "Request body is not application/json"),
                        ("422", "Invalid fields, listed in `errors`"),
                    ]);
                }
                if method == "PUT" || method == "DELETE" {
                    codes.extend([
                        ("409", "Changed concurrently or still in use"),
                        ("412", "If-Match does not match the current ETag"),
                    ]);
                }
            }
            for (code, description) in codes {
                op.responses
                    .responses
                    .insert(code.to_owned(), problem(description));
            }
            for p in op.parameters.iter_mut().flatten() {
                let pattern = match p.name.as_str() {
                    "Idempotency-Key" => idempotency::KEY_PATTERN,
                    "If-Match" => r#"^(\*|(W/)?"[0-9]{1,18}")$"#,
                    _ => continue,
                };
                p.schema = Some(RefOr::T(
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .pattern(Some(pattern))
                        .into(),
                ));
            }
            // Problem bodies declared by handlers: same content type.
            for (code, response) in op.responses.responses.iter_mut() {
                if code.starts_with('4') || code.starts_with('5') {
                    if let RefOr::T(r) = response {
                        let description = r.description.clone();
                        *response = problem(&description);
                    }
                }
            }
        }
    }
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
