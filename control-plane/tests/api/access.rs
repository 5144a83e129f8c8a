//! Authentication, scopes and tenant isolation.

use crate::both;
use crate::support::{TestApp, ADMIN};
use axum::http::Method;
use serde_json::json;

both!(
    unauthenticated_requests_get_401_problems,
    scopes_limit_what_a_key_may_do,
    tenants_never_see_each_other,
    api_keys_show_once_rotate_and_revoke
);

async fn unauthenticated_requests_get_401_problems(app: TestApp) {
    let r = app
        .call(Method::GET, "/v1/sources", None, None, &[])
        .await
        .expect(401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        r.json["detail"],
        "missing API key: send `Authorization: Bearer <key>`"
    );
    let r = app.get("/v1/sources", "hm_not_a_key").await.expect(401);
    assert_eq!(r.json["detail"], "invalid API key");
    let r = app
        .call(
            Method::GET,
            "/v1/sources",
            None,
            None,
            &[("authorization", "Basic abc")],
        )
        .await
        .expect(401);
    assert!(r.json["detail"]
        .as_str()
        .unwrap()
        .starts_with("malformed Authorization header"));
    // Health and the API document need no key.
    app.call(Method::GET, "/healthz", None, None, &[])
        .await
        .expect(200);
    let r = app
        .call(Method::GET, "/readyz", None, None, &[])
        .await
        .expect(200);
    assert_eq!(r.json["status"], "ready");
}

async fn scopes_limit_what_a_key_may_do(app: TestApp) {
    let t = app.tenant("acme").await;
    let reader = app.key(Some(&t), &["read"]).await;
    let sources_only = app.key(Some(&t), &["sources:write"]).await;
    let source =
        json!({"spec": {"name": "gh", "verify": {"scheme": "github", "secrets": ["gh-secret"]}}});
    let r = app
        .post("/v1/sources", &reader, source.clone())
        .await
        .expect(403);
    assert_eq!(
        r.json["detail"],
        "this API key lacks the `sources:write` scope"
    );
    app.get("/v1/sources", &reader).await.expect(200);
    app.post("/v1/sources", &sources_only, source)
        .await
        .expect(201);
    app.get("/v1/endpoints", &sources_only).await.expect(403);
    app.get("/v1/api_keys", &reader).await.expect(403);
    app.get("/v1/audit_log", &sources_only).await.expect(403);
    // Tenant-bound admins manage their tenant, never tenants themselves.
    let tenant_admin = app.key(Some(&t), &["admin"]).await;
    app.post("/v1/tenants", &tenant_admin, json!({"name": "other"}))
        .await
        .expect(403);
    app.get(&format!("/v1/tenants/{t}"), &tenant_admin)
        .await
        .expect(200);
    let r = app
        .post(
            "/v1/api_keys",
            &tenant_admin,
            json!({"name": "ci", "scopes": ["read", "nope"]}),
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["scopes[1]"]);
    let r = app
        .post(
            "/v1/api_keys",
            &tenant_admin,
            json!({"name": "ci", "scopes": ["read"]}),
        )
        .await
        .expect(201);
    assert_eq!(r.json["tenant_id"], t.as_str());
}

async fn tenants_never_see_each_other(app: TestApp) {
    let (a, b) = (app.tenant("a").await, app.tenant("b").await);
    let (ka, kb) = (
        app.key(Some(&a), &["write"]).await,
        app.key(Some(&b), &["admin"]).await,
    );
    let src = app
        .post(
            "/v1/sources",
            &ka,
            json!({"spec": {"name": "a-src", "match": {"path_prefix": "/a"}}}),
        )
        .await
        .expect(201);
    let id = src.json["id"].as_str().unwrap();
    // B's key: 404 on A's resource, even for an admin, whether reading, replacing or deleting.
    let r = app.get(&format!("/v1/sources/{id}"), &kb).await.expect(404);
    assert_eq!(r.json["detail"], "resource not found");
    app.put(
        &format!("/v1/sources/{id}"),
        &kb,
        json!({"spec": {"name": "a-src"}}),
    )
    .await
    .expect(404);
    app.delete(&format!("/v1/sources/{id}"), &kb)
        .await
        .expect(404);
    app.get(&format!("/v1/tenants/{a}"), &kb).await.expect(404);
    assert_eq!(
        app.get("/v1/sources", &kb).await.expect(200).json["data"],
        json!([])
    );
    app.get(&format!("/v1/sources?tenant_id={a}"), &kb)
        .await
        .expect(404);
    // Creating into another tenant is also "not found".
    app.post(
        "/v1/sources",
        &kb,
        json!({"tenant_id": a, "spec": {"name": "b-src"}}),
    )
    .await
    .expect(404);
    // A global admin must say which tenant.
    let r = app
        .post("/v1/sources", ADMIN, json!({"spec": {"name": "x"}}))
        .await
        .expect(422);
    assert_eq!(r.fields(), ["tenant_id"]);
    app.post(
        "/v1/sources",
        ADMIN,
        json!({"tenant_id": "ten_unknown", "spec": {"name": "x"}}),
    )
    .await
    .expect(404);
    let listed = app
        .get(&format!("/v1/sources?tenant_id={a}"), ADMIN)
        .await
        .expect(200);
    assert_eq!(listed.json["data"][0]["id"], id);
}

async fn api_keys_show_once_rotate_and_revoke(app: TestApp) {
    let t = app.tenant("acme").await;
    let created = app.post("/v1/api_keys", ADMIN, json!({"tenant_id": t, "name": "deploy", "scopes": ["read"], "expires_at": "2999-01-01T00:00:00Z"})).await.expect(201);
    let (id, secret) = (
        created.json["id"].as_str().unwrap().to_owned(),
        created.json["secret"].as_str().unwrap().to_owned(),
    );
    assert!(secret.starts_with("hm_"));
    assert_eq!(created.json["expires_at"], "2999-01-01T00:00:00Z");
    app.get("/v1/sources", &secret).await.expect(200);
    let shown = app
        .get(&format!("/v1/api_keys/{id}"), ADMIN)
        .await
        .expect(200);
    assert!(
        shown.json.get("secret").is_none(),
        "the secret is shown only at creation"
    );
    assert_eq!(shown.json["prefix"], &secret[..10]);
    let rotated = app
        .post(&format!("/v1/api_keys/{id}/rotate"), ADMIN, json!({}))
        .await
        .expect(200);
    let new_secret = rotated.json["secret"].as_str().unwrap().to_owned();
    app.get("/v1/sources", &secret).await.expect(401);
    app.get("/v1/sources", &new_secret).await.expect(200);
    // A key cannot revoke itself (no accidental lock-out); another admin key can.
    let admin_id = app.get("/v1/api_keys", ADMIN).await.json["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .delete(&format!("/v1/api_keys/{admin_id}"), ADMIN)
        .await
        .expect(409);
    assert_eq!(
        r.json["detail"],
        "an API key cannot revoke itself: use another admin key"
    );
    app.delete(&format!("/v1/api_keys/{id}"), ADMIN)
        .await
        .expect(204);
    let r = app.get("/v1/sources", &new_secret).await.expect(401);
    assert_eq!(r.json["detail"], "this API key was revoked");
    app.post(&format!("/v1/api_keys/{id}/rotate"), ADMIN, json!({}))
        .await
        .expect(409);
    let r = app
        .post(
            "/v1/api_keys",
            ADMIN,
            json!({"name": "old", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["expires_at"]);
    let listed = app.get("/v1/api_keys", ADMIN).await.expect(200);
    assert!(listed.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("secret").is_none()));
}
