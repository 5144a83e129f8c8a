//! How the controller talks to the control plane: its REST API, so a resource from Kubernetes
//! passes exactly the validation, auditing and ownership checks a REST call does. In
//! `hookmesh serve --kubernetes-controller` the API router is called in-process (no socket);
//! `hookmesh controller` calls a remote control plane over HTTP.

use crate::api::error::Problem;
use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower::ServiceExt;

/// A failed call: refused (4xx, the spec must change) or not answered (try again).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control plane refused the request.
    #[error("{status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem's `type` slug (`validation`, `managed`, `conflict` …).
        kind: String,
        /// Detail and field errors.
        message: String,
    },
    /// No usable answer: connection failure or a server error.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
}

enum Transport {
    InProcess(axum::Router),
    Remote {
        base: url::Url,
        http: Box<Client<HttpsConnector<HttpConnector>, Body>>,
    },
}

/// A remote call's whole exchange, body included.
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The REST client.
pub struct ControlPlaneClient {
    transport: Transport,
    key: String,
}

/// An answer the caller uses: status, `ETag` version and JSON body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status (2xx, or 404 where the caller asked to see it).
    pub status: u16,
    /// The body.
    pub json: Value,
}

impl ControlPlaneClient {
    /// Calls the API router of this process, authenticated with `key`.
    pub fn in_process(router: axum::Router, key: String) -> ControlPlaneClient {
        ControlPlaneClient {
            transport: Transport::InProcess(router),
            key,
        }
    }

    /// Calls the control plane at `base` (`http://hookmesh.hookmesh-system:8080`; HTTPS is
    /// trusted by the Mozilla roots).
    ///
    /// # Errors
    /// When the TLS stack cannot initialise.
    pub fn remote(base: url::Url, key: String) -> Result<ControlPlaneClient, rustls::Error> {
        let https = crate::delivery::send::https_connector(HttpConnector::new(), Vec::new())?;
        let http = Box::new(Client::builder(TokioExecutor::new()).build(https));
        Ok(ControlPlaneClient {
            transport: Transport::Remote { base, http },
            key,
        })
    }

    /// One request. 2xx and 404 are answers; other statuses are errors.
    ///
    /// # Errors
    /// [`ClientError::Refused`] for other 4xx, [`ClientError::Unavailable`] otherwise.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let unavailable = |e: &dyn std::fmt::Display| ClientError::Unavailable(e.to_string());
        let uri = match &self.transport {
            Transport::InProcess(_) => path.to_owned(),
            Transport::Remote { base, .. } => base
                .join(path)
                .map_err(|e| ClientError::Unavailable(format!("bad path {path}: {e}")))?
                .into(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.key));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .map_err(|e| unavailable(&e))?;
        let (status, bytes) = match &self.transport {
            Transport::InProcess(router) => {
                let resp = router
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| unavailable(&e))?;
                read(resp).await?
            }
            Transport::Remote { http, .. } => {
                let exchange =
                    async { read(http.request(req).await.map_err(|e| unavailable(&e))?).await };
                tokio::time::timeout(REMOTE_TIMEOUT, exchange)
                    .await
                    .map_err(|_| {
                        ClientError::Unavailable(format!(
                            "no answer within {} s",
                            REMOTE_TIMEOUT.as_secs()
                        ))
                    })??
            }
        };
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match status {
            200..=299 | 404 => Ok(Answer { status, json }),
            400..=499 => Err(refusal(status, &json)),
            _ => Err(ClientError::Unavailable(format!(
                "{status}: {}",
                json["detail"].as_str().unwrap_or("no detail")
            ))),
        }
    }
}

/// A response's status and whole body.
async fn read<B>(resp: axum::http::Response<B>) -> Result<(u16, axum::body::Bytes), ClientError>
where
    B: axum::body::HttpBody,
    B::Error: std::fmt::Display,
{
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Unavailable(e.to_string()))?;
    Ok((status, body.to_bytes()))
}

impl ControlPlaneClient {
    /// The first item of a paged collection (`/v1/tenants`) that `matches`, reading page after
    /// page.
    ///
    /// # Errors
    /// As [`ControlPlaneClient::call`].
    pub async fn find(
        &self,
        collection: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, ClientError> {
        let mut path = format!("{collection}?limit=1000");
        loop {
            let page = self.call(Method::GET, &path, None, &[]).await?.json;
            if let Some(found) = page["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|item| matches(item))
            {
                return Ok(Some(found.clone()));
            }
            match page["next"].as_str() {
                Some(next) => path = format!("{collection}?limit=1000&after={next}"),
                None => return Ok(None),
            }
        }
    }
}

fn refusal(status: u16, json: &Value) -> ClientError {
    let problem: Option<Problem> = serde_json::from_value(json.clone()).ok();
    let (kind, mut message) = match &problem {
        Some(p) => (
            p.kind.rsplit('/').next().unwrap_or_default().to_owned(),
            p.detail.clone().unwrap_or_else(|| p.title.clone()),
        ),
        None => (String::new(), format!("HTTP {status}")),
    };
    for e in problem.iter().flat_map(|p| &p.errors) {
        message.push_str(&format!("; {}: {}", e.field, e.message));
    }
    ClientError::Refused {
        status,
        kind,
        message,
    }
}
