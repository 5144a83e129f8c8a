//! `make bench-push`: with two Envoy sidecars connected, N successive source updates through the
//! REST API (each rotates the source's secret); for each, the time from the API's response
//! until both Envoys enforce the new secret, found by probing them with requests signed with
//! it. Writes p50/p99/max to docs/benchmarks.md.

use hookmesh_e2e::*;
use hookmesh_filter::{sign, SchemeName, SignInput};
use serde_json::json;
use std::time::{Duration, Instant};

const BODY: &[u8] = br#"{"bench":true}"#;

fn probe(envoy: &Envoy, secret: &str) -> bool {
    let headers = sign(
        SchemeName::Github,
        secret,
        None,
        &SignInput {
            body: BODY,
            id: "",
            timestamp: 0,
            url: None,
            method: "POST",
        },
    )
    .unwrap_or_default();
    send_raw(
        envoy.port,
        None,
        &http1_request("POST", "/bench", "bench", &headers, BODY),
    )
    .is_ok_and(|r| r.status == 200)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    require_bench_binary();
    let updates: usize = bench_setting("BENCH_PUSH_UPDATES").unwrap_or(200);
    let cp = ControlPlane::start();
    let app = Receiver::start();
    let envoys = [
        Envoy::sidecar("bench-a", cp.xds_port, app.port),
        Envoy::sidecar("bench-b", cp.xds_port, app.port),
    ];
    let tenant = cp.json("POST", "/v1/tenants", Some(&json!({"name": "bench"})), 201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let spec = |secret: &str| json!({"name": "bench", "match": {"path_prefix": "/bench"}, "verify": {"scheme": "github", "secrets": [secret]}});
    let id = cp.json(
        "POST",
        "/v1/sources",
        Some(&json!({"tenant_id": tenant, "spec": spec("s0")})),
        201,
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = Instant::now();
    while !envoys.iter().all(|e| probe(e, "s0")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the first source never reached the Envoys"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut push = Vec::with_capacity(updates);
    let mut api = Vec::with_capacity(updates);
    for i in 1..=updates {
        let secret = format!("s{i}");
        let sent = Instant::now();
        cp.json(
            "PUT",
            &format!("/v1/sources/{id}"),
            Some(&json!({"spec": spec(&secret)})),
            200,
        );
        let answered = Instant::now();
        api.push(answered - sent);
        let mut pending = [true, true];
        while pending.iter().any(|p| *p) {
            for (k, e) in envoys.iter().enumerate() {
                if pending[k] && probe(e, &secret) {
                    pending[k] = false;
                }
            }
            assert!(
                answered.elapsed() < Duration::from_secs(10),
                "update {i} not enforced within 10 s"
            );
        }
        push.push(answered.elapsed());
    }
    push.sort();
    api.sort();
    let (p50, p99, max) = (
        percentile(&push, 0.50),
        percentile(&push, 0.99),
        *push.last().unwrap(),
    );
    let verdict = if p99 <= Duration::from_millis(250) {
        "meets"
    } else {
        "misses"
    };
    println!("{updates} updates: API response p50 {} ms; enforced by both Envoys p50 {} ms, p99 {} ms, max {} ms ({verdict} the 250 ms p99 target)", ms(percentile(&api, 0.5)), ms(p50), ms(p99), ms(max));

    let cpu = cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let section = format!(
        "<!-- bench-push:start -->\n## Config push latency (`make bench-push`)\n\n\
         Two Envoy 1.40 sidecars connected to `hookmesh serve` (release build, SQLite) over ADS; {updates} successive\n\
         `PUT /v1/sources/{{id}}` updates, each rotating the source's secret. Latency is from the API's response until both\n\
         Envoys accept a request signed with the new secret (probed continuously with fresh connections).\n\
         Measured {} on {cores} cores ({cpu}).\n\n\
         | | p50 | p99 | max |\n|---|---|---|---|\n\
         | API response (`PUT`) | {} ms | {} ms | {} ms |\n\
         | **enforced by both Envoys** | **{} ms** | **{} ms** | **{} ms** |\n\n\
         Target: p99 ≤ 250 ms ({verdict}).\n<!-- bench-push:end -->",
        today(), ms(percentile(&api, 0.5)), ms(percentile(&api, 0.99)), ms(*api.last().unwrap()), ms(p50), ms(p99), ms(max)
    );
    write_benchmark_section("bench-push", &section);
}
