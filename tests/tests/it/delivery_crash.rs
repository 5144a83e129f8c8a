//! At-least-once: kill -9 the control plane repeatedly while events are published; every event
//! it acknowledged (202) is delivered.

use hookmesh_e2e::*;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn every_acknowledged_event_arrives_despite_repeated_kill_9() {
    let receiver = Receiver::start();
    let options = ControlPlaneOptions {
        log: "info".into(),
        extra_args: vec!["--allow-destination-cidrs".into(), "127.0.0.0/8".into()],
        ..ControlPlaneOptions::default()
    };
    let mut cp = ControlPlane::start_with(options.clone());
    let tenant = cp.tenant("crash");
    cp.json(
        "POST",
        "/v1/endpoints",
        Some(&json!({"tenant_id": tenant, "url": receiver.url("/in")})),
        201,
    );

    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (acked, stop, port, key, tenant) = (
            acked.clone(),
            stop.clone(),
            options.port,
            options.admin_key.clone(),
            tenant.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut refused = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body =
                    json!({"tenant_id": tenant, "event_type": "crash.test", "payload": {"n": n}})
                        .to_string();
                let headers = vec![
                    ("authorization".to_owned(), format!("Bearer {key}")),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ];
                match send_raw(
                    port,
                    None,
                    &http1_request("POST", "/v1/events", "localhost", &headers, body.as_bytes()),
                ) {
                    Ok(r) if r.status == 202 => {
                        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .insert(v["id"].as_str().unwrap().to_owned());
                    }
                    // Down, or cut mid-request: not acknowledged, so no promise was made.
                    _ => refused += 1,
                }
            }
            refused
        })
    };
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        cp.kill();
        cp = ControlPlane::start_with(options.clone());
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let refused = publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too few events were published to prove anything: {}",
        acked.len()
    );

    let start = Instant::now();
    loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .filter_map(|r| r.header_values("webhook-id").first().map(|s| s.to_string()))
            .collect();
        let missing: Vec<&String> = acked.difference(&delivered).collect();
        if missing.is_empty() {
            let total = receiver.received().len();
            eprintln!("{} events acknowledged across 5 kills ({refused} publishes refused while down); {total} deliveries received ({} redelivered)", acked.len(), total - delivered.len());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} acknowledged events never arrived, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(cp);
}
