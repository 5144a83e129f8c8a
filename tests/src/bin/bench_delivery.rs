//! `make bench-delivery`: end-to-end outbound throughput of `hookmesh serve` (release): N events
//! of about 300 bytes published over keep-alive HTTP by concurrent clients, delivered to 1 or 5
//! endpoints on a counting receiver on loopback; from the first publish to the last delivery.
//! SQLite and PostgreSQL. Peak RSS of the server. Results in docs/benchmarks.md.

use hookmesh_e2e::*;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const CLIENTS: usize = 64;

/// The floor: the same receiver driven by a bare pooled reqwest client (256 requests in flight,
/// the engine's default) with nothing stored, signed or recorded. Requests/s.
async fn client_floor(requests: usize) -> f64 {
    let (port, count) = counting_receiver().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/floor");
    let body = bytes::Bytes::from(format!(
        "{{\"id\":1,\"customer\":\"cus_0123456789\",\"amount\":1200,\"currency\":\"eur\",\"note\":\"{}\"}}",
        "x".repeat(200)
    ));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..256 {
        let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests as u64 {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("floor request");
                assert!(resp.status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await.expect("floor task");
    }
    assert_eq!(count.load(Ordering::Relaxed), requests as u64);
    requests as f64 / start.elapsed().as_secs_f64()
}

struct Result {
    backend: &'static str,
    endpoints: usize,
    concurrency: usize,
    events: usize,
    secs: f64,
    publish_secs: f64,
    /// Publishing the same number again while a delivery replay resends everything.
    beside_replay_secs: f64,
    resent_per_sec: f64,
    /// The replay's own pace once the publishing has stopped.
    replay_alone_per_sec: f64,
    /// The control plane's CPU µs per delivery resent alone.
    replay_alone_cpu_us: f64,
    rss_mib: f64,
}

async fn run(
    backend: &'static str,
    database_url: Option<String>,
    endpoints: usize,
    concurrency: usize,
    events: usize,
) -> Result {
    let (port, count) = counting_receiver().await;
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        log: "warn".into(),
        database_url,
        extra_args: vec![
            "--allow-destination-cidrs".into(),
            "127.0.0.0/8".into(),
            "--delivery-concurrency".into(),
            concurrency.to_string(),
        ],
        ..ControlPlaneOptions::default()
    });
    let tenant = cp.json("POST", "/v1/tenants", Some(&json!({"name": "bench"})), 201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..endpoints {
        cp.json("POST", "/v1/endpoints", Some(&json!({"tenant_id": tenant, "url": format!("http://127.0.0.1:{port}/e{i}"), "event_types": ["bench.*"]})), 201);
    }
    let start = Instant::now();
    let publish_secs = publish_all(&cp, &tenant, "bench.created", events).await;
    let target = (events * endpoints) as u64;
    let secs = wait_counted(&count, target, start).await;
    // The high-water mark of the publishing and delivering alone, before the replay below.
    let rss_mib = peak_rss_mib(cp.pid());
    // What a resend of everything costs live publishing: the same publishing again, to the
    // same number of endpoints on a second receiver, while `POST /v1/deliveries/replay` sends
    // every delivery so far again to the first.
    let (fresh_port, _) = counting_receiver().await;
    for i in 0..endpoints {
        cp.json("POST", "/v1/endpoints", Some(&json!({"tenant_id": tenant, "url": format!("http://127.0.0.1:{fresh_port}/f{i}"), "event_types": ["fresh.*"]})), 201);
    }
    let before = count.load(Ordering::Relaxed);
    let start = Instant::now();
    let job = cp.json(
        "POST",
        "/v1/deliveries/replay",
        Some(&json!({"tenant_id": tenant, "status": "succeeded"})),
        202,
    );
    let beside_replay_secs = publish_all(&cp, &tenant, "fresh.created", events).await;
    let resent_per_sec =
        (count.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64();
    // Then the rest of the resend alone: the delivery engine's claim path, from the store.
    let (resent, alone, cpu) = (
        count.load(Ordering::Relaxed),
        Instant::now(),
        cpu_secs(cp.pid()),
    );
    let job = format!("/v1/jobs/{}", job["id"].as_str().expect("a job id"));
    let done = cp.job_ended(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let requeued = done["requeued"].as_u64().expect("a count");
    let alone_secs = wait_counted(&count, before + requeued, alone).await;
    let resent_alone = (before + requeued).saturating_sub(resent).max(1) as f64;
    let replay_alone_per_sec = resent_alone / alone_secs;
    let replay_alone_cpu_us = (cpu_secs(cp.pid()) - cpu) * 1e6 / resent_alone;
    Result {
        backend,
        endpoints,
        concurrency,
        events,
        secs,
        publish_secs,
        beside_replay_secs,
        resent_per_sec,
        replay_alone_per_sec,
        replay_alone_cpu_us,
        rss_mib,
    }
}

/// Publishes `events` events of `event_type` with [`CLIENTS`] keep-alive clients; seconds.
async fn publish_all(cp: &ControlPlane, tenant: &str, event_type: &str, events: usize) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{}/v1/events", cp.port);
    let auth = format!("Bearer {}", cp.admin_key);
    let pad = "x".repeat(200);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, auth, next, tenant, pad, event_type) = (
            client.clone(),
            url.clone(),
            auth.clone(),
            next.clone(),
            tenant.to_owned(),
            pad.clone(),
            event_type.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events as u64 {
                    return;
                }
                let body = json!({"tenant_id": tenant, "event_type": event_type, "payload": {"id": i, "customer": "cus_0123456789", "amount": 1200, "currency": "eur", "note": pad}}).to_string();
                let resp = client.post(&url).header("authorization", &auth).header("content-type", "application/json").body(body).send().await.expect("publish");
                assert_eq!(resp.status().as_u16(), 202, "publish refused");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    require_bench_binary();
    let events: usize = bench_setting("BENCH_EVENTS").unwrap_or(20_000);
    let mut results = Vec::new();
    let floor = client_floor(100_000).await;
    println!("floor: a bare reqwest client, 256 in flight: {floor:.0} requests/s");
    let pg = PgCluster::start();
    let backends: Vec<&'static str> = match std::env::var("BENCH_BACKENDS").as_deref() {
        Ok("sqlite") => vec!["SQLite"],
        Ok("postgres") => vec!["PostgreSQL"],
        _ => vec!["SQLite", "PostgreSQL"],
    };
    for backend in backends {
        let fanouts: Vec<usize> = match std::env::var("BENCH_ENDPOINTS") {
            Ok(v) => v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
            Err(_) => vec![1, 5],
        };
        // `--delivery-concurrency`: the bound of the adaptive limit (default 256).
        let concurrencies: Vec<usize> = match std::env::var("BENCH_CONCURRENCY") {
            Ok(v) => v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
            Err(_) => vec![256],
        };
        for (&concurrency, &endpoints) in concurrencies
            .iter()
            .flat_map(|c| fanouts.iter().map(move |e| (c, e)))
        {
            // Every case starts from an empty database.
            let url = (backend == "PostgreSQL").then(|| {
                let db = format!("bench_{endpoints}_{}", free_port());
                let ok = std::process::Command::new("psql")
                    .arg(&pg.url)
                    .args(["-q", "-c", &format!("CREATE DATABASE {db}")])
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "psql could not create the benchmark database");
                format!(
                    "{}/{db}",
                    pg.url
                        .rsplit_once('/')
                        .map_or(pg.url.as_str(), |(base, _)| base)
                )
            });
            let r = run(backend, url, endpoints, concurrency, events).await;
            println!(
                "{backend}, {endpoints} endpoint(s), at most {concurrency} in flight: {:.0} events/s, {:.0} deliveries/s end to end ({:.2} s; publishing alone {:.0} events/s; publishing beside a delivery replay {:.0} events/s, {:.0} deliveries/s resent meanwhile; the replay alone afterwards {:.0} deliveries/s at {:.0} µs of control plane CPU each); peak RSS {:.1} MiB",
                r.events as f64 / r.secs,
                (r.events * r.endpoints) as f64 / r.secs,
                r.secs,
                r.events as f64 / r.publish_secs,
                r.events as f64 / r.beside_replay_secs,
                r.resent_per_sec,
                r.replay_alone_per_sec,
                r.replay_alone_cpu_us,
                r.rss_mib
            );
            results.push(r);
        }
    }
    let cpu = cpu_model();
    let mut rows = String::new();
    for r in &results {
        rows.push_str(&format!(
            "| {} | {} | {}{} | {:.0} | {:.0} | {:.0} | {:.0} ({:.0}) | {:.0} ({:.0} µs) | {:.1} MiB |\n",
            r.backend,
            r.endpoints,
            r.concurrency,
            if r.concurrency == 256 {
                " (default)"
            } else {
                ""
            },
            r.events as f64 / r.secs,
            (r.events * r.endpoints) as f64 / r.secs,
            r.events as f64 / r.publish_secs,
            r.events as f64 / r.beside_replay_secs,
            r.resent_per_sec,
            r.replay_alone_per_sec,
            r.replay_alone_cpu_us,
            r.rss_mib
        ));
    }
    let date = today();
    let section = format!(
        "<!-- bench-delivery:start -->\n## Outbound delivery throughput (`make bench-delivery`)\n\n\
         `hookmesh serve` (release) on {{SQLite, PostgreSQL 15}}; {events} events of about 300 bytes published with `POST /v1/events` by\n\
         {CLIENTS} concurrent keep-alive clients; each delivered (signed, over pooled HTTP/1.1) to 1 or 5 endpoints on a counting\n\
         receiver on loopback. Time from the first publish to the last delivery. Measured {date} on {} cores ({cpu}), load\n\
         generator, receiver and server on the same machine.\n\n\
         | store | endpoints | `--delivery-concurrency` (the adaptive limit's bound) | events/s end to end | deliveries/s | publish only, events/s | publish beside a delivery replay, events/s (deliveries resent/s) | the replay alone afterwards, deliveries/s (control plane CPU per delivery) | peak RSS |\n|---|---|---|---|---|---|---|---|---|\n{rows}\n\
         Beside a delivery replay: the same publishing again, to as many endpoints on a second receiver, while\n\
         `POST /v1/deliveries/replay` sends again every delivery of the first run (the job gives way to live traffic); then\n\
         the rest of that resend once the publishing has stopped: deliveries claimed from the store, not handed over fresh.\n\n\
         Floor, side by side: a bare pooled reqwest client with 256 requests in flight and nothing stored drives the same\n\
         receiver at {floor:.0} requests/s.\n\n\
         Targets (10× Svix measured here): ≥ 11,600 events/s to one endpoint, ≥ 29,500 deliveries/s fanned out ×5 on SQLite, RSS ≤ 40 MiB.\n\
         <!-- bench-delivery:end -->",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    write_benchmark_section("bench-delivery", &section);
}
