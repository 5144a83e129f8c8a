//! The HTTP side of an attempt: hyper's pooled client (HTTP/1.1 keep-alive, HTTP/2 over TLS),
//! no redirects, a per-endpoint timeout, and SSRF protection checked on the addresses actually
//! connected to: the client's resolver drops loopback, private, link-local, CGNAT, ULA and
//! metadata addresses (unless an operator allowed their CIDRs), so DNS rebinding cannot reach
//! them either. Connections are always direct: an HTTP proxy would resolve the destination
//! itself, outside that check.

use axum::http::header::USER_AGENT;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use hookmesh_filter::Cidr;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{dns::Name, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Responses bodies are kept up to this size in attempt records.
pub const BODY_KEPT: usize = 8 * 1024;

/// Which destination addresses may be connected to.
#[derive(Debug, Default)]
pub struct DestinationGuard {
    allow: Vec<Cidr>,
}

impl DestinationGuard {
    /// Refuses internal addresses except those in `allow`.
    pub fn new(allow: Vec<Cidr>) -> DestinationGuard {
        DestinationGuard { allow }
    }

    /// Whether `ip` may be connected to.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip)) || !internal(ip)
    }
}

fn internal(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 to anything
        }
    }
}

/// Resolves names for the client, keeping only the addresses the guard permits.
#[derive(Clone)]
struct GuardedResolver(Arc<DestinationGuard>);

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str();
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await?
                .filter(|a| guard.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("refused destination: {host} resolves only to internal addresses"),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// An endpoint's URL, parsed once for delivery.
#[derive(Debug, Clone)]
pub struct Target {
    url: url::Url,
    /// The same URL as the request carries it, when it has no per-attempt query.
    uri: Uri,
    /// The host, when it is an IP address: such hosts never reach the resolver.
    literal: Option<IpAddr>,
}

impl Target {
    /// `None` when `url` is not an absolute URL a request can carry.
    pub fn parse(url: &str) -> Option<Target> {
        let url = url::Url::parse(url).ok()?;
        let uri = Uri::try_from(url.as_str()).ok()?;
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        Some(Target { url, uri, literal })
    }

    /// The request's URI, with `query` appended to the endpoint's own.
    fn uri(&self, query: &[(&str, &str)]) -> Result<Uri, String> {
        if query.is_empty() {
            return Ok(self.uri.clone());
        }
        let mut url = self.url.clone();
        url.query_pairs_mut().extend_pairs(query);
        Uri::try_from(String::from(url)).map_err(|e| format!("bad URL with its query: {e}"))
    }
}

/// What one attempt got.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// Response headers, as a JSON object.
    pub headers: String,
    /// Response body, at most [`BODY_KEPT`].
    pub body: String,
    /// `Retry-After`, if the response had one.
    pub retry_after: Option<String>,
    /// (class, message) when no usable response came.
    pub error: Option<(&'static str, String)>,
    /// Time taken.
    pub duration: Duration,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The HTTP client: hyper's pooled client used directly. A general-purpose client (reqwest)
/// formatted and parsed every request's URL again in its redirect and response layers, even
/// with redirects off; here the URL is parsed once per endpoint.
pub struct Sender {
    client: Client<Connector, Full<Bytes>>,
    guard: Arc<DestinationGuard>,
    user_agent: HeaderValue,
}

impl Sender {
    /// Builds the pooled client: HTTP/1.1, and HTTP/2 where TLS negotiates it. HTTPS
    /// destinations are trusted by the Mozilla root certificates (webpki-roots) and `extra_roots`.
    ///
    /// # Errors
    /// When the TLS stack cannot initialise or an extra root is not a usable CA certificate.
    pub fn new(
        guard: DestinationGuard,
        connections: usize,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Sender, rustls::Error> {
        let guard = Arc::new(guard);
        let https = https_connector(
            HttpConnector::new_with_resolver(GuardedResolver(guard.clone())),
            extra_roots,
        )?;
        let client = Client::builder(TokioExecutor::new())
            // As many idle connections as attempts in flight: fewer makes them churn.
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Sender {
            client,
            guard,
            user_agent: HeaderValue::from_static(concat!("hookmesh/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Sends one request: `method` to `target` plus `query` parameters. `timeout` bounds the
    /// whole exchange, the response body included; what came before it is kept.
    pub async fn send(
        &self,
        method: &str,
        target: &Target,
        query: &[(&str, &str)],
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Outcome {
        let start = Instant::now();
        let mut out = Outcome::default();
        if let Some(ip) = target.literal.filter(|ip| !self.guard.permits(*ip)) {
            out.error = Some((
                "refused_destination",
                format!("refused destination: {ip} is an internal address"),
            ));
            return out;
        }
        let (method, uri) = match (Method::from_bytes(method.as_bytes()), target.uri(query)) {
            (Ok(method), Ok(uri)) => (method, uri),
            (Err(_), _) => {
                out.error = Some(("request", format!("bad method {method}")));
                return out;
            }
            (_, Err(message)) => {
                out.error = Some(("request", message));
                return out;
            }
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        // The endpoint's own User-Agent, if it has one, wins.
        request
            .headers_mut()
            .entry(USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Ok(Ok(response)) => {
                let (head, mut body) = response.into_parts();
                out.status = Some(head.status.as_u16());
                out.headers = super::headers::to_json(
                    head.headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v.as_bytes()))),
                    false,
                );
                out.retry_after = head
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut kept = Vec::new();
                while kept.len() < BODY_KEPT {
                    match tokio::time::timeout_at(deadline, body.frame()).await {
                        Ok(Some(Ok(frame))) => {
                            if let Some(c) = frame.data_ref() {
                                kept.extend_from_slice(&c[..c.len().min(BODY_KEPT - kept.len())]);
                            }
                        }
                        _ => break,
                    }
                }
                out.body = String::from_utf8_lossy(&kept).into_owned();
            }
            Ok(Err(e)) => {
                let text = error_chain(&e);
                let class = if text.contains("refused destination") {
                    "refused_destination"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                out.error = Some((class, text));
            }
            Err(_) => {
                out.error = Some((
                    "timeout",
                    format!("no response within {} ms", timeout.as_millis()),
                ));
            }
        }
        out.duration = start.elapsed();
        out
    }
}

/// HTTP and HTTPS over `http`: rustls (ring), the Mozilla roots plus `extra_roots`, HTTP/2 where
/// ALPN offers it.
///
/// # Errors
/// When the TLS stack cannot initialise or an extra root is not a usable CA certificate.
pub(crate) fn https_connector<R>(
    mut http: HttpConnector<R>,
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector<R>>, rustls::Error> {
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let g = DestinationGuard::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!g.permits(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "100.128.0.1"] {
            assert!(g.permits(ip.parse().unwrap()), "{ip} should be allowed");
        }
        let g = DestinationGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(g.permits("127.0.0.1".parse().unwrap()));
        assert!(!g.permits("10.0.0.1".parse().unwrap()));
    }
}
