//! The edge filter inside the real Envoy 1.40: every scheme, every protocol shape, every limit.

use base64::Engine;
use hmac::Mac;
use hookmesh_e2e::*;
use hookmesh_filter::keys::{discord_public_key, standard_webhooks_public_key};
use hookmesh_filter::{sign, SchemeName, SignInput};
use serde_json::json;
use std::time::Duration;

const SWH_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SWH_OTHER: &str = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCE=";
const HOST: &str = "hooks.test";

/// One scheme under test: the secret the source verifies with, the secret a legitimate
/// sender signs with, and one an attacker might use.
struct Case {
    name: &'static str,
    scheme: SchemeName,
    verify: String,
    sign: String,
    wrong: String,
    signature_header: &'static str,
    timestamped: bool,
    form_body: bool,
}

fn ed_seed(n: u8) -> String {
    format!(
        "whsk_{}",
        base64::engine::general_purpose::STANDARD.encode([n; 32])
    )
}

fn cases() -> Vec<Case> {
    use SchemeName::*;
    let c =
        |name, scheme, verify: &str, sign: &str, wrong: &str, signature_header, timestamped| Case {
            name,
            scheme,
            verify: verify.into(),
            sign: sign.into(),
            wrong: wrong.into(),
            signature_header,
            timestamped,
            form_body: false,
        };
    let discord_seed = hex_seed(3);
    vec![
        c(
            "swh",
            StandardWebhooks,
            SWH_SECRET,
            SWH_SECRET,
            SWH_OTHER,
            "webhook-signature",
            true,
        ),
        c(
            "swh-ed25519",
            StandardWebhooks,
            &standard_webhooks_public_key(&ed_seed(1)).unwrap(),
            &ed_seed(1),
            &ed_seed(2),
            "webhook-signature",
            true,
        ),
        c(
            "svix",
            Svix,
            SWH_SECRET,
            SWH_SECRET,
            SWH_OTHER,
            "svix-signature",
            true,
        ),
        c(
            "stripe",
            Stripe,
            "whsec_stripe",
            "whsec_stripe",
            "whsec_wrong",
            "stripe-signature",
            true,
        ),
        c(
            "github",
            Github,
            "gh-secret",
            "gh-secret",
            "gh-wrong",
            "x-hub-signature-256",
            false,
        ),
        c(
            "shopify",
            Shopify,
            "shp-secret",
            "shp-secret",
            "shp-wrong",
            "x-shopify-hmac-sha256",
            false,
        ),
        c(
            "slack",
            Slack,
            "slack-secret",
            "slack-secret",
            "slack-wrong",
            "x-slack-signature",
            true,
        ),
        Case {
            form_body: true,
            ..c(
                "twilio",
                Twilio,
                "twilio-token",
                "twilio-token",
                "twilio-wrong",
                "x-twilio-signature",
                false,
            )
        },
        c(
            "paddle",
            Paddle,
            "pdl_ntfset_1",
            "pdl_ntfset_1",
            "pdl_wrong",
            "paddle-signature",
            true,
        ),
        c(
            "square",
            Square,
            "sq-key",
            "sq-key",
            "sq-wrong",
            "x-square-hmacsha256-signature",
            false,
        ),
        c(
            "zoom",
            Zoom,
            "zoom-token",
            "zoom-token",
            "zoom-wrong",
            "x-zm-signature",
            true,
        ),
        c(
            "pagerduty",
            Pagerduty,
            "pd-secret",
            "pd-secret",
            "pd-wrong",
            "x-pagerduty-signature",
            false,
        ),
        c(
            "linear",
            Linear,
            "lin-secret",
            "lin-secret",
            "lin-wrong",
            "linear-signature",
            true,
        ),
        c(
            "discord",
            Discord,
            &discord_public_key(&discord_seed).unwrap(),
            &discord_seed,
            &hex_seed(4),
            "x-signature-ed25519",
            true,
        ),
        c(
            "generic",
            GenericHmac,
            "gen-secret",
            "gen-secret",
            "gen-wrong",
            "x-signature",
            true,
        ),
    ]
}

fn hex_seed(n: u8) -> String {
    [n; 32].iter().map(|b| format!("{b:02x}")).collect()
}

fn generic_settings() -> serde_json::Value {
    json!({"header": "X-Signature", "prefix": "sha256=", "algorithm": "sha256", "encoding": "hex",
           "template": "{timestamp}.{method}.{body}", "timestamp_header": "X-Timestamp"})
}

fn source_for(case: &Case) -> serde_json::Value {
    let mut verify = json!({"scheme": case.scheme.as_str(), "secrets": [case.verify]});
    if case.scheme == SchemeName::GenericHmac {
        verify["generic"] = generic_settings();
    }
    json!({"name": case.name, "match": {"path_prefix": format!("/s/{}", case.name)}, "verify": verify})
}

fn body_for(case: &Case, ts: i64) -> Vec<u8> {
    if case.form_body {
        b"CallSid=CA123&From=%2B15005550006&Body=Hello+there".to_vec()
    } else {
        json!({"type": "invoice.paid", "webhookTimestamp": ts * 1000, "data": {"amount": 1200}})
            .to_string()
            .into_bytes()
    }
}

fn signed_headers(case: &Case, secret: &str, body: &[u8], ts: i64) -> Vec<(String, String)> {
    let url = format!("http://{HOST}/s/{}", case.name);
    let generic: hookmesh_filter::config::GenericHmacConfig =
        serde_json::from_value(generic_settings()).unwrap();
    let input = SignInput {
        body,
        id: "msg_e2e_1",
        timestamp: ts,
        url: Some(&url),
        method: "POST",
    };
    sign(case.scheme, secret, Some(&generic), &input)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn post(envoy: &Envoy, path: &str, headers: &[(String, String)], body: &[u8]) -> Response {
    send_raw(
        envoy.port,
        None,
        &http1_request("POST", path, HOST, headers, body),
    )
    .expect("request")
}

struct Rig {
    receiver: Receiver,
    envoy: Envoy,
}

fn rig(config: serde_json::Value) -> Rig {
    let receiver = Receiver::start();
    let envoy = Envoy::start(&EnvoyOptions::new(&config), receiver.port);
    Rig { receiver, envoy }
}

#[test]
fn every_scheme_accepts_genuine_and_refuses_forged_requests() {
    let cases = cases();
    let r = rig(json!({"sources": cases.iter().map(source_for).collect::<Vec<_>>()}));
    for case in &cases {
        // Per case: Paddle tolerates 5 seconds.
        let now = now();
        let path = format!("/s/{}", case.name);
        let body = body_for(case, now);
        let headers = signed_headers(case, &case.sign, &body, now);

        r.receiver.clear();
        let ok = post(&r.envoy, &path, &headers, &body);
        assert_eq!(
            ok.status,
            200,
            "{}: genuine request refused: {}",
            case.name,
            ok.text()
        );
        let got = r.receiver.received();
        assert_eq!(got.len(), 1, "{}", case.name);
        assert_eq!(got[0].body, body, "{}: body altered", case.name);
        assert_eq!(got[0].header_values("x-hookmesh-source"), [case.name]);
        assert_eq!(
            got[0].header_values("x-hookmesh-verified"),
            [case.scheme.as_str()]
        );

        let mut tampered = body.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 0x01;
        let resp = post(&r.envoy, &path, &headers, &tampered);
        assert_eq!(
            (resp.status, resp.reason()),
            (401, "no configured secret matches the signature".into()),
            "{}: tampered",
            case.name
        );

        let wrong = signed_headers(case, &case.wrong, &body, now);
        let resp = post(&r.envoy, &path, &wrong, &body);
        assert_eq!(resp.status, 401, "{}: wrong secret accepted", case.name);

        let mut malformed = headers.clone();
        for (n, v) in &mut malformed {
            if n == case.signature_header {
                *v = "%%%".into();
            }
        }
        let resp = post(&r.envoy, &path, &malformed, &body);
        assert_eq!(resp.status, 401, "{}", case.name);
        assert!(
            resp.reason()
                .starts_with(&format!("malformed header `{}`", case.signature_header)),
            "{}: {}",
            case.name,
            resp.reason()
        );

        let missing: Vec<_> = headers
            .iter()
            .filter(|(n, _)| n != case.signature_header)
            .cloned()
            .collect();
        let resp = post(&r.envoy, &path, &missing, &body);
        assert_eq!(
            (resp.status, resp.reason()),
            (401, format!("missing header `{}`", case.signature_header)),
            "{}",
            case.name
        );

        if case.timestamped {
            let old = now - 3600;
            let old_body = body_for(case, old);
            let resp = post(
                &r.envoy,
                &path,
                &signed_headers(case, &case.sign, &old_body, old),
                &old_body,
            );
            assert_eq!(resp.status, 401, "{}: replay accepted", case.name);
            assert!(
                resp.reason().starts_with("timestamp too old"),
                "{}: {}",
                case.name,
                resp.reason()
            );
        }
        assert_eq!(
            r.receiver.received().len(),
            1,
            "{}: a refused request reached the upstream",
            case.name
        );
    }
    r.envoy.settle_metrics();
    for case in &cases {
        let count = |outcome: &str| {
            r.envoy.counter(&format!(
                "wasmcustom.hookmesh.source.{}.{outcome}",
                case.name
            ))
        };
        assert_eq!(count("accepted"), 1, "{}", case.name);
        // tampered, wrong secret, malformed, missing (+ replayed when timestamped)
        let refused = if case.timestamped { 5 } else { 4 };
        assert_eq!(count("rejected_signature"), refused, "{}", case.name);
    }
}

fn swh_rig() -> (Rig, Vec<(String, String)>, Vec<u8>) {
    let r = rig(json!({"sources": [
        {"name": "swh", "match": {"path_prefix": "/swh"}, "verify": {"scheme": "standard_webhooks", "secrets": [SWH_SECRET]},
         "limits": {"max_body_bytes": 4096}}
    ]}));
    let body = json!({"type": "user.created", "pad": "x".repeat(600)})
        .to_string()
        .into_bytes();
    let input = SignInput {
        body: &body,
        id: "msg_1",
        timestamp: now(),
        url: None,
        method: "POST",
    };
    let headers = sign(SchemeName::StandardWebhooks, SWH_SECRET, None, &input).unwrap();
    (r, headers, body)
}

fn raw_head(method: &str, path: &str, headers: &[(String, String)], extra: &str) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n{extra}");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

#[test]
fn whole_body_is_verified_for_chunked_trailers_and_h2c() {
    let (r, headers, body) = swh_rig();
    // HTTP/1.1 chunked, in small chunks, then with trailers.
    for trailers in [vec![], vec![("x-trailer", "t")]] {
        let mut raw = raw_head("POST", "/swh", &headers, "transfer-encoding: chunked\r\n");
        raw.extend(chunked(&body, 100, &trailers));
        let resp = send_raw(r.envoy.port, None, &raw).unwrap();
        assert_eq!(
            resp.status,
            200,
            "chunked (trailers: {trailers:?}): {}",
            resp.text()
        );
        let mut tampered = body.clone();
        tampered[300] ^= 1;
        let mut raw = raw_head("POST", "/swh", &headers, "transfer-encoding: chunked\r\n");
        raw.extend(chunked(&tampered, 100, &trailers));
        assert_eq!(send_raw(r.envoy.port, None, &raw).unwrap().status, 401);
    }
    // h2c, several DATA frames, with and without trailers.
    let frames: Vec<Vec<u8>> = body.chunks(128).map(<[u8]>::to_vec).collect();
    for trailers in [vec![], vec![("x-checksum", "abc")]] {
        let resp = h2c_post(r.envoy.port, "/swh", &headers, frames.clone(), &trailers).unwrap();
        assert_eq!(
            resp.status,
            200,
            "h2c (trailers: {trailers:?}): {}",
            resp.text()
        );
        let mut bad = frames.clone();
        bad[2][5] ^= 1;
        let resp = h2c_post(r.envoy.port, "/swh", &headers, bad, &trailers).unwrap();
        assert_eq!(resp.status, 401, "h2c tampered (trailers: {trailers:?})");
    }
    let got = r.receiver.received();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|g| g.body == body),
        "upstream bodies must be complete and unaltered"
    );
}

#[test]
fn repeated_security_headers_are_refused_never_first_wins() {
    let (r, headers, body) = swh_rig();
    let forged = (
        "webhook-signature".to_owned(),
        "v1,Zm9yZ2VkIHNpZ25hdHVyZSBieXRlcyEhIQ==".to_owned(),
    );
    let genuine = headers
        .iter()
        .find(|(n, _)| n == "webhook-signature")
        .unwrap()
        .clone();
    let others: Vec<_> = headers
        .iter()
        .filter(|(n, _)| n != "webhook-signature")
        .cloned()
        .collect();
    for order in [
        [genuine.clone(), forged.clone()],
        [forged.clone(), genuine.clone()],
    ] {
        let mut h = others.clone();
        h.extend(order);
        let resp = post(&r.envoy, "/swh", &h, &body);
        assert_eq!(
            (resp.status, resp.reason()),
            (
                401,
                "header `webhook-signature` appears more than once".into()
            )
        );
    }
    let mut h = headers.clone();
    h.push(("webhook-id".into(), "msg_other".into()));
    assert_eq!(post(&r.envoy, "/swh", &h, &body).status, 401);
    assert!(r.receiver.received().is_empty());
}

#[test]
fn limits_method_and_body_size() {
    let (r, headers, body) = swh_rig();
    let resp = send_raw(r.envoy.port, None, &raw_head("GET", "/swh", &headers, "")).unwrap();
    assert_eq!(
        (resp.status, resp.reason()),
        (405, "method GET is not allowed; allowed: POST".into())
    );
    // Declared too large: refused from the headers, before the body is read.
    let big = vec![b'x'; 5000];
    let resp = post(&r.envoy, "/swh", &headers, &big);
    assert_eq!(
        (resp.status, resp.reason()),
        (413, "body exceeds the limit of 4096 bytes".into())
    );
    // Chunked shows no length: refused while streaming.
    let mut raw = raw_head("POST", "/swh", &headers, "transfer-encoding: chunked\r\n");
    raw.extend(chunked(&big, 1000, &[]));
    assert_eq!(send_raw(r.envoy.port, None, &raw).unwrap().status, 413);
    // Unknown paths are refused by default.
    let resp = post(&r.envoy, "/elsewhere", &headers, &body);
    assert_eq!(
        (resp.status, resp.header("content-type")),
        (404, Some("application/json"))
    );
    assert!(r.receiver.received().is_empty());
    r.envoy.settle_metrics();
    assert_eq!(
        r.envoy
            .counter("wasmcustom.hookmesh.source.swh.rejected_method"),
        1
    );
    assert_eq!(
        r.envoy
            .counter("wasmcustom.hookmesh.source.swh.rejected_body_size"),
        2
    );
    assert_eq!(r.envoy.counter("wasmcustom.hookmesh.unmatched.rejected"), 1);
}

#[test]
fn allowlist_uses_the_real_peer_and_ignores_spoofed_xff() {
    let r = rig(json!({"sources": [
        {"name": "allow", "match": {"path_prefix": "/a"}, "allowed_cidrs": ["127.0.0.2/32", "2001:db8::/32"], "limits": {"methods": []}}
    ]}));
    let req = http1_request("POST", "/a", HOST, &[], b"{}");
    let spoofed = http1_request(
        "POST",
        "/a",
        HOST,
        &[("x-forwarded-for".into(), "127.0.0.2".into())],
        b"{}",
    );
    let resp = send_raw(r.envoy.port, Some("127.0.0.1"), &req).unwrap();
    assert_eq!(
        (resp.status, resp.reason()),
        (
            403,
            "client address 127.0.0.1 is not in the source's allowed networks".into()
        )
    );
    assert_eq!(
        send_raw(r.envoy.port, Some("127.0.0.1"), &spoofed)
            .unwrap()
            .status,
        403
    );
    assert_eq!(
        send_raw(r.envoy.port, Some("127.0.0.2"), &req)
            .unwrap()
            .status,
        200
    );
    assert_eq!(r.receiver.received().len(), 1);
    r.envoy.settle_metrics();
    assert_eq!(
        r.envoy
            .counter("wasmcustom.hookmesh.source.allow.rejected_address"),
        2
    );
}

#[test]
fn trusted_hop_yields_the_client_and_forwards_https() {
    let config = json!({"network": {"trusted_hops": 1}, "sources": [
        {"name": "behind-lb", "match": {"path_prefix": "/lb"}, "allowed_cidrs": ["203.0.113.0/24"],
         "limits": {"https_only": true}}
    ]});
    let receiver = Receiver::start();
    let envoy = Envoy::start(
        &EnvoyOptions {
            trusted_hops: 1,
            ..EnvoyOptions::new(&config)
        },
        receiver.port,
    );
    let send = |xff: &str, proto: &str| {
        let h = vec![
            ("x-forwarded-for".to_owned(), xff.to_owned()),
            ("x-forwarded-proto".to_owned(), proto.to_owned()),
        ];
        send_raw(
            envoy.port,
            None,
            &http1_request("POST", "/lb", HOST, &h, b"{}"),
        )
        .unwrap()
        .status
    };
    // The load balancer (our peer, 127.0.0.1) appended the client it saw.
    assert_eq!(send("203.0.113.5", "https"), 200);
    // A client prepending an allowed address gains nothing.
    assert_eq!(send("203.0.113.5, 198.51.100.9", "https"), 403);
    assert_eq!(send("6.6.6.6, 203.0.113.5", "https"), 200);
    // The LB saw plain HTTP.
    assert_eq!(send("203.0.113.5", "http"), 403);
    assert_eq!(receiver.received().len(), 2);
}

#[test]
fn https_only_checks_the_downstream_tls_connection() {
    let config = json!({"sources": [{"name": "tls", "match": {"path_prefix": "/t"}, "limits": {"https_only": true}}]});
    let receiver = Receiver::start();
    let envoy = Envoy::start(
        &EnvoyOptions {
            tls: true,
            ..EnvoyOptions::new(&config)
        },
        receiver.port,
    );
    let resp = post(
        &envoy,
        "/t",
        &[("x-forwarded-proto".into(), "https".into())],
        b"{}",
    );
    assert_eq!(
        (resp.status, resp.reason()),
        (403, "this source accepts HTTPS only".into())
    );
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data",
            "{}",
        ])
        .arg(format!("https://127.0.0.1:{}/t", envoy.tls_port))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert_eq!(receiver.received().len(), 1);
}

#[test]
fn rate_limit_is_shared_by_all_workers_and_recovers() {
    let config = json!({"sources": [
        {"name": "rl", "match": {"path_prefix": "/rl"}, "rate_limit": {"rate_per_sec": 2.0, "burst": 4}, "limits": {"methods": []}}
    ]});
    let receiver = Receiver::start();
    let envoy = Envoy::start(
        &EnvoyOptions {
            concurrency: 2,
            ..EnvoyOptions::new(&config)
        },
        receiver.port,
    );
    // Each request opens a new connection, so they spread over both workers.
    let post = || {
        send_raw(
            envoy.port,
            None,
            &http1_request("POST", "/rl", HOST, &[], b"{}"),
        )
        .unwrap()
    };
    let start = std::time::Instant::now();
    let statuses: Vec<u16> = (0..8).map(|_| post().status).collect();
    // Burst 4, plus what the 2/s refill added while the requests ran (bounded by the elapsed
    // time, so a slow machine cannot make this flaky, and a missing shared bucket still fails).
    let refill = (start.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (4..=4 + refill).contains(&allowed),
        "burst 4 (+{refill} refilled) expected, got {statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "the shared bucket ran out: {statuses:?}"
    );
    // Drain any refill, then the refusal names when to come back.
    let refused = (0..20)
        .map(|_| post())
        .find(|r| r.status == 429)
        .expect("a 429 within 20 requests");
    assert_eq!(refused.header("retry-after"), Some("1"));
    std::thread::sleep(Duration::from_millis(1100));
    let resp = send_raw(
        envoy.port,
        None,
        &http1_request("POST", "/rl", HOST, &[], b"{}"),
    )
    .unwrap();
    assert_eq!(resp.status, 200, "the bucket refills at 2/s");
    envoy.settle_metrics();
    assert!(envoy.counter("wasmcustom.hookmesh.source.rl.rejected_rate_limit") >= 3);
}

#[test]
fn upstream_sees_only_the_filters_own_hookmesh_headers() {
    let r = rig(json!({"default_action": "pass", "sources": [
        {"name": "open", "match": {"path_prefix": "/open"}, "limits": {"methods": []}}
    ]}));
    let spoof = vec![
        ("x-hookmesh-source".to_owned(), "stripe".to_owned()),
        ("x-hookmesh-verified".to_owned(), "stripe".to_owned()),
        ("X-Hookmesh-Other".to_owned(), "1".to_owned()),
    ];
    assert_eq!(post(&r.envoy, "/open", &spoof, b"{}").status, 200);
    assert_eq!(post(&r.envoy, "/unmatched", &spoof, b"{}").status, 200);
    let got = r.receiver.received();
    assert_eq!(got[0].header_values("x-hookmesh-source"), ["open"]);
    assert_eq!(got[0].header_values("x-hookmesh-verified"), ["none"]);
    assert!(got[0].header_values("x-hookmesh-other").is_empty());
    assert!(
        got[1]
            .headers
            .iter()
            .all(|(n, _)| !n.starts_with("x-hookmesh-")),
        "{:?}",
        got[1].headers
    );
    r.envoy.settle_metrics();
    assert_eq!(r.envoy.counter("wasmcustom.hookmesh.unmatched.passed"), 1);
}

#[test]
fn caller_auth_api_key_basic_and_jwt() {
    let hs = "an-hs256-secret-of-at-least-32-chars!";
    let r = rig(json!({"sources": [
        {"name": "key", "match": {"path_prefix": "/key"}, "auth": {"type": "api_key", "keys": ["k-0123456789abcdef"]}},
        {"name": "basic", "match": {"path_prefix": "/basic"}, "auth": {"type": "basic", "users": [{"username": "u", "password": "p"}]}},
        {"name": "jwt", "match": {"path_prefix": "/jwt"}, "auth": {"type": "jwt", "keys": [{"alg": "HS256", "secret": hs}], "audiences": ["hookmesh"]}},
        {"name": "both", "match": {"path_prefix": "/both"}, "auth": {"type": "api_key", "keys": ["k-0123456789abcdef"]},
         "verify": {"scheme": "github", "secrets": ["gh"]}}
    ]}));
    let h = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
    assert_eq!(
        post(
            &r.envoy,
            "/key",
            &h("x-api-key", "k-0123456789abcdef"),
            b"{}"
        )
        .status,
        200
    );
    let resp = post(
        &r.envoy,
        "/key",
        &h("x-api-key", "k-0123456789abcdeX"),
        b"{}",
    );
    assert_eq!(
        (resp.status, resp.reason()),
        (401, "credentials not accepted".into())
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        post(
            &r.envoy,
            "/basic",
            &h("authorization", &format!("Basic {}", b64("u:p"))),
            b"{}"
        )
        .status,
        200
    );
    assert_eq!(
        post(
            &r.envoy,
            "/basic",
            &h("authorization", &format!("Basic {}", b64("u:x"))),
            b"{}"
        )
        .status,
        401
    );

    let jwt = |claims: serde_json::Value| {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let input = format!("{}.{}", enc(&json!({"alg": "HS256"})), enc(&claims));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(hs.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!(
            "Bearer {input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let good = jwt(json!({"aud": "hookmesh", "exp": now() + 60}));
    assert_eq!(
        post(&r.envoy, "/jwt", &h("authorization", &good), b"{}").status,
        200
    );
    let expired = post(
        &r.envoy,
        "/jwt",
        &h(
            "authorization",
            &jwt(json!({"aud": "hookmesh", "exp": now() - 120})),
        ),
        b"{}",
    );
    assert_eq!(
        (expired.status, expired.reason()),
        (401, "token refused: expired".into())
    );

    // Auth and signature both required.
    let body = b"{\"x\":1}";
    let sig = sign(
        SchemeName::Github,
        "gh",
        None,
        &SignInput {
            body,
            id: "",
            timestamp: 0,
            url: None,
            method: "POST",
        },
    )
    .unwrap();
    let mut both = sig.clone();
    both.extend(h("x-api-key", "k-0123456789abcdef"));
    assert_eq!(post(&r.envoy, "/both", &both, body).status, 200);
    assert_eq!(post(&r.envoy, "/both", &sig, body).status, 401);
    assert_eq!(
        post(
            &r.envoy,
            "/both",
            &h("x-api-key", "k-0123456789abcdef"),
            body
        )
        .status,
        401
    );
    let got = r.receiver.received();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[3].header_values("x-hookmesh-verified"),
        ["github,api_key"]
    );
}

#[test]
fn no_configuration_fails_closed_and_invalid_configuration_is_refused() {
    let receiver = Receiver::start();
    let envoy = Envoy::start(
        &EnvoyOptions {
            filter_config: None,
            ..EnvoyOptions::new(&json!({}))
        },
        receiver.port,
    );
    let resp = post(&envoy, "/anything", &[], b"{}");
    assert_eq!(
        (resp.status, resp.reason()),
        (503, "webhook filter has no valid configuration".into())
    );
    assert!(receiver.received().is_empty());
    assert!(envoy
        .log_text()
        .contains("no plugin configuration; every request is refused with 503"));

    let bad = json!({"sources": [{"name": "x", "allowed_cidrs": ["10.0.0.1/8"]}]});
    let (ok, output) = envoy_validate(&EnvoyOptions::new(&bad));
    assert!(!ok, "envoy accepted an invalid filter config");
    assert!(
        output.contains("invalid configuration: sources[0].allowed_cidrs[0]: `10.0.0.1/8` has host bits set; the network is 10.0.0.0/8"),
        "{output}"
    );
}
