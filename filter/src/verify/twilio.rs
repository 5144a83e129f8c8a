//! Twilio: `x-twilio-signature` is base64 HMAC-SHA1 (auth token) over the full URL followed by
//! every form parameter as `name + value`, sorted. JSON bodies are signed through a
//! `bodySHA256` query parameter instead (hex SHA-256 of the body), with the URL alone signed.
//! Like Twilio's libraries, the URL is tried with and without its default port.

use super::{SignError, SignInput, SignedRequest, VerifyError};
use crate::config::HmacAlgorithm;
use crate::crypto::{ct_eq, decode_base64, sha256_hex, HmacKey};

const HEADER: &str = "x-twilio-signature";

pub(super) struct Twilio {
    keys: Vec<HmacKey>,
}

impl Twilio {
    pub(super) fn new(secrets: &[&str]) -> Twilio {
        Twilio {
            keys: secrets
                .iter()
                .map(|s| HmacKey::new(HmacAlgorithm::Sha1, s.as_bytes()))
                .collect(),
        }
    }

    pub(super) fn verify(&self, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
        let signature = decode_base64(req.header(HEADER)?)
            .ok_or_else(|| VerifyError::malformed(HEADER, "signature is not base64"))?;
        let url = req.url().ok_or(VerifyError::UrlUnknown)?;
        let params = match query_param(&url, "bodySHA256") {
            Some(expected) => {
                if !ct_eq(
                    sha256_hex(req.body).as_bytes(),
                    expected.to_ascii_lowercase().as_bytes(),
                ) {
                    return Err(VerifyError::BodyMismatch(
                        "bodySHA256 differs from the body's SHA-256",
                    ));
                }
                String::new()
            }
            None => sorted_params(req.body),
        };
        for candidate in [Some(url.clone()), toggle_default_port(&url)]
            .into_iter()
            .flatten()
        {
            for key in &self.keys {
                if key
                    .mac(&[candidate.as_bytes(), params.as_bytes()])
                    .matches(&signature)
                {
                    return Ok(());
                }
            }
        }
        Err(VerifyError::NoMatch)
    }

    pub(super) fn sign(&self, input: &SignInput<'_>) -> Result<Vec<(String, String)>, SignError> {
        let url = input.url.ok_or(SignError::UrlRequired)?;
        let params = match query_param(url, "bodySHA256") {
            Some(_) => String::new(),
            None => sorted_params(input.body),
        };
        let tag = self.keys[0].mac(&[url.as_bytes(), params.as_bytes()]);
        Ok(vec![(HEADER.to_owned(), tag.base64())])
    }
}

fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1.split('#').next()?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `name + value` for every form parameter, sorted by name then value, as Twilio signs them.
fn sorted_params(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut pairs: Vec<(String, String)> = text
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    pairs.sort();
    pairs.into_iter().map(|(k, v)| k + &v).collect()
}

/// `application/x-www-form-urlencoded` decoding; invalid escapes are kept literally.
pub(crate) fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The same URL with its default port removed, or added when absent.
fn toggle_default_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once(':') {
        Some((host, port)) if port == default => Some(format!("{scheme}://{host}{tail}")),
        Some(_) => None,
        None => Some(format!("{scheme}://{authority}:{default}{tail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::SchemeName::Twilio as T;

    const BODY: &[u8] =
        b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";

    /// Twilio's documented example (auth token 12345).
    #[test]
    fn published_vector() {
        let v = verifier(T, &["12345"]);
        let h = headers(&[(HEADER, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")]);
        let mut req = request(&h, BODY);
        assert_eq!(v.verify(&req, 0), Err(VerifyError::UrlUnknown));
        req.origin = Some("https://mycompany.com");
        req.path = "/myapp.php?foo=1&bar=2";
        v.verify(&req, 0).unwrap();
        // Twilio's libraries also accept the URL with its default port.
        req.origin = Some("https://mycompany.com:443");
        v.verify(&req, 0).unwrap();
        req.path = "/myapp.php?foo=1&bar=3";
        assert_eq!(v.verify(&req, 0), Err(VerifyError::NoMatch));
    }

    #[test]
    fn json_bodies_use_body_sha256() {
        let body = br#"{"ProductName":"Twilio"}"#;
        let path = format!("/hook?bodySHA256={}", sha256_hex(body));
        let url = format!("https://h.example.com{path}");
        let signed = Twilio::new(&["tok"])
            .sign(&SignInput {
                body,
                id: "",
                timestamp: 0,
                url: Some(&url),
                method: "POST",
            })
            .unwrap();
        let h = headers(&[(HEADER, signed[0].1.as_str())]);
        let mut req = request(&h, body);
        req.origin = Some("https://h.example.com");
        req.path = &path;
        verifier(T, &["tok"]).verify(&req, 0).unwrap();
        let tampered = br#"{"ProductName":"Twiliq"}"#;
        req.body = tampered;
        assert!(matches!(
            verifier(T, &["tok"]).verify(&req, 0),
            Err(VerifyError::BodyMismatch(_))
        ));
    }

    #[test]
    fn form_decoding_and_ports() {
        assert_eq!(form_decode("a+b%2Bc%zz%4"), "a b+c%zz%4");
        assert_eq!(
            toggle_default_port("https://a.b/x").as_deref(),
            Some("https://a.b:443/x")
        );
        assert_eq!(
            toggle_default_port("http://a.b:80?q").as_deref(),
            Some("http://a.b?q")
        );
        assert_eq!(toggle_default_port("https://a.b:8443/x"), None);
    }

    #[test]
    fn round_trip_form() {
        round_trip(T, "tok", "tok");
    }
}
