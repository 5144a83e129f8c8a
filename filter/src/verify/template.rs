//! The HMAC template engine: a signature header (prefix + hex/base64 MAC) over content built
//! from a template. GitHub, Shopify, Slack, Zoom, Square and Linear are presets of it, and
//! `generic_hmac` exposes it to users.

use super::{check_timestamp, SignError, SignInput, SignedRequest, VerifyError};
use crate::config::{
    ConfigError, GenericHmacConfig, HmacAlgorithm, SchemeName, SignatureEncoding, TimestampUnit,
};
use crate::crypto::{decode_base64, decode_hex, HmacKey};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Body,
    Timestamp,
    Id,
    Url,
    Method,
    Path,
    Header(String),
}

enum TimestampSource {
    Header {
        name: String,
        unit: TimestampUnit,
    },
    /// Linear puts the signed time into the JSON body (milliseconds).
    BodyField(&'static str),
}

pub(super) struct Template {
    header: String,
    prefix: String,
    encoding: SignatureEncoding,
    parts: Vec<Part>,
    timestamp: Option<TimestampSource>,
    id_header: Option<String>,
    keys: Vec<HmacKey>,
    /// GitHub's legacy `x-hub-signature: sha1=`, tried only when the sha256 header is absent.
    legacy: Option<Box<Template>>,
}

impl Template {
    pub(super) fn preset(scheme: SchemeName, secrets: &[&str], allow_sha1: bool) -> Template {
        use HmacAlgorithm::{Sha1, Sha256};
        use SignatureEncoding::{Base64, Hex};
        let ts = |name: &str| {
            Some(TimestampSource::Header {
                name: name.to_owned(),
                unit: TimestampUnit::Seconds,
            })
        };
        let body = vec![Part::Body];
        let versioned = vec![
            Part::Literal(b"v0:".to_vec()),
            Part::Timestamp,
            Part::Literal(b":".to_vec()),
            Part::Body,
        ];
        let (header, prefix, alg, encoding, parts, timestamp) = match scheme {
            SchemeName::Github => ("x-hub-signature-256", "sha256=", Sha256, Hex, body, None),
            SchemeName::Shopify => ("x-shopify-hmac-sha256", "", Sha256, Base64, body, None),
            SchemeName::Slack => (
                "x-slack-signature",
                "v0=",
                Sha256,
                Hex,
                versioned,
                ts("x-slack-request-timestamp"),
            ),
            SchemeName::Zoom => (
                "x-zm-signature",
                "v0=",
                Sha256,
                Hex,
                versioned,
                ts("x-zm-request-timestamp"),
            ),
            SchemeName::Square => (
                "x-square-hmacsha256-signature",
                "",
                Sha256,
                Base64,
                vec![Part::Url, Part::Body],
                None,
            ),
            SchemeName::Linear => (
                "linear-signature",
                "",
                Sha256,
                Hex,
                body,
                Some(TimestampSource::BodyField("webhookTimestamp")),
            ),
            other => unreachable!("{other} is not a template preset"),
        };
        let legacy = (scheme == SchemeName::Github && allow_sha1).then(|| {
            Box::new(Template {
                header: "x-hub-signature".to_owned(),
                prefix: "sha1=".to_owned(),
                encoding: Hex,
                parts: vec![Part::Body],
                timestamp: None,
                id_header: None,
                keys: keys(Sha1, secrets),
                legacy: None,
            })
        });
        Template {
            header: header.to_owned(),
            prefix: prefix.to_owned(),
            encoding,
            parts,
            timestamp,
            id_header: None,
            keys: keys(alg, secrets),
            legacy,
        }
    }

    pub(super) fn generic(
        g: &GenericHmacConfig,
        secrets: &[&str],
        field: &str,
    ) -> Result<Template, ConfigError> {
        let header = header_name(&g.header, &format!("{field}.header"))?;
        let parts = parse_template(&g.template)
            .map_err(|m| ConfigError::new(format!("{field}.template"), m))?;
        let timestamp = match &g.timestamp_header {
            Some(h) => Some(TimestampSource::Header {
                name: header_name(h, &format!("{field}.timestamp_header"))?,
                unit: g.timestamp_unit,
            }),
            None => None,
        };
        let id_header = match &g.id_header {
            Some(h) => Some(header_name(h, &format!("{field}.id_header"))?),
            None => None,
        };
        if parts.contains(&Part::Timestamp) && timestamp.is_none() {
            return Err(ConfigError::new(
                format!("{field}.template"),
                "uses {timestamp} but no timestamp_header is set",
            ));
        }
        if parts.contains(&Part::Id) && id_header.is_none() {
            return Err(ConfigError::new(
                format!("{field}.template"),
                "uses {id} but no id_header is set",
            ));
        }
        Ok(Template {
            header,
            prefix: g.prefix.clone(),
            encoding: g.encoding,
            parts,
            timestamp,
            id_header,
            keys: keys(g.algorithm, secrets),
            legacy: None,
        })
    }

    pub(super) fn signs_url(&self) -> bool {
        self.parts.contains(&Part::Url)
    }

    pub(super) fn verify(
        &self,
        req: &SignedRequest<'_>,
        now: i64,
        tolerance: Option<u64>,
    ) -> Result<(), VerifyError> {
        let value = match (req.headers.unique(&self.header)?, &self.legacy) {
            (Some(v), _) => v,
            (None, Some(legacy)) if req.headers.unique(&legacy.header)?.is_some() => {
                return legacy.verify(req, now, tolerance)
            }
            (None, _) => return Err(VerifyError::MissingHeader(self.header.clone())),
        };
        let encoded = value.strip_prefix(self.prefix.as_str()).ok_or_else(|| {
            VerifyError::malformed(&self.header, format!("expected prefix `{}`", self.prefix))
        })?;
        let signature = match self.encoding {
            SignatureEncoding::Hex => decode_hex(encoded),
            SignatureEncoding::Base64 => decode_base64(encoded),
        }
        .ok_or_else(|| {
            VerifyError::malformed(
                &self.header,
                match self.encoding {
                    SignatureEncoding::Hex => "signature is not hexadecimal",
                    SignatureEncoding::Base64 => "signature is not base64",
                },
            )
        })?;

        let timestamp = match &self.timestamp {
            None => None,
            Some(TimestampSource::Header { name, unit }) => {
                let raw = req.header(name)?;
                let n: i64 = raw
                    .trim()
                    .parse()
                    .map_err(|_| VerifyError::malformed(name, "timestamp is not a whole number"))?;
                check_timestamp(to_seconds(n, *unit), now, tolerance)?;
                Some(raw)
            }
            Some(TimestampSource::BodyField(field)) => {
                let ms = body_timestamp_ms(req.body, field)?;
                check_timestamp(ms.div_euclid(1000), now, tolerance)?;
                None
            }
        };
        let id = match &self.id_header {
            Some(h) => Some(req.header(h)?),
            None => None,
        };
        let url = if self.parts.contains(&Part::Url) {
            Some(req.url().ok_or(VerifyError::UrlUnknown)?)
        } else {
            None
        };
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            pieces.push(match part {
                Part::Literal(l) => l,
                Part::Body => req.body,
                Part::Timestamp => timestamp.unwrap_or_default().as_bytes(),
                Part::Id => id.unwrap_or_default().as_bytes(),
                Part::Url => url.as_deref().unwrap_or_default().as_bytes(),
                Part::Method => req.method.as_bytes(),
                Part::Path => req.path.as_bytes(),
                Part::Header(h) => req.header(h)?.as_bytes(),
            });
        }
        if self.keys.iter().any(|k| k.mac(&pieces).matches(&signature)) {
            Ok(())
        } else {
            Err(VerifyError::NoMatch)
        }
    }

    pub(super) fn sign(&self, input: &SignInput<'_>) -> Result<Vec<(String, String)>, SignError> {
        let mut out = Vec::new();
        let timestamp = match &self.timestamp {
            Some(TimestampSource::Header { name, unit }) => {
                let t = match unit {
                    TimestampUnit::Seconds => input.timestamp,
                    TimestampUnit::Milliseconds => input.timestamp.saturating_mul(1000),
                }
                .to_string();
                out.push((name.clone(), t.clone()));
                t
            }
            _ => String::new(),
        };
        if let Some(h) = &self.id_header {
            out.push((h.clone(), input.id.to_owned()));
        }
        let mut pieces: Vec<Cow<'_, [u8]>> = Vec::new();
        for part in &self.parts {
            pieces.push(match part {
                Part::Literal(l) => Cow::Borrowed(l.as_slice()),
                Part::Body => Cow::Borrowed(input.body),
                Part::Timestamp => Cow::Owned(timestamp.as_bytes().to_vec()),
                Part::Id => Cow::Borrowed(input.id.as_bytes()),
                Part::Url => Cow::Borrowed(input.url.ok_or(SignError::UrlRequired)?.as_bytes()),
                Part::Method => Cow::Borrowed(input.method.as_bytes()),
                Part::Path => {
                    let url = input.url.ok_or(SignError::UrlRequired)?;
                    Cow::Owned(path_of(url).as_bytes().to_vec())
                }
                Part::Header(_) => {
                    return Err(SignError::Unsupported(
                        "templates with {header:..} are signed by the sender, not by this tool",
                    ))
                }
            });
        }
        let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_ref()).collect();
        let tag = self.keys[0].mac(&refs);
        let encoded = match self.encoding {
            SignatureEncoding::Hex => tag.hex(),
            SignatureEncoding::Base64 => tag.base64(),
        };
        out.insert(
            0,
            (self.header.clone(), format!("{}{encoded}", self.prefix)),
        );
        Ok(out)
    }
}

fn keys(alg: HmacAlgorithm, secrets: &[&str]) -> Vec<HmacKey> {
    secrets
        .iter()
        .map(|s| HmacKey::new(alg, s.as_bytes()))
        .collect()
}

fn to_seconds(n: i64, unit: TimestampUnit) -> i64 {
    match unit {
        TimestampUnit::Seconds => n,
        TimestampUnit::Milliseconds => n.div_euclid(1000),
    }
}

fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

fn body_timestamp_ms(body: &[u8], field: &'static str) -> Result<i64, VerifyError> {
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| VerifyError::malformed("body", "not JSON, so it has no signed timestamp"))?;
    doc.get(field)
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| {
            VerifyError::malformed("body", format!("`{field}` is missing or not a number"))
        })
}

fn header_name(h: &str, field: &str) -> Result<String, ConfigError> {
    let valid = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
    if valid {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(ConfigError::new(field, "not a valid HTTP header name"))
    }
}

fn parse_template(t: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            lit.push(c as u8);
            rest = &rest[2..];
        } else if c == '{' {
            let end = rest
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{rest}`"))?;
            let name = &rest[1..end];
            let part = match name {
                "body" => Part::Body,
                "timestamp" => Part::Timestamp,
                "id" => Part::Id,
                "url" => Part::Url,
                "method" => Part::Method,
                "path" => Part::Path,
                _ => match name.strip_prefix("header:") {
                    Some(h) if !h.is_empty() => Part::Header(h.to_ascii_lowercase()),
                    _ => return Err(format!(
                        "unknown placeholder `{{{name}}}`: use body, timestamp, id, url, method, path or header:NAME"
                    )),
                },
            };
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err("unmatched `}`: write `}}` for a literal brace".to_owned());
        } else {
            let mut buf = [0; 4];
            lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            rest = &rest[c.len_utf8()..];
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Literal(lit));
    }
    if !parts.contains(&Part::Body) {
        return Err(
            "the template must include {body}: an unsigned body could be forged".to_owned(),
        );
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::{SchemeName::*, Secret, VerifyConfig};
    use crate::verify::Verifier;

    #[test]
    fn github_published_vector() {
        // docs.github.com "Validating webhook deliveries": test values.
        let v = verifier(Github, &["It's a Secret to Everybody"]);
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        v.verify(&request(&h, b"Hello, World!"), 0).unwrap();
        assert_eq!(
            v.verify(&request(&h, b"Hello, World?"), 0),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn github_sha1_only_when_enabled() {
        let body = b"Hello, World!";
        let sha1 = format!(
            "sha1={}",
            HmacKey::new(HmacAlgorithm::Sha1, b"s").mac(&[body]).hex()
        );
        let h = headers(&[("x-hub-signature", sha1.as_str())]);
        let strict = verifier(Github, &["s"]);
        assert_eq!(
            strict.verify(&request(&h, body), 0),
            Err(VerifyError::MissingHeader("x-hub-signature-256".into()))
        );
        let cfg = VerifyConfig {
            scheme: Github,
            secrets: vec![Secret("s".into())],
            tolerance_secs: None,
            allow_sha1: true,
            public_origin: None,
            generic: None,
        };
        let legacy = Verifier::new(&cfg, "v").unwrap();
        legacy.verify(&request(&h, body), 0).unwrap();
    }

    #[test]
    fn slack_published_vector() {
        // api.slack.com "Verifying requests from Slack": the documented example.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let v = verifier(Slack, &["8f742231b10e8888abcd99yyyzzz85a5"]);
        let h = headers(&[
            ("x-slack-request-timestamp", "1531420618"),
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ]);
        v.verify(&request(&h, body.as_bytes()), 1531420618).unwrap();
        assert!(matches!(
            v.verify(&request(&h, body.as_bytes()), 1531420618 + 301),
            Err(VerifyError::TimestampTooOld { age_secs: 301, .. })
        ));
    }

    #[test]
    fn shopify_and_square_vectors() {
        // Shopify signs the raw body with the app secret, base64.
        let v = verifier(Shopify, &["hush"]);
        let sig = HmacKey::sha256(b"hush").mac(&[b"{}"]).base64();
        let h = headers(&[("x-shopify-hmac-sha256", sig.as_str())]);
        v.verify(&request(&h, b"{}"), 0).unwrap();

        // Square: base64 HMAC-SHA256 over notification URL + body; the expected value was
        // computed independently with Python's `hmac` module.
        let v = verifier(Square, &["signature-key"]);
        let h = headers(&[(
            "x-square-hmacsha256-signature",
            "0zOZ4nZmPmZvGEpkoghYQgrZKxWNEcZtzZFOr8kUdfI=",
        )]);
        let mut req = request(&h, br#"{"hello":"world"}"#);
        assert_eq!(v.verify(&req, 0), Err(VerifyError::UrlUnknown));
        req.origin = Some("https://webhook.site");
        req.path = "/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";
        v.verify(&req, 0).unwrap();
    }

    #[test]
    fn linear_timestamp_comes_from_the_body() {
        let v = verifier(Linear, &["lin_wh_secret"]);
        let body = br#"{"action":"create","webhookTimestamp":1700000000123}"#;
        let sig = HmacKey::sha256(b"lin_wh_secret").mac(&[body]).hex();
        let h = headers(&[("linear-signature", sig.as_str())]);
        v.verify(&request(&h, body), 1_700_000_030).unwrap();
        assert!(matches!(
            v.verify(&request(&h, body), 1_700_000_061),
            Err(VerifyError::TimestampTooOld { .. })
        ));
        let body = br#"{"action":"create"}"#;
        let sig = HmacKey::sha256(b"lin_wh_secret").mac(&[body]).hex();
        let h = headers(&[("linear-signature", sig.as_str())]);
        assert!(matches!(
            v.verify(&request(&h, body), 0),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn round_trips() {
        for s in [Github, Shopify, Slack, Zoom, Square] {
            round_trip(s, "a-secret", "a-secret");
        }
    }

    #[test]
    fn failures_name_the_part() {
        let v = verifier(Github, &["s"]);
        let h = headers(&[("x-hub-signature-256", "md5=00")]);
        assert_eq!(
            v.verify(&request(&h, b""), 0).unwrap_err().to_string(),
            "malformed header `x-hub-signature-256`: expected prefix `sha256=`"
        );
        let h = headers(&[("x-hub-signature-256", "sha256=zz")]);
        assert_eq!(
            v.verify(&request(&h, b""), 0).unwrap_err().code(),
            "malformed_signature"
        );
        let h = headers(&[
            ("x-hub-signature-256", "sha256=00"),
            ("x-hub-signature-256", "sha256=00"),
        ]);
        assert_eq!(
            v.verify(&request(&h, b""), 0).unwrap_err().code(),
            "duplicate_header"
        );
    }

    fn generic(template: &str) -> GenericHmacConfig {
        GenericHmacConfig {
            header: "X-Signature".into(),
            prefix: "sha512=".into(),
            algorithm: HmacAlgorithm::Sha512,
            encoding: SignatureEncoding::Base64,
            template: template.into(),
            timestamp_header: Some("X-Timestamp".into()),
            timestamp_unit: TimestampUnit::Milliseconds,
            id_header: Some("X-Id".into()),
        }
    }

    #[test]
    fn generic_template_round_trip() {
        let g = generic("{id}|{timestamp}|{method}|{{lit}}|{body}");
        let t = Template::generic(&g, &["k1", "k2"], "g").unwrap();
        let input = SignInput {
            body: b"payload",
            id: "evt_1",
            timestamp: 1_700_000_000,
            url: None,
            method: "PUT",
        };
        let signed = t.sign(&input).unwrap();
        assert_eq!(signed[1], ("x-timestamp".into(), "1700000000000".into()));
        let h = headers(
            &signed
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect::<Vec<_>>(),
        );
        let mut req = request(&h, b"payload");
        req.method = "PUT";
        t.verify(&req, 1_700_000_100, Some(300)).unwrap();
        req.method = "POST";
        assert_eq!(
            t.verify(&req, 1_700_000_100, Some(300)),
            Err(VerifyError::NoMatch)
        );
        // The MAC equals one computed by hand over the expanded template.
        let expected = HmacKey::new(HmacAlgorithm::Sha512, b"k1")
            .mac(&[b"evt_1|1700000000000|PUT|{lit}|payload"])
            .base64();
        assert_eq!(signed[0].1, format!("sha512={expected}"));
    }

    #[test]
    fn generic_template_errors_are_precise() {
        let err = |t: &str| Template::generic(&generic(t), &["k"], "g").err().unwrap();
        assert!(err("{id}.{nope}.{body}")
            .message
            .contains("unknown placeholder `{nope}`"));
        assert!(err("{id}").message.contains("must include {body}"));
        assert!(err("{body").message.contains("unclosed"));
        assert!(err("}{body}").message.contains("unmatched"));
        let mut g = generic("{timestamp}{body}");
        g.timestamp_header = None;
        assert_eq!(
            Template::generic(&g, &["k"], "g").err().unwrap().field,
            "g.template"
        );
        g.header = "bad header".into();
        assert_eq!(
            Template::generic(&g, &["k"], "g").err().unwrap().field,
            "g.header"
        );
    }
}
