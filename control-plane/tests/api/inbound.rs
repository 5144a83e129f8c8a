//! The inbound hub: webhooks as Envoy forwards them to the ingest, real receivers behind.

use crate::both;
use crate::delivery::{
    delivered_endpoint, endpoint, fast_breaker, job_now, replay_paced, wait_count, wait_job,
    REPLAYED,
};
use crate::support::{TestApp, ADMIN};
use hookmesh_e2e::Receiver;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both!(
    hub_webhooks_are_stored_transformed_routed_and_deduplicated,
    schema_failures_are_rejected_or_quarantined_per_source,
    replay_follows_the_current_rules,
    a_key_seen_after_its_window_starts_a_new_one,
    bulk_replay_and_release_run_as_jobs,
    a_webhook_is_released_once_however_many_ask,
    a_job_whose_runner_stopped_is_resumed_where_it_was,
    a_resumed_replay_does_not_replay_again_what_its_runner_did_after_its_last_record,
    at_start_the_keeper_resumes_what_a_stopped_process_left
);

/// A hub source named `name` in `tenant` with the given ingest settings.
async fn hub_source(app: &TestApp, tenant: &str, name: &str, ingest: Value) -> String {
    app.post(
        "/v1/sources",
        ADMIN,
        json!({
            "tenant_id": tenant,
            "spec": {"name": name, "match": {"path_prefix": format!("/{name}")}, "mode": "hub"},
            "ingest": ingest,
        }),
    )
    .await
    .expect(201)
    .json["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn inbound(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/inbound_events/{id}"), ADMIN)
        .await
        .expect(200)
        .json
}

async fn hub_webhooks_are_stored_transformed_routed_and_deduplicated(app: TestApp) {
    let t = app.tenant("acme").await;
    let (a, b) = (Receiver::start(), Receiver::start());
    let ea = endpoint(&app, &t, json!({"url": a.url("/a")})).await;
    let eb = endpoint(&app, &t, json!({"url": b.url("/b")})).await;
    hub_source(
        &app,
        &t,
        "billing",
        json!({
            "transform": {
                "jq": "{kind: .type, amount: .data.amount, source: $meta.source, via: $meta.query.via}",
                "event_type": "\"billing.\" + .type",
            },
            "routes": [
                {"name": "big", "when": ".data.amount >= 100", "to": [ea.clone()]},
                {"name": "all", "to": [eb.clone()]},
            ],
        }),
    )
    .await;
    let body = br#"{"type": "invoice.paid", "data": {"amount": 250}}"#;
    let r = app
        .ingest(
            "billing",
            &[
                ("webhook-id", "msg_1"),
                ("content-type", "application/json"),
                ("authorization", "Bearer do-not-store-this-token-please"),
            ],
            body,
        )
        .await
        .expect(200);
    assert_eq!(r.json["status"], "accepted");
    let id = r.json["id"].as_str().unwrap().to_owned();
    wait_count(&a, 1).await;
    wait_count(&b, 1).await;
    let expected =
        json!({"kind": "invoice.paid", "amount": 250, "source": "billing", "via": "test"});
    for rx in [&a, &b] {
        let got: Value = serde_json::from_slice(&rx.received()[0].body).unwrap();
        assert_eq!(got, expected);
    }
    let d = inbound(&app, &id).await;
    assert_eq!(d["status"], "routed");
    assert_eq!(d["event_type"], "billing.invoice.paid");
    assert_eq!(d["dedup_key"], "msg_1");
    assert_eq!(
        d["document"],
        json!({"type": "invoice.paid", "data": {"amount": 250}})
    );
    assert_eq!(d["result"], expected);
    assert_eq!(d["request"]["body"], std::str::from_utf8(body).unwrap());
    assert_eq!(d["request"]["query"], "via=test");
    let auth = d["request"]["headers"]["authorization"].as_str().unwrap();
    assert!(!auth.contains("do-not-store"), "{auth}");
    assert!(d["request"]["headers"]
        .get("x-hookmesh-ingest-token")
        .is_none());
    let routes: Vec<&str> = d["routing"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["matched"] == true)
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["big", "all"]);
    assert_eq!(d["deliveries"].as_array().unwrap().len(), 2, "{d}");

    // The provider retries: acknowledged, counted, not routed again.
    let again = app
        .ingest(
            "billing",
            &[
                ("webhook-id", "msg_1"),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
        .expect(200);
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["id"], id.as_str());
    // A small payload only matches the second route.
    app.ingest(
        "billing",
        &[
            ("webhook-id", "msg_2"),
            ("content-type", "application/json"),
        ],
        br#"{"type": "invoice.paid", "data": {"amount": 5}}"#,
    )
    .await
    .expect(200);
    wait_count(&b, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.received().len(),
        1,
        "the duplicate and the small payload never reach A"
    );
    assert_eq!(b.received().len(), 2, "the duplicate never reaches B");
    assert_eq!(inbound(&app, &id).await["duplicates"], 1);
    let list = app.get("/v1/inbound_events", ADMIN).await.expect(200).json;
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_refuses_requests_without_the_filter_token() {
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    hub_source(&app, &t, "gh", json!({})).await;
    for headers in [
        vec![("x-hookmesh-source", "gh")],
        vec![
            ("x-hookmesh-source", "gh"),
            ("x-hookmesh-ingest-token", "guessed"),
        ],
    ] {
        let r = app.ingest_raw(&headers, b"{}").await.expect(403);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.json["detail"]
            .as_str()
            .unwrap()
            .contains("x-hookmesh-ingest-token"));
    }
    app.ingest("nosuch", &[], b"{}").await.expect(404);
    // Bodies above the ingest's limit are refused before they are read whole.
    let huge = vec![b' '; hookmesh::ingest::BODY_LIMIT + 1];
    app.ingest("gh", &[], &huge).await.expect(413);
    let list = app.get("/v1/inbound_events", ADMIN).await.expect(200).json;
    assert_eq!(list["data"], json!([]), "nothing stored");
    // With the token, the same request is accepted.
    app.ingest("gh", &[], b"{}").await.expect(200);
}

async fn schema_failures_are_rejected_or_quarantined_per_source(app: TestApp) {
    let t = app.tenant("acme").await;
    let rx = Receiver::start();
    let e = endpoint(&app, &t, json!({"url": rx.url("/in")})).await;
    app.post(
        "/v1/event_types",
        ADMIN,
        json!({"tenant_id": t, "name": "order.created", "schema": {"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "integer"}}}}),
    )
    .await
    .expect(201);
    let strict = json!({"validate": {"event_type": "order.created"}, "routes": [{"name": "r", "to": [e.clone()]}]});
    let lenient = json!({"validate": {"event_type": "order.created", "on_invalid": "quarantine"}, "routes": [{"name": "r", "to": [e.clone()]}]});
    hub_source(&app, &t, "strict", strict).await;
    hub_source(&app, &t, "lenient", lenient).await;
    let bad = br#"{"order_id": "seven"}"#;
    let json_ct = ("content-type", "application/json");
    let r = app.ingest("strict", &[json_ct], bad).await.expect(400);
    assert!(
        r.json["detail"].as_str().unwrap().contains("/order_id"),
        "{}",
        r.json
    );
    // XML that is not XML follows the same policy.
    app.ingest("strict", &[("content-type", "application/xml")], b"<a>")
        .await
        .expect(400);
    let q = app.ingest("lenient", &[json_ct], bad).await.expect(200);
    assert_eq!(q.json["status"], "quarantined");
    let held = q.json["id"].as_str().unwrap().to_owned();
    let q2 = app
        .ingest("lenient", &[json_ct], br#"{}"#)
        .await
        .expect(200);
    let doomed = q2.json["id"].as_str().unwrap().to_owned();
    app.ingest("lenient", &[json_ct], br#"{"order_id": 7}"#)
        .await
        .expect(200);
    wait_count(&rx, 1).await;
    let list = app.get("/v1/quarantine", ADMIN).await.expect(200).json;
    assert_eq!(ids(&list), [held.as_str(), doomed.as_str()]);
    assert!(list["data"][0]["error"]
        .as_str()
        .unwrap()
        .contains("order.created"));
    // Released: routed as if valid.
    let released = app
        .post(&format!("/v1/quarantine/{held}/release"), ADMIN, json!({}))
        .await
        .expect(202)
        .json;
    assert_eq!(released["status"], "routed");
    wait_count(&rx, 2).await;
    let bodies = json_bodies(&rx);
    assert!(bodies.contains(&json!({"order_id": "seven"})), "{bodies:?}");
    app.delete(&format!("/v1/quarantine/{doomed}"), ADMIN)
        .await
        .expect(204);
    app.get(&format!("/v1/inbound_events/{doomed}"), ADMIN)
        .await
        .expect(404);
    // Only quarantined webhooks are released or deleted there.
    app.delete(&format!("/v1/quarantine/{held}"), ADMIN)
        .await
        .expect(404);
    let list = app.get("/v1/quarantine", ADMIN).await.expect(200).json;
    assert_eq!(list["data"], json!([]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.received().len(), 2);
}

async fn replay_follows_the_current_rules(app: TestApp) {
    let t = app.tenant("acme").await;
    let (a, b) = (Receiver::start(), Receiver::start());
    let ea = endpoint(&app, &t, json!({"url": a.url("/a")})).await;
    let eb = endpoint(&app, &t, json!({"url": b.url("/b")})).await;
    let src = hub_source(
        &app,
        &t,
        "shop",
        json!({"routes": [{"name": "r", "to": [ea]}]}),
    )
    .await;
    let id = app
        .ingest(
            "shop",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"order=42&item=a&item=b",
        )
        .await
        .expect(200)
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_count(&a, 1).await;
    let got: Value = serde_json::from_slice(&a.received()[0].body).unwrap();
    assert_eq!(got, json!({"order": "42", "item": ["a", "b"]}));
    let current = app
        .get(&format!("/v1/sources/{src}"), ADMIN)
        .await
        .expect(200)
        .json;
    let mut spec = current["spec"].clone();
    spec["mode"] = json!("hub");
    app.put(
        &format!("/v1/sources/{src}"),
        ADMIN,
        json!({"spec": spec, "ingest": {"transform": {"jq": "{order: (.order | tonumber)}"}, "routes": [{"name": "r2", "to": [eb]}]}}),
    )
    .await
    .expect(200);
    // The hub's pipelines reload when a source changes.
    let start = Instant::now();
    loop {
        let d = app
            .post(&format!("/v1/inbound_events/{id}/replay"), ADMIN, json!({}))
            .await
            .expect(202)
            .json;
        if d["routing"][0]["route"] == "r2" {
            assert_eq!(d["result"], json!({"order": 42}));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "replay never used the new rules: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_count(&b, 1).await;
    let got: Value = serde_json::from_slice(&b.received()[0].body).unwrap();
    assert_eq!(got, json!({"order": 42}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_settings_are_validated_with_field_paths() {
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    let bad = |ingest: Value, mode: &str| json!({"tenant_id": t, "spec": {"name": "x", "mode": mode}, "ingest": ingest});
    let r = app
        .post("/v1/sources", ADMIN, bad(json!({}), "edge"))
        .await
        .expect(422);
    assert_eq!(r.fields(), ["ingest"]);
    let r = app
        .post(
            "/v1/sources",
            ADMIN,
            bad(
                json!({
                    "transform": {"jq": ".a | {", "event_type": "nosuchfn"},
                    "validate": {"event_type": "missing.type"},
                    "routes": [{"name": "r", "to": ["ep_nope"], "sample_percent": 101, "when": ".a ==", "order_key": ".k"}],
                }),
                "hub",
            ),
        )
        .await
        .expect(422);
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "ingest.routes[0].sample_percent",
            "ingest.routes[0].to[0]",
            "ingest.routes[0].when",
            "ingest.transform.event_type",
            "ingest.transform.jq",
            "ingest.validate.event_type",
        ],
        "{}",
        r.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_takes_over_while_the_primary_circuit_is_open_and_hands_back() {
    let app = TestApp::sqlite_with(fast_breaker(Duration::from_secs(3600), 2)).await;
    let t = app.tenant("acme").await;
    let (primary, backup) = (Receiver::start(), Receiver::start());
    primary.set_status(500);
    let p = endpoint(&app, &t, json!({"url": primary.url("/p")})).await;
    let f = endpoint(&app, &t, json!({"url": backup.url("/f")})).await;
    hub_source(
        &app,
        &t,
        "pay",
        json!({"routes": [{"name": "r", "to": [p.clone()], "failover": f.clone()}]}),
    )
    .await;
    let send = |i: usize| {
        let app = &app;
        async move {
            let r = app
                .ingest(
                    "pay",
                    &[("content-type", "application/json")],
                    json!({"i": i}).to_string().as_bytes(),
                )
                .await
                .expect(200);
            inbound(app, r.json["id"].as_str().unwrap()).await["routing"][0]["destinations"][0]
                .clone()
        }
    };
    // Two failures open the circuit (threshold 2).
    assert_eq!(send(0).await["endpoint_id"], p.as_str());
    assert_eq!(send(1).await["endpoint_id"], p.as_str());
    wait_count(&primary, 2).await;
    let start = Instant::now();
    let switched = loop {
        let d = send(2).await;
        if d["endpoint_id"] == f.as_str() {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never failed over: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(switched["failover_for"], p.as_str());
    wait_count(&backup, 1).await;
    // The primary recovers; after the cooldown a webhook goes to it again, probes it, and the
    // circuit closes.
    primary.set_status(200);
    let start = Instant::now();
    loop {
        let d = send(3).await;
        if d["endpoint_id"] == p.as_str() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never handed back: {d}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    while app.state.delivery.circuit_open(&p, hookmesh::ids::now_ms()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the circuit never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(send(4).await["endpoint_id"], p.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ordering_key_is_delivered_one_at_a_time_in_arrival_order() {
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    let rx = Receiver::start();
    rx.set_delay(Duration::from_millis(100));
    let e = endpoint(&app, &t, json!({"url": rx.url("/o")})).await;
    hub_source(
        &app,
        &t,
        "crm",
        json!({"routes": [
            {"name": "ordered", "when": ".customer == \"c1\"", "order_key": ".customer", "to": [e.clone()]},
            {"name": "sampled-out", "when": ".customer == \"c2\"", "sample_percent": 0, "to": [e.clone()]},
        ]}),
    )
    .await;
    for i in 0..6 {
        app.ingest(
            "crm",
            &[("content-type", "application/json")],
            json!({"customer": "c1", "seq": i}).to_string().as_bytes(),
        )
        .await
        .expect(200);
    }
    let skipped = app
        .ingest(
            "crm",
            &[("content-type", "application/json")],
            br#"{"customer": "c2"}"#,
        )
        .await
        .expect(200);
    wait_count(&rx, 6).await;
    let seqs: Vec<i64> = rx
        .received()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
    assert_eq!(rx.max_in_flight(), 1, "one key: one at a time");
    let d = inbound(&app, skipped.json["id"].as_str().unwrap()).await;
    assert_eq!(d["routing"][1]["sampled_out"], true, "{d}");
    assert_eq!(d["deliveries"], json!([]));
}

async fn a_key_seen_after_its_window_starts_a_new_one(app: TestApp) {
    let t = app.tenant("acme").await;
    let rx = Receiver::start();
    let e = endpoint(&app, &t, json!({"url": rx.url("/w")})).await;
    hub_source(
        &app,
        &t,
        "win",
        json!({"dedup": {"key": {"pointer": "/id"}, "window_secs": 1}, "routes": [{"name": "r", "to": [e]}]}),
    )
    .await;
    let send = || {
        app.ingest(
            "win",
            &[("content-type", "application/json")],
            br#"{"id": "k1"}"#,
        )
    };
    let first = send().await.expect(200).json;
    assert_eq!(first["status"], "accepted");
    let copy = send().await.expect(200).json;
    assert_eq!(
        (copy["status"].as_str(), copy["id"].as_str()),
        (Some("duplicate"), first["id"].as_str())
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = send().await.expect(200).json;
    assert_eq!(later["status"], "accepted", "{later}");
    assert_ne!(later["id"], first["id"]);
    // And the new copy holds the key now.
    assert_eq!(send().await.expect(200).json["id"], later["id"]);
    wait_count(&rx, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.received().len(), 2);
    assert_eq!(
        inbound(&app, first["id"].as_str().unwrap()).await["duplicates"],
        1
    );
    assert_eq!(
        inbound(&app, later["id"].as_str().unwrap()).await["duplicates"],
        1
    );
    // Without a transformation the result is the document, shown but not stored twice.
    let first_id = first["id"].as_str().unwrap();
    assert_eq!(inbound(&app, first_id).await["result"], json!({"id": "k1"}));
    let row = app
        .state
        .store
        .get_inbound(first_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.result, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_header_conditions_shape_and_route() {
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    let (push, other) = (Receiver::start(), Receiver::start());
    let ep = endpoint(&app, &t, json!({"url": push.url("/p")})).await;
    let eo = endpoint(&app, &t, json!({"url": other.url("/o")})).await;
    hub_source(
        &app,
        &t,
        "gh",
        json!({
            "transform": {
                "template": "{\"repo\": {{ payload.repository.name | tojson }}, \"via\": {{ meta.source | tojson }}}",
                "event_type": "\"github.\" + $meta.headers[\"x-github-event\"]",
            },
            "routes": [
                {"name": "pushes", "when": "$meta.headers[\"x-github-event\"] == \"push\"", "to": [ep], "high_priority": true, "stop": true},
                {"name": "rest", "to": [eo]},
            ],
        }),
    )
    .await;
    let body = br#"{"repository": {"name": "hookmesh"}}"#;
    let json_ct = ("content-type", "application/json");
    let r = app
        .ingest("gh", &[json_ct, ("x-github-event", "push")], body)
        .await
        .expect(200);
    app.ingest("gh", &[json_ct, ("x-github-event", "issues")], body)
        .await
        .expect(200);
    wait_count(&push, 1).await;
    wait_count(&other, 1).await;
    let got: Value = serde_json::from_slice(&push.received()[0].body).unwrap();
    assert_eq!(got, json!({"repo": "hookmesh", "via": "gh"}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        (push.received().len(), other.received().len()),
        (1, 1),
        "`stop` ends routing"
    );
    let d = inbound(&app, r.json["id"].as_str().unwrap()).await;
    assert_eq!(d["event_type"], "github.push");
    assert_eq!(d["routing"].as_array().unwrap().len(), 1, "{d}");
    // A template that fails on a webhook keeps it as `failed`, for a replay once fixed.
    let f = app
        .ingest("gh", &[json_ct, ("x-github-event", "push")], br#"{}"#)
        .await
        .expect(200);
    let d = inbound(&app, f.json["id"].as_str().unwrap()).await;
    assert_eq!(d["status"], "failed");
    assert!(d["error"].as_str().unwrap().contains("template"), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_cannot_be_stored_gets_503_so_the_provider_retries() {
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    hub_source(&app, &t, "s", json!({})).await;
    app.ingest("s", &[], b"{}").await.expect(200);
    // The storage fails underneath: another connection takes the table away.
    let url = hookmesh::server::default_database_url(&app.dir);
    let mut conn: sqlx::SqliteConnection = sqlx::Connection::connect(&url).await.unwrap();
    sqlx::Executor::execute(
        &mut conn,
        "ALTER TABLE inbound_events RENAME TO inbound_events_gone",
    )
    .await
    .unwrap();
    let r = app
        .ingest("s", &[("webhook-id", "w2")], b"{}")
        .await
        .expect(503);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        r.json["detail"].as_str().unwrap().contains("retry"),
        "{}",
        r.json
    );
    sqlx::Executor::execute(
        &mut conn,
        "ALTER TABLE inbound_events_gone RENAME TO inbound_events",
    )
    .await
    .unwrap();
    // Back: the same webhook is accepted, once.
    assert_eq!(
        app.ingest("s", &[("webhook-id", "w2")], b"{}")
            .await
            .expect(200)
            .json["status"],
        "accepted"
    );
    assert_eq!(
        app.ingest("s", &[("webhook-id", "w2")], b"{}")
            .await
            .expect(200)
            .json["status"],
        "duplicate"
    );
}

/// Starts a job with a `POST` and waits for it to finish.
async fn job(app: &TestApp, path: &str, body: Value) -> Value {
    let started = app.post(path, ADMIN, body).await.expect(202).json;
    wait_job(app, &started).await
}

/// A finished job's status and counts: requeued (run again), skipped.
fn outcome(job: &Value) -> (&str, u64, u64) {
    let count = |k: &str| job[k].as_u64().expect("a count");
    (
        job["status"].as_str().expect("a status"),
        count("requeued"),
        count("skipped"),
    )
}

/// What a receiver got, parsed.
fn json_bodies(rx: &Receiver) -> Vec<Value> {
    rx.received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"))
        .collect()
}

/// One field of every item of a listing.
pub(crate) fn column(list: &Value, field: &str) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("a listing")
        .iter()
        .map(|i| i[field].as_str().expect("a string field").to_owned())
        .collect()
}

/// Ids of a listing.
fn ids(list: &Value) -> Vec<String> {
    column(list, "id")
}

/// Now in RFC 3339, with a pause on either side so that webhooks before and after differ.
async fn instant() -> String {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = hookmesh::ids::rfc3339(hookmesh::ids::now_ms());
    tokio::time::sleep(Duration::from_millis(5)).await;
    t
}

async fn bulk_replay_and_release_run_as_jobs(app: TestApp) {
    let t = app.tenant("acme").await;
    let rx = Receiver::start();
    let e = endpoint(&app, &t, json!({"url": rx.url("/in")})).await;
    for (name, id_type) in [("order.created", "integer"), ("order.created.v2", "string")] {
        app.post(
            "/v1/event_types",
            ADMIN,
            json!({"tenant_id": t, "name": name, "schema": {"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": id_type}}}}),
        )
        .await
        .expect(201);
    }
    let ingest = |event_type: &str| json!({"validate": {"event_type": event_type, "on_invalid": "quarantine"}, "routes": [{"name": "r", "to": [e.clone()]}]});
    let src = hub_source(&app, &t, "orders", ingest("order.created")).await;
    let json_ct = ("content-type", "application/json");
    let before = instant().await;
    let mut quarantined = Vec::new();
    for body in [r#"{"order_id": "a"}"#, r#"{"order_id": "b"}"#, r#"{}"#] {
        let r = app
            .ingest("orders", &[json_ct], body.as_bytes())
            .await
            .expect(200);
        assert_eq!(r.json["status"], "quarantined");
        quarantined.push(r.json["id"].as_str().unwrap().to_owned());
    }
    for n in 1..=2 {
        let body = format!(r#"{{"order_id": {n}}}"#);
        app.ingest("orders", &[json_ct], body.as_bytes())
            .await
            .expect(200);
    }
    wait_count(&rx, 2).await;
    let after = instant().await;

    // The list's filters: status, time range, event type; bad times are refused.
    let list = |query: String| {
        let app = &app;
        async move {
            app.get(&format!("/v1/inbound_events?{query}"), ADMIN)
                .await
                .expect(200)
                .json
        }
    };
    let q = |s: &str| s.replace(':', "%3A").replace('+', "%2B");
    // The listing is in id order, and ids made within one millisecond compare at random.
    let mut listed = ids(&list("status=quarantined".into()).await);
    listed.sort();
    let mut expected = quarantined.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let within = list(format!("since={}&until={}", q(&before), q(&after))).await;
    assert_eq!(ids(&within).len(), 5, "{within}");
    assert_eq!(ids(&list(format!("since={}", q(&after))).await).len(), 0);
    assert_eq!(ids(&list(format!("until={}", q(&before))).await).len(), 0);
    let event_type = within["data"][4]["event_type"].as_str().unwrap().to_owned();
    let typed = list(format!("event_type={event_type}&status=routed")).await;
    assert_eq!(ids(&typed).len(), 2, "{typed}");
    let r = app
        .get("/v1/inbound_events?since=yesterday", ADMIN)
        .await
        .expect(400);
    assert!(
        r.json["detail"].as_str().unwrap().contains("since"),
        "{}",
        r.json
    );

    // Bad selections are refused before a job starts.
    let r = app
        .post(
            "/v1/inbound_events/replay",
            ADMIN,
            json!({"status": "lost"}),
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["status"]);
    let r = app
        .post("/v1/quarantine/release", ADMIN, json!({"status": "routed"}))
        .await
        .expect(422);
    assert_eq!(r.fields(), ["status"]);
    let r = app
        .post("/v1/inbound_events/replay", ADMIN, json!({"until": "soon"}))
        .await
        .expect(422);
    assert_eq!(r.fields(), ["until"]);
    for concurrency in [0, 65] {
        let r = app
            .post(
                "/v1/quarantine/release",
                ADMIN,
                json!({"concurrency": concurrency}),
            )
            .await
            .expect(422);
        assert_eq!(r.fields(), ["concurrency"]);
    }

    // The schema is relaxed: string ids become valid. Probes show when the hub has reloaded.
    let current = app
        .get(&format!("/v1/sources/{src}"), ADMIN)
        .await
        .expect(200)
        .json;
    app.put(
        &format!("/v1/sources/{src}"),
        ADMIN,
        json!({"spec": current["spec"], "ingest": ingest("order.created.v2")}),
    )
    .await
    .expect(200);
    let start = Instant::now();
    while app
        .ingest("orders", &[json_ct], br#"{"order_id": "probe"}"#)
        .await
        .expect(200)
        .json["status"]
        != "accepted"
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the source never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_count(&rx, 3).await;

    // Replaying the quarantined webhooks of the time range validates them again.
    let done = job(
        &app,
        "/v1/inbound_events/replay",
        json!({"source_id": src, "status": "quarantined", "since": before, "until": after, "concurrency": 64}),
    )
    .await;
    assert_eq!(done["kind"], "inbound_replay");
    assert_eq!(done["concurrency"], 64);
    assert_eq!(outcome(&done), ("succeeded", 3, 0), "{done}");
    wait_count(&rx, 5).await;
    let held = list(format!("status=quarantined&until={}", q(&after))).await;
    assert_eq!(ids(&held), [quarantined[2].clone()], "{held}");
    assert!(held["data"][0]["error"]
        .as_str()
        .unwrap()
        .contains("order.created.v2"));

    // Released in bulk: routed as if valid.
    let done = job(
        &app,
        "/v1/quarantine/release",
        json!({"tenant_id": t, "until": after, "concurrency": 1}),
    )
    .await;
    assert_eq!(done["kind"], "quarantine_release");
    assert_eq!(done["concurrency"], 1);
    let jobs = app.get("/v1/jobs", ADMIN).await.expect(200).json;
    assert_eq!(
        column(&jobs, "kind"),
        ["inbound_replay", "quarantine_release"],
        "{jobs}"
    );
    assert_eq!(outcome(&done), ("succeeded", 1, 0), "{done}");
    wait_count(&rx, 6).await;
    let bodies = json_bodies(&rx);
    assert!(bodies.contains(&json!({})), "{bodies:?}");
    assert_eq!(
        ids(&list(format!("status=quarantined&until={}", q(&after))).await).len(),
        0
    );

    // Once the source is gone its webhooks are left as they are, and counted.
    app.delete(&format!("/v1/sources/{src}"), ADMIN)
        .await
        .expect(204);
    let start = Instant::now();
    while app
        .ingest("orders", &[json_ct], b"{}")
        .await
        .status
        .as_u16()
        != 404
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the hub kept the deleted source"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = job(
        &app,
        "/v1/inbound_events/replay",
        json!({"source_id": src, "until": after}),
    )
    .await;
    assert_eq!(outcome(&done), ("succeeded", 0, 5), "{done}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.received().len(), 6, "nothing more was delivered");
}

/// A hub source `orders` that quarantines payloads without an `order_id`, routed to a receiver.
async fn quarantining_source(app: &TestApp) -> (String, Receiver) {
    let t = app.tenant("acme").await;
    let rx = Receiver::start();
    let e = endpoint(app, &t, json!({"url": rx.url("/in")})).await;
    app.post(
        "/v1/event_types",
        ADMIN,
        json!({"tenant_id": t, "name": "order.created", "schema": {"type": "object", "required": ["order_id"]}}),
    )
    .await
    .expect(201);
    let src = hub_source(
        app,
        &t,
        "orders",
        json!({"validate": {"event_type": "order.created", "on_invalid": "quarantine"}, "routes": [{"name": "r", "to": [e]}]}),
    )
    .await;
    (src, rx)
}

async fn a_webhook_is_released_once_however_many_ask(app: TestApp) {
    let (_, rx) = quarantining_source(&app).await;
    let held = app
        .ingest("orders", &[("content-type", "application/json")], b"{}")
        .await
        .expect(200)
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/quarantine/{held}/release");
    let answers =
        futures::future::join_all((0..8).map(|_| app.post(&path, ADMIN, json!({})))).await;
    let mut codes: Vec<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
    codes.sort_unstable();
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 1, "{codes:?}");
    assert!(
        codes.iter().all(|c| [202, 404, 409].contains(c)),
        "{codes:?}"
    );
    wait_count(&rx, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 1, "released twice: {codes:?}");
}

/// Resumes the one job silent for longer than the lease, `job`, and waits for its end.
pub(crate) async fn resume_and_finish(app: &TestApp, job: &str) -> Value {
    let before = hookmesh::ids::now_ms() - hookmesh::api::JOB_LEASE_MS;
    assert_eq!(
        hookmesh::api::resume_jobs(&app.state, before)
            .await
            .unwrap(),
        1
    );
    wait_job(app, &json!({ "id": job })).await
}

/// A job as a runner that died after its first page left it: `running`, started now (after
/// the webhooks it selects), its record last written `age_ms` ago: the lease the keepers read.
pub(crate) async fn orphan_job(app: &TestApp, body: Value, age_ms: i64) -> String {
    // A job covers rows changed before it started, to the millisecond: it starts after
    // everything the test stored before calling, even on a machine that stores within one.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let id = hookmesh::ids::new_id("job");
    let now = hookmesh::ids::now_ms();
    let at = now - age_ms;
    let job = hookmesh::store::Resource {
        kind: hookmesh::store::Kind::Job,
        id: id.clone(),
        tenant_id: String::new(),
        unique_key: id.clone(),
        body,
        secrets: None,
        version: 2,
        created_at: now,
        updated_at: at,
    };
    let entry = hookmesh::store::AuditEntry {
        id: hookmesh::ids::new_id("aud"),
        tenant_id: None,
        actor: "test".into(),
        action: "create".into(),
        resource_type: "job".into(),
        resource_id: id.clone(),
        diff: json!({}),
        at,
    };
    app.state.store.insert(&job, &entry).await.unwrap();
    id
}

async fn a_job_whose_runner_stopped_is_resumed_where_it_was(app: TestApp) {
    let (src, rx) = quarantining_source(&app).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let r = app
            .ingest("orders", &[("content-type", "application/json")], b"{}")
            .await
            .expect(200);
        held.push(r.json["id"].as_str().unwrap().to_owned());
    }
    let until = hookmesh::ids::now_ms() + 1;
    // Its runner released the first webhook's page, recorded that, and stopped.
    let stopped = orphan_job(
        &app,
        json!({"kind": "quarantine_release", "status": "running", "inbound": {"source_id": src, "status": "quarantined", "until": until},
               "requeued": 1, "skipped": 0, "cursor": held[0], "error": null, "finished_at": null}),
        2 * hookmesh::api::JOB_LEASE_MS,
    )
    .await;
    // This one's runner recorded progress a moment ago: still alive, so left to it.
    let alive = orphan_job(
        &app,
        json!({"kind": "quarantine_release", "status": "running", "inbound": {"source_id": "src_none", "status": "quarantined", "until": until},
               "requeued": 0, "skipped": 0, "error": null, "finished_at": null}),
        0,
    )
    .await;
    // Two replicas look at once: one resumes it.
    let before = hookmesh::ids::now_ms() - hookmesh::api::JOB_LEASE_MS;
    let (a, b) = tokio::join!(
        hookmesh::api::resume_jobs(&app.state, before),
        hookmesh::api::resume_jobs(&app.state, before)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let done = wait_job(&app, &json!({"id": stopped})).await;
    assert_eq!(outcome(&done), ("succeeded", 3, 0), "{done}");
    // Its audit trail: who made it, the resume and the end. Recording progress within a run
    // writes none, or a long job would flood the log with a page's worth each.
    let log = app
        .get(
            &format!("/v1/audit_log?resource_type=job&resource_id={stopped}"),
            ADMIN,
        )
        .await
        .expect(200)
        .json;
    assert_eq!(
        column(&log, "action"),
        ["create", "resume", "finish"],
        "{log}"
    );
    // From its cursor on: the two after it are routed, the first was not run again.
    wait_count(&rx, 2).await;
    let left = app.get("/v1/quarantine", ADMIN).await.expect(200).json;
    assert_eq!(ids(&left), [held[0].clone()], "{left}");
    let alive = app
        .get(&format!("/v1/jobs/{alive}"), ADMIN)
        .await
        .expect(200);
    assert_eq!(alive.json["status"], "running");
    assert_eq!(alive.header("etag"), Some("\"2\""), "untouched");
    assert_eq!(
        hookmesh::api::resume_jobs(&app.state, before)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.received().len(), 2);
}

async fn a_resumed_replay_does_not_replay_again_what_its_runner_did_after_its_last_record(
    app: TestApp,
) {
    let t = app.tenant("acme").await;
    let rx = Receiver::start();
    let e = endpoint(&app, &t, json!({"url": rx.url("/in")})).await;
    let src = hub_source(
        &app,
        &t,
        "orders",
        json!({"routes": [{"name": "r", "to": [e]}]}),
    )
    .await;
    let mut routed = Vec::new();
    for n in 0..3 {
        let r = app
            .ingest(
                "orders",
                &[("content-type", "application/json")],
                format!("{{\"n\": {n}}}").as_bytes(),
            )
            .await
            .expect(200);
        routed.push(r.json["id"].as_str().unwrap().to_owned());
    }
    wait_count(&rx, 3).await;
    let until = hookmesh::ids::now_ms() + 1;
    // Its runner recorded the first webhook's page, then replayed the second and stopped
    // before recording that.
    let stopped = orphan_job(
        &app,
        json!({"kind": "inbound_replay", "status": "running", "inbound": {"source_id": src, "until": until},
               "requeued": 1, "skipped": 0, "cursor": routed[0], "error": null, "finished_at": null}),
        2 * hookmesh::api::JOB_LEASE_MS,
    )
    .await;
    app.post(
        &format!("/v1/inbound_events/{}/replay", routed[1]),
        ADMIN,
        json!({}),
    )
    .await
    .expect(202);
    wait_count(&rx, 4).await;
    let done = resume_and_finish(&app, &stopped).await;
    // The third is replayed; the second, changed since the job started, is not again.
    assert_eq!(outcome(&done), ("succeeded", 2, 1), "{done}");
    wait_count(&rx, 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ns: Vec<i64> = json_bodies(&rx)
        .iter()
        .map(|b| b["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns.len(), 5, "{ns:?}");
    assert_eq!(ns.iter().filter(|n| **n == 1).count(), 2, "{ns:?}");
    assert_eq!(ns.iter().filter(|n| **n == 2).count(), 2, "{ns:?}");
}

async fn at_start_the_keeper_resumes_what_a_stopped_process_left(app: TestApp) {
    // Recorded a moment before this start: far fresher than the lease.
    let job = orphan_job(
        &app,
        json!({"kind": "replay", "status": "running", "filter": {"tenant_id": "ten_none"},
               "requeued": 0, "error": null, "finished_at": null}),
        50,
    )
    .await;
    let keeper = hookmesh::api::spawn_job_keeper(app.state.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = app
        .get(&format!("/v1/jobs/{job}"), ADMIN)
        .await
        .expect(200)
        .json["status"]
        .clone();
    keeper.abort();
    if app.state.store.backend() == "sqlite" {
        // One process owns the file: whatever was running, the previous run left.
        assert_eq!(status, "succeeded");
    } else {
        // Another replica may be running it: left alone until the lease runs out.
        assert_eq!(status, "running");
    }
}

/// A gauge's value in `/metrics`.
async fn gauge(app: &TestApp, name: &str) -> i64 {
    let text = app.get("/metrics", ADMIN).await.expect(200).text;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The rest of a held webhook's body.
type Rest = futures::channel::mpsc::UnboundedSender<Result<bytes::Bytes, std::io::Error>>;

/// A webhook to `source` still on its way in, its body half sent: the ingest is accepting it
/// until the rest is sent and the sender dropped.
async fn hold_arrival(
    app: &TestApp,
    source: &str,
) -> (Rest, tokio::task::JoinHandle<crate::support::Resp>) {
    let (more, body) = futures::channel::mpsc::unbounded();
    more.unbounded_send(Ok(bytes::Bytes::from_static(b"{\"n\": ")))
        .unwrap();
    let arriving = tokio::spawn(app.ingest_streamed(source, axum::body::Body::from_stream(body)));
    let start = Instant::now();
    while gauge(app, "hookmesh_inbound_arrivals_in_flight").await != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the arrival never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (more, arriving)
}

/// Starts a bulk replay of `source`'s webhooks, 16 at once; the finished job and the most
/// webhooks the metrics showed it running at once.
async fn replay_watched(app: &TestApp, source: &str) -> (Value, i64) {
    let started = app
        .post(
            "/v1/inbound_events/replay",
            ADMIN,
            json!({"source_id": source, "concurrency": 16}),
        )
        .await
        .expect(202)
        .json;
    let (start, mut most) = (Instant::now(), 0);
    loop {
        most = most.max(gauge(app, "hookmesh_job_webhooks_in_flight").await);
        let j = job_now(app, &started).await;
        if j["status"] != "running" {
            return (j, most);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the job never finished: {j}"
        );
    }
}

#[tokio::test]
async fn bulk_jobs_give_way_to_webhooks_arriving() {
    const STORED: u64 = 200;
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    let src = hub_source(&app, &t, "orders", json!({})).await;
    for n in 0..STORED {
        let body = format!(r#"{{"n": {n}}}"#);
        app.ingest(
            "orders",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await
        .expect(200);
    }

    let (more, arriving) = hold_arrival(&app, "orders").await;
    // Meanwhile a job of concurrency 16 runs one webhook at a time, and still finishes.
    let (done, most) = replay_watched(&app, &src).await;
    assert_eq!(outcome(&done), ("succeeded", STORED, 0), "{done}");
    assert_eq!(
        most, 1,
        "the job ran {most} webhooks at once beside an arrival"
    );

    // The arrival was only waiting for its body: it is stored like any other.
    more.unbounded_send(Ok(bytes::Bytes::from_static(b"200}")))
        .unwrap();
    drop(more);
    let r = arriving.await.unwrap().expect(200);
    assert_eq!(r.json["status"], "accepted", "{}", r.json);
    assert_eq!(gauge(&app, "hookmesh_inbound_arrivals_in_flight").await, 0);

    // Once nothing has arrived for a while (100 ms), the next job runs several at once.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (done, most) = replay_watched(&app, &src).await;
    assert_eq!(outcome(&done), ("succeeded", STORED + 1, 0), "{done}");
    assert!(most > 1, "an idle hub ran the job one webhook at a time");
    assert_eq!(gauge(&app, "hookmesh_job_webhooks_in_flight").await, 0);
}

#[tokio::test]
async fn a_delivery_replay_paces_itself_while_webhooks_arrive() {
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    hub_source(&app, &t, "orders", json!({})).await;
    let (ep, rx) = delivered_endpoint(&app, &t).await;

    let (more, arriving) = hold_arrival(&app, "orders").await;
    let job = replay_paced(&app, &ep).await;

    // Once the ingest is quiet the rest goes in full pages; nothing is left out.
    drop(more);
    arriving.await.unwrap();
    let done = wait_job(&app, &job).await;
    assert_eq!(outcome(&done), ("succeeded", REPLAYED as u64, 0), "{done}");
    wait_count(&rx, 2 * REPLAYED).await;
}
