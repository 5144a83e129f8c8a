//! Test harness: the real router over a real SQLite file or a real PostgreSQL database, driven
//! in-process (`oneshot`, no sockets).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use hookmesh::api::AppState;
use hookmesh::secrets::MasterKeys;
use hookmesh::server;
pub use hookmesh_e2e::PgCluster;
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::PathBuf;
use tower::ServiceExt;

pub const ADMIN: &str = "hm_test_global_admin_key_0123456789abcdef";

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub dir: PathBuf,
    /// The database, for replicas.
    database_url: String,
    _pg: Option<PgCluster>,
}

/// A passing test leaves nothing behind; a failing one keeps its directory (database, keys) to
/// look at.
impl Drop for TestApp {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The field names of a 422 problem.
    pub fn fields(&self) -> Vec<String> {
        self.json["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(self.status.as_u16(), status, "{}", self.json);
        if !self.status.is_success() {
            assert_eq!(
                self.header("content-type"),
                Some("application/problem+json")
            );
        }
        self
    }
}

pub fn master_keys() -> MasterKeys {
    MasterKeys::from_base64(
        &base64::engine::general_purpose::STANDARD.encode([42u8; 32]),
        &[],
    )
    .unwrap()
}

impl TestApp {
    pub async fn sqlite() -> TestApp {
        let dir = std::env::temp_dir().join(hookmesh::ids::new_id("hookmesh-api"));
        let url = server::default_database_url(&dir);
        let store = server::open_store(&url, &dir).await.unwrap();
        // Test receivers listen on loopback, which deliveries refuse unless allowed.
        TestApp::build_with(store, dir, url, None, TestApp::loopback_delivery()).await
    }

    pub async fn postgres() -> TestApp {
        TestApp::postgres_with(TestApp::loopback_delivery()).await
    }

    /// Delivery settings that allow the loopback receivers of tests.
    fn loopback_delivery() -> hookmesh::delivery::DeliverySettings {
        hookmesh::delivery::DeliverySettings {
            allow_destination_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        }
    }

    /// Another control plane on the same database, as a second replica.
    pub async fn replica(&self, delivery: hookmesh::delivery::DeliverySettings) -> TestApp {
        let dir = std::env::temp_dir().join(hookmesh::ids::new_id("hookmesh-api"));
        let store = server::open_store(&self.database_url, &dir).await.unwrap();
        TestApp::build_with(store, dir, self.database_url.clone(), None, delivery).await
    }

    /// A PostgreSQL app with the given delivery settings.
    pub async fn postgres_with(delivery: hookmesh::delivery::DeliverySettings) -> TestApp {
        let (admin_url, cluster) = match std::env::var("HOOKMESH_TEST_POSTGRES_URL") {
            Ok(u) => (u, None),
            Err(_) => {
                let c = PgCluster::start();
                (c.url.clone(), Some(c))
            }
        };
        let db = hookmesh::ids::new_id("t").to_lowercase();
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&admin_url)
            .await
            .expect("connect to PostgreSQL");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {db}").as_str())
            .await
            .unwrap();
        let url = format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);
        let dir = std::env::temp_dir().join(hookmesh::ids::new_id("hookmesh-api"));
        let store = server::open_store(&url, &dir).await.unwrap();
        TestApp::build_with(store, dir, url, cluster, delivery).await
    }

    /// A SQLite app with the given delivery settings.
    pub async fn sqlite_with(delivery: hookmesh::delivery::DeliverySettings) -> TestApp {
        let dir = std::env::temp_dir().join(hookmesh::ids::new_id("hookmesh-api"));
        let url = server::default_database_url(&dir);
        let store = server::open_store(&url, &dir).await.unwrap();
        TestApp::build_with(store, dir, url, None, delivery).await
    }

    /// A SQLite app whose deliveries refuse internal destinations (the production default).
    pub async fn sqlite_strict() -> TestApp {
        let dir = std::env::temp_dir().join(hookmesh::ids::new_id("hookmesh-api"));
        let url = server::default_database_url(&dir);
        let store = server::open_store(&url, &dir).await.unwrap();
        TestApp::build_with(
            store,
            dir,
            url,
            None,
            hookmesh::delivery::DeliverySettings::default(),
        )
        .await
    }

    async fn build_with(
        store: std::sync::Arc<dyn hookmesh::store::Store>,
        dir: PathBuf,
        database_url: String,
        pg: Option<PgCluster>,
        delivery: hookmesh::delivery::DeliverySettings,
    ) -> TestApp {
        let state = server::state_with(
            store,
            master_keys(),
            hookmesh::xds::XdsSettings::default(),
            delivery,
        )
        .await
        .unwrap();
        assert_eq!(
            server::bootstrap_admin(&state, Some(ADMIN)).await.unwrap(),
            None
        );
        // As `serve` does: source changes are published (and recorded as applied) shortly after.
        drop(
            state
                .config
                .spawn_refresher(std::time::Duration::from_secs(2)),
        );
        let router = hookmesh::api::router(state.clone());
        TestApp {
            state,
            router,
            dir,
            database_url,
            _pg: pg,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        Self::answer(self.router.clone(), req).await
    }

    /// A webhook as Envoy forwards it to the ingest: the filter's token and source name, then
    /// `headers`.
    pub async fn ingest(&self, source: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let token = self.state.keys.ingest_token().to_owned();
        let mut all = vec![
            ("x-hookmesh-ingest-token", token.as_str()),
            ("x-hookmesh-source", source),
        ];
        all.extend_from_slice(headers);
        self.ingest_raw(&all, body).await
    }

    /// A JSON webhook to the ingest whose body is what `body` yields, answered once it ends; it
    /// can be held on its way by not ending the body.
    pub fn ingest_streamed(
        &self,
        source: &str,
        body: Body,
    ) -> impl std::future::Future<Output = Resp> + Send + 'static {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/hooks/in")
            .header("x-hookmesh-ingest-token", self.state.keys.ingest_token())
            .header("x-hookmesh-source", source)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        Self::answer(self.state.ingest.service(), req)
    }

    /// A request to the ingest exactly as given.
    pub async fn ingest_raw(&self, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/hooks/in?via=test");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Body::from(body.to_vec())).unwrap();
        Self::answer(self.state.ingest.service(), req).await
    }

    async fn answer<S>(service: S, req: Request<Body>) -> Resp
    where
        S: tower::Service<Request<Body>, Response = axum::response::Response>,
        S::Error: std::fmt::Debug,
    {
        let resp = service.oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            json,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None, &[]).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body), &[])
            .await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(key), Some(body), &[])
            .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.call(Method::DELETE, path, Some(key), None, &[]).await
    }

    pub async fn tenant(&self, name: &str) -> String {
        let r = self
            .post("/v1/tenants", ADMIN, serde_json::json!({"name": name}))
            .await
            .expect(201);
        r.json["id"].as_str().unwrap().to_owned()
    }

    /// A new API key's secret.
    pub async fn key(&self, tenant: Option<&str>, scopes: &[&str]) -> String {
        let r = self
            .post(
                "/v1/api_keys",
                ADMIN,
                serde_json::json!({"tenant_id": tenant, "name": "test", "scopes": scopes}),
            )
            .await
            .expect(201);
        r.json["secret"].as_str().unwrap().to_owned()
    }
}

/// Runs a scenario on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::TestApp::sqlite().await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::TestApp::postgres().await).await
                }
            }
        )*
    };
}
