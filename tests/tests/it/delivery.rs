//! Outbound deliveries of the `hookmesh serve` process, checked by independent tools.

use hookmesh_e2e::*;
use serde_json::json;
use std::time::Duration;

fn started() -> (ControlPlane, Receiver, String) {
    let receiver = Receiver::start();
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        extra_args: vec!["--allow-destination-cidrs".into(), "127.0.0.0/8".into()],
        ..ControlPlaneOptions::default()
    });
    let tenant = cp.tenant("acme");
    (cp, receiver, tenant)
}

/// The signature verifies with the reference Standard Webhooks library (PyPI `standardwebhooks`).
#[test]
fn deliveries_verify_with_the_standard_webhooks_reference_library() {
    let (cp, receiver, tenant) = started();
    let ep = cp.json(
        "POST",
        "/v1/endpoints",
        Some(&json!({"tenant_id": tenant, "url": receiver.url("/hook")})),
        201,
    );
    let secret = cp.json(
        "GET",
        &format!("/v1/endpoints/{}/secret", ep["id"].as_str().unwrap()),
        None,
        200,
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    cp.json("POST", "/v1/events", Some(&json!({"tenant_id": tenant, "event_type": "invoice.paid", "payload": {"id": "in_1", "amount": 1200, "note": "ünïcode"}})), 202);
    let got = receiver.wait_for(1).remove(0);
    let headers: serde_json::Map<String, serde_json::Value> = got
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let script = "import json, sys\nfrom standardwebhooks.webhooks import Webhook\nsecret, headers, body = sys.argv[1], json.loads(sys.argv[2]), open(sys.argv[3], 'rb').read()\nWebhook(secret).verify(body, headers)\nprint('verified')";
    let body_file = std::env::temp_dir().join(format!("hookmesh-swh-{}", free_port()));
    std::fs::write(&body_file, &got.body).unwrap();
    let run = |secret: &str| {
        std::process::Command::new("python3")
            .args([
                "-c",
                script,
                secret,
                &serde_json::Value::Object(headers.clone()).to_string(),
            ])
            .arg(&body_file)
            .output()
            .expect("python3")
    };
    let out = run(&secret);
    assert!(
        out.status.success(),
        "standardwebhooks refused the signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "verified");
    // And refuses it with another secret, so the check can fail.
    assert!(!run("whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCE=")
        .status
        .success());
}

#[test]
fn deliver_at_schedules_the_first_attempt() {
    let (cp, receiver, tenant) = started();
    cp.json(
        "POST",
        "/v1/endpoints",
        Some(&json!({"tenant_id": tenant, "url": receiver.url("/later")})),
        201,
    );
    // Millisecond precision: a whole-second deliver_at would leave anywhere from 1 to 2 s.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at_ms = now_ms + 2000;
    let stamp = format!("@{}.{:03}", at_ms / 1000, at_ms % 1000);
    let at_text = std::process::Command::new("date")
        .args(["-u", "-d", &stamp, "+%Y-%m-%dT%H:%M:%S.%3NZ"])
        .output()
        .unwrap();
    let at_text = String::from_utf8_lossy(&at_text.stdout).trim().to_owned();
    cp.json("POST", "/v1/events", Some(&json!({"tenant_id": tenant, "event_type": "reminder.due", "payload": {}, "deliver_at": at_text})), 202);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        receiver.received().is_empty(),
        "delivered before deliver_at"
    );
    receiver.wait_for(1);
    let delivered_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(delivered_ms >= at_ms, "delivered early");
}

/// The first attempt of the one delivery of `event_id`: (error class, error message).
fn first_attempt(cp: &ControlPlane, event_id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = cp.json(
            "GET",
            &format!("/v1/deliveries?event_id={event_id}"),
            None,
            200,
        );
        if let Some(d) = list["data"].as_array().and_then(|d| d.first()) {
            let id = d["id"].as_str().unwrap();
            let attempts = cp.json("GET", &format!("/v1/deliveries/{id}/attempts"), None, 200);
            if let Some(a) = attempts.as_array().and_then(|a| a.first()) {
                return a.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt for {event_id}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// HTTPS endpoints: HTTP/2 when the receiver offers it by ALPN; a private CA is trusted only
/// when `--delivery-ca-file` names it.
#[test]
fn https_endpoints_speak_http2_and_trust_only_the_configured_cas() {
    let pki = test_pki();
    let receiver = Receiver::start_tls(&pki.cert, &pki.key);
    let url = format!("https://localhost:{}/tls", receiver.port);
    let publish = |cp: &ControlPlane| {
        let tenant = cp.tenant("acme");
        cp.json(
            "POST",
            "/v1/endpoints",
            Some(&json!({"tenant_id": tenant, "url": url})),
            201,
        );
        cp.json("POST", "/v1/events", Some(&json!({"tenant_id": tenant, "event_type": "invoice.paid", "payload": {"id": "in_1"}})), 202)["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let loopback = vec![
        "--allow-destination-cidrs".to_owned(),
        "127.0.0.0/8".to_owned(),
    ];

    // Only the Mozilla roots: the test CA's certificate is refused before anything is sent.
    let untrusting = ControlPlane::start_with(ControlPlaneOptions {
        extra_args: loopback.clone(),
        ..ControlPlaneOptions::default()
    });
    let attempt = first_attempt(&untrusting, &publish(&untrusting));
    assert_eq!(attempt["error_class"], "connect", "{attempt}");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap_or("")
            .contains("certificate"),
        "{attempt}"
    );
    assert!(receiver.received().is_empty());
    drop(untrusting);

    let ca = pki.ca.display().to_string();
    let trusting = ControlPlane::start_with(ControlPlaneOptions {
        extra_args: [loopback, vec!["--delivery-ca-file".to_owned(), ca]].concat(),
        ..ControlPlaneOptions::default()
    });
    let event = publish(&trusting);
    let got = receiver.wait_for(1).remove(0);
    assert_eq!(got.version, "HTTP/2.0");
    assert_eq!(got.path, "/tls");
    assert_eq!(got.header_values("webhook-id").len(), 1, "{got:?}");
    assert!(
        String::from_utf8_lossy(&got.body).contains("in_1"),
        "{got:?}"
    );
    let attempt = first_attempt(&trusting, &event);
    assert_eq!(attempt["status_code"], 200, "{attempt}");
}

/// A CA file that cannot be used stops the start with a message naming the flag.
#[test]
fn an_unusable_delivery_ca_file_is_a_clear_start_up_error() {
    let options = ControlPlaneOptions::default();
    let garbage = options.data_dir.join("not-a-ca.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let missing = options.data_dir.join("missing.pem");
    for (file, expect) in [
        (&garbage, "no PEM certificate in the file"),
        (&missing, "No such file"),
    ] {
        let text = ControlPlane::start_failing(ControlPlaneOptions {
            extra_args: vec!["--delivery-ca-file".to_owned(), file.display().to_string()],
            ..options.clone()
        });
        assert!(
            text.contains(&format!("--delivery-ca-file {}", file.display()))
                && text.contains(expect),
            "{text}"
        );
    }
}
