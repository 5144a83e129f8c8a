//! Sources, endpoints, event types and tenants: validation and life cycle.

use crate::both;
use crate::support::{TestApp, ADMIN};
use axum::http::Method;
use serde_json::json;

both!(
    sources_are_validated_by_the_filters_own_rules,
    source_secrets_are_masked_and_kept_on_replace,
    endpoints_get_secrets_and_rotate_with_overlap,
    event_types_check_their_schemas_and_keep_versions,
    tenants_cannot_be_deleted_while_they_own_resources,
    managed_resources_change_only_through_their_manager
);

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn sources_are_validated_by_the_filters_own_rules(app: TestApp) {
    let t = app.tenant("acme").await;
    let bad = |spec: serde_json::Value| json!({"tenant_id": t, "spec": spec});
    let r = app
        .post(
            "/v1/sources",
            ADMIN,
            bad(json!({"name": "s", "allowed_cidrs": ["10.0.0.0/8", "10.0.0.1/8"]})),
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["spec.allowed_cidrs[1]"]);
    assert_eq!(
        r.json["errors"][0]["message"],
        "`10.0.0.1/8` has host bits set; the network is 10.0.0.0/8"
    );
    let r = app.post("/v1/sources", ADMIN, bad(json!({"name": "s", "verify": {"scheme": "standard_webhooks", "secrets": ["whsec_***"]}}))).await.expect(422);
    assert_eq!(r.fields(), ["spec.verify.secrets[0]"]);
    let r = app
        .post("/v1/sources", ADMIN, bad(json!({"name": "Bad Name"})))
        .await
        .expect(422);
    assert_eq!(r.fields(), ["spec.name"]);
    // Unknown fields are refused, naming the field.
    let r = app
        .post("/v1/sources", ADMIN, bad(json!({"name": "s", "verfy": {}})))
        .await
        .expect(422);
    assert!(
        r.json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `verfy`"),
        "{}",
        r.json
    );
    let r = app
        .post(
            "/v1/sources",
            ADMIN,
            json!({"tenant_id": t, "spec": {"name": "s"}, "extra": 1}),
        )
        .await
        .expect(422);
    assert!(r.json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("unknown field `extra`"));
    // A route another source already has is refused, as the filter would.
    app.post(
        "/v1/sources",
        ADMIN,
        bad(json!({"name": "first", "match": {"path_prefix": "/hooks"}})),
    )
    .await
    .expect(201);
    let r = app
        .post(
            "/v1/sources",
            ADMIN,
            bad(json!({"name": "second", "match": {"path_prefix": "/hooks"}})),
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["spec.match"]);
    let r = app
        .post(
            "/v1/sources",
            ADMIN,
            bad(json!({"name": "first", "match": {"path_prefix": "/other"}})),
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["spec.name"]);
}

async fn source_secrets_are_masked_and_kept_on_replace(app: TestApp) {
    let t = app.tenant("acme").await;
    let spec = json!({"name": "swh", "match": {"path_prefix": "/swh"}, "verify": {"scheme": "standard_webhooks", "secrets": [SECRET]},
                      "auth": {"type": "basic", "users": [{"username": "u", "password": "a-long-basic-password-123"}]}, "mode": "hub"});
    let created = app
        .post("/v1/sources", ADMIN, json!({"tenant_id": t, "spec": spec}))
        .await
        .expect(201);
    assert_eq!(created.header("etag"), Some("\"1\""));
    let id = created.json["id"].as_str().unwrap().to_owned();
    let shown = &created.json["spec"];
    assert_eq!(shown["verify"]["secrets"], json!(["…LaSw"]));
    assert_eq!(shown["auth"]["users"][0]["password"], "…-123");
    assert_eq!(created.json["spec"]["mode"], "hub");
    // Send the masked spec back with one change: the stored secrets stay.
    let mut changed = shown.clone();
    changed["allowed_cidrs"] = json!(["127.0.0.0/8"]);
    let r = app
        .call(
            axum::http::Method::PUT,
            &format!("/v1/sources/{id}"),
            Some(ADMIN),
            Some(json!({"spec": changed})),
            &[("if-match", "\"1\"")],
        )
        .await
        .expect(200);
    assert_eq!(r.header("etag"), Some("\"2\""));
    let stored = app
        .state
        .store
        .get(hookmesh::store::Kind::Source, &id)
        .await
        .unwrap()
        .unwrap();
    let mut real = hookmesh::api::open_source_spec(&app.state.keys, &stored).unwrap();
    let secrets: Vec<String> = real
        .secrets_mut()
        .into_iter()
        .map(|s| s.0.clone())
        .collect();
    assert_eq!(secrets, [SECRET, "a-long-basic-password-123"]);
    // A stale If-Match is refused and changes nothing.
    let r = app
        .call(
            axum::http::Method::PUT,
            &format!("/v1/sources/{id}"),
            Some(ADMIN),
            Some(json!({"spec": {"name": "swh"}})),
            &[("if-match", "\"1\"")],
        )
        .await
        .expect(412);
    assert!(r.json["detail"].as_str().unwrap().contains("If-Match"));
    // A new secret replaces the old one.
    let mut rotated = shown.clone();
    rotated["verify"]["secrets"] = json!(["whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCE="]);
    let r = app
        .put(
            &format!("/v1/sources/{id}"),
            ADMIN,
            json!({"spec": rotated}),
        )
        .await
        .expect(200);
    assert_eq!(r.json["spec"]["verify"]["secrets"], json!(["…dCE="]));
    app.delete(&format!("/v1/sources/{id}"), ADMIN)
        .await
        .expect(204);
    app.get(&format!("/v1/sources/{id}"), ADMIN)
        .await
        .expect(404);
}

async fn endpoints_get_secrets_and_rotate_with_overlap(app: TestApp) {
    let t = app.tenant("acme").await;
    let reader = app.key(Some(&t), &["endpoints:read"]).await;
    let r = app.post("/v1/endpoints", ADMIN, json!({"tenant_id": t, "url": "ftp://x", "event_types": ["bad type"], "headers": {"webhook-id": "x", "x-split": "a\r\nx-injected: 1"}, "retry_policy": {"type": "schedule", "delays_secs": []}})).await.expect(422);
    assert_eq!(
        r.fields(),
        [
            "url",
            "event_types[0]",
            "headers.webhook-id",
            "headers.x-split",
            "retry_policy.delays_secs"
        ]
    );
    let created = app
        .post("/v1/endpoints", ADMIN, json!({"tenant_id": t, "url": "https://example.com/hooks", "event_types": ["invoice.*"], "headers": {"x-team": "billing"},
            "retry_policy": {"type": "exponential", "initial_secs": 5, "multiplier": 2.0, "max_secs": 3600, "max_attempts": 10, "max_age_secs": 86400}}))
        .await
        .expect(201);
    let id = created.json["id"].as_str().unwrap().to_owned();
    assert!(created.json.get("secret").is_none());
    assert_eq!(created.json["enabled"], true);
    app.get(&format!("/v1/endpoints/{id}/secret"), &reader)
        .await
        .expect(403);
    let secret = app
        .get(&format!("/v1/endpoints/{id}/secret"), ADMIN)
        .await
        .expect(200);
    let first = secret.json["key"].as_str().unwrap().to_owned();
    assert!(first.starts_with("whsec_") && first.len() > 40, "{first}");
    let rotated = app
        .post(
            &format!("/v1/endpoints/{id}/secret/rotate"),
            ADMIN,
            json!({"overlap_secs": 3600}),
        )
        .await
        .expect(200);
    assert_ne!(rotated.json["key"], first.as_str());
    assert_eq!(rotated.json["previous"][0]["key"], first.as_str());
    let given = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCEhIQ==";
    let r = app
        .post(
            &format!("/v1/endpoints/{id}/secret/rotate"),
            ADMIN,
            json!({"key": given, "overlap_secs": 0}),
        )
        .await
        .expect(200);
    assert_eq!(r.json["key"], given);
    assert_eq!(
        r.json["previous"].as_array().unwrap().len(),
        1,
        "the zero-overlap secret is dropped, the earlier one kept"
    );
    app.post(
        &format!("/v1/endpoints/{id}/secret/rotate"),
        ADMIN,
        json!({"overlap_secs": 99999999}),
    )
    .await
    .expect(422);
    let r = app
        .post(
            "/v1/endpoints",
            ADMIN,
            json!({"tenant_id": t, "url": "https://example.com", "secret": "whsec_c2hvcnQ="}),
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["secret"]);
}

async fn event_types_check_their_schemas_and_keep_versions(app: TestApp) {
    let t = app.tenant("acme").await;
    let schema =
        json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}});
    let v1 = app
        .post(
            "/v1/event_types",
            ADMIN,
            json!({"tenant_id": t, "name": "invoice.paid", "schema": schema}),
        )
        .await
        .expect(201);
    assert_eq!(v1.json["version"], 1);
    app.post(
        "/v1/event_types",
        ADMIN,
        json!({"tenant_id": t, "name": "invoice.paid", "version": 2, "schema": schema}),
    )
    .await
    .expect(201);
    let r = app
        .post(
            "/v1/event_types",
            ADMIN,
            json!({"tenant_id": t, "name": "invoice.paid", "schema": schema}),
        )
        .await
        .expect(409);
    assert!(r.json["detail"]
        .as_str()
        .unwrap()
        .contains("already exists"));
    let r = app
        .post(
            "/v1/event_types",
            ADMIN,
            json!({"tenant_id": t, "name": "x", "schema": {"type": "objekt"}}),
        )
        .await
        .expect(422);
    assert!(r.fields()[0].starts_with("schema"), "{:?}", r.fields());
    assert!(r.json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("not valid JSON Schema"));
    app.post(
        "/v1/event_types",
        ADMIN,
        json!({"tenant_id": t, "name": "bad name!"}),
    )
    .await
    .expect(422);
    let id = v1.json["id"].as_str().unwrap();
    let r = app
        .put(
            &format!("/v1/event_types/{id}"),
            ADMIN,
            json!({"name": "invoice.paid", "version": 3}),
        )
        .await
        .expect(422);
    assert_eq!(r.fields(), ["name"]);
    let r = app
        .put(
            &format!("/v1/event_types/{id}"),
            ADMIN,
            json!({"name": "invoice.paid", "description": "Paid invoices"}),
        )
        .await
        .expect(200);
    assert_eq!(r.json["description"], "Paid invoices");
    assert_eq!(
        app.get("/v1/event_types", ADMIN).await.expect(200).json["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

async fn tenants_cannot_be_deleted_while_they_own_resources(app: TestApp) {
    let t = app.tenant("acme").await;
    app.post("/v1/tenants", ADMIN, json!({"name": "acme"}))
        .await
        .expect(409);
    let ep = app
        .post(
            "/v1/endpoints",
            ADMIN,
            json!({"tenant_id": t, "url": "https://example.com"}),
        )
        .await
        .expect(201);
    let r = app
        .delete(&format!("/v1/tenants/{t}"), ADMIN)
        .await
        .expect(409);
    assert!(r.json["detail"].as_str().unwrap().contains("endpoint"));
    app.delete(
        &format!("/v1/endpoints/{}", ep.json["id"].as_str().unwrap()),
        ADMIN,
    )
    .await
    .expect(204);
    app.delete(&format!("/v1/tenants/{t}"), ADMIN)
        .await
        .expect(204);
    app.get(&format!("/v1/tenants/{t}"), ADMIN)
        .await
        .expect(404);
}

/// What the Kubernetes controller creates is changed only by it: REST edits and deletes are
/// refused with the owner named, the manager's own (with its uid) go through, and nobody can
/// take over or change the owner.
async fn managed_resources_change_only_through_their_manager(app: TestApp) {
    let t = app.tenant("acme").await;
    let owner = json!({"manager": "kubernetes", "object": "WebhookSource payments/stripe", "uid": "6f1c-uid"});
    let as_owner = [("hookmesh-manager", "6f1c-uid")];
    let as_other = [("hookmesh-manager", "another-uid")];
    let source = |path: &str| json!({"tenant_id": t, "spec": {"name": "stripe", "match": {"path_prefix": path}}, "managed_by": owner});
    let endpoint = json!({"tenant_id": t, "url": "https://example.com/hook", "managed_by": owner});
    let event_type = json!({"tenant_id": t, "name": "invoice.paid", "managed_by": owner});
    for (collection, body, changed) in [
        ("/v1/sources", source("/a"), source("/b")),
        (
            "/v1/endpoints",
            endpoint.clone(),
            json!({"tenant_id": t, "url": "https://example.com/other", "managed_by": owner}),
        ),
        (
            "/v1/event_types",
            event_type.clone(),
            json!({"tenant_id": t, "name": "invoice.paid", "description": "changed", "managed_by": owner}),
        ),
    ] {
        let created = app.post(collection, ADMIN, body).await.expect(201);
        assert_eq!(created.json["managed_by"], owner, "{collection}");
        let id = created.json["id"].as_str().unwrap().to_owned();
        let path = format!("{collection}/{id}");
        // Through the API alone: refused, naming the owner; nothing changes.
        for headers in [&[][..], &as_other[..]] {
            let r = app
                .call(
                    Method::PUT,
                    &path,
                    Some(ADMIN),
                    Some(changed.clone()),
                    headers,
                )
                .await
                .expect(409);
            assert_eq!(r.json["type"], "https://hookmesh.dev/problems/managed");
            assert!(
                r.json["detail"]
                    .as_str()
                    .unwrap()
                    .contains("WebhookSource payments/stripe"),
                "{}",
                r.json
            );
            app.call(Method::DELETE, &path, Some(ADMIN), None, headers)
                .await
                .expect(409);
        }
        let unchanged = app.get(&path, ADMIN).await.expect(200);
        assert_eq!(unchanged.header("etag"), Some("\"1\""), "{collection}");
        // The owner may change it, and the mark stays even when a change does not repeat it.
        let mut unmarked = changed.clone();
        unmarked.as_object_mut().unwrap().remove("managed_by");
        let r = app
            .call(Method::PUT, &path, Some(ADMIN), Some(unmarked), &as_owner)
            .await
            .expect(200);
        assert_eq!(r.json["managed_by"], owner, "{collection}");
        // Nobody changes the owner, not even the owner.
        let mut moved = changed.clone();
        moved["managed_by"]["uid"] = "another-uid".into();
        app.call(Method::PUT, &path, Some(ADMIN), Some(moved), &as_owner)
            .await
            .expect(409);
        app.call(Method::DELETE, &path, Some(ADMIN), None, &as_owner)
            .await
            .expect(204);
    }
    // The endpoint's secret rotates only through its owner too.
    let ep = app
        .post("/v1/endpoints", ADMIN, endpoint)
        .await
        .expect(201)
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotate = format!("/v1/endpoints/{ep}/secret/rotate");
    app.call(Method::POST, &rotate, Some(ADMIN), Some(json!({})), &[])
        .await
        .expect(409);
    app.call(
        Method::POST,
        &rotate,
        Some(ADMIN),
        Some(json!({})),
        &as_owner,
    )
    .await
    .expect(200);
    // An unmanaged resource cannot be taken over, and a bad mark names its field.
    let free = app
        .post(
            "/v1/event_types",
            ADMIN,
            json!({"tenant_id": t, "name": "free"}),
        )
        .await
        .expect(201)
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .put(
            &format!("/v1/event_types/{free}"),
            ADMIN,
            json!({"tenant_id": t, "name": "free", "managed_by": owner}),
        )
        .await
        .expect(409);
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be taken over"),
        "{}",
        r.json
    );
    let r = app.post("/v1/event_types", ADMIN, json!({"tenant_id": t, "name": "x", "managed_by": {"manager": "kubernetes", "object": "o", "uid": ""}})).await.expect(422);
    assert_eq!(r.fields(), ["managed_by.uid"]);
}
