//! The Kubernetes controller end to end: kube-runtime's controllers against a fake API server
//! (tower-test's mock service answering as the API server does) and the real control plane.

use crate::both;
use crate::fake_kube::{condition, FakeKube};
use crate::support::{TestApp, ADMIN};
use base64::Engine;
use hookmesh::k8s::client::ControlPlaneClient;
use hookmesh::k8s::controller::{run, Context};
use serde_json::{json, Value};
use std::sync::Arc;

both!(kubernetes_resources_reach_the_control_plane_and_leave_it);

const STRIPE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ROTATED_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn sample(name: &str) -> Value {
    let path = format!("{}/../k8s/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn secret(namespace: &str, name: &str, key: &str, value: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace},
           "data": {key: base64::engine::general_purpose::STANDARD.encode(value)}})
}

/// Starts the controllers against `fake` and the control plane of `app`; they stop when the
/// returned sender is dropped.
fn start(fake: &FakeKube, app: &TestApp) -> tokio::sync::oneshot::Sender<()> {
    let cp = ControlPlaneClient::in_process(app.router.clone(), ADMIN.to_owned());
    start_with(fake, cp)
}

fn start_with(fake: &FakeKube, cp: ControlPlaneClient) -> tokio::sync::oneshot::Sender<()> {
    let ctx = Arc::new(Context::new(fake.client.clone(), cp, Some("test".into())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(ctx, None, async move {
        let _ = stopped.await;
    }));
    stop
}

/// A fake cluster holding the stripe sample and its Secret.
fn cluster_with_stripe() -> FakeKube {
    let fake = FakeKube::start();
    let secret = secret(
        "payments",
        "stripe-webhook",
        "signing-secret",
        STRIPE_SECRET,
    );
    fake.apply("secrets", secret);
    fake.apply("webhooksources", sample("stripe-source.yaml"));
    fake
}

/// Polls `check` (20 s at most) until it returns `Some`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn is_true(obj: Option<&Value>, kind: &str) -> bool {
    condition(obj, kind).is_some_and(|c| c["status"] == "True")
}

async fn kubernetes_resources_reach_the_control_plane_and_leave_it(app: TestApp) {
    let fake = cluster_with_stripe();
    let _stop = start(&fake, &app);

    // Applied: finalizer on, status with the control plane's id, Ready (no Envoy connected yet).
    let obj = fake
        .wait_for("webhooksources", "payments", "stripe", "Ready", |o| {
            is_true(o, "Ready")
        })
        .await
        .unwrap();
    assert_eq!(
        obj["metadata"]["finalizers"],
        json!(["hookmesh.dev/cleanup"])
    );
    assert!(is_true(Some(&obj), "Synced"));
    assert_eq!(
        condition(Some(&obj), "Degraded").unwrap()["status"],
        "False"
    );
    assert_eq!(obj["status"]["observedGeneration"], 1);
    let id = obj["status"]["id"].as_str().unwrap().to_owned();
    let stored = app
        .get(&format!("/v1/sources/{id}"), ADMIN)
        .await
        .expect(200);
    assert_eq!(
        stored.json["managed_by"]["object"],
        "WebhookSource payments/stripe"
    );
    assert_eq!(
        stored.json["spec"]["match"]["path_prefix"],
        "/webhooks/stripe"
    );
    // The Secret's value, not the reference, is what the filter gets (shown masked).
    let masked = stored.json["spec"]["verify"]["secrets"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        masked.ends_with(&STRIPE_SECRET[STRIPE_SECRET.len() - 4..]),
        "{masked}"
    );
    assert!(fake
        .events()
        .iter()
        .any(|e| e["reason"] == "Applied" && e["regarding"]["name"] == "stripe"));

    // REST cannot edit what Kubernetes owns.
    let mut body = json!({"spec": stored.json["spec"]});
    body["spec"]["match"]["path_prefix"] = "/elsewhere".into();
    let r = app
        .put(&format!("/v1/sources/{id}"), ADMIN, body)
        .await
        .expect(409);
    assert_eq!(r.json["type"], "https://hookmesh.dev/problems/managed");

    // A new value in the Secret reaches the control plane (the Secret is watched).
    fake.apply(
        "secrets",
        secret(
            "payments",
            "stripe-webhook",
            "signing-secret",
            ROTATED_SECRET,
        ),
    );
    let path = format!("/v1/sources/{id}");
    eventually("the Secret's new value in the control plane", || async {
        let s = app.get(&path, ADMIN).await.expect(200);
        let masked = s.json["spec"]["verify"]["secrets"][0]
            .as_str()
            .unwrap()
            .to_owned();
        masked
            .ends_with(&ROTATED_SECRET[ROTATED_SECRET.len() - 4..])
            .then_some(())
    })
    .await;

    // A spec change moves the generation and the control plane's copy.
    let mut changed = sample("stripe-source.yaml");
    changed["spec"]["source"]["match"]["path_prefix"] = "/hooks/stripe".into();
    fake.apply("webhooksources", changed);
    fake.wait_for(
        "webhooksources",
        "payments",
        "stripe",
        "generation 2 applied",
        |o| o.is_some_and(|o| o["status"]["observedGeneration"] == 2) && is_true(o, "Ready"),
    )
    .await;
    let stored = app
        .get(&format!("/v1/sources/{id}"), ADMIN)
        .await
        .expect(200);
    assert_eq!(stored.json["spec"]["match"]["path_prefix"], "/hooks/stripe");

    // Deleting the resource deletes the source, then lets Kubernetes remove the object.
    fake.delete("webhooksources", "payments", "stripe");
    fake.wait_for("webhooksources", "payments", "stripe", "removal", |o| {
        o.is_none()
    })
    .await;
    app.get(&format!("/v1/sources/{id}"), ADMIN)
        .await
        .expect(404);
}

/// What cannot be applied says why in the status and in a Warning Event, and heals when fixed:
/// a missing Secret, an endpoint the hub source routes to that is not there yet, a spec the
/// control plane refuses, and a conflict from the API server on the finalizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_refused_and_conflicting_resources_are_reported_and_retried() {
    let app = TestApp::sqlite().await;
    let fake = FakeKube::start();
    // The hub source routes to `ci-runner`, whose signing Secret is missing at first.
    fake.apply(
        "secrets",
        secret(
            "ci",
            "github-webhook",
            "secret",
            "It's a Secret to Everybody",
        ),
    );
    fake.apply("webhooksources", sample("github-source.yaml"));
    fake.apply("webhookendpoints", sample("https-endpoint.yaml"));
    fake.conflict_once("webhooksources", "ci", "github");
    let _stop = start(&fake, &app);

    let ep = fake
        .wait_for(
            "webhookendpoints",
            "ci",
            "ci-runner",
            "SecretNotFound",
            |o| condition(o, "Synced").is_some_and(|c| c["reason"] == "SecretNotFound"),
        )
        .await
        .unwrap();
    assert!(is_true(Some(&ep), "Degraded"));
    assert!(condition(Some(&ep), "Synced").unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("ci-runner-signing"));
    let src = fake
        .wait_for("webhooksources", "ci", "github", "EndpointNotReady", |o| {
            condition(o, "Synced").is_some_and(|c| c["reason"] == "EndpointNotReady")
        })
        .await
        .unwrap();
    // The conflict on the first finalizer patch was retried.
    assert_eq!(
        src["metadata"]["finalizers"],
        json!(["hookmesh.dev/cleanup"])
    );
    let warned = |reason: &str| {
        fake.events()
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == reason)
    };
    assert!(warned("SecretNotFound") && warned("EndpointNotReady"));
    let sources = app.get("/v1/sources", ADMIN).await.expect(200);
    assert_eq!(
        sources.json["data"],
        json!([]),
        "nothing half-resolved is stored"
    );

    // The Secret appears: the endpoint is created with it, then the source with its id.
    fake.apply(
        "secrets",
        secret(
            "ci",
            "ci-runner-signing",
            "secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
    );
    let ep = fake
        .wait_for("webhookendpoints", "ci", "ci-runner", "Ready", |o| {
            is_true(o, "Ready")
        })
        .await
        .unwrap();
    let ep_id = ep["status"]["id"].as_str().unwrap().to_owned();
    let secret_now = app
        .get(&format!("/v1/endpoints/{ep_id}/secret"), ADMIN)
        .await
        .expect(200);
    assert_eq!(
        secret_now.json["key"],
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );
    let src = fake
        .wait_for("webhooksources", "ci", "github", "Ready", |o| {
            is_true(o, "Ready")
        })
        .await
        .unwrap();
    let stored = app
        .get(
            &format!("/v1/sources/{}", src["status"]["id"].as_str().unwrap()),
            ADMIN,
        )
        .await
        .expect(200);
    assert_eq!(stored.json["ingest"]["routes"][0]["to"], json!([ep_id]));
    // The tenant is the namespace's.
    let tenants = app.get("/v1/tenants", ADMIN).await.expect(200);
    assert!(tenants.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "ci"));

    // A new signing Secret is rotated in; the previous one stays valid for the overlap.
    fake.apply(
        "secrets",
        secret(
            "ci",
            "ci-runner-signing",
            "secret",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ),
    );
    let path = format!("/v1/endpoints/{ep_id}/secret");
    let rotated = eventually("the new signing secret rotated in", || async {
        let s = app.get(&path, ADMIN).await.expect(200);
        (s.json["key"] == "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").then_some(s.json)
    })
    .await;
    assert_eq!(
        rotated["previous"][0]["key"],
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );

    // A spec the schema allows but the control plane refuses: Invalid, with the field.
    let mut refused = sample("https-endpoint.yaml");
    refused["spec"]["headers"] = json!({"host": "evil.example"});
    fake.apply("webhookendpoints", refused);
    let ep = fake
        .wait_for("webhookendpoints", "ci", "ci-runner", "Invalid", |o| {
            condition(o, "Synced").is_some_and(|c| c["reason"] == "Invalid")
        })
        .await
        .unwrap();
    let message = condition(Some(&ep), "Synced").unwrap()["message"].clone();
    assert!(
        message.as_str().unwrap().contains("headers.host"),
        "{message}"
    );
    assert!(warned("Invalid"));
    // The control plane keeps serving the last good version.
    let still = app
        .get(&format!("/v1/endpoints/{ep_id}"), ADMIN)
        .await
        .expect(200);
    assert_eq!(still.json["headers"], json!({"x-team": "platform"}));
}

fn stripe_post(envoy_port: u16, secret: &str) -> u16 {
    use hookmesh_filter::{sign, SchemeName, SignInput};
    let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let headers = sign(
        SchemeName::Stripe,
        secret,
        None,
        &SignInput {
            body,
            id: "",
            timestamp: now,
            url: None,
            method: "POST",
        },
    )
    .unwrap();
    hookmesh_e2e::send_raw(
        envoy_port,
        None,
        &hookmesh_e2e::http1_request("POST", "/webhooks/stripe", "hooks.test", &headers, body),
    )
    .map_or(0, |r| r.status)
}

/// A `WebhookSource` applied in Kubernetes ends as configuration a real Envoy enforces: the
/// controller writes it to a control-plane process over HTTP, the control plane pushes it over
/// xDS, and the resource turns Ready once that Envoy acknowledged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_source_is_enforced_by_a_real_envoy() {
    let (cp, app, envoy) = tokio::task::spawn_blocking(|| {
        let cp = hookmesh_e2e::ControlPlane::start();
        let app = hookmesh_e2e::Receiver::start();
        let envoy = hookmesh_e2e::Envoy::sidecar("k8s-sidecar", cp.xds_port, app.port);
        (cp, app, envoy)
    })
    .await
    .unwrap();
    let fake = cluster_with_stripe();
    let base = format!("http://127.0.0.1:{}", cp.port).parse().unwrap();
    let client = ControlPlaneClient::remote(base, cp.admin_key.clone()).unwrap();
    let _stop = start_with(&fake, client);

    let obj = fake
        .wait_for(
            "webhooksources",
            "payments",
            "stripe",
            "Ready: propagated to the Envoy",
            |o| {
                condition(o, "Ready")
                    .is_some_and(|c| c["status"] == "True" && c["reason"] == "Propagated")
            },
        )
        .await
        .unwrap();
    let version = obj["status"]["configVersion"].as_str().unwrap().to_owned();
    let envoys = cp.json("GET", "/v1/envoys", None, 200);
    assert_eq!(envoys["data"][0]["acked_version"], version.as_str());
    let port = envoy.port;
    let (good, forged) = tokio::task::spawn_blocking(move || {
        (
            stripe_post(port, STRIPE_SECRET),
            stripe_post(port, "whsec_not_the_secret"),
        )
    })
    .await
    .unwrap();
    assert_eq!((good, forged), (200, 401));
    assert_eq!(
        app.received().len(),
        1,
        "only the genuine webhook reached the app"
    );

    // Deleted in Kubernetes: the source leaves the Envoy too (unmatched requests get 404).
    fake.delete("webhooksources", "payments", "stripe");
    fake.wait_for("webhooksources", "payments", "stripe", "removal", |o| {
        o.is_none()
    })
    .await;
    eventually("404 from Envoy after the deletion", || async move {
        let status = tokio::task::spawn_blocking(move || stripe_post(port, STRIPE_SECRET))
            .await
            .unwrap();
        (status == 404).then_some(())
    })
    .await;
}
