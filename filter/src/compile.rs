//! Validation and compilation of [`FilterConfig`] into the table the request path reads.

use crate::allow::Allowlist;
use crate::auth::Authenticator;
use crate::config::{ConfigError, DefaultAction, FilterConfig, RateLimitKey, SourceConfig};
use crate::ratelimit::TokenBucket;
use crate::verify::Verifier;
use std::collections::HashSet;

/// A validated configuration, ready for [`decide_head`](crate::decide_head).
pub struct CompiledConfig {
    /// Sources ordered by match priority: longest prefix first, host-specific before any-host.
    pub(crate) sources: Vec<CompiledSource>,
    pub(crate) default_action: DefaultAction,
    pub(crate) trusted_hops: u8,
    pub(crate) any_https_only: bool,
    pub(crate) any_needs_peer: bool,
    pub(crate) ingest_token: Option<String>,
}

impl std::fmt::Debug for CompiledConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledConfig")
            .field("sources", &self.source_names().collect::<Vec<_>>())
            .field("default_action", &self.default_action)
            .finish_non_exhaustive()
    }
}

impl CompiledConfig {
    /// Source names in match-priority order.
    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| s.name.as_str())
    }

    /// The token bucket of the named source, for sweeping its stale keys.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn rate_bucket(&self, source: &str) -> Option<&TokenBucket> {
        self.sources
            .iter()
            .find(|s| s.name == source)
            .and_then(|s| s.rate_limit.as_ref().map(|(b, _)| b))
    }

    /// Whether any source needs the client address, i.e. whether the host must look the peer up.
    pub fn needs_peer_fact(&self) -> bool {
        self.any_needs_peer
    }

    /// Whether any source requires TLS, i.e. whether the host must look the transport up.
    pub fn needs_tls_fact(&self) -> bool {
        self.any_https_only
    }
}

pub(crate) struct CompiledSource {
    pub(crate) name: String,
    host: Option<HostMatch>,
    prefix: String,
    pub(crate) verifier: Option<Verifier>,
    pub(crate) auth: Option<Authenticator>,
    pub(crate) allow: Allowlist,
    pub(crate) rate_limit: Option<(TokenBucket, RateLimitKey)>,
    pub(crate) methods: Vec<String>,
    pub(crate) max_body: u64,
    pub(crate) https_only: bool,
    /// `x-hookmesh-verified` value for accepted requests.
    pub(crate) verified_label: String,
    pub(crate) mode: crate::config::SourceMode,
}

enum HostMatch {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl CompiledSource {
    pub(crate) fn matches(&self, host: &str, path: &str) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => host.eq_ignore_ascii_case(h),
            Some(HostMatch::Suffix(s)) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        };
        host_ok && path.starts_with(&self.prefix)
    }
}

pub(crate) fn compile(cfg: &FilterConfig) -> Result<CompiledConfig, ConfigError> {
    let mut names = HashSet::new();
    let mut routes = HashSet::new();
    let mut sources = Vec::with_capacity(cfg.sources.len());
    for (i, s) in cfg.sources.iter().enumerate() {
        let field = format!("sources[{i}]");
        if !names.insert(s.name.as_str()) {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("duplicate source name `{}`", s.name),
            ));
        }
        let compiled = compile_source(s, &field)?;
        let route = (
            s.matcher.host.as_ref().map(|h| h.to_ascii_lowercase()),
            compiled.prefix.clone(),
        );
        if !routes.insert(route) {
            return Err(ConfigError::new(
                format!("{field}.match"),
                "another source already matches the same host and path prefix",
            ));
        }
        sources.push(compiled);
    }
    // Longest prefix first; on a tie the source naming a host wins.
    sources.sort_by(|a, b| {
        b.prefix
            .len()
            .cmp(&a.prefix.len())
            .then_with(|| b.host.is_some().cmp(&a.host.is_some()))
    });
    Ok(CompiledConfig {
        any_https_only: sources.iter().any(|s| s.https_only),
        any_needs_peer: sources.iter().any(|s| {
            s.allow.is_restricted() || matches!(s.rate_limit, Some((_, RateLimitKey::ClientIp)))
        }),
        sources,
        default_action: cfg.default_action,
        trusted_hops: cfg.network.trusted_hops,
        ingest_token: match &cfg.ingest_token {
            Some(t) if t.0.is_empty() || !t.0.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ConfigError::new(
                    "ingest_token",
                    "must be printable ASCII without spaces (it is sent as a header)",
                ))
            }
            t => t.as_ref().map(|t| t.0.clone()),
        },
    })
}

fn compile_source(s: &SourceConfig, field: &str) -> Result<CompiledSource, ConfigError> {
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 64
        && s.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(ConfigError::new(
            format!("{field}.name"),
            "must be 1 to 64 characters of a-z, 0-9, `_` and `-` (it names metrics)",
        ));
    }
    let host = match &s.matcher.host {
        None => None,
        Some(h) => {
            Some(host_match(h).map_err(|m| ConfigError::new(format!("{field}.match.host"), m))?)
        }
    };
    let prefix = s
        .matcher
        .path_prefix
        .clone()
        .unwrap_or_else(|| "/".to_owned());
    if !prefix.starts_with('/') || prefix.contains(['?', '#', ' ']) {
        return Err(ConfigError::new(
            format!("{field}.match.path_prefix"),
            "must start with `/` and contain no `?`, `#` or spaces",
        ));
    }
    let verifier = match &s.verify {
        Some(v) => Some(Verifier::new(v, &format!("{field}.verify"))?),
        None => None,
    };
    let auth = match &s.auth {
        Some(a) => Some(Authenticator::new(a, &format!("{field}.auth"))?),
        None => None,
    };
    let allow = Allowlist::parse(&s.allowed_cidrs)
        .map_err(|(i, m)| ConfigError::new(format!("{field}.allowed_cidrs[{i}]"), m))?;
    let rate_limit = match &s.rate_limit {
        Some(r) => {
            let bucket = TokenBucket::new(r.rate_per_sec, r.burst)
                .map_err(|m| ConfigError::new(format!("{field}.rate_limit"), m))?;
            if let RateLimitKey::Header(h) = &r.key {
                if h.is_empty() || h.contains([' ', ':']) {
                    return Err(ConfigError::new(
                        format!("{field}.rate_limit.key.header"),
                        "not a header name",
                    ));
                }
            }
            let key = match &r.key {
                RateLimitKey::Header(h) => RateLimitKey::Header(h.to_ascii_lowercase()),
                k => k.clone(),
            };
            Some((bucket, key))
        }
        None => None,
    };
    let mut methods = Vec::with_capacity(s.limits.methods.len());
    for (i, m) in s.limits.methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::new(
                format!("{field}.limits.methods[{i}]"),
                "methods are upper-case tokens such as POST",
            ));
        }
        methods.push(m.clone());
    }
    if s.limits.max_body_bytes == 0 {
        return Err(ConfigError::new(
            format!("{field}.limits.max_body_bytes"),
            "must be at least 1",
        ));
    }
    let verified_label = match (&verifier, &auth) {
        (Some(v), Some(a)) => format!("{},{}", v.scheme(), a.kind()),
        (Some(v), None) => v.scheme().to_string(),
        (None, Some(a)) => a.kind().to_owned(),
        (None, None) => "none".to_owned(),
    };
    Ok(CompiledSource {
        name: s.name.clone(),
        host,
        prefix,
        verifier,
        auth,
        allow,
        rate_limit,
        methods,
        max_body: s.limits.max_body_bytes,
        https_only: s.limits.https_only,
        verified_label,
        mode: s.mode,
    })
}

fn host_match(h: &str) -> Result<HostMatch, &'static str> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if let Some(suffix) = h.strip_prefix("*.") {
        if valid(suffix) {
            return Ok(HostMatch::Suffix(format!(
                ".{}",
                suffix.to_ascii_lowercase()
            )));
        }
    } else if valid(h) {
        return Ok(HostMatch::Exact(h.to_ascii_lowercase()));
    }
    Err("a host name (letters, digits, `-`, `.`), optionally `*.` before it; no port")
}
