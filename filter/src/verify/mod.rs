//! Webhook signature schemes: verification for the filter, signing for tests, the CLI and
//! outbound delivery.
//!
//! Most vendor schemes are "an HMAC over a template, in a header with a prefix and an encoding";
//! they are presets of one [`template`] engine. Schemes with structured headers
//! ([`keyed_list`]: Stripe, Paddle, PagerDuty), Standard Webhooks/Svix, Twilio and Discord have
//! their own modules. All comparisons are constant-time, and every failure says which part
//! failed, because "why does my signature fail" is the question users ask most.

mod discord;
mod keyed_list;
mod standard;
pub use standard::StandardSigner;
mod template;
mod twilio;

/// Public keys for signing keys: `whsk_` → `whpk_` (Standard Webhooks), hex seed → hex key (Discord).
pub mod public_keys {
    pub use super::discord::public_key_for as discord_public_key;
    pub use super::standard::public_key_for as standard_webhooks_public_key;
}

use crate::config::{ConfigError, GenericHmacConfig, SchemeName, VerifyConfig};
use crate::headers::{DuplicateHeader, Headers};
use std::borrow::Cow;

/// What a scheme needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// Request headers.
    pub headers: &'a Headers,
    /// The complete body.
    pub body: &'a [u8],
    /// HTTP method.
    pub method: &'a str,
    /// `scheme://authority` as the provider called it, when known.
    pub origin: Option<&'a str>,
    /// Path and query.
    pub path: &'a str,
}

impl SignedRequest<'_> {
    fn url(&self) -> Option<String> {
        self.origin.map(|o| format!("{o}{}", self.path))
    }

    fn header(&self, name: &str) -> Result<&str, VerifyError> {
        self.headers
            .unique(name)?
            .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
    }
}

/// Why a signature was refused. `Display` is the precise, secret-free reason shown to callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent.
    #[error("missing header `{0}`")]
    MissingHeader(String),
    /// A security header appears more than once.
    #[error("header `{}` appears more than once", .0 .0)]
    DuplicateHeader(#[from] DuplicateHeader),
    /// A header is present but cannot be parsed.
    #[error("malformed header `{header}`: {detail}")]
    Malformed {
        /// Header name.
        header: String,
        /// What is wrong with it.
        detail: Cow<'static, str>,
    },
    /// The signed timestamp is older than the tolerance.
    #[error("timestamp too old: signed {age_secs}s ago, tolerance is {tolerance_secs}s")]
    TimestampTooOld {
        /// Age of the timestamp in seconds.
        age_secs: i64,
        /// Configured tolerance.
        tolerance_secs: u64,
    },
    /// The signed timestamp is further in the future than the tolerance.
    #[error("timestamp too new: {skew_secs}s in the future, tolerance is {tolerance_secs}s")]
    TimestampInFuture {
        /// Seconds ahead of the local clock.
        skew_secs: i64,
        /// Configured tolerance.
        tolerance_secs: u64,
    },
    /// The request URL is needed but unknown (set `public_origin`).
    #[error("the request URL is unknown: configure `public_origin`")]
    UrlUnknown,
    /// The body does not carry what the scheme signs (e.g. Twilio's `bodySHA256`).
    #[error("body does not match the signed content: {0}")]
    BodyMismatch(&'static str),
    /// Well-formed, but no configured secret produced this signature.
    #[error("no configured secret matches the signature")]
    NoMatch,
}

impl VerifyError {
    /// A fixed snake_case code for metrics and JSON replies.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_signature",
            VerifyError::DuplicateHeader(_) => "duplicate_header",
            VerifyError::Malformed { .. } => "malformed_signature",
            VerifyError::TimestampTooOld { .. } => "timestamp_too_old",
            VerifyError::TimestampInFuture { .. } => "timestamp_in_future",
            VerifyError::UrlUnknown => "url_unknown",
            VerifyError::BodyMismatch(_) => "body_mismatch",
            VerifyError::NoMatch => "signature_mismatch",
        }
    }

    fn malformed(header: &str, detail: impl Into<Cow<'static, str>>) -> VerifyError {
        VerifyError::Malformed {
            header: header.to_owned(),
            detail: detail.into(),
        }
    }
}

/// Checks a signed unix timestamp against `now` in both directions.
fn check_timestamp(ts: i64, now: i64, tolerance: Option<u64>) -> Result<(), VerifyError> {
    let Some(tol) = tolerance else { return Ok(()) };
    let age = now.saturating_sub(ts);
    if age > tol as i64 {
        return Err(VerifyError::TimestampTooOld {
            age_secs: age,
            tolerance_secs: tol,
        });
    }
    let skew = ts.saturating_sub(now);
    if skew > tol as i64 {
        return Err(VerifyError::TimestampInFuture {
            skew_secs: skew,
            tolerance_secs: tol,
        });
    }
    Ok(())
}

fn parse_unix(header: &str, value: &str) -> Result<i64, VerifyError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| VerifyError::malformed(header, "timestamp is not a unix time in seconds"))
}

/// The vendor's documented timestamp tolerance, in seconds.
pub fn default_tolerance(scheme: SchemeName) -> Option<u64> {
    match scheme {
        SchemeName::StandardWebhooks
        | SchemeName::Svix
        | SchemeName::Stripe
        | SchemeName::Slack
        | SchemeName::Zoom
        | SchemeName::Discord
        | SchemeName::GenericHmac => Some(300),
        // Paddle's SDKs allow 5 seconds; Linear documents one minute.
        SchemeName::Paddle => Some(5),
        SchemeName::Linear => Some(60),
        SchemeName::Github
        | SchemeName::Shopify
        | SchemeName::Twilio
        | SchemeName::Square
        | SchemeName::Pagerduty => None,
    }
}

/// A compiled verifier: secrets decoded and keyed once, at configuration time.
pub struct Verifier {
    scheme: SchemeName,
    tolerance: Option<u64>,
    origin: Option<String>,
    imp: Imp,
}

enum Imp {
    Standard(standard::Standard),
    KeyedList(keyed_list::KeyedList),
    Template(template::Template),
    Twilio(twilio::Twilio),
    Discord(discord::Discord),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Compiles a verification config. `field` prefixes error locations.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad secret or option.
    pub fn new(cfg: &VerifyConfig, field: &str) -> Result<Verifier, ConfigError> {
        if cfg.secrets.is_empty() {
            return Err(ConfigError::new(
                format!("{field}.secrets"),
                "at least one secret is required",
            ));
        }
        if cfg.generic.is_some() != (cfg.scheme == SchemeName::GenericHmac) {
            return Err(ConfigError::new(
                format!("{field}.generic"),
                "`generic` is required for scheme generic_hmac and refused for every other scheme",
            ));
        }
        if cfg.allow_sha1 && cfg.scheme != SchemeName::Github {
            return Err(ConfigError::new(
                format!("{field}.allow_sha1"),
                "only the github scheme has a legacy sha1 signature",
            ));
        }
        let origin = match &cfg.public_origin {
            None => None,
            Some(o) => Some(validate_origin(o, &format!("{field}.public_origin"))?),
        };
        let secrets: Vec<&str> = cfg.secrets.iter().map(|s| s.expose()).collect();
        let sf = format!("{field}.secrets");
        let imp = match cfg.scheme {
            SchemeName::StandardWebhooks => {
                Imp::Standard(standard::Standard::new("webhook", &secrets, &sf)?)
            }
            SchemeName::Svix => Imp::Standard(standard::Standard::new("svix", &secrets, &sf)?),
            SchemeName::Stripe => Imp::KeyedList(keyed_list::KeyedList::stripe(&secrets)),
            SchemeName::Paddle => Imp::KeyedList(keyed_list::KeyedList::paddle(&secrets)),
            SchemeName::Pagerduty => Imp::KeyedList(keyed_list::KeyedList::pagerduty(&secrets)),
            SchemeName::Twilio => Imp::Twilio(twilio::Twilio::new(&secrets)),
            SchemeName::Discord => Imp::Discord(discord::Discord::new(&secrets, &sf)?),
            SchemeName::GenericHmac => {
                let g = cfg.generic.as_ref().unwrap_or_else(|| unreachable!());
                Imp::Template(template::Template::generic(
                    g,
                    &secrets,
                    &format!("{field}.generic"),
                )?)
            }
            preset => Imp::Template(template::Template::preset(preset, &secrets, cfg.allow_sha1)),
        };
        Ok(Verifier {
            scheme: cfg.scheme,
            tolerance: cfg.tolerance_secs.or_else(|| default_tolerance(cfg.scheme)),
            origin,
            imp,
        })
    }

    /// Whether verification needs the request URL (so the host builds it only then).
    pub fn needs_url(&self) -> bool {
        self.origin.is_none()
            && match &self.imp {
                Imp::Twilio(_) => true,
                Imp::Template(t) => t.signs_url(),
                _ => false,
            }
    }

    /// The scheme this verifier checks.
    pub fn scheme(&self) -> SchemeName {
        self.scheme
    }

    /// Verifies a request at unix time `now`.
    ///
    /// # Errors
    /// The precise reason the signature is refused.
    pub fn verify(&self, req: &SignedRequest<'_>, now: i64) -> Result<(), VerifyError> {
        let configured;
        let req = match &self.origin {
            Some(o) => {
                configured = SignedRequest {
                    origin: Some(o),
                    ..*req
                };
                &configured
            }
            None => req,
        };
        match &self.imp {
            Imp::Standard(s) => s.verify(req, now, self.tolerance),
            Imp::KeyedList(s) => s.verify(req, now, self.tolerance),
            Imp::Template(s) => s.verify(req, now, self.tolerance),
            Imp::Twilio(s) => s.verify(req),
            Imp::Discord(s) => s.verify(req, now, self.tolerance),
        }
    }
}

fn validate_origin(o: &str, field: &str) -> Result<String, ConfigError> {
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| ConfigError::new(field, "must start with https:// or http://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(ConfigError::new(
            field,
            "must be an origin only (scheme://host[:port]), without path, query or spaces",
        ));
    }
    Ok(o.to_owned())
}

/// What to sign.
#[derive(Debug, Clone, Copy)]
pub struct SignInput<'a> {
    /// The body as sent.
    pub body: &'a [u8],
    /// Message id (Standard Webhooks, Svix; `{id}` in generic templates).
    pub id: &'a str,
    /// Unix time in seconds.
    pub timestamp: i64,
    /// Full URL the request goes to (Twilio, Square; `{url}`).
    pub url: Option<&'a str>,
    /// HTTP method (`{method}`).
    pub method: &'a str,
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The secret cannot be used for signing with this scheme.
    #[error("secret: {0}")]
    Secret(String),
    /// The scheme needs the URL.
    #[error("this scheme signs the URL: pass --url")]
    UrlRequired,
    /// Generic HMAC settings are missing or invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The scheme signs with a secret the filter does not hold (it only verifies).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Signs a request the way the vendor would; returns the headers to send.
///
/// # Errors
/// [`SignError`] when the secret or inputs do not fit the scheme.
pub fn sign(
    scheme: SchemeName,
    secret: &str,
    generic: Option<&GenericHmacConfig>,
    input: &SignInput<'_>,
) -> Result<Vec<(String, String)>, SignError> {
    match scheme {
        SchemeName::StandardWebhooks => standard::sign("webhook", secret, input),
        SchemeName::Svix => standard::sign("svix", secret, input),
        SchemeName::Stripe => Ok(keyed_list::KeyedList::stripe(&[secret]).sign(input)),
        SchemeName::Paddle => Ok(keyed_list::KeyedList::paddle(&[secret]).sign(input)),
        SchemeName::Pagerduty => Ok(keyed_list::KeyedList::pagerduty(&[secret]).sign(input)),
        SchemeName::Twilio => twilio::Twilio::new(&[secret]).sign(input),
        SchemeName::Discord => discord::sign(secret, input),
        SchemeName::GenericHmac => {
            let g = generic.ok_or(SignError::Unsupported(
                "generic_hmac needs its header/template settings",
            ))?;
            template::Template::generic(g, &[secret], "generic")?.sign(input)
        }
        preset => template::Template::preset(preset, &[secret], false).sign(input),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::config::Secret;

    pub fn verifier(scheme: SchemeName, secrets: &[&str]) -> Verifier {
        let cfg = VerifyConfig {
            scheme,
            secrets: secrets.iter().map(|s| Secret((*s).to_owned())).collect(),
            tolerance_secs: None,
            allow_sha1: false,
            public_origin: None,
            generic: None,
        };
        Verifier::new(&cfg, "verify").unwrap()
    }

    pub fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers::new(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    pub fn request<'a>(headers: &'a Headers, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            headers,
            body,
            method: "POST",
            origin: None,
            path: "/",
        }
    }

    /// Signs with `scheme`, verifies, then checks that flipping any body byte fails.
    pub fn round_trip(scheme: SchemeName, sign_secret: &str, verify_secret: &str) {
        let body = br#"{"type":"invoice.paid","amount":1200}"#;
        let input = SignInput {
            body,
            id: "msg_2Xc1",
            timestamp: 1_700_000_000,
            url: Some("https://hooks.example.com/in/x?a=1"),
            method: "POST",
        };
        let signed = sign(scheme, sign_secret, None, &input).unwrap();
        let h = headers(
            &signed
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        let v = verifier(scheme, &[verify_secret]);
        let mut req = request(&h, body);
        req.origin = Some("https://hooks.example.com");
        req.path = "/in/x?a=1";
        v.verify(&req, 1_700_000_003).unwrap();
        for i in 0..body.len() {
            let mut tampered = body.to_vec();
            tampered[i] ^= 0x01;
            let mut req = req;
            req.body = &tampered;
            assert!(
                v.verify(&req, 1_700_000_003).is_err(),
                "{scheme}: flipped byte {i} verified"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use proptest::prelude::*;

    /// Secrets each scheme accepts for verification, and the matching signing secret.
    fn keys(scheme: SchemeName) -> (String, String) {
        match scheme {
            SchemeName::StandardWebhooks | SchemeName::Svix => (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            ),
            SchemeName::Discord => {
                let seed = hex::encode([5u8; 32]);
                (public_keys::discord_public_key(&seed).unwrap(), seed)
            }
            _ => ("a-secret".into(), "a-secret".into()),
        }
    }

    fn all_verifiers() -> Vec<(SchemeName, Verifier)> {
        SchemeName::ALL
            .into_iter()
            .filter(|s| *s != SchemeName::GenericHmac)
            .map(|s| (s, verifier(s, &[&keys(s).0])))
            .collect()
    }

    const HEADER_NAMES: [&str; 16] = [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-signature",
        "stripe-signature",
        "x-hub-signature-256",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-twilio-signature",
        "paddle-signature",
        "x-square-hmacsha256-signature",
        "x-zm-signature",
        "x-pagerduty-signature",
        "linear-signature",
        "x-signature-ed25519",
        "x-signature-timestamp",
    ];

    proptest! {
        /// Arbitrary header values and bodies never panic any scheme, and never verify.
        #[test]
        fn garbage_never_panics_or_verifies(
            values in proptest::collection::vec("\\PC{0,80}", HEADER_NAMES.len()),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            now in any::<i64>(),
        ) {
            let pairs: Vec<(&str, &str)> = HEADER_NAMES.iter().copied().zip(values.iter().map(String::as_str)).collect();
            let h = headers(&pairs);
            let mut req = request(&h, &body);
            req.origin = Some("https://h.example.com");
            for (scheme, v) in all_verifiers() {
                prop_assert!(v.verify(&req, now).is_err(), "{} verified garbage", scheme);
            }
        }

        /// Signing then verifying any body succeeds for every scheme; the next second too.
        #[test]
        fn sign_verify_round_trip_any_body(body in proptest::collection::vec(any::<u8>(), 0..300), ts in 1_000_000_000i64..4_000_000_000) {
            for scheme in SchemeName::ALL.into_iter().filter(|s| *s != SchemeName::GenericHmac && *s != SchemeName::Linear) {
                let (verify_key, sign_key) = keys(scheme);
                let input = SignInput { body: &body, id: "msg_1", timestamp: ts, url: Some("https://h.example.com/p?q=1"), method: "POST" };
                let signed = sign(scheme, &sign_key, None, &input).unwrap();
                let pairs: Vec<(&str, &str)> = signed.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                let h = headers(&pairs);
                let mut req = request(&h, &body);
                req.origin = Some("https://h.example.com");
                req.path = "/p?q=1";
                prop_assert_eq!(verifier(scheme, &[&verify_key]).verify(&req, ts + 1), Ok(()), "{}", scheme);
            }
        }
    }

    #[test]
    fn timestamps_are_checked_both_ways() {
        assert!(check_timestamp(1000, 1300, Some(300)).is_ok());
        assert!(check_timestamp(1300, 1000, Some(300)).is_ok());
        assert_eq!(
            check_timestamp(1000, 1301, Some(300)),
            Err(VerifyError::TimestampTooOld {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert!(matches!(
            check_timestamp(1302, 1001, Some(300)),
            Err(VerifyError::TimestampInFuture { skew_secs: 301, .. })
        ));
        assert!(check_timestamp(0, i64::MAX, None).is_ok());
        assert!(check_timestamp(i64::MIN, i64::MAX, Some(1)).is_err());
    }

    #[test]
    fn origins_are_validated() {
        assert!(validate_origin("https://h.example.com:8443", "f").is_ok());
        assert!(validate_origin("h.example.com", "f").is_err());
        assert!(validate_origin("https://h.example.com/path", "f").is_err());
    }
}
