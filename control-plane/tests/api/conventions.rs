//! Pagination, idempotency, request limits, the audit log and the OpenAPI document.

use crate::both;
use crate::support::{TestApp, ADMIN};
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::json;

both!(
    cursor_pagination_is_stable_and_complete,
    idempotency_keys_replay_and_refuse_reuse,
    malformed_requests_get_precise_problems,
    every_mutation_is_audited_with_secrets_masked
);

async fn cursor_pagination_is_stable_and_complete(app: TestApp) {
    for i in 0..7 {
        app.tenant(&format!("t{i}")).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/tenants?limit=3&after={a}"),
            None => "/v1/tenants?limit=3".to_owned(),
        };
        let page = app.get(&path, ADMIN).await.expect(200);
        let ids: Vec<String> = page.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(ids.len() <= 3);
        seen.extend(ids);
        match page.json["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "ordered by id, no duplicates");
    app.get("/v1/tenants?limit=0", ADMIN).await.expect(400);
    app.get("/v1/tenants?limit=1001", ADMIN).await.expect(400);
    app.get("/v1/tenants?bogus=1", ADMIN).await.expect(400);
}

async fn idempotency_keys_replay_and_refuse_reuse(app: TestApp) {
    let t = app.tenant("acme").await;
    let body = json!({"tenant_id": t, "url": "https://example.com/a"});
    let first = app
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(ADMIN),
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await
        .expect(201);
    let again = app
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(ADMIN),
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await
        .expect(201);
    assert_eq!(
        first.json, again.json,
        "the retry replays the first response"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        app.get("/v1/endpoints", ADMIN).await.json["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = app
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(ADMIN),
            Some(json!({"tenant_id": t, "url": "https://example.com/b"})),
            &[("idempotency-key", "k-1")],
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["Idempotency-Key"]);
    // Keys are per API key: another key may use the same value.
    let other = app.key(Some(&t), &["write"]).await;
    app.call(
        Method::POST,
        "/v1/endpoints",
        Some(&other),
        Some(json!({"url": "https://example.com/a"})),
        &[("idempotency-key", "k-1")],
    )
    .await
    .expect(201);
    // A failed request (4xx) is replayed too, so retries see a consistent answer.
    let bad = json!({"tenant_id": t, "url": "nope"});
    app.call(
        Method::POST,
        "/v1/endpoints",
        Some(ADMIN),
        Some(bad.clone()),
        &[("idempotency-key", "k-2")],
    )
    .await
    .expect(422);
    let r = app
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(ADMIN),
            Some(bad),
            &[("idempotency-key", "k-2")],
        )
        .await
        .expect(422);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
}

async fn malformed_requests_get_precise_problems(app: TestApp) {
    let r = app
        .send(
            Request::post("/v1/tenants")
                .header("authorization", format!("Bearer {ADMIN}"))
                .header("content-type", "application/json")
                .body(Body::from("{\"name\": "))
                .unwrap(),
        )
        .await
        .expect(400);
    assert!(r.json["detail"]
        .as_str()
        .unwrap()
        .starts_with("malformed JSON"));
    app.send(
        Request::post("/v1/tenants")
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "text/plain")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await
    .expect(415);
    let huge = json!({"name": "x".repeat(1024 * 1024 + 10)}).to_string();
    app.send(
        Request::post("/v1/tenants")
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(Body::from(huge))
            .unwrap(),
    )
    .await
    .expect(413);
    let r = app
        .post("/v1/tenants", ADMIN, json!({"name": 5}))
        .await
        .expect(422);
    assert_eq!(r.fields(), ["name"]);
    let r = app
        .call(Method::GET, "/v1/nothing-here", Some(ADMIN), None, &[])
        .await
        .expect(404);
    assert_eq!(r.json["type"], "https://hookmesh.dev/problems/not-found");
    app.call(
        Method::PUT,
        "/v1/tenants/ten_x",
        Some(ADMIN),
        Some(json!({"name": "x"})),
        &[("if-match", "garbage")],
    )
    .await
    .expect(400);
}

async fn every_mutation_is_audited_with_secrets_masked(app: TestApp) {
    let t = app.tenant("acme").await;
    let tenant_admin = app.key(Some(&t), &["admin"]).await;
    let src = app
        .post("/v1/sources", &tenant_admin, json!({"spec": {"name": "gh", "verify": {"scheme": "github", "secrets": ["a-github-webhook-secret-value"]}}}))
        .await
        .expect(201);
    let id = src.json["id"].as_str().unwrap();
    app.delete(&format!("/v1/sources/{id}"), &tenant_admin)
        .await
        .expect(204);
    let log = app
        .get(
            &format!("/v1/audit_log?resource_type=source&resource_id={id}"),
            ADMIN,
        )
        .await
        .expect(200);
    let entries = log.json["data"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["create", "delete"]
    );
    assert_eq!(entries[0]["tenant_id"], t.as_str());
    assert!(entries[0]["actor"].as_str().unwrap().starts_with("key_"));
    assert!(
        !log.json
            .to_string()
            .contains("a-github-webhook-secret-value"),
        "secrets never reach the audit log"
    );
    // A tenant admin sees its tenant's entries only; filters combine.
    let own = app.get("/v1/audit_log", &tenant_admin).await.expect(200);
    assert!(own.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant_id"] == t.as_str()));
    let actor = entries[0]["actor"].as_str().unwrap();
    let by_actor = app
        .get(&format!("/v1/audit_log?actor={actor}"), ADMIN)
        .await
        .expect(200);
    assert_eq!(by_actor.json["data"].as_array().unwrap().len(), 2);
    let future = app
        .get("/v1/audit_log?since=2999-01-01T00:00:00Z", ADMIN)
        .await
        .expect(200);
    assert_eq!(future.json["data"], json!([]));
    app.get("/v1/audit_log?since=yesterday", ADMIN)
        .await
        .expect(400);
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let doc = serde_json::to_value(hookmesh::api::openapi()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/v1/tenants",
        "/v1/tenants/{id}",
        "/v1/sources",
        "/v1/sources/{id}",
        "/v1/endpoints",
        "/v1/endpoints/{id}",
        "/v1/endpoints/{id}/secret",
        "/v1/endpoints/{id}/secret/rotate",
        "/v1/event_types",
        "/v1/event_types/{id}",
        "/v1/api_keys",
        "/v1/api_keys/{id}",
        "/v1/api_keys/{id}/rotate",
        "/v1/audit_log",
        "/v1/inbound_events",
        "/v1/inbound_events/{id}",
        "/v1/inbound_events/{id}/replay",
        "/v1/inbound_events/replay",
        "/v1/quarantine",
        "/v1/quarantine/{id}",
        "/v1/quarantine/{id}/release",
        "/v1/quarantine/release",
        "/v1/jobs",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains(&p), "{p} missing from the OpenAPI document");
    }
    // Every documented operation answers (not 404/405) on the real router.
    let app = crate::support::TestApp::sqlite().await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let m: Method = method.to_uppercase().parse().unwrap();
            let r = app
                .call(
                    m.clone(),
                    &path.replace("{id}", "nonexistent"),
                    Some(ADMIN),
                    if m == Method::GET || m == Method::DELETE {
                        None
                    } else {
                        Some(json!({}))
                    },
                    &[],
                )
                .await;
            assert!(
                r.status != 405
                    && !(r.status == 404
                        && r.json["type"] == "https://hookmesh.dev/problems/not-found"
                        && !path.contains("{id}")),
                "{method} {path}: {}",
                r.status
            );
        }
    }
}
