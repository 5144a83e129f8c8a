//! The inbound hub end to end: webhooks signed by the vendors' own SDKs pass a real Envoy with
//! the filter, are stored by `hookmesh serve`, transformed and delivered to two receivers.

use hookmesh_e2e::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Headers from a vendor SDK (tests/sdk): `node sign.mjs` for Stripe and GitHub, `python3
/// sign.py` for Standard Webhooks and Slack.
fn sdk_sign(vendor: &str, secret: &str, body: &[u8], msg_id: &str) -> Vec<(String, String)> {
    let file = std::env::temp_dir().join(format!("hookmesh-sdk-{}", free_port()));
    std::fs::write(&file, body).unwrap();
    let sdk = root().join("tests/sdk");
    let mut cmd = if vendor == "stripe" || vendor == "github" {
        let mut c = Command::new("node");
        c.arg(sdk.join("sign.mjs"));
        c
    } else {
        let mut c = Command::new("python3");
        c.arg(sdk.join("sign.py"));
        c
    };
    let out = cmd
        .args([vendor, secret])
        .arg(&file)
        .arg(msg_id)
        .output()
        .expect("run the vendor SDK (make test-deps installs them)");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{vendor} SDK: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    headers.into_iter().collect()
}

fn post(port: u16, path: &str, headers: &[(String, String)], body: &[u8]) -> Response {
    let mut all = headers.to_vec();
    all.push(("content-type".into(), "application/json".into()));
    send_raw(
        port,
        None,
        &http1_request("POST", path, "hooks.test", &all, body),
    )
    .unwrap()
}

/// Path, headers, body.
type Signed<'a> = (&'a str, Vec<(String, String)>, &'a [u8]);

const STRIPE_SECRET: &str = "whsec_e2e_stripe_secret";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A control plane that may deliver to loopback (and takes `extra` arguments), a tenant, and a
/// way to add endpoints to it.
struct Hub {
    cp: ControlPlane,
    tenant: String,
}

impl Hub {
    fn start(extra: &[&str]) -> Hub {
        Hub::start_on(IngestAt::Port(free_port()), extra)
    }

    fn start_on(ingest: IngestAt, extra: &[&str]) -> Hub {
        let mut extra_args = vec![
            "--allow-destination-cidrs".to_owned(),
            "127.0.0.0/8".to_owned(),
        ];
        extra_args.extend(extra.iter().map(|a| (*a).to_owned()));
        let cp = ControlPlane::start_with(ControlPlaneOptions {
            extra_args,
            ingest,
            ..ControlPlaneOptions::default()
        });
        let tenant = cp.tenant("acme");
        Hub { cp, tenant }
    }

    fn endpoint(&self, rx: &Receiver) -> String {
        self.cp.json(
            "POST",
            "/v1/endpoints",
            Some(&json!({"tenant_id": self.tenant, "url": rx.url("/events")})),
            201,
        )["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[test]
fn vendor_signed_webhooks_pass_the_edge_are_stored_and_reach_two_receivers_once() {
    let (a, b, app) = (Receiver::start(), Receiver::start(), Receiver::start());
    let hub = Hub::start(&[]);
    let (cp, tenant) = (&hub.cp, &hub.tenant);
    let to = json!([hub.endpoint(&a), hub.endpoint(&b)]);
    let sources = [
        ("stripe", "stripe", STRIPE_SECRET, ".type"),
        (
            "github",
            "github",
            GITHUB_SECRET,
            "\"github.\" + $meta.headers[\"x-github-event\"]",
        ),
        ("slack", "slack", SLACK_SECRET, "\"slack.\" + .event.type"),
        ("std", "standard_webhooks", STD_SECRET, ".type"),
    ];
    for (name, scheme, secret, event_type) in sources {
        cp.json(
            "POST",
            "/v1/sources",
            Some(&json!({
                "tenant_id": tenant,
                "spec": {"name": name, "match": {"path_prefix": format!("/{name}")}, "mode": "hub",
                         "verify": {"scheme": scheme, "secrets": [secret]}},
                "ingest": {
                    "transform": {"event_type": event_type, "jq": "{source: $meta.source, payload: .}"},
                    "routes": [{"name": "both", "to": to}],
                },
            })),
            201,
        );
    }
    let envoy = Envoy::sidecar_with_ingest("hub-e2e", cp.xds_port, app.port, &cp.options.ingest);

    let stripe_body = br#"{"id": "evt_e2e_1", "type": "invoice.paid", "data": {"object": {"amount_paid": 1200}}}"#;
    let github_body = br#"{"action": "opened", "number": 7}"#;
    let slack_body = br#"{"event_id": "Ev1", "event": {"type": "app_mention", "text": "hi"}}"#;
    let std_body = br#"{"type": "user.created", "data": {"id": 1}}"#;
    let mut github = sdk_sign("github", GITHUB_SECRET, github_body, "");
    github.push(("x-github-event".into(), "pull_request".into()));
    github.push((
        "x-github-delivery".into(),
        "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
    ));
    let requests: Vec<Signed> = vec![
        (
            "/stripe/hook",
            sdk_sign("stripe", STRIPE_SECRET, stripe_body, ""),
            stripe_body,
        ),
        ("/github/hook", github, github_body),
        (
            "/slack/events",
            sdk_sign("slack", SLACK_SECRET, slack_body, ""),
            slack_body,
        ),
        (
            "/std/in",
            sdk_sign("standard_webhooks", STD_SECRET, std_body, "msg_e2e_1"),
            std_body,
        ),
    ];
    let (path, headers, body) = &requests[0];
    let j = post_until_accepted(&envoy, path, headers, body);
    assert_eq!(j["status"], "accepted", "{j}");
    for (path, headers, body) in &requests[1..] {
        let r = post(envoy.port, path, headers, body);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let got = a.wait_for(4);
    b.wait_for(4);
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let t = r.header_values("webhook-id").len();
            assert_eq!(t, 1, "delivered signed");
            (
                v["source"].as_str().unwrap().to_owned(),
                v["payload"].to_string(),
            )
        })
        .collect();
    seen.sort();
    let sources_seen: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sources_seen, ["github", "slack", "std", "stripe"]);
    let types: Vec<String> = cp.json("GET", "/v1/events", None, 200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    for t in [
        "invoice.paid",
        "github.pull_request",
        "slack.app_mention",
        "user.created",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }

    // Tampered: refused at the edge, never stored.
    let (path, headers, _) = &requests[0];
    let tampered = br#"{"id": "evt_e2e_1", "type": "invoice.paid", "data": {"object": {"amount_paid": 99999}}}"#;
    assert_eq!(post(envoy.port, path, headers, tampered).status, 401);
    // Retries by the providers (new signature, same delivery id): acknowledged once more, not
    // delivered again.
    let again = sdk_sign("stripe", STRIPE_SECRET, stripe_body, "");
    let r = post(envoy.port, "/stripe/hook", &again, stripe_body);
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["status"],
        "duplicate"
    );
    let again = sdk_sign("standard_webhooks", STD_SECRET, std_body, "msg_e2e_1");
    let r = post(envoy.port, "/std/in", &again, std_body);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["status"],
        "duplicate"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.received().len(), 4);
    assert_eq!(b.received().len(), 4);
    let stored = cp.json("GET", "/v1/inbound_events", None, 200);
    let stored = stored["data"].as_array().unwrap();
    assert_eq!(
        stored.len(),
        4,
        "the tampered request never reached the control plane"
    );
    let stripe = stored
        .iter()
        .find(|e| e["source_name"] == "stripe")
        .unwrap();
    assert_eq!(stripe["duplicates"], 1);
    assert_eq!(stripe["dedup_key"], "evt_e2e_1");
    assert!(
        app.received().is_empty(),
        "hub traffic never reaches the app"
    );

    assert_bypass_refused(
        cp,
        "stripe",
        br#"{"id": "evt_forged", "type": "invoice.paid"}"#,
        4,
    );
}

/// Posts until the answer is 200 (the filter configuration arrives over ADS; until then Envoy
/// answers 503) and returns the ingest's JSON answer.
fn post_until_accepted(
    envoy: &Envoy,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Value {
    let start = Instant::now();
    loop {
        let r = post(envoy.port, path, headers, body);
        if r.status == 200 {
            return serde_json::from_slice(&r.body).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never accepted: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Straight to the ingest, bypassing Envoy: refused even with the filter's headers (not its
/// token), and nothing more is stored than the `stored` webhooks already there.
fn assert_bypass_refused(cp: &ControlPlane, source: &str, body: &[u8], stored: usize) {
    let direct = cp
        .options
        .ingest
        .send(&http1_request(
            "POST",
            &format!("/{source}/hook"),
            "hooks.test",
            &[
                ("x-hookmesh-source".into(), source.into()),
                ("x-hookmesh-mode".into(), "hub".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body,
        ))
        .unwrap();
    assert_eq!(direct.status, 403, "{}", direct.text());
    assert_eq!(
        cp.json("GET", "/v1/inbound_events", None, 200)["data"]
            .as_array()
            .unwrap()
            .len(),
        stored
    );
}

#[test]
fn schema_policies_and_failover_hold_through_envoy() {
    let (primary, backup, app) = (Receiver::start(), Receiver::start(), Receiver::start());
    primary.set_status(503);
    let hub = Hub::start(&[
        "--breaker-consecutive-failures",
        "2",
        "--breaker-cooldown-secs",
        "1",
    ]);
    let (cp, tenant) = (&hub.cp, &hub.tenant);
    let (p, f) = (hub.endpoint(&primary), hub.endpoint(&backup));
    cp.json(
        "POST",
        "/v1/event_types",
        Some(&json!({"tenant_id": tenant, "name": "order.created",
                     "schema": {"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "integer"}}}})),
        201,
    );
    for (name, policy) in [("strict", "reject"), ("lenient", "quarantine")] {
        cp.json(
            "POST",
            "/v1/sources",
            Some(&json!({
                "tenant_id": tenant,
                "spec": {"name": name, "match": {"path_prefix": format!("/{name}")}, "mode": "hub",
                         "verify": {"scheme": "github", "secrets": [GITHUB_SECRET]}},
                "ingest": {
                    "validate": {"event_type": "order.created", "on_invalid": policy},
                    "routes": [{"name": "orders", "to": [p], "failover": f}],
                },
            })),
            201,
        );
    }
    let envoy = Envoy::sidecar_with_ingest("hub-e2e-2", cp.xds_port, app.port, &cp.options.ingest);
    let send = |path: &str, body: &[u8]| {
        let headers = sdk_sign("github", GITHUB_SECRET, body, "");
        let r = post(envoy.port, path, &headers, body);
        (
            r.status,
            serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
        )
    };
    let start = Instant::now();
    while send("/strict/o", br#"{"order_id": 1}"#).0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the hub sources never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Invalid payloads: the provider sees the schema error, or the webhook waits in quarantine.
    let (status, problem) = send("/strict/o", br#"{"order_id": "one"}"#);
    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("/order_id"),
        "{problem}"
    );
    let (status, held) = send("/lenient/o", br#"{"order_id": "one"}"#);
    assert_eq!(
        (status, held["status"].as_str()),
        (200, Some("quarantined"))
    );
    let quarantine = cp.json("GET", "/v1/quarantine", None, 200);
    assert_eq!(quarantine["data"][0]["id"], held["id"]);

    // The primary fails (503): its circuit opens after two attempts and webhooks go to the
    // failover; once it answers again and the cooldown has passed, they go back to it.
    let mut n = 2;
    let mut routed_to = || {
        let (status, r) = send("/strict/o", format!("{{\"order_id\": {n}}}").as_bytes());
        assert_eq!(status, 200);
        n += 1;
        let id = r["id"].as_str().unwrap().to_owned();
        cp.json("GET", &format!("/v1/inbound_events/{id}"), None, 200)["routing"][0]["destinations"]
            [0]["endpoint_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let start = Instant::now();
    while routed_to() != f {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never failed over"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    backup.wait_for(1);
    primary.set_status(200);
    let start = Instant::now();
    while routed_to() != p {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never handed back to the primary"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = get(cp.port, "/metrics").unwrap().text();
    assert!(
        metrics.contains(
            r#"hookmesh_inbound_webhooks_total{source="lenient",outcome="quarantined"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"hookmesh_inbound_webhooks_total{source="strict",outcome="rejected"} 1"#));
}

#[test]
fn an_ingest_on_a_unix_socket_takes_envoys_webhooks_and_refuses_requests_without_the_token() {
    let (receiver, app) = (Receiver::start(), Receiver::start());
    let hub = Hub::start_on(IngestAt::fresh_socket(), &[]);
    let (cp, tenant) = (&hub.cp, &hub.tenant);
    let to = hub.endpoint(&receiver);
    cp.json(
        "POST",
        "/v1/sources",
        Some(&json!({
            "tenant_id": tenant,
            "spec": {"name": "gh", "match": {"path_prefix": "/gh"}, "mode": "hub",
                     "verify": {"scheme": "github", "secrets": [GITHUB_SECRET]}},
            "ingest": {"routes": [{"name": "all", "to": [to]}]},
        })),
        201,
    );
    let envoy = Envoy::sidecar_with_ingest("hub-unix", cp.xds_port, app.port, &cp.options.ingest);
    let body = br#"{"action": "opened", "number": 8}"#;
    let headers = sdk_sign("github", GITHUB_SECRET, body, "");
    let accepted = post_until_accepted(&envoy, "/gh/hook", &headers, body);
    assert_eq!(accepted["status"], "accepted");
    receiver.wait_for(1);
    let delivered: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!(delivered, json!({"action": "opened", "number": 8}));

    // The socket admits its owner and group only; and even through it, no token, no entry.
    let IngestAt::Socket(path) = &cp.options.ingest else {
        panic!("this hub listens on a Unix socket")
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    assert_bypass_refused(cp, "gh", br#"{"action": "forged"}"#, 1);
}
