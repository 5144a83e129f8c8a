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
