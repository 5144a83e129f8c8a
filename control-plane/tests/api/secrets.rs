//! Secrets at rest: never in the database file, re-sealed by `rekey`.

use crate::support::{master_keys, TestApp, ADMIN};
use base64::Engine;
use hookmesh::secrets::MasterKeys;
use hookmesh::store::Kind;
use serde_json::json;

const SECRET: &str = "whsec_S2VlcFRoaXNTZWNyZXRPdXRPZlRoZURpc2sh";

#[tokio::test]
async fn no_secret_reaches_the_sqlite_file() {
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    app.post("/v1/sources", ADMIN, json!({"tenant_id": t, "spec": {"name": "s", "verify": {"scheme": "svix", "secrets": [SECRET]}}})).await.expect(201);
    let ep = app.post("/v1/endpoints", ADMIN, json!({"tenant_id": t, "url": "https://example.com", "secret": SECRET.replace("S2Vl", "QUFB")})).await.expect(201);
    let ep_secret = app
        .get(
            &format!("/v1/endpoints/{}/secret", ep.json["id"].as_str().unwrap()),
            ADMIN,
        )
        .await
        .expect(200);
    let ep_secret = ep_secret.json["key"].as_str().unwrap().to_owned();
    // Everything SQLite wrote: the database, its WAL and shared memory.
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&app.dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for needle in [SECRET, ep_secret.as_str(), ADMIN] {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{} in {}", needle, path.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test]
async fn a_first_admin_key_is_generated_once_when_none_is_configured() {
    let dir = std::env::temp_dir().join(hookmesh::ids::new_id("hookmesh-boot"));
    let store = hookmesh::server::open_store(&hookmesh::server::default_database_url(&dir), &dir)
        .await
        .unwrap();
    let state = hookmesh::server::state(store.clone(), master_keys())
        .await
        .unwrap();
    let key = hookmesh::server::bootstrap_admin(&state, None)
        .await
        .unwrap()
        .expect("a generated key");
    assert!(key.starts_with("hm_"));
    assert_eq!(
        hookmesh::server::bootstrap_admin(&state, None)
            .await
            .unwrap(),
        None,
        "shown once only"
    );
    let app = hookmesh::api::router(state);
    let req = axum::http::Request::get("/v1/api_keys")
        .header("authorization", format!("Bearer {key}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn rekey_reseals_under_the_new_master_key() {
    let app = TestApp::sqlite().await;
    let t = app.tenant("acme").await;
    let src = app.post("/v1/sources", ADMIN, json!({"tenant_id": t, "spec": {"name": "s", "verify": {"scheme": "svix", "secrets": [SECRET]}}})).await.expect(201);
    let id = src.json["id"].as_str().unwrap();
    let new_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let old_key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let rotated = hookmesh::server::state(
        app.state.store.clone(),
        MasterKeys::from_base64(&new_key, &[old_key]).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(hookmesh::server::rekey(&rotated).await.unwrap(), 1);
    assert_eq!(
        hookmesh::server::rekey(&rotated).await.unwrap(),
        0,
        "nothing stale left"
    );
    // The new key alone opens it now; the old one no longer does.
    let only_new = hookmesh::server::state(
        app.state.store.clone(),
        MasterKeys::from_base64(&new_key, &[]).unwrap(),
    )
    .await
    .unwrap();
    let r = app
        .state
        .store
        .get(Kind::Source, id)
        .await
        .unwrap()
        .unwrap();
    let mut spec = hookmesh::api::open_source_spec(&only_new.keys, &r).unwrap();
    assert_eq!(spec.secrets_mut()[0].0, SECRET);
    assert!(hookmesh::api::open_source_spec(&master_keys(), &r).is_err());
    // A control plane holding only the retired key refuses to start, naming why.
    let err = hookmesh::server::state(app.state.store.clone(), master_keys())
        .await
        .err()
        .unwrap();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(chain.contains("opening the secrets of src_"), "{chain}");
}

/// The in-process controller's key is derived from the master key: the same in every replica,
/// stored only as a hash, an admin key, created once however often the server starts, and
/// another one after the master key changes.
#[tokio::test]
async fn the_in_process_controllers_key_comes_from_the_master_key() {
    let app = TestApp::sqlite().await;
    let key = hookmesh::server::bootstrap_controller_key(&app.state)
        .await
        .unwrap();
    assert_eq!(key, app.state.keys.controller_key());
    assert_eq!(
        hookmesh::server::bootstrap_controller_key(&app.state)
            .await
            .unwrap(),
        key
    );
    let keys = app.get("/v1/api_keys", ADMIN).await.expect(200);
    let named: Vec<_> = keys.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "kubernetes controller (in-process)")
        .collect();
    assert_eq!(named.len(), 1, "{}", keys.json);
    // It administers: it can create a tenant.
    app.post("/v1/tenants", &key, json!({"name": "from-kubernetes"}))
        .await
        .expect(201);
    let other = MasterKeys::from_base64(
        &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        &[],
    )
    .unwrap();
    assert_ne!(other.controller_key(), key);
}
