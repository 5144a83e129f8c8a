//! The decision: (request view, compiled config, now, limiter state) → verdict.
//!
//! It runs in two phases because Envoy delivers headers before the body: everything that needs
//! only headers (matching, method, TLS, address, declared size, rate limit, auth) is decided in
//! [`decide_head`], so abusive requests are refused before their body is buffered; signatures
//! are checked in [`decide_body`] once the whole body is there.

use crate::allow::client_address;
use crate::compile::{CompiledConfig, CompiledSource};
use crate::config::{DefaultAction, RateLimitKey};
use crate::headers::Headers;
use crate::ratelimit::RateLimitStore;
use crate::verify::SignedRequest;
use std::net::IpAddr;

/// Prefix of every rate-limit key: the keys live in Envoy's process-wide shared data, next to
/// whatever other filters store there.
pub const RATE_KEY_PREFIX: &str = "hookmesh.rl/";

/// What the host knows about a request before its body.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// All request headers, including the HTTP/2-style pseudo-headers `:method`, `:path`,
    /// `:authority` and `:scheme` that Envoy provides for every protocol.
    pub headers: &'a Headers,
    /// The TCP peer (Envoy's downstream address).
    pub peer: Option<IpAddr>,
    /// Whether the downstream connection is TLS.
    pub tls: bool,
}

impl RequestHead<'_> {
    fn method(&self) -> &str {
        self.headers.first(":method").unwrap_or("")
    }

    fn path(&self) -> &str {
        self.headers.first(":path").unwrap_or("/")
    }

    fn host(&self) -> &str {
        let authority = self.headers.first(":authority").unwrap_or("");
        match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.split(':').next().unwrap_or(""),
        }
    }
}

/// Per-source outcomes, counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed every check.
    Accepted,
    /// Bad, missing or expired signature.
    RejectedSignature,
    /// Bad or missing credentials.
    RejectedAuth,
    /// Client address not allowed.
    RejectedAddress,
    /// Plain HTTP to an HTTPS-only source.
    RejectedHttps,
    /// Method not allowed.
    RejectedMethod,
    /// Body too large.
    RejectedBodySize,
    /// Rate limit exceeded.
    RejectedRateLimit,
}

impl Outcome {
    /// Every outcome, for defining metrics up front.
    pub const ALL: [Outcome; 8] = [
        Outcome::Accepted,
        Outcome::RejectedSignature,
        Outcome::RejectedAuth,
        Outcome::RejectedAddress,
        Outcome::RejectedHttps,
        Outcome::RejectedMethod,
        Outcome::RejectedBodySize,
        Outcome::RejectedRateLimit,
    ];

    /// Fixed snake_case metric name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::RejectedSignature => "rejected_signature",
            Outcome::RejectedAuth => "rejected_auth",
            Outcome::RejectedAddress => "rejected_address",
            Outcome::RejectedHttps => "rejected_https",
            Outcome::RejectedMethod => "rejected_method",
            Outcome::RejectedBodySize => "rejected_body_size",
            Outcome::RejectedRateLimit => "rejected_rate_limit",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refusal, answered locally by the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// Short snake_case error code.
    pub error: &'static str,
    /// Precise reason, never containing a secret.
    pub reason: String,
    /// `retry-after` seconds, for 429.
    pub retry_after: Option<u64>,
    /// The source and outcome to count, when a source matched.
    pub counted: Option<(usize, Outcome)>,
}

impl Rejection {
    fn new(status: u16, error: &'static str, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            error,
            reason: reason.into(),
            retry_after: None,
            counted: None,
        }
    }

    fn counted(mut self, source: usize, outcome: Outcome) -> Rejection {
        self.counted = Some((source, outcome));
        self
    }

    /// The reply body: `{"error": ..., "reason": ...}`.
    pub fn body_json(&self) -> String {
        serde_json::json!({"error": self.error, "reason": self.reason}).to_string()
    }

    /// The answer when the filter has no usable configuration: fail closed.
    pub fn unavailable() -> Rejection {
        Rejection::new(
            503,
            "unavailable",
            "webhook filter has no valid configuration",
        )
    }
}

/// The verdict after the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// No source matched and the default action is `pass`.
    Pass,
    /// Accepted without reading the body (the source verifies no signature).
    Accept(usize),
    /// Matched source needs the complete body to verify the signature.
    ReadBody(usize),
    /// Refused.
    Reject(Rejection),
}

/// Decides what it can from the headers. `now_ns` is unix time in nanoseconds.
pub fn decide_head(
    cfg: &CompiledConfig,
    head: &RequestHead<'_>,
    now_ns: u64,
    limiter: &mut dyn RateLimitStore,
) -> HeadVerdict {
    let path = head.path();
    let path_only = path.split('?').next().unwrap_or(path);
    let host = head.host();
    let Some(i) = cfg.sources.iter().position(|s| s.matches(host, path_only)) else {
        return match cfg.default_action {
            DefaultAction::Pass => HeadVerdict::Pass,
            DefaultAction::Reject => HeadVerdict::Reject(Rejection::new(
                404,
                "not_found",
                "no webhook source matches this host and path",
            )),
        };
    };
    match check_head(cfg, &cfg.sources[i], head, now_ns, limiter) {
        Err((outcome, rejection)) => HeadVerdict::Reject(rejection.counted(i, outcome)),
        Ok(()) if cfg.sources[i].verifier.is_some() => HeadVerdict::ReadBody(i),
        Ok(()) => HeadVerdict::Accept(i),
    }
}

fn check_head(
    cfg: &CompiledConfig,
    src: &CompiledSource,
    head: &RequestHead<'_>,
    now_ns: u64,
    limiter: &mut dyn RateLimitStore,
) -> Result<(), (Outcome, Rejection)> {
    let method = head.method();
    if !src.methods.is_empty() && !src.methods.iter().any(|m| m == method) {
        return Err((
            Outcome::RejectedMethod,
            Rejection::new(
                405,
                "method_not_allowed",
                format!(
                    "method {method} is not allowed; allowed: {}",
                    src.methods.join(", ")
                ),
            ),
        ));
    }
    if src.https_only && !is_https(cfg, head) {
        return Err((
            Outcome::RejectedHttps,
            Rejection::new(403, "https_required", "this source accepts HTTPS only"),
        ));
    }
    let needs_client =
        src.allow.is_restricted() || matches!(src.rate_limit, Some((_, RateLimitKey::ClientIp)));
    let client = if needs_client {
        client_address(
            head.peer,
            head.headers.all("x-forwarded-for"),
            cfg.trusted_hops,
        )
    } else {
        None
    };
    if !src.allow.allows(client) {
        let reason = match client {
            Some(ip) => format!("client address {ip} is not in the source's allowed networks"),
            None => {
                "client address is unknown, and this source allows only listed networks".to_owned()
            }
        };
        return Err((
            Outcome::RejectedAddress,
            Rejection::new(403, "address_not_allowed", reason),
        ));
    }
    if let Some(len) = head
        .headers
        .first("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if let Some(r) = body_too_large(src, len) {
            return Err((Outcome::RejectedBodySize, r));
        }
    }
    if let Some((bucket, key)) = &src.rate_limit {
        let k = match key {
            RateLimitKey::ClientIp => match client {
                Some(ip) => format!("{RATE_KEY_PREFIX}{}|ip|{ip}", src.name),
                None => format!("{RATE_KEY_PREFIX}{}|ip|unknown", src.name),
            },
            RateLimitKey::Header(h) => format!(
                "{RATE_KEY_PREFIX}{}|h|{}",
                src.name,
                head.headers.first(h).unwrap_or("")
            ),
        };
        if let Err(secs) = limiter.take(&k, bucket, now_ns) {
            let mut r = Rejection::new(
                429,
                "rate_limited",
                format!("rate limit exceeded; retry in {secs}s"),
            );
            r.retry_after = Some(secs);
            return Err((Outcome::RejectedRateLimit, r));
        }
    }
    if let Some(auth) = &src.auth {
        auth.check(head.headers, unix_secs(now_ns)).map_err(|e| {
            (
                Outcome::RejectedAuth,
                Rejection::new(401, e.code(), e.to_string()),
            )
        })?;
    }
    Ok(())
}

fn is_https(cfg: &CompiledConfig, head: &RequestHead<'_>) -> bool {
    // Behind trusted TLS-terminating proxies the transport Envoy sees is theirs; their
    // `x-forwarded-proto` is the client's. Without trusted hops that header is client-written.
    head.tls
        || (cfg.trusted_hops > 0
            && head
                .headers
                .unique("x-forwarded-proto")
                .ok()
                .flatten()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

fn body_too_large(src: &CompiledSource, len: u64) -> Option<Rejection> {
    (len > src.max_body).then(|| {
        Rejection::new(
            413,
            "payload_too_large",
            format!("body exceeds the limit of {} bytes", src.max_body),
        )
    })
}

/// Checks a body size seen while streaming against the matched source's limit.
pub fn check_body_size(cfg: &CompiledConfig, source: usize, size: u64) -> Option<Rejection> {
    let src = cfg.sources.get(source)?;
    body_too_large(src, size).map(|r| r.counted(source, Outcome::RejectedBodySize))
}

/// Verifies the signature over the complete body.
///
/// # Errors
/// A 401 (bad signature) or 413 (body too large) [`Rejection`].
pub fn decide_body(
    cfg: &CompiledConfig,
    source: usize,
    head: &RequestHead<'_>,
    body: &[u8],
    now_ns: u64,
) -> Result<(), Rejection> {
    let Some(src) = cfg.sources.get(source) else {
        return Err(Rejection::unavailable());
    };
    if let Some(r) = check_body_size(cfg, source, body.len() as u64) {
        return Err(r);
    }
    let Some(verifier) = &src.verifier else {
        return Ok(());
    };
    let origin = match (
        head.headers.first(":scheme"),
        head.headers.first(":authority"),
    ) {
        (Some(s), Some(a)) => Some(format!("{s}://{a}")),
        _ => None,
    };
    let req = SignedRequest {
        headers: head.headers,
        body,
        method: head.method(),
        origin: origin.as_deref(),
        path: head.path(),
    };
    verifier.verify(&req, unix_secs(now_ns)).map_err(|e| {
        Rejection::new(401, "invalid_signature", e.to_string())
            .counted(source, Outcome::RejectedSignature)
    })
}

impl CompiledConfig {
    /// Name of the source at `index` (as returned in verdicts).
    pub fn source_name(&self, index: usize) -> &str {
        self.sources.get(index).map_or("", |s| s.name.as_str())
    }

    /// The `x-hookmesh-verified` value for the source at `index`.
    pub fn verified_label(&self, index: usize) -> &str {
        self.sources
            .get(index)
            .map_or("none", |s| s.verified_label.as_str())
    }

    /// Whether the source at `index` is a hub source (its requests are marked for the ingest
    /// route).
    pub fn is_hub(&self, index: usize) -> bool {
        self.sources
            .get(index)
            .is_some_and(|s| s.mode == crate::config::SourceMode::Hub)
    }

    /// The token sent with hub requests to the control plane's ingest.
    pub fn ingest_token(&self) -> Option<&str> {
        self.ingest_token.as_deref()
    }

    /// Number of sources.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether there are no sources.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

fn unix_secs(now_ns: u64) -> i64 {
    (now_ns / 1_000_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;
    use crate::ratelimit::LocalRateLimitStore;
    use crate::verify::{sign, SignInput};

    const NOW: u64 = 1_700_000_000 * 1_000_000_000;
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn config() -> CompiledConfig {
        let json = serde_json::json!({
            "default_action": "reject",
            "network": {"trusted_hops": 1},
            "sources": [
                {"name": "any", "match": {"path_prefix": "/hooks"}, "limits": {"methods": []}},
                {"name": "swh", "match": {"path_prefix": "/hooks/swh"},
                 "verify": {"scheme": "standard_webhooks", "secrets": [SECRET]},
                 "allowed_cidrs": ["203.0.113.0/24", "2001:db8::/32"],
                 "rate_limit": {"rate_per_sec": 1.0, "burst": 2},
                 "limits": {"max_body_bytes": 64}},
                {"name": "swh-host", "match": {"host": "*.example.com", "path_prefix": "/hooks/swh"},
                 "limits": {"https_only": true}},
                {"name": "keyed", "match": {"path_prefix": "/hooks/keyed"},
                 "auth": {"type": "api_key", "keys": ["k-0123456789abcdef"]},
                 "rate_limit": {"rate_per_sec": 1.0, "burst": 1, "key": {"header": "X-Tenant"}}}
            ]
        });
        FilterConfig::from_json(json.to_string().as_bytes())
            .unwrap()
            .compile()
            .unwrap()
    }

    fn headers(path: &str, host: &str, extra: &[(&str, &str)]) -> Headers {
        let mut v = vec![
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), path.to_owned()),
            (":authority".to_owned(), host.to_owned()),
            (":scheme".to_owned(), "http".to_owned()),
        ];
        v.extend(
            extra
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned())),
        );
        Headers::new(v)
    }

    fn head(h: &Headers) -> RequestHead<'_> {
        RequestHead {
            headers: h,
            peer: Some("10.0.0.1".parse().unwrap()),
            tls: false,
        }
    }

    fn verdict(cfg: &CompiledConfig, h: &Headers, store: &mut LocalRateLimitStore) -> HeadVerdict {
        decide_head(cfg, &head(h), NOW, store)
    }

    fn status(v: HeadVerdict) -> u16 {
        match v {
            HeadVerdict::Reject(r) => r.status,
            _ => 200,
        }
    }

    #[test]
    fn matching_prefers_longest_prefix_then_host() {
        let cfg = config();
        let mut s = LocalRateLimitStore::default();
        let xff = [("x-forwarded-for", "203.0.113.7, 10.0.0.1")];
        assert_eq!(
            verdict(&cfg, &headers("/hooks/other", "a", &[]), &mut s),
            HeadVerdict::Accept(cfg.sources.iter().position(|x| x.name == "any").unwrap())
        );
        let HeadVerdict::ReadBody(i) =
            verdict(&cfg, &headers("/hooks/swh?x=1", "b.org:8080", &xff), &mut s)
        else {
            panic!()
        };
        assert_eq!(cfg.source_name(i), "swh");
        // The host-specific twin wins on equal prefixes, and refuses plain HTTP.
        let v = verdict(&cfg, &headers("/hooks/swh", "a.example.com", &xff), &mut s);
        assert!(matches!(
            v,
            HeadVerdict::Reject(Rejection {
                status: 403,
                error: "https_required",
                ..
            })
        ));
        assert_eq!(
            status(verdict(&cfg, &headers("/nothing", "a", &[]), &mut s)),
            404
        );
    }

    #[test]
    fn head_checks_in_order() {
        let cfg = config();
        let mut s = LocalRateLimitStore::default();
        let mut h = headers("/hooks/swh", "x", &[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(status(verdict(&cfg, &h, &mut s)), 403);
        h = headers(
            "/hooks/swh",
            "x",
            &[("x-forwarded-for", "203.0.113.1"), ("content-length", "65")],
        );
        assert_eq!(status(verdict(&cfg, &h, &mut s)), 413);
        let mut get = headers("/hooks/swh", "x", &[]);
        get = Headers::new(
            get.iter()
                .map(|(a, b)| {
                    (
                        a.to_owned(),
                        if a == ":method" {
                            "GET".into()
                        } else {
                            b.to_owned()
                        },
                    )
                })
                .collect(),
        );
        let HeadVerdict::Reject(r) = verdict(&cfg, &get, &mut s) else {
            panic!()
        };
        assert_eq!(
            (r.status, r.reason.as_str()),
            (405, "method GET is not allowed; allowed: POST")
        );
        // Burst of 2, then 429 with retry-after.
        let h = headers("/hooks/swh", "x", &[("x-forwarded-for", "2001:db8::5")]);
        assert!(matches!(
            verdict(&cfg, &h, &mut s),
            HeadVerdict::ReadBody(_)
        ));
        assert!(matches!(
            verdict(&cfg, &h, &mut s),
            HeadVerdict::ReadBody(_)
        ));
        let HeadVerdict::Reject(r) = verdict(&cfg, &h, &mut s) else {
            panic!()
        };
        assert_eq!((r.status, r.retry_after), (429, Some(1)));
        assert_eq!(r.counted.map(|c| c.1), Some(Outcome::RejectedRateLimit));
    }

    #[test]
    fn header_keyed_rate_limit_and_auth() {
        let cfg = config();
        let mut s = LocalRateLimitStore::default();
        let ok = headers(
            "/hooks/keyed",
            "x",
            &[("x-api-key", "k-0123456789abcdef"), ("x-tenant", "a")],
        );
        assert!(matches!(verdict(&cfg, &ok, &mut s), HeadVerdict::Accept(_)));
        assert_eq!(status(verdict(&cfg, &ok, &mut s)), 429);
        let other = headers(
            "/hooks/keyed",
            "x",
            &[("x-api-key", "wrong-key-0123456789"), ("x-tenant", "b")],
        );
        let HeadVerdict::Reject(r) = verdict(&cfg, &other, &mut s) else {
            panic!()
        };
        assert_eq!((r.status, r.error), (401, "invalid_credentials"));
        assert!(!r.body_json().contains("wrong-key"));
    }

    #[test]
    fn body_phase_verifies_and_limits() {
        let cfg = config();
        let i = cfg.sources.iter().position(|x| x.name == "swh").unwrap();
        let body = br#"{"a":1}"#;
        let input = SignInput {
            body,
            id: "msg_1",
            timestamp: 1_700_000_000,
            url: None,
            method: "POST",
        };
        let mut pairs: Vec<(String, String)> =
            sign(SchemeName::StandardWebhooks, SECRET, None, &input).unwrap();
        pairs.push((":path".into(), "/hooks/swh".into()));
        let h = Headers::new(pairs);
        decide_body(&cfg, i, &head(&h), body, NOW).unwrap();
        let r = decide_body(&cfg, i, &head(&h), br#"{"a":2}"#, NOW).unwrap_err();
        assert_eq!((r.status, r.error), (401, "invalid_signature"));
        assert_eq!(r.reason, "no configured secret matches the signature");
        let r = decide_body(&cfg, i, &head(&h), body, NOW + 301 * 1_000_000_000).unwrap_err();
        assert!(r.reason.starts_with("timestamp too old"), "{}", r.reason);
        assert_eq!(
            decide_body(&cfg, i, &head(&h), &[b'x'; 65], NOW)
                .unwrap_err()
                .status,
            413
        );
        assert_eq!(check_body_size(&cfg, i, 64), None);
    }

    #[test]
    fn config_errors_name_fields() {
        let bad = |v: serde_json::Value| {
            FilterConfig::from_json(v.to_string().as_bytes())
                .and_then(|c| c.compile())
                .unwrap_err()
        };
        let e = bad(serde_json::json!({"sources": [{"name": "a"}, {"name": "a"}]}));
        assert_eq!(e.field, "sources[1].name");
        let e =
            bad(serde_json::json!({"sources": [{"name": "a", "allowed_cidrs": ["10.0.0.1/8"]}]}));
        assert_eq!(e.field, "sources[0].allowed_cidrs[0]");
        let e = bad(
            serde_json::json!({"sources": [{"name": "a", "verify": {"scheme": "stripe", "secrets": []}}]}),
        );
        assert_eq!(e.field, "sources[0].verify.secrets");
        let e = bad(
            serde_json::json!({"sources": [{"name": "a", "verify": {"scheme": "nope", "secrets": ["x"]}}]}),
        );
        assert_eq!(e.field, "$");
        assert!(
            e.message.contains("unknown variant `nope`"),
            "{}",
            e.message
        );
        let e = bad(serde_json::json!({"sources": [{"name": "a", "extra": 1}]}));
        assert!(e.message.contains("unknown field `extra`"));
        let e = bad(serde_json::json!({"sources": [{"name": "A b"}]}));
        assert_eq!(e.field, "sources[0].name");
        let e = bad(
            serde_json::json!({"sources": [{"name": "a", "match": {"path_prefix": "/x"}}, {"name": "b", "match": {"path_prefix": "/x"}}]}),
        );
        assert_eq!(e.field, "sources[1].match");
        let e = bad(
            serde_json::json!({"sources": [{"name": "a", "rate_limit": {"rate_per_sec": 0, "burst": 1}}]}),
        );
        assert_eq!(e.field, "sources[0].rate_limit");
    }
}
