//! The inbound hub: webhooks that a `hub` source's filter accepted arrive here from Envoy, are
//! stored before the provider gets its 2xx, and go on through duplicate detection, parsing,
//! validation, transformation and routing into the delivery engine.
//!
//! - [`config`]: a source's `ingest` settings and their compiled form.
//! - [`parse`]: bodies (JSON, forms, multipart, XML) into one JSON document.
//! - [`jq`]: jq programs (jaq) for transformations, conditions and keys.
//! - [`process`]: one webhook through the pipeline.
//!
//! The listener trusts the filter's `x-hookmesh-*` headers only with the deployment's ingest
//! token, which the control plane pushes to the filter with its configuration.

pub mod config;
pub mod jq;
pub mod parse;
pub mod process;

use crate::api::error::ApiError;
use crate::delivery::Engine;
use crate::secrets::MasterKeys;
use crate::store::{Kind, Store, StoreError, Stored};
use crate::telemetry::Metrics;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use config::Pipeline;
use hookmesh_filter::config::SourceMode;
use hookmesh_filter::SchemeName;
use process::{Received, Run, Verdict};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tower::Service;

/// The header carrying the deployment's ingest token.
pub const TOKEN_HEADER: &str = "x-hookmesh-ingest-token";

/// Request bodies above this are refused (413).
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// A hub source with its compiled pipeline.
#[derive(Debug)]
pub struct SourcePipeline {
    /// Source id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Name (what the filter sends as `x-hookmesh-source`).
    pub name: String,
    /// The verification scheme (for the provider's duplicate id).
    pub scheme: Option<SchemeName>,
    /// The compiled settings.
    pub pipeline: Pipeline,
    /// The source's version and the event types' fingerprint it was compiled from.
    built_from: (i64, u64),
}

/// The ingest: hub sources by name, swapped whole on every change.
pub struct Ingest {
    store: Arc<dyn Store>,
    keys: Arc<MasterKeys>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    trusted_hops: u8,
    sources: RwLock<Arc<HashMap<String, Arc<SourcePipeline>>>>,
    /// Sources whose settings did not compile, and what from (logged once per version).
    failed: std::sync::Mutex<HashMap<String, (i64, u64)>>,
    dirty: Notify,
    last_miss_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl Ingest {
    /// Loads the hub sources and keeps them current (on [`Ingest::changed`], and every 2 s).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: Arc<MasterKeys>,
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        trusted_hops: u8,
    ) -> Result<Arc<Ingest>, StoreError> {
        let ingest = Arc::new(Ingest {
            store,
            keys,
            engine,
            metrics,
            trusted_hops,
            sources: RwLock::default(),
            failed: std::sync::Mutex::default(),
            dirty: Notify::new(),
            last_miss_reload: tokio::sync::Mutex::new(None),
        });
        ingest.refresh().await?;
        let me = Arc::downgrade(&ingest);
        tokio::spawn(async move {
            loop {
                let Some(i) = me.upgrade() else { return };
                tokio::select! {
                    _ = i.dirty.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                if let Err(e) = i.refresh().await {
                    tracing::warn!(error = %e, "reloading hub sources failed");
                }
            }
        });
        Ok(ingest)
    }

    /// Signals a change of sources, endpoints or event types.
    pub fn changed(&self) {
        self.dirty.notify_one();
    }

    /// Rebuilds every hub source's pipeline from the store.
    ///
    /// # Errors
    /// Storage failures (the previous pipelines stay).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let event_types = self.store.list_all(Kind::EventType).await?;
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for r in &event_types {
                (&r.id, r.version).hash(&mut h);
            }
            h.finish()
        };
        // Pipelines whose source and event types did not change are kept, not compiled again.
        let previous: HashMap<String, Arc<SourcePipeline>> = self
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| (s.id.clone(), s.clone()))
            .collect();
        let mut map = HashMap::new();
        for r in self.store.list_all(Kind::Source).await? {
            let built_from = (r.version, fingerprint);
            if let Some(kept) = previous.get(&r.id).filter(|p| p.built_from == built_from) {
                map.insert(kept.name.clone(), kept.clone());
                continue;
            }
            let Ok(spec) = serde_json::from_value::<hookmesh_filter::config::SourceConfig>(
                r.body.get("spec").cloned().unwrap_or_default(),
            ) else {
                continue;
            };
            if spec.mode != SourceMode::Hub {
                continue;
            }
            let config = crate::api::source_ingest(&r).unwrap_or_default();
            // Checked when saved; an endpoint deleted since shows in the routing decisions.
            let compiled = config.compile(&|_| true, &|name| {
                Some(crate::api::newest_schema(&event_types, &r.tenant_id, name))
            });
            match compiled {
                Ok(pipeline) => {
                    map.insert(
                        spec.name.clone(),
                        Arc::new(SourcePipeline {
                            id: r.id.clone(),
                            tenant_id: r.tenant_id.clone(),
                            name: spec.name.clone(),
                            scheme: spec.verify.as_ref().map(|v| v.scheme),
                            pipeline,
                            built_from,
                        }),
                    );
                }
                Err(errors) => {
                    let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                    if failed.insert(r.id.clone(), built_from) != Some(built_from) {
                        tracing::error!(source = %r.id, ?errors, "hub source skipped: its ingest settings do not compile");
                    }
                }
            }
        }
        *self.sources.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Arc<SourcePipeline>> {
        self.sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// A hub source by name, reloading first (at most once a second) when it is unknown:
    /// another replica may have created it a moment ago.
    async fn get_fresh(&self, name: &str) -> Option<Arc<SourcePipeline>> {
        if let Some(s) = self.get(name) {
            return Some(s);
        }
        let mut last = self.last_miss_reload.lock().await;
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reloading hub sources after a miss failed");
            }
            *last = Some(std::time::Instant::now());
        }
        drop(last);
        self.get(name)
    }

    /// A hub source by id.
    pub fn by_id(&self, id: &str) -> Option<Arc<SourcePipeline>> {
        self.sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|s| s.id == id)
            .cloned()
    }

    /// Runs a stored inbound event through its source's current pipeline again (replay), or
    /// out of quarantine (release), storing the new outcome and outbound events together.
    ///
    /// # Errors
    /// The source is gone or no longer a hub source (409), or the store failed.
    pub async fn rerun(
        &self,
        row: &crate::store::InboundRow,
        how: Run,
    ) -> Result<crate::store::InboundRow, ApiError> {
        let Some(src) = self.by_id(&row.source_id) else {
            return Err(ApiError::Conflict(
                "the event's source no longer exists or is not a hub source".into(),
            ));
        };
        // The stored masks stand in for the masked headers; the body is as received.
        let rx = Received::from_row(row);
        match process::run(&self.engine, &src, rx, row.id.clone(), how).await {
            Verdict::Reject(reason) => Err(ApiError::Conflict(reason)),
            Verdict::Store(mut inbound, events) => {
                inbound.row.duplicates = row.duplicates;
                inbound.row.dedup_key = row.dedup_key.clone();
                let out = inbound.row.clone();
                let written = self
                    .engine
                    .write(events, vec![*inbound])
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("storing failed: {e}")))?;
                match written.inbound.first() {
                    Some(crate::store::Stored::Created) => Ok(out),
                    _ => Err(ApiError::Conflict(
                        "the webhook changed while it was run again (another replay, a release or a delete): nothing was routed; read it and try again".into(),
                    )),
                }
            }
        }
    }

    /// The ingest listener's service: its one handler, without a router. For a single
    /// catch-all, a router only added work to every request (a boxed service clone and its
    /// path-parameter extension).
    pub fn service(
        self: &Arc<Self>,
    ) -> impl Service<
        axum::extract::Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
           + Send
           + Sync
           + 'static {
        receive
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.clone())
    }
}

/// One webhook from Envoy. The request is taken apart here rather than by extractors, which
/// clone the method, URI and every header.
async fn receive(State(ingest): State<Arc<Ingest>>, request: Request) -> Response {
    let _arriving = ingest.metrics.arriving();
    let (mut parts, body) = request.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    // The body limit travels in the request's extensions.
    let body = match Bytes::from_request(Request::from_parts(parts, body), &()).await {
        Ok(body) => body,
        // A problem document like every other refusal, not axum's plain text.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::PayloadTooLarge.into_response()
        }
        Err(e) => return ApiError::BadRequest(e.body_text()).into_response(),
    };
    let token = headers.get(TOKEN_HEADER).map_or(&b""[..], |v| v.as_bytes());
    if !ingest.keys.accepts_ingest_token(token) {
        return ApiError::Forbidden(
            "the ingest accepts only requests forwarded by a hookmesh Envoy filter (missing or wrong x-hookmesh-ingest-token)".into(),
        ).into_response();
    }
    let Some(name) = headers
        .get("x-hookmesh-source")
        .and_then(|v| v.to_str().ok())
    else {
        return ApiError::BadRequest(
            "no x-hookmesh-source header: the filter names the source it verified".into(),
        )
        .into_response();
    };
    let Some(src) = ingest.get_fresh(name).await else {
        return ApiError::NotFound.into_response();
    };
    let received_at = crate::ids::now_ms();
    let client_ip = client_ip(&headers, ingest.trusted_hops);
    let rx = Received {
        method,
        path,
        query,
        headers: {
            headers.remove(TOKEN_HEADER);
            headers
        },
        body: body.to_vec(),
        client_ip,
        received_at,
        stored: None,
    };
    let id = crate::ids::new_id("inb");
    match process::run(&ingest.engine, &src, rx, id, Run::Arrival).await {
        Verdict::Reject(reason) => {
            ingest.metrics.inbound(&src.name, "rejected");
            ApiError::BadRequest(reason).into_response()
        }
        Verdict::Store(inbound, events) => {
            let (id, status) = (inbound.row.id.clone(), inbound.row.status.clone());
            match ingest.engine.write(events, vec![*inbound]).await {
                Ok(written) => match written.inbound.into_iter().next() {
                    Some(Stored::Duplicate(first)) => {
                        ingest.metrics.inbound(&src.name, "duplicate");
                        reply(StatusCode::OK, &first, "duplicate")
                    }
                    Some(Stored::Created) => {
                        let (outcome, shown) = match status.as_str() {
                            "quarantined" => ("quarantined", "quarantined"),
                            "failed" => ("failed", "accepted"),
                            _ => ("accepted", "accepted"),
                        };
                        ingest.metrics.inbound(&src.name, outcome);
                        reply(StatusCode::OK, &id, shown)
                    }
                    None => {
                        ApiError::Unavailable("the store answered nothing".into()).into_response()
                    }
                },
                Err(e) => {
                    tracing::error!(source = %src.name, error = %e, "storing an inbound webhook failed");
                    ingest.metrics.inbound(&src.name, "unavailable");
                    ApiError::Unavailable("the webhook could not be stored; retry later".into())
                        .into_response()
                }
            }
        }
    }
}

/// The client address, read the way the filter reads it: `x-forwarded-for` as Envoy forwards it
/// ends with Envoy's own TCP peer, and `trusted_hops` proxies recorded the entries before that.
fn client_ip(headers: &HeaderMap, trusted_hops: u8) -> Option<String> {
    let xff = || {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
    };
    let peer = xff()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    hookmesh_filter::client_address(peer, xff(), trusted_hops).map(|ip| ip.to_string())
}

/// What the provider reads: `{"id": ..., "status": ...}`.
#[derive(serde::Serialize)]
struct Reply<'a> {
    id: &'a str,
    status: &'a str,
}

fn reply(status: StatusCode, id: &str, outcome: &str) -> Response {
    (
        status,
        axum::Json(Reply {
            id,
            status: outcome,
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::client_ip;
    use axum::http::HeaderMap;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn the_client_address_ignores_entries_the_client_wrote() {
        // Envoy appended its TCP peer (the last entry).
        assert_eq!(
            client_ip(&xff("203.0.113.9"), 0).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            client_ip(&xff("6.6.6.6, 203.0.113.9"), 0).as_deref(),
            Some("203.0.113.9")
        );
        // Behind one load balancer: the entry it recorded, not the client's own.
        assert_eq!(
            client_ip(&xff("6.6.6.6, 198.51.100.7, 10.0.0.2"), 1).as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(client_ip(&HeaderMap::new(), 0), None);
    }
}
