//! A bulk quarantine release cut short by kill -9: the restarted control plane resumes the job
//! where its last recorded page ended, and every held webhook is released exactly once.

use hookmesh_e2e::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Webhooks held: enough pages (100 each) that the job is still running when it is killed.
const HELD: usize = 2_000;

/// Posts `{"n": n}` through Envoy to the hub source.
fn post(envoy_port: u16, n: usize) -> std::io::Result<Response> {
    let body = json!({ "n": n }).to_string();
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    send_raw(
        envoy_port,
        None,
        &http1_request(
            "POST",
            "/orders/hook",
            "hooks.test",
            &headers,
            body.as_bytes(),
        ),
    )
}

/// Posts every `n` in `range`; each must be quarantined.
fn quarantine(envoy_port: u16, range: std::ops::Range<usize>) {
    for n in range {
        let r = post(envoy_port, n).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"], "quarantined", "{v}");
    }
}

fn job(cp: &ControlPlane, id: &str) -> Value {
    cp.json("GET", &format!("/v1/jobs/{id}"), None, 200)
}

#[test]
fn a_bulk_release_cut_by_kill_9_is_resumed_after_restart_and_releases_each_webhook_once() {
    let (rx, app) = (Receiver::start(), Receiver::start());
    let options = ControlPlaneOptions {
        log: "info".into(),
        extra_args: vec!["--allow-destination-cidrs".into(), "127.0.0.0/8".into()],
        ..ControlPlaneOptions::default()
    };
    let mut cp = ControlPlane::start_with(options.clone());
    let tenant = cp.tenant("acme");
    let endpoint = cp.create(
        "/v1/endpoints",
        &json!({"tenant_id": tenant, "url": rx.url("/orders")}),
    );
    cp.json(
        "POST",
        "/v1/event_types",
        Some(&json!({"tenant_id": tenant, "name": "order.created",
                     "schema": {"type": "object", "required": ["order_id"]}})),
        201,
    );
    let source = cp.create(
        "/v1/sources",
        &json!({
            "tenant_id": tenant,
            "spec": {"name": "orders", "match": {"path_prefix": "/orders"}, "mode": "hub"},
            "ingest": {
                "validate": {"event_type": "order.created", "on_invalid": "quarantine"},
                "routes": [{"name": "all", "to": [endpoint]}],
            },
        }),
    );
    let envoy = Envoy::sidecar_with_ingest("job-crash", cp.xds_port, app.port, &cp.options.ingest);
    // Until the filter configuration arrives, Envoy answers 503.
    let start = Instant::now();
    while !post(envoy.port, 0).is_ok_and(|r| r.status == 200) {
        assert!(start.elapsed() < Duration::from_secs(20), "never accepted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // None of the payloads has an `order_id`: all are held.
    std::thread::scope(|s| {
        for part in 0..4 {
            let port = envoy.port;
            s.spawn(move || {
                quarantine(
                    port,
                    1 + part * (HELD - 1) / 4..1 + (part + 1) * (HELD - 1) / 4,
                )
            });
        }
    });

    let started = cp.json(
        "POST",
        "/v1/quarantine/release",
        Some(&json!({"source_id": source})),
        202,
    );
    let id = started["id"].as_str().unwrap().to_owned();
    // Killed once it has recorded its first page, long before its last.
    let start = Instant::now();
    let at_kill = loop {
        let j = job(&cp, &id);
        if j["requeued"].as_u64().unwrap_or(0) >= 100 {
            break j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no page recorded: {j}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    cp.kill();
    assert_eq!(at_kill["status"], "running", "{at_kill}");
    assert!(
        at_kill["requeued"].as_u64().unwrap() < HELD as u64,
        "{at_kill}"
    );

    // The next start on the same database resumes it.
    let cp = ControlPlane::start_with(options);
    let start = Instant::now();
    let done = loop {
        let j = job(&cp, &id);
        if j["status"] != "running" {
            break j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never finished: {j}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    let log = cp.json(
        "GET",
        &format!("/v1/audit_log?resource_type=job&resource_id={id}"),
        None,
        200,
    );
    let actions: Vec<&Value> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["action"])
        .collect();
    assert_eq!(actions, ["create", "resume", "finish"], "{log}");
    let left = cp.json("GET", "/v1/quarantine?limit=1", None, 200);
    assert_eq!(left["data"].as_array().unwrap().len(), 0, "{left}");

    // Every webhook became one outbound event, delivered (at least once) to the receiver: a
    // webhook released twice would arrive under two event ids.
    let start = Instant::now();
    let events_of = |received: &[Received]| {
        let mut by_n: HashMap<u64, HashSet<String>> = HashMap::new();
        for r in received {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let n = body["n"].as_u64().expect("the webhook's payload");
            let event = r.header_values("webhook-id")[0].to_owned();
            by_n.entry(n).or_default().insert(event);
        }
        by_n
    };
    loop {
        let by_n = events_of(&rx.received());
        if by_n.len() == HELD {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {HELD} webhooks delivered",
            by_n.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Late deliveries of a second release would land now.
    std::thread::sleep(Duration::from_millis(500));
    let by_n = events_of(&rx.received());
    let twice: Vec<_> = by_n.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "released more than once: {twice:?}");
    let mut ns: Vec<u64> = by_n.keys().copied().collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..HELD as u64).collect::<Vec<_>>());
    eprintln!(
        "job {id}: {} released before kill -9, {} after the resume; {} deliveries received",
        at_kill["requeued"],
        done["requeued"],
        rx.received().len()
    );
}
