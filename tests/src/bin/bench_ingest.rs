//! `make bench-ingest`: the inbound hub's throughput and provider-facing latency. Webhooks
//! signed (Standard Webhooks, each with its own id) are posted through Envoy with the filter by
//! concurrent keep-alive clients; a `hub` source stores each durably (SQLite, group commit)
//! before the 200 and routes it to one endpoint on a counting receiver. Side by side, the
//! baseline: the same requests to an `edge` source on the same Envoy, verified and passed
//! straight to the receiver, nothing stored. Results in docs/benchmarks.md.

use hookmesh_e2e::*;
use hookmesh_filter::{sign, SchemeName, SignInput};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Run {
    accepted_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    end_to_end_per_sec: f64,
}

/// Signed requests, each with its own message id (the hub would drop repeats as duplicates).
fn signed(n: usize, prefix: &str) -> Vec<(Vec<(String, String)>, bytes::Bytes)> {
    let pad = "x".repeat(200);
    let ts = now();
    (0..n)
        .map(|i| {
            let body = json!({"type": "invoice.paid", "data": {"id": i, "customer": "cus_0123456789", "amount": 1200, "note": pad}}).to_string();
            let id = format!("{prefix}_{i}");
            let headers = sign(
                SchemeName::StandardWebhooks,
                SECRET,
                None,
                &SignInput {
                    body: body.as_bytes(),
                    id: &id,
                    timestamp: ts,
                    url: None,
                    method: "POST",
                },
            )
            .expect("sign");
            (headers, bytes::Bytes::from(body))
        })
        .collect()
}

async fn load(
    port: u16,
    path: &str,
    requests: Vec<(Vec<(String, String)>, bytes::Bytes)>,
) -> (f64, Vec<u32>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}{path}");
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, requests, next) =
            (client.clone(), url.clone(), requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((headers, body)) = requests.get(i) else {
                    return latencies;
                };
                let mut req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                for (n, v) in headers {
                    req = req.header(n, v);
                }
                let sent = Instant::now();
                let resp = req.send().await.expect("request");
                let status = resp.status().as_u16();
                let _ = resp.bytes().await;
                latencies.push(sent.elapsed().as_micros() as u32);
                assert_eq!(status, 200, "request {i} refused");
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    (start.elapsed().as_secs_f64(), all)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

async fn wait_count(count: &AtomicU64, target: u64, start: Instant) -> f64 {
    while count.load(Ordering::Relaxed) < target {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {} of {target} arrived",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed().as_secs_f64()
}

async fn measure(port: u16, path: &str, n: usize, prefix: &str, count: &AtomicU64) -> Run {
    let before = count.load(Ordering::Relaxed);
    let requests = signed(n, prefix);
    let start = Instant::now();
    let (secs, mut latencies) = load(port, path, requests).await;
    let total = wait_count(count, before + n as u64, start).await;
    latencies.sort_unstable();
    Run {
        accepted_per_sec: n as f64 / secs,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        end_to_end_per_sec: n as f64 / total,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (port, count) = counting_receiver().await;
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        log: "warn".into(),
        extra_args: vec!["--allow-destination-cidrs".into(), "127.0.0.0/8".into()],
        ..ControlPlaneOptions::default()
    });
    let tenant = cp.json("POST", "/v1/tenants", Some(&json!({"name": "bench"})), 201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoint = cp.json(
        "POST",
        "/v1/endpoints",
        Some(&json!({"tenant_id": tenant, "url": format!("http://127.0.0.1:{port}/hub")})),
        201,
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let verify = json!({"scheme": "standard_webhooks", "secrets": [SECRET]});
    cp.json(
        "POST",
        "/v1/sources",
        Some(&json!({"tenant_id": tenant, "spec": {"name": "hub", "match": {"path_prefix": "/hub"}, "mode": "hub", "verify": verify},
                     "ingest": {"transform": {"event_type": ".type"}, "routes": [{"name": "all", "to": [endpoint]}]}})),
        201,
    );
    cp.json(
        "POST",
        "/v1/sources",
        Some(&json!({"tenant_id": tenant, "spec": {"name": "edge", "match": {"path_prefix": "/edge"}, "verify": verify}})),
        201,
    );
    let envoy =
        Envoy::sidecar_with_ingest("bench-ingest", cp.xds_port, port, cp.options.ingest_port);
    // Until the configuration arrives Envoy answers 503.
    let start = Instant::now();
    loop {
        let warm = signed(1, "warm");
        let (h, b) = &warm[0];
        let ok = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/hub", envoy.port))
            .headers(
                h.iter()
                    .map(|(n, v)| (n.parse().unwrap(), v.parse().unwrap()))
                    .collect(),
            )
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
            .await;
        let last = match ok {
            Ok(r) if r.status() == 200 => break,
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hub source never became ready: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_count(&count, 1, Instant::now()).await;
    // Warm-up of both paths, then the measured runs, baseline first.
    measure(envoy.port, "/edge/in", 2_000, "warm-edge", &count).await;
    measure(envoy.port, "/hub/in", 2_000, "warm-hub", &count).await;
    let edge = measure(envoy.port, "/edge/in", n, "edge", &count).await;
    let hub = measure(envoy.port, "/hub/in", n, "hub", &count).await;
    let rss = peak_rss_mib(cp.pid());
    let stored = cp.json("GET", "/v1/inbound_events?limit=1", None, 200);
    assert!(stored["data"].as_array().is_some_and(|d| !d.is_empty()));
    for (name, r) in [("edge (baseline)", &edge), ("hub", &hub)] {
        println!(
            "{name}: {:.0} accepted/s, p50 {:.1} ms, p99 {:.1} ms, delivered end to end {:.0}/s",
            r.accepted_per_sec, r.p50_ms, r.p99_ms, r.end_to_end_per_sec
        );
    }
    println!(
        "hub / edge: {:.2}; control plane peak RSS {rss:.1} MiB",
        hub.accepted_per_sec / edge.accepted_per_sec
    );
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let section = format!(
        "<!-- bench-ingest:start -->\n## Inbound hub throughput (`make bench-ingest`)\n\n\
         {n} webhooks of about 300 bytes, each signed (Standard Webhooks) with its own id, posted through Envoy 1.40 with the\n\
         filter by {CLIENTS} concurrent keep-alive clients. **hub**: the filter verifies, the control plane (release, SQLite)\n\
         stores each webhook durably (group commit) before the 200, checks it for duplicates, computes its event type (jq) and\n\
         routes it to one endpoint on a counting receiver. **edge**, side by side on the same Envoy: verified and passed\n\
         straight to the receiver, nothing stored. Latency is what the provider sees. Measured {date} on {} cores ({}), load\n\
         generator, Envoy, control plane and receiver on the same machine.\n\n\
         | path | accepted/s | p50 | p99 | delivered end to end/s |\n|---|---|---|---|---|\n\
         | edge (baseline) | {:.0} | {:.1} ms | {:.1} ms | {:.0} |\n\
         | hub | {:.0} | {:.1} ms | {:.1} ms | {:.0} |\n\n\
         hub / edge: {:.2}. Control plane peak RSS: {rss:.1} MiB. Target: ≥ 10,000 accepted/s and p99 ≤ 20 ms.\n\
         <!-- bench-ingest:end -->",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        edge.accepted_per_sec, edge.p50_ms, edge.p99_ms, edge.end_to_end_per_sec,
        hub.accepted_per_sec, hub.p50_ms, hub.p99_ms, hub.end_to_end_per_sec,
        hub.accepted_per_sec / edge.accepted_per_sec,
    );
    write_benchmark_section("bench-ingest", &section);
}
