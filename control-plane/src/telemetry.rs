//! Logging and Prometheus metrics.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InboundLabels {
    source: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// The control plane's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    pool: Family<PoolLabels, Gauge>,
    inbound: Family<InboundLabels, Counter>,
    retention_deleted: Family<KindLabels, Counter>,
    arrivals: Gauge,
    publishes: Gauge,
    /// When the last webhook finished arriving or the last publish was answered, unix ms.
    last_live: AtomicI64,
    job_webhooks: Gauge,
}

/// One unit of a gauge for as long as it lives; for live traffic, its end is noted too.
pub struct InFlight<'a> {
    gauge: &'a Gauge,
    ended: Option<&'a AtomicI64>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
        if let Some(ended) = self.ended {
            ended.store(crate::ids::now_ms(), Ordering::Relaxed);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hookmesh");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "http_requests",
            "API requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "API request latency by route",
            latency.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        let inbound = Family::<InboundLabels, Counter>::default();
        registry.register(
            "inbound_webhooks",
            "Webhooks at the hub's ingest by source and outcome (accepted, duplicate, rejected, quarantined, failed)",
            inbound.clone(),
        );
        let retention_deleted = Family::<KindLabels, Counter>::default();
        registry.register(
            "retention_deleted",
            "Rows deleted past the retention: events (with their deliveries and attempts), inbound events and finished jobs",
            retention_deleted.clone(),
        );
        let arrivals = Gauge::default();
        registry.register(
            "inbound_arrivals_in_flight",
            "Webhooks the hub's ingest is accepting now (bulk jobs give way while there are any)",
            arrivals.clone(),
        );
        let publishes = Gauge::default();
        registry.register(
            "api_publishes_in_flight",
            "Publish requests (POST /v1/events, /v1/events/batch) being stored now (bulk jobs give way while there are any)",
            publishes.clone(),
        );
        let job_webhooks = Gauge::default();
        registry.register(
            "job_webhooks_in_flight",
            "Webhooks bulk jobs are running through the hub now",
            job_webhooks.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            pool,
            inbound,
            retention_deleted,
            arrivals,
            publishes,
            last_live: AtomicI64::new(0),
            job_webhooks,
        }
    }
}

impl Metrics {
    /// Counts one webhook at the ingest.
    pub fn inbound(&self, source: &str, outcome: &'static str) {
        self.inbound
            .get_or_create(&InboundLabels {
                source: source.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A webhook arriving at the ingest, until the guard drops.
    pub fn arriving(&self) -> InFlight<'_> {
        self.live(&self.arrivals)
    }

    /// A publish request through the API, until the guard drops.
    pub fn publishing(&self) -> InFlight<'_> {
        self.live(&self.publishes)
    }

    /// Live traffic counted in `gauge`; its end is noted for [`Metrics::live_within`].
    fn live<'a>(&'a self, gauge: &'a Gauge) -> InFlight<'a> {
        gauge.inc();
        InFlight {
            gauge,
            ended: Some(&self.last_live),
        }
    }

    /// Whether live traffic (a webhook arriving at the ingest, a publish through the API) is
    /// in flight now, or ended less than `within_ms` ago. Bulk jobs give way to it.
    pub fn live_within(&self, within_ms: i64) -> bool {
        self.arrivals.get() > 0
            || self.publishes.get() > 0
            || crate::ids::now_ms() - self.last_live.load(Ordering::Relaxed) < within_ms
    }

    /// A webhook a bulk job runs, until it is done.
    pub fn job_webhook(&self) -> InFlight<'_> {
        self.job_webhooks.inc();
        InFlight {
            gauge: &self.job_webhooks,
            ended: None,
        }
    }

    /// Counts rows of a kind deleted past the retention.
    pub fn retention_deleted(&self, kind: &'static str, n: u64) {
        self.retention_deleted
            .get_or_create(&KindLabels { kind })
            .inc_by(n);
    }

    /// The OpenMetrics text exposition, with the pool gauges refreshed.
    pub fn render(&self, (in_use, idle): (u32, u32)) -> String {
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(i64::from(in_use));
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(i64::from(idle));
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts and times every request by its route template (never the raw path: bounded labels).
pub async fn track(
    State(state): State<crate::api::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Installs the global tracing subscriber: `text` or `json` lines on stderr.
pub fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
