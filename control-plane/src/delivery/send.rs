//! The HTTP side of an attempt: a pooled client (HTTP/1.1 keep-alive and HTTP/2), no redirects,
//! a per-endpoint timeout, and SSRF protection checked on the addresses actually connected to:
//! the client's resolver drops loopback, private, link-local, CGNAT, ULA and metadata addresses
//! (unless an operator allowed their CIDRs), so DNS rebinding cannot reach them either.

use hookmesh_filter::Cidr;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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

struct GuardedResolver(Arc<DestinationGuard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| guard.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "refused destination: {host} resolves only to internal addresses"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What one attempt got.
#[derive(Debug, Default)]
pub struct Outcome {
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body, at most [`BODY_KEPT`].
    pub body: String,
    /// `Retry-After`, if the response had one.
    pub retry_after: Option<String>,
    /// (class, message) when no usable response came.
    pub error: Option<(&'static str, String)>,
    /// Time taken.
    pub duration: Duration,
}

/// The HTTP client.
pub struct Sender {
    client: reqwest::Client,
    guard: Arc<DestinationGuard>,
}

impl Sender {
    /// Builds the pooled client.
    ///
    /// # Errors
    /// When the TLS stack cannot initialise.
    pub fn new(guard: DestinationGuard, connections: usize) -> Result<Sender, reqwest::Error> {
        let guard = Arc::new(guard);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            // As many idle connections as attempts in flight: fewer makes them churn.
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("hookmesh/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender { client, guard })
    }

    /// Sends one request: `method` to `url` plus `query` parameters.
    pub async fn send(
        &self,
        method: &str,
        url: &reqwest::Url,
        query: &[(&str, &str)],
        headers: &[(String, String)],
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Outcome {
        let start = Instant::now();
        let mut out = Outcome::default();
        let mut parsed = url.clone();
        if !query.is_empty() {
            parsed.query_pairs_mut().extend_pairs(query);
        }
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            out.error = Some(("request", format!("bad method {method}")));
            return out;
        };
        // IP literals never reach the resolver.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.guard.permits(*ip)) {
            out.error = Some((
                "refused_destination",
                format!("refused destination: {ip} is an internal address"),
            ));
            return out;
        }
        let mut req = self
            .client
            .request(method, parsed)
            .timeout(timeout)
            .body(body);
        for (n, v) in headers {
            req = req.header(n.as_str(), v.as_str());
        }
        match req.send().await {
            Ok(mut resp) => {
                out.status = Some(resp.status().as_u16());
                out.headers = resp
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                out.retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut kept = Vec::new();
                while kept.len() < BODY_KEPT {
                    match resp.chunk().await {
                        Ok(Some(c)) => {
                            kept.extend_from_slice(&c[..c.len().min(BODY_KEPT - kept.len())])
                        }
                        _ => break,
                    }
                }
                out.body = String::from_utf8_lossy(&kept).into_owned();
            }
            Err(e) => {
                let text = error_chain(&e);
                let class = if text.contains("refused destination") {
                    "refused_destination"
                } else if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                out.error = Some((class, text));
            }
        }
        out.duration = start.elapsed();
        out
    }
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
