//! proxy-wasm glue, and the only module that touches the host: the root context compiles the
//! configuration in `on_configure`; each HTTP context builds a request view, calls
//! [`decide_head`]/[`decide_body`] and maps the verdict to a host action. Host facts that shape
//! this code are in `shared/ENVOY-NOTES.md`.
//!
//! Host calls that `proxy-wasm`'s trait helpers `unwrap()` are made through `hostcalls` so a
//! failure becomes a fail-closed reply instead of a trapped VM.

use crate::decide::{
    check_body_size, decide_body, decide_head, HeadVerdict, Outcome, Rejection, RequestHead,
    RATE_KEY_PREFIX,
};
use crate::ratelimit::{BucketState, RateLimitStore, Take, TokenBucket};
use crate::{parse_peer, CompiledConfig, FilterConfig, Headers};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Bounded compare-and-swap retries; past them the request is allowed (an explicit policy:
/// under extreme contention we prefer serving a webhook to refusing it).
const CAS_RETRIES: usize = 8;
/// Counters are flushed to Envoy on this tick, and stale rate-limit keys swept every
/// `SWEEP_EVERY` ticks.
const TICK_PERIOD: Duration = Duration::from_millis(250);
const SWEEP_EVERY: u32 = 20;

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

/// A compiled configuration with its metric ids. In-flight requests keep the `Rc` they started
/// with, so a reconfiguration never changes the rules under a request.
struct Active {
    config: CompiledConfig,
    /// Per source (in config order), per [`Outcome`].
    source_metrics: Vec<[Option<u32>; Outcome::ALL.len()]>,
}

#[derive(Clone, Copy)]
struct GlobalMetrics {
    unmatched_rejected: Option<u32>,
    unmatched_passed: Option<u32>,
    unavailable: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

/// Counter increments batched inside the VM and flushed on tick: each host call costs about
/// 0.65 µs on the request path (measured, docs/benchmarks.md), and a metric need not be
/// visible sooner than a quarter of a second.
#[derive(Default)]
struct Counts(RefCell<HashMap<u32, u64>>);

impl Counts {
    fn bump(&self, id: Option<u32>) {
        if let Some(id) = id {
            *self.0.borrow_mut().entry(id).or_default() += 1;
        }
    }

    fn flush(&self) {
        for (id, n) in self.0.borrow_mut().drain() {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

struct Root {
    active: Option<Rc<Active>>,
    global: GlobalMetrics,
    counts: Rc<Counts>,
    ticks: u32,
    /// Rate-limit keys this worker wrote, for sweeping refilled buckets on tick (shared data
    /// has no key listing and no TTL).
    rate_keys: Rc<RefCell<HashSet<String>>>,
}

impl Default for Root {
    fn default() -> Self {
        Root {
            active: None,
            global: GlobalMetrics {
                unmatched_rejected: counter("hookmesh.unmatched.rejected"),
                unmatched_passed: counter("hookmesh.unmatched.passed"),
                unavailable: counter("hookmesh.filter.unavailable"),
            },
            counts: Rc::default(),
            ticks: 0,
            rate_keys: Rc::default(),
        }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) if !b.is_empty() => b,
            _ => {
                log(
                    LogLevel::Error,
                    "no plugin configuration; every request is refused with 503",
                );
                self.active = None;
                return true;
            }
        };
        let compiled = FilterConfig::from_json(&bytes).and_then(|c| c.compile());
        match compiled {
            Ok(config) => {
                let source_metrics = config
                    .source_names()
                    .map(|name| {
                        Outcome::ALL
                            .map(|o| counter(&format!("hookmesh.source.{name}.{}", o.as_str())))
                    })
                    .collect();
                log(
                    LogLevel::Info,
                    &format!(
                        "configured {} source(s): {}",
                        config.len(),
                        config.source_names().collect::<Vec<_>>().join(", ")
                    ),
                );
                self.active = Some(Rc::new(Active {
                    config,
                    source_metrics,
                }));
                let _ = hostcalls::set_tick_period(TICK_PERIOD);
                true
            }
            Err(e) => {
                // Envoy refuses to start with this config, or NACKs it on an xDS update and
                // keeps the previous one; either way say exactly which field is wrong.
                log(LogLevel::Error, &format!("invalid configuration: {e}"));
                self.active = None;
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.counts.flush();
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % SWEEP_EVERY == 0 {
            let now = now_ns();
            let active = self.active.clone();
            self.rate_keys
                .borrow_mut()
                .retain(|key| !sweep(key, active.as_deref(), now));
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            active: self.active.clone(),
            global: self.global,
            counts: self.counts.clone(),
            rate_keys: self.rate_keys.clone(),
            phase: Phase::Start,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Removes `key` from shared data if its bucket has refilled (a full bucket is equivalent to
/// no entry) or its source is gone. Returns whether this worker can forget the key.
fn sweep(key: &str, active: Option<&Active>, now: u64) -> bool {
    let Ok((value, cas)) = hostcalls::get_shared_data(key) else {
        return false;
    };
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return true;
    };
    let source = key[RATE_KEY_PREFIX.len()..].split('|').next().unwrap_or("");
    let bucket = active.and_then(|a| a.config.rate_bucket(source));
    let removable = match (bucket, BucketState::decode(&value)) {
        (Some(b), Some(state)) => b.is_full(state, now),
        _ => true,
    };
    // A CAS mismatch means another worker just used the bucket: keep it.
    removable && hostcalls::set_shared_data(key, None, cas).is_ok()
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Token buckets in Envoy's process-wide shared data, updated with compare-and-swap so all
/// worker threads share one budget per key.
struct SharedDataStore<'a> {
    rate_keys: &'a RefCell<HashSet<String>>,
}

impl RateLimitStore for SharedDataStore<'_> {
    fn take(&mut self, key: &str, bucket: &TokenBucket, now_ns: u64) -> Result<(), u64> {
        for _ in 0..CAS_RETRIES {
            let Ok((value, cas)) = hostcalls::get_shared_data(key) else {
                return Ok(());
            };
            let state = value.as_deref().and_then(BucketState::decode);
            match bucket.take(state, now_ns) {
                Take::Limited { retry_after_secs } => return Err(retry_after_secs),
                Take::Allowed(next) => {
                    match hostcalls::set_shared_data(key, Some(&next.encode()), cas) {
                        Ok(()) => {
                            let mut keys = self.rate_keys.borrow_mut();
                            if !keys.contains(key) {
                                keys.insert(key.to_owned());
                            }
                            return Ok(());
                        }
                        Err(Status::CasMismatch) => continue,
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }
}

enum Phase {
    Start,
    /// Waiting for the whole body to verify the signature.
    Buffering {
        source: usize,
        headers: Headers,
        peer: Option<std::net::IpAddr>,
        tls: bool,
        body_size: usize,
        /// Unix nanoseconds at the headers.
        now: u64,
    },
    /// Accepted at headers; the body streams through, checked against the size limit only.
    /// Unbuffered chunks are reported one by one, so the total is summed here.
    Streaming {
        source: usize,
        seen: u64,
    },
    Done,
}

struct Http {
    active: Option<Rc<Active>>,
    global: GlobalMetrics,
    counts: Rc<Counts>,
    rate_keys: Rc<RefCell<HashSet<String>>>,
    phase: Phase,
}

impl Context for Http {}

impl Http {
    fn reply(&mut self, r: &Rejection) -> Action {
        match (r.counted, &self.active) {
            (Some((i, o)), Some(a)) => self
                .counts
                .bump(a.source_metrics.get(i).and_then(|m| m[o.index()])),
            (None, _) if r.status == 404 => self.counts.bump(self.global.unmatched_rejected),
            _ => self.counts.bump(self.global.unavailable),
        }
        let retry = r.retry_after.map(|s| s.to_string());
        let mut headers = vec![("content-type", "application/json")];
        if let Some(s) = &retry {
            headers.push(("retry-after", s.as_str()));
        }
        if hostcalls::send_http_response(
            u32::from(r.status),
            headers,
            Some(r.body_json().as_bytes()),
        )
        .is_err()
        {
            log(LogLevel::Error, "could not send a local reply");
        }
        if r.status != 404 {
            let source = r.counted.and_then(|(i, _)| {
                self.active
                    .as_ref()
                    .map(|a| a.config.source_name(i).to_owned())
            });
            log(
                LogLevel::Debug,
                &format!("{} {} source={source:?}: {}", r.status, r.error, r.reason),
            );
        }
        self.phase = Phase::Done;
        Action::Pause
    }

    fn accept(&mut self, source: usize) {
        if let Some(a) = &self.active {
            // `add`, not `replace`: every client-sent x-hookmesh-* header was removed at the
            // headers phase, and replacing searches the map (measured ~1 µs per header).
            let _ = hostcalls::add_map_value(
                MapType::HttpRequestHeaders,
                "x-hookmesh-source",
                a.config.source_name(source),
            );
            let _ = hostcalls::add_map_value(
                MapType::HttpRequestHeaders,
                "x-hookmesh-verified",
                a.config.verified_label(source),
            );
            if a.config.is_hub(source) {
                // The route to the ingest matches on this; Envoy re-picks the route after a
                // filter changes request headers.
                let _ =
                    hostcalls::add_map_value(MapType::HttpRequestHeaders, "x-hookmesh-mode", "hub");
                if let Some(token) = a.config.ingest_token() {
                    let _ = hostcalls::add_map_value(
                        MapType::HttpRequestHeaders,
                        "x-hookmesh-ingest-token",
                        token,
                    );
                }
            }
            self.counts.bump(
                a.source_metrics
                    .get(source)
                    .and_then(|m| m[Outcome::Accepted.index()]),
            );
        }
    }

    /// Verifies the complete body, at end of stream or when trailers arrive.
    fn finish(&mut self) -> Action {
        let Phase::Buffering {
            source,
            headers,
            peer,
            tls,
            body_size,
            now,
        } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Action::Continue;
        };
        let Some(active) = self.active.clone() else {
            return self.reply(&Rejection::unavailable());
        };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => return self.reply(&Rejection::unavailable()),
        };
        let head = RequestHead {
            headers: &headers,
            peer,
            tls,
        };
        // The time at the headers: a slow body cannot push an old signature past the check.
        match decide_body(&active.config, source, &head, &body, now) {
            Ok(()) => {
                self.accept(source);
                Action::Continue
            }
            Err(r) => self.reply(&r),
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return self.reply(&Rejection::unavailable());
        };
        // Values may carry non-UTF-8 bytes; proxy-wasm's `get_map` would trap on them.
        let Ok(raw) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
            return self.reply(&Rejection::unavailable());
        };
        let headers = Headers::new(
            raw.into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        String::from_utf8(v)
                            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    )
                })
                .collect(),
        );
        // Only this filter may tell the upstream what was verified.
        for (name, _) in headers.iter().filter(|(n, _)| n.starts_with("x-hookmesh-")) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
        }
        let peer = if active.config.needs_peer_fact() {
            hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
                .and_then(|b| std::str::from_utf8(&b).ok().and_then(parse_peer))
        } else {
            None
        };
        let tls = active.config.needs_tls_fact()
            && hostcalls::get_property(vec!["connection", "tls_version"])
                .ok()
                .flatten()
                .is_some_and(|v| !v.is_empty());
        let head = RequestHead {
            headers: &headers,
            peer,
            tls,
        };
        let mut store = SharedDataStore {
            rate_keys: &self.rate_keys,
        };
        let now = now_ns();
        match decide_head(&active.config, &head, now, &mut store) {
            HeadVerdict::Pass => {
                self.counts.bump(self.global.unmatched_passed);
                self.phase = Phase::Done;
                Action::Continue
            }
            HeadVerdict::Accept(source) => {
                self.accept(source);
                self.phase = Phase::Streaming { source, seen: 0 };
                Action::Continue
            }
            HeadVerdict::ReadBody(source) => {
                self.phase = Phase::Buffering {
                    source,
                    headers,
                    peer,
                    tls,
                    body_size: 0,
                    now,
                };
                if end_of_stream {
                    self.finish()
                } else {
                    // Requires `allow_on_headers_stop_iteration: true` in the Wasm PluginConfig,
                    // or Envoy never calls the body callback (ENVOY-NOTES.md).
                    Action::Pause
                }
            }
            HeadVerdict::Reject(r) => self.reply(&r),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        match &mut self.phase {
            Phase::Buffering {
                source,
                body_size: seen,
                ..
            } => {
                *seen = body_size;
                if let Some(r) = check_body_size(&active.config, *source, body_size as u64) {
                    return self.reply(&r);
                }
                if end_of_stream {
                    self.finish()
                } else {
                    Action::Pause
                }
            }
            Phase::Streaming { source, seen } => {
                *seen += body_size as u64;
                match check_body_size(&active.config, *source, *seen) {
                    Some(r) => self.reply(&r),
                    None => Action::Continue,
                }
            }
            Phase::Start | Phase::Done => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // With trailers the body callback never sees end_of_stream (ENVOY-NOTES.md): the whole
        // body is buffered by now.
        self.finish()
    }
}
