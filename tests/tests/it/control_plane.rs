//! The control plane as users run it: the `hookmesh serve` process.

use hookmesh_e2e::ControlPlane;
use serde_json::json;

const SOURCE_SECRET: &str = "whsec_VGhpc1NlY3JldE11c3ROZXZlckxlYWtFMkU=";
const ENDPOINT_SECRET: &str = "whsec_QW5kVGhpc09uZU5laXRoZXJFdmVyRXZlcg==";

#[test]
fn secrets_reach_neither_the_database_nor_the_logs_and_sigterm_drains() {
    let mut cp = ControlPlane::start();
    let t = cp.call("POST", "/v1/tenants", Some(&json!({"name": "acme"})));
    assert_eq!(t.status, 201, "{}", t.text());
    let tenant: serde_json::Value = serde_json::from_slice(&t.body).unwrap();
    let tenant = tenant["id"].as_str().unwrap();
    let s = cp.call("POST", "/v1/sources", Some(&json!({"tenant_id": tenant, "spec": {"name": "svix", "verify": {"scheme": "svix", "secrets": [SOURCE_SECRET]}}})));
    assert_eq!(s.status, 201, "{}", s.text());
    assert!(!s.text().contains(SOURCE_SECRET));
    let e = cp.call("POST", "/v1/endpoints", Some(&json!({"tenant_id": tenant, "url": "https://example.com/hook", "secret": ENDPOINT_SECRET})));
    assert_eq!(e.status, 201, "{}", e.text());
    // A rejected request that carries a secret must not be echoed into the logs either.
    let bad = cp.call("POST", "/v1/sources", Some(&json!({"tenant_id": tenant, "spec": {"name": "x", "verify": {"scheme": "svix", "secrets": [SOURCE_SECRET], "bogus": 1}}})));
    assert_eq!(bad.status, 422);
    assert!(!bad.text().contains(SOURCE_SECRET), "{}", bad.text());

    assert!(cp.terminate(), "SIGTERM should stop the server cleanly");
    let log = std::fs::read_to_string(&cp.log).unwrap();
    assert!(
        log.contains("shutting down: draining in-flight requests"),
        "{log}"
    );
    for needle in [SOURCE_SECRET, ENDPOINT_SECRET, cp.admin_key.as_str()] {
        assert!(!log.contains(needle), "a secret is in the log");
        for entry in std::fs::read_dir(&cp.data_dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("server-"))
            {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "a secret is in {}",
                path.display()
            );
        }
    }
    // The generated master key is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cp.data_dir.join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn events_past_the_retention_are_deleted_by_the_running_server() {
    use hookmesh_e2e::ControlPlaneOptions;
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        extra_args: vec!["--retention".into(), "2s".into()],
        ..ControlPlaneOptions::default()
    });
    let t = cp.call("POST", "/v1/tenants", Some(&json!({"name": "acme"})));
    let tenant: serde_json::Value = serde_json::from_slice(&t.body).unwrap();
    let e = cp.call(
        "POST",
        "/v1/events",
        Some(&json!({"tenant_id": tenant["id"], "event_type": "order.created", "payload": {}})),
    );
    assert_eq!(e.status, 202, "{}", e.text());
    let id: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    let id = id["id"].as_str().unwrap();
    assert!(cp.call("GET", "/v1/events", None).text().contains(id));
    // Two seconds old, then gone at the next pass (one a second at this retention).
    let start = std::time::Instant::now();
    while cp.call("GET", "/v1/events", None).text().contains(id) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "the event outlived its retention"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(start.elapsed() >= std::time::Duration::from_millis(1500));
    let metrics = cp.call("GET", "/metrics", None).text();
    assert!(
        metrics.contains(r#"hookmesh_retention_deleted_total{kind="event"} 1"#),
        "{metrics}"
    );
}

#[test]
fn a_malformed_retention_is_a_clear_start_up_error() {
    use hookmesh_e2e::ControlPlaneOptions;
    let text = ControlPlane::start_failing(ControlPlaneOptions {
        extra_args: vec!["--retention".into(), "30".into()],
        ..ControlPlaneOptions::default()
    });
    assert!(
        text.contains("--retention")
            && text.contains("expected a number and a unit (d, h, m or s)"),
        "{text}"
    );
}
