//! Retention: what ages out of the store, and what stays because it is still needed.

use crate::both;
use crate::delivery::{endpoint, only_delivery, wait_delivery, wait_job};
use crate::inbound::{column, orphan_job};
use crate::support::{TestApp, ADMIN};
use hookmesh::retention::{pass, purge, Purged, Retention};
use hookmesh_e2e::Receiver;
use serde_json::{json, Value};
use std::time::Duration;

both!(
    past_the_retention_finished_events_webhooks_and_jobs_go_and_open_ones_stay,
    one_replica_at_a_time_runs_the_housekeeping
);

async fn one_replica_at_a_time_runs_the_housekeeping(app: TestApp) {
    let t = app.tenant("acme").await;
    let store = app.state.store.as_ref();
    let keep = Retention::keep(Duration::from_secs(1));
    // Another replica is in the middle of a pass.
    let other = store.exclusive("housekeeping").await.unwrap();
    assert!(other.is_some(), "the first to ask gets it");
    publish(&app, &t, "nobody").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = hookmesh::ids::now_ms() + 10_000;
    let skipped = pass(store, keep, later).await.unwrap();
    if store.backend() == "sqlite" {
        // One process owns the file: there is no other replica to leave it to.
        assert_eq!(skipped.map(|p| p.events), Some(1));
        return;
    }
    assert_eq!(skipped, None, "left to the replica holding it");
    // That replica stops (its session ends): the next pass is this one's.
    drop(other);
    let start = std::time::Instant::now();
    loop {
        if let Some(p) = pass(store, keep, later).await.unwrap() {
            assert_eq!(p.events, 1);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish(app: &TestApp, tenant: &str, event_type: &str) -> String {
    app.post(
        "/v1/events",
        ADMIN,
        json!({"tenant_id": tenant, "event_type": event_type, "payload": {"n": 1}}),
    )
    .await
    .expect(202)
    .json["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The event's one delivery once `done` holds.
async fn delivery_when(app: &TestApp, event: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_delivery(app, &only_delivery(app, event).await, done).await
}

async fn stored_events(app: &TestApp, ids: &[&str]) -> Vec<String> {
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    let mut found: Vec<String> = app
        .state
        .store
        .events_by_id(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    found.sort();
    found
}

/// Starts a bulk replay that finds nothing to requeue, and waits for its end.
async fn finished_job(app: &TestApp, tenant: &str) -> String {
    let job = app
        .post(
            "/v1/deliveries/replay",
            ADMIN,
            json!({"tenant_id": tenant, "event_type": "none"}),
        )
        .await
        .expect(202)
        .json;
    assert_eq!(wait_job(app, &job).await["status"], "succeeded");
    job["id"].as_str().unwrap().to_owned()
}

async fn past_the_retention_finished_events_webhooks_and_jobs_go_and_open_ones_stay(app: TestApp) {
    let app = &app;
    let t = app.tenant("acme").await;
    let (ok, slow, broken) = (Receiver::start(), Receiver::start(), Receiver::start());
    slow.set_status(500);
    broken.set_status(500);
    endpoint(app, &t, json!({"url": ok.url("/"), "event_types": ["ok"]})).await;
    // Fails once, then waits a minute for its retry: pending throughout the test.
    endpoint(app, &t, json!({"url": slow.url("/"), "event_types": ["slow"], "retry_policy": {"type": "schedule", "delays_secs": [60]}})).await;
    // Fails twice and is dead-lettered: finished.
    endpoint(app, &t, json!({"url": broken.url("/"), "event_types": ["dead"], "retry_policy": {"type": "schedule", "delays_secs": [0]}})).await;

    let delivered = publish(app, &t, "ok").await;
    let pending = publish(app, &t, "slow").await;
    let dead = publish(app, &t, "dead").await;
    // More than one purge step's worth, with no subscriber (no deliveries at all).
    let mut unrouted = Vec::new();
    for _ in 0..300 {
        unrouted.push(publish(app, &t, "nobody").await);
    }
    let delivered_d = delivery_when(app, &delivered, |d| d["status"] == "succeeded").await;
    let dead_d = delivery_when(app, &dead, |d| d["status"] == "dead").await;
    let pending_d = delivery_when(app, &pending, |d| {
        d["status"] == "pending" && d["attempts"] == 1
    })
    .await;

    // Hub webhooks: one whose duplicate window (1 s) ends before the purge's `now`, one whose
    // window (an hour) is still open then.
    for (name, window) in [("short", 1), ("long", 3600)] {
        app.post(
            "/v1/sources",
            ADMIN,
            json!({
                "tenant_id": t,
                "spec": {"name": name, "match": {"path_prefix": format!("/{name}")}, "mode": "hub"},
                "ingest": {"dedup": {"window_secs": window}, "routes": []},
            }),
        )
        .await
        .expect(201);
    }
    let webhook = |source: &'static str, id: &'static str| async move {
        app.ingest(
            source,
            &[("webhook-id", id), ("content-type", "application/json")],
            br#"{"type": "x"}"#,
        )
        .await
        .expect(200)
        .json["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let short = webhook("short", "msg_1").await;
    let long = webhook("long", "msg_1").await;
    let done_job = finished_job(app, &t).await;
    // Started an hour ago and still running (its runner is alive or will be resumed).
    let running_job = orphan_job(
        app,
        json!({"kind": "replay", "status": "running", "filter": {"tenant_id": t},
               "requeued": 0, "skipped": 0, "error": null, "finished_at": null}),
        3_600_000,
    )
    .await;

    let before = hookmesh::ids::now_ms() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let late = publish(app, &t, "nobody").await;
    let late_webhook = webhook("short", "msg_2").await;
    let late_job = finished_job(app, &t).await;
    let now = before + 2_000;

    let store = app.state.store.as_ref();
    let purged = purge(store, before, now).await.unwrap();
    assert_eq!(
        purged,
        Purged {
            events: 2 + 300,
            inbound: 1,
            jobs: 1,
        }
    );

    // Finished events went with their deliveries and attempts.
    assert!(
        stored_events(app, &[&delivered, &dead, &unrouted[0], &unrouted[299]])
            .await
            .is_empty()
    );
    for d in [&delivered_d, &dead_d] {
        let id = d["id"].as_str().unwrap();
        app.get(&format!("/v1/deliveries/{id}"), ADMIN)
            .await
            .expect(404);
        assert!(store.list_attempts(id).await.unwrap().is_empty());
    }
    // The event with a delivery still to make stays whole, and so does everything newer.
    let mut kept = vec![pending.clone(), late.clone()];
    kept.sort();
    assert_eq!(stored_events(app, &[&pending, &late]).await, kept);
    let pending_id = pending_d["id"].as_str().unwrap();
    app.get(&format!("/v1/deliveries/{pending_id}"), ADMIN)
        .await
        .expect(200);
    assert_eq!(store.list_attempts(pending_id).await.unwrap().len(), 1);

    app.get(&format!("/v1/inbound_events/{short}"), ADMIN)
        .await
        .expect(404);
    for kept in [&long, &late_webhook] {
        app.get(&format!("/v1/inbound_events/{kept}"), ADMIN)
            .await
            .expect(200);
    }
    app.get(&format!("/v1/jobs/{done_job}"), ADMIN)
        .await
        .expect(404);
    for kept in [&running_job, &late_job] {
        app.get(&format!("/v1/jobs/{kept}"), ADMIN)
            .await
            .expect(200);
    }
    // Who started the purged job, and how it ended, stay in the audit log.
    let log = app
        .get(
            &format!("/v1/audit_log?resource_type=job&resource_id={done_job}"),
            ADMIN,
        )
        .await
        .expect(200)
        .json;
    assert_eq!(column(&log, "action"), ["create", "finish"], "{log}");

    // The held key still drops the provider's retry.
    let again = app
        .ingest(
            "long",
            &[
                ("webhook-id", "msg_1"),
                ("content-type", "application/json"),
            ],
            br#"{"type": "x"}"#,
        )
        .await
        .expect(200);
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["id"], long.as_str());

    // A second pass finds nothing more.
    assert_eq!(purge(store, before, now).await.unwrap(), Purged::default());
}
