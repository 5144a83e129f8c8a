//! Config push: sources changed through the REST API are enforced by real Envoy sidecars,
//! which get their filter configuration from the control plane over ADS.

use hookmesh_e2e::*;
use hookmesh_filter::{sign, SchemeName, SignInput};
use serde_json::json;
use std::time::{Duration, Instant};

const BODY: &[u8] = br#"{"action":"opened"}"#;

/// Polls until `f` holds (10 s at most); returns how long it took.
#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within 10 s: {what}");
}

fn github_post(envoy: &Envoy, path: &str, secret: Option<&str>, from: Option<&str>) -> u16 {
    let headers = match secret {
        Some(s) => sign(
            SchemeName::Github,
            s,
            None,
            &SignInput {
                body: BODY,
                id: "",
                timestamp: 0,
                url: None,
                method: "POST",
            },
        )
        .unwrap(),
        None => Vec::new(),
    };
    send_raw(
        envoy.port,
        from,
        &http1_request("POST", path, "hooks.test", &headers, BODY),
    )
    .map_or(0, |r| r.status)
}

fn github_source(name: &str, prefix: &str, secret: &str) -> serde_json::Value {
    json!({"name": name, "match": {"path_prefix": prefix}, "verify": {"scheme": "github", "secrets": [secret]}})
}

struct Setup {
    cp: ControlPlane,
    tenant: String,
}

fn setup() -> Setup {
    let cp = ControlPlane::start();
    let tenant = cp.tenant("acme");
    Setup { cp, tenant }
}

impl Setup {
    fn create(&self, spec: serde_json::Value) -> String {
        self.cp.json(
            "POST",
            "/v1/sources",
            Some(&json!({"tenant_id": self.tenant, "spec": spec})),
            201,
        )["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn replace(&self, id: &str, spec: serde_json::Value) {
        self.cp.json(
            "PUT",
            &format!("/v1/sources/{id}"),
            Some(&json!({"spec": spec})),
            200,
        );
    }

    fn envoys(&self) -> Vec<serde_json::Value> {
        self.cp.json("GET", "/v1/envoys", None, 200)["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn version(&self) -> String {
        self.cp.json("GET", "/v1/config/version", None, 200)["version"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[test]
fn api_changes_reach_envoy_create_rotate_restrict_delete() {
    let s = setup();
    let app = Receiver::start();
    let envoy = Envoy::sidecar("sidecar-1", s.cp.xds_port, app.port);
    // No sources yet: everything is refused by the filter itself (fail closed, 404).
    assert_eq!(github_post(&envoy, "/gh", Some("s1"), None), 404);

    let id = s.create(github_source("gh", "/gh", "gh-secret-1"));
    eventually("the new source is enforced", || {
        github_post(&envoy, "/gh", Some("gh-secret-1"), None) == 200
    });
    assert_eq!(github_post(&envoy, "/gh", None, None), 401);
    assert_eq!(github_post(&envoy, "/gh", Some("wrong"), None), 401);

    // Rotate: during the overlap both secrets pass, then only the new one.
    s.replace(&id, github_source("gh", "/gh", "gh-secret-1"));
    let mut both = github_source("gh", "/gh", "gh-secret-2");
    both["verify"]["secrets"] = json!(["gh-secret-1", "gh-secret-2"]);
    s.replace(&id, both);
    eventually("the new secret is accepted", || {
        github_post(&envoy, "/gh", Some("gh-secret-2"), None) == 200
    });
    assert_eq!(github_post(&envoy, "/gh", Some("gh-secret-1"), None), 200);
    s.replace(&id, github_source("gh", "/gh", "gh-secret-2"));
    eventually("the old secret is refused", || {
        github_post(&envoy, "/gh", Some("gh-secret-1"), None) == 401
    });

    // Add and remove an allowed network.
    let mut restricted = github_source("gh", "/gh", "gh-secret-2");
    restricted["allowed_cidrs"] = json!(["127.0.0.2/32"]);
    s.replace(&id, restricted);
    eventually("the CIDR is enforced", || {
        github_post(&envoy, "/gh", Some("gh-secret-2"), Some("127.0.0.1")) == 403
    });
    assert_eq!(
        github_post(&envoy, "/gh", Some("gh-secret-2"), Some("127.0.0.2")),
        200
    );
    s.replace(&id, github_source("gh", "/gh", "gh-secret-2"));
    eventually("the CIDR is lifted", || {
        github_post(&envoy, "/gh", Some("gh-secret-2"), Some("127.0.0.1")) == 200
    });

    // A source the filter would refuse is refused by the API and never pushed.
    let before = s.version();
    let bad = s.cp.call("POST", "/v1/sources", Some(&json!({"tenant_id": s.tenant, "spec": {"name": "bad", "allowed_cidrs": ["10.0.0.1/8"]}})));
    assert_eq!(bad.status, 422);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.version(), before);

    // Delete: the path is no longer a source.
    s.cp.json("DELETE", &format!("/v1/sources/{id}"), None, 204);
    eventually("the deleted source is gone", || {
        github_post(&envoy, "/gh", Some("gh-secret-2"), None) == 404
    });

    // The Envoy is listed with the version it acknowledged.
    let version = s.version();
    eventually("the envoy acknowledged the last version", || {
        s.envoys()
            .iter()
            .any(|e| e["node_id"] == "sidecar-1" && e["acked_version"] == version.as_str())
    });
    let e = &s.envoys()[0];
    assert_eq!(
        (
            e["connected"].as_bool(),
            e["cluster"].as_str(),
            e["last_nack"].is_null()
        ),
        (Some(true), Some("hookmesh-e2e"), true)
    );
    let got = app.received();
    assert!(
        !got.is_empty()
            && got
                .iter()
                .all(|r| r.header_values("x-hookmesh-source") == ["gh"])
    );
}

#[test]
fn hub_sources_are_routed_to_the_ingest_and_edge_sources_to_the_app() {
    let s = setup();
    let (app, ingest) = (Receiver::start(), Receiver::start());
    let envoy = Envoy::sidecar_with_ingest(
        "sidecar-hub",
        s.cp.xds_port,
        app.port,
        &IngestAt::Port(ingest.port),
    );
    s.create(github_source("edge-src", "/edge", "e"));
    let mut hub = github_source("hub-src", "/hub", "h");
    hub["mode"] = json!("hub");
    s.create(hub);
    eventually("both sources are enforced", || {
        github_post(&envoy, "/edge", Some("e"), None) == 200
            && github_post(&envoy, "/hub", Some("h"), None) == 200
    });
    // A client cannot route itself to the ingest: its x-hookmesh-* headers are removed first.
    let forged = vec![("x-hookmesh-mode".to_owned(), "hub".to_owned())];
    let mut signed = sign(
        SchemeName::Github,
        "e",
        None,
        &SignInput {
            body: BODY,
            id: "",
            timestamp: 0,
            url: None,
            method: "POST",
        },
    )
    .unwrap();
    signed.extend(forged);
    assert_eq!(
        send_raw(
            envoy.port,
            None,
            &http1_request("POST", "/edge", "hooks.test", &signed, BODY)
        )
        .unwrap()
        .status,
        200
    );
    assert_eq!(github_post(&envoy, "/hub", Some("wrong"), None), 401);
    let to_ingest = ingest.received();
    let to_app = app.received();
    assert!(
        !to_ingest.is_empty()
            && to_ingest
                .iter()
                .all(|r| r.header_values("x-hookmesh-source") == ["hub-src"]
                    && r.header_values("x-hookmesh-mode") == ["hub"]
                    && r.header_values("x-hookmesh-ingest-token")
                        .iter()
                        .all(|t| t.len() == 64)
                    && r.header_values("x-hookmesh-ingest-token").len() == 1)
    );
    assert!(
        !to_app.is_empty()
            && to_app
                .iter()
                .all(|r| r.header_values("x-hookmesh-source") == ["edge-src"]
                    && r.header_values("x-hookmesh-mode").is_empty())
    );
}

#[test]
fn an_envoy_scoped_to_a_tenant_gets_only_its_sources() {
    let s = setup();
    let other = s.cp.tenant("other");
    s.create(github_source("mine", "/mine", "m"));
    s.cp.json(
        "POST",
        "/v1/sources",
        Some(&json!({"tenant_id": other, "spec": github_source("theirs", "/theirs", "t")})),
        201,
    );
    let app = Receiver::start();
    let scoped = Envoy::sidecar_for_tenant("acme-only", s.cp.xds_port, app.port, &s.tenant);
    let shared = Envoy::sidecar("all-tenants", s.cp.xds_port, app.port);
    eventually("both enforce acme's source", || {
        github_post(&scoped, "/mine", Some("m"), None) == 200
            && github_post(&shared, "/mine", Some("m"), None) == 200
    });
    eventually("the shared one enforces the other tenant's too", || {
        github_post(&shared, "/theirs", Some("t"), None) == 200
    });
    assert_eq!(
        github_post(&scoped, "/theirs", Some("t"), None),
        404,
        "the scoped Envoy knows nothing of other tenants"
    );
    let envoys = s.envoys();
    let scoped_status = envoys.iter().find(|e| e["node_id"] == "acme-only").unwrap();
    assert_eq!(scoped_status["tenant"], s.tenant.as_str());
    let shared_status = envoys
        .iter()
        .find(|e| e["node_id"] == "all-tenants")
        .unwrap();
    assert!(shared_status["tenant"].is_null());
    assert_ne!(
        scoped_status["acked_version"], shared_status["acked_version"],
        "a scoped configuration has its own version"
    );
}

#[test]
fn two_envoys_converge_on_every_change() {
    let s = setup();
    let app = Receiver::start();
    let (a, b) = (
        Envoy::sidecar("edge-a", s.cp.xds_port, app.port),
        Envoy::sidecar("edge-b", s.cp.xds_port, app.port),
    );
    let id = s.create(github_source("gh", "/gh", "one"));
    for envoy in [&a, &b] {
        eventually("both enforce the source", || {
            github_post(envoy, "/gh", Some("one"), None) == 200
        });
    }
    s.replace(&id, github_source("gh", "/gh", "two"));
    for envoy in [&a, &b] {
        eventually("both rotate", || {
            github_post(envoy, "/gh", Some("one"), None) == 401
        });
        assert_eq!(github_post(envoy, "/gh", Some("two"), None), 200);
    }
    let version = s.version();
    eventually("both acknowledged it", || {
        let envoys = s.envoys();
        envoys.len() == 2
            && envoys
                .iter()
                .all(|e| e["acked_version"] == version.as_str())
    });
}

#[test]
fn a_refused_configuration_is_shown_and_the_previous_one_keeps_serving() {
    // The control plane points the Envoys at a module file we control.
    let dir = std::env::temp_dir().join(format!("hookmesh-nack-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("hookmesh_filter.wasm");
    std::fs::copy(
        root().join("target/wasm32-wasip1/wasm/hookmesh_filter.wasm"),
        &module,
    )
    .unwrap();
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        wasm_module: module.clone(),
        ..ControlPlaneOptions::default()
    });
    let s = Setup {
        tenant: cp.tenant("acme"),
        cp,
    };
    let app = Receiver::start();
    let envoy = Envoy::sidecar("sidecar-nack", s.cp.xds_port, app.port);
    s.create(github_source("gh", "/gh", "good"));
    eventually("the first source is enforced", || {
        github_post(&envoy, "/gh", Some("good"), None) == 200
    });

    // A broken module rollout: Envoy cannot load what the next configuration names.
    std::fs::write(&module, b"this is not a wasm module").unwrap();
    s.create(github_source("other", "/other", "x"));
    eventually("the envoy's refusal is recorded", || {
        s.envoys()
            .iter()
            .any(|e| e["node_id"] == "sidecar-nack" && !e["last_nack"].is_null())
    });
    let nack = s.envoys()[0]["last_nack"].clone();
    assert_eq!(nack["version"], s.version().as_str());
    assert!(!nack["error"].as_str().unwrap().is_empty());
    // The previous configuration still serves: the old source verifies, the new one is unknown.
    assert_eq!(github_post(&envoy, "/gh", Some("good"), None), 200);
    assert_eq!(github_post(&envoy, "/gh", Some("bad"), None), 401);
    assert_eq!(github_post(&envoy, "/other", Some("x"), None), 404);
}

#[test]
fn envoys_keep_enforcing_while_the_control_plane_is_down_and_resync_after() {
    let s = setup();
    let app = Receiver::start();
    let envoy = Envoy::sidecar("sidecar-restart", s.cp.xds_port, app.port);
    let id = s.create(github_source("gh", "/gh", "before"));
    eventually("enforced", || {
        github_post(&envoy, "/gh", Some("before"), None) == 200
    });

    let Setup { mut cp, tenant } = s;
    let options = cp.options.clone();
    cp.kill();
    // Down: the last configuration keeps being enforced.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(github_post(&envoy, "/gh", Some("before"), None), 200);
    assert_eq!(github_post(&envoy, "/gh", Some("forged"), None), 401);

    // Back, on the same database and port: the Envoy reconnects and follows new changes.
    let s = Setup {
        cp: ControlPlane::start_with(options),
        tenant,
    };
    eventually("the envoy reconnected", || {
        s.envoys()
            .iter()
            .any(|e| e["node_id"] == "sidecar-restart" && e["connected"] == true)
    });
    s.replace(&id, github_source("gh", "/gh", "after"));
    eventually("the change after the restart is enforced", || {
        github_post(&envoy, "/gh", Some("after"), None) == 200
    });
    assert_eq!(github_post(&envoy, "/gh", Some("before"), None), 401);
}
