//! Signature headers that are lists of `key=value` items: Stripe (`t=..,v1=..,v1=..`),
//! Paddle (`ts=..;h1=..`) and PagerDuty (`v1=..,v1=..`). Several signatures may be present
//! during the sender's secret rotation; any one matching a configured secret is enough.

use super::{check_timestamp, parse_unix, SignInput, SignedRequest, VerifyError};
use crate::crypto::{decode_hex, HmacKey};

pub(super) struct KeyedList {
    header: &'static str,
    separator: char,
    /// Key of the timestamp item and the byte joining it to the body in the signed content.
    timestamp: Option<(&'static str, &'static [u8])>,
    signature_key: &'static str,
    keys: Vec<HmacKey>,
}

impl KeyedList {
    pub(super) fn stripe(secrets: &[&str]) -> KeyedList {
        Self::build("stripe-signature", ',', Some(("t", b".")), "v1", secrets)
    }

    pub(super) fn paddle(secrets: &[&str]) -> KeyedList {
        Self::build("paddle-signature", ';', Some(("ts", b":")), "h1", secrets)
    }

    pub(super) fn pagerduty(secrets: &[&str]) -> KeyedList {
        Self::build("x-pagerduty-signature", ',', None, "v1", secrets)
    }

    fn build(
        header: &'static str,
        separator: char,
        timestamp: Option<(&'static str, &'static [u8])>,
        signature_key: &'static str,
        secrets: &[&str],
    ) -> KeyedList {
        KeyedList {
            header,
            separator,
            timestamp,
            signature_key,
            keys: secrets
                .iter()
                .map(|s| HmacKey::sha256(s.as_bytes()))
                .collect(),
        }
    }

    pub(super) fn verify(
        &self,
        req: &SignedRequest<'_>,
        now: i64,
        tolerance: Option<u64>,
    ) -> Result<(), VerifyError> {
        let value = req.header(self.header)?;
        let mut ts: Option<&str> = None;
        let mut signatures = Vec::new();
        for item in value.split(self.separator) {
            let Some((k, v)) = item.trim().split_once('=') else {
                return Err(VerifyError::malformed(
                    self.header,
                    format!("item `{}` is not key=value", item.trim()),
                ));
            };
            if Some(k) == self.timestamp.map(|(key, _)| key) {
                if ts.replace(v).is_some() {
                    return Err(VerifyError::malformed(
                        self.header,
                        format!("more than one `{k}=` timestamp"),
                    ));
                }
            } else if k == self.signature_key {
                // An undecodable entry cannot match; keep looking at the others.
                signatures.extend(decode_hex(v));
            }
        }
        if signatures.is_empty() {
            return Err(VerifyError::malformed(
                self.header,
                format!("no `{}=` signature in hex", self.signature_key),
            ));
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(3);
        if let Some((key, joiner)) = self.timestamp {
            let raw = ts.ok_or_else(|| {
                VerifyError::malformed(self.header, format!("no `{key}=` timestamp"))
            })?;
            check_timestamp(parse_unix(self.header, raw)?, now, tolerance)?;
            parts.extend([raw.as_bytes(), joiner]);
        }
        parts.push(req.body);
        for key in &self.keys {
            let tag = key.mac(&parts);
            if signatures.iter().any(|s| tag.matches(s)) {
                return Ok(());
            }
        }
        Err(VerifyError::NoMatch)
    }

    pub(super) fn sign(&self, input: &SignInput<'_>) -> Vec<(String, String)> {
        let ts = input.timestamp.to_string();
        let value = match self.timestamp {
            Some((key, joiner)) => {
                let mac = self.keys[0].mac(&[ts.as_bytes(), joiner, input.body]);
                format!(
                    "{key}={ts}{}{}={}",
                    self.separator,
                    self.signature_key,
                    mac.hex()
                )
            }
            None => format!(
                "{}={}",
                self.signature_key,
                self.keys[0].mac(&[input.body]).hex()
            ),
        };
        vec![(self.header.to_owned(), value)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::SchemeName::*;

    /// Produced by Stripe's own library (stripe-python 16.1.0, `WebhookSignature`).
    #[test]
    fn stripe_vector_from_stripe_python() {
        let body = br#"{"id":"evt_test_webhook","object":"event"}"#;
        let h = headers(&[(
            "stripe-signature",
            "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990",
        )]);
        let v = verifier(Stripe, &["whsec_test_secret"]);
        v.verify(&request(&h, body), 1_700_000_000).unwrap();
        assert_eq!(
            v.verify(
                &request(&h, br#"{"id":"evt_test_webhook","object":"evenT"}"#),
                1_700_000_000
            ),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn stripe_accepts_any_v1_during_rotation_and_ignores_v0() {
        let body = br#"{"id":"evt_1"}"#;
        let old = HmacKey::sha256(b"whsec_old")
            .mac(&[b"1700000000", b".", body])
            .hex();
        let new = HmacKey::sha256(b"whsec_new")
            .mac(&[b"1700000000", b".", body])
            .hex();
        let value = format!("t=1700000000,v1={old},v1={new},v0=deadbeef");
        let h = headers(&[("stripe-signature", value.as_str())]);
        verifier(Stripe, &["whsec_new"])
            .verify(&request(&h, body), 1_700_000_100)
            .unwrap();
        verifier(Stripe, &["whsec_old"])
            .verify(&request(&h, body), 1_700_000_100)
            .unwrap();
        assert_eq!(
            verifier(Stripe, &["whsec_other"]).verify(&request(&h, body), 1_700_000_100),
            Err(VerifyError::NoMatch)
        );
        assert!(matches!(
            verifier(Stripe, &["whsec_new"]).verify(&request(&h, body), 1_700_000_301),
            Err(VerifyError::TimestampTooOld { .. })
        ));
    }

    #[test]
    fn stripe_malformed_headers_say_what_is_missing() {
        let v = verifier(Stripe, &["whsec_x"]);
        let check = |value: &str, expect: &str| {
            let h = headers(&[("stripe-signature", value)]);
            let e = v.verify(&request(&h, b"{}"), 0).unwrap_err().to_string();
            assert!(e.contains(expect), "{value}: {e}");
        };
        check("v1=00", "no `t=` timestamp");
        check("t=1", "no `v1=` signature");
        check("t=1,t=2,v1=00", "more than one `t=`");
        check("t=abc,v1=00", "timestamp is not a unix time");
        check("garbage", "not key=value");
    }

    #[test]
    fn paddle_documented_format() {
        // Paddle Billing: `ts=<unix>;h1=<hex hmac of "ts:body">`.
        let body = br#"{"event_id":"evt_01"}"#;
        let mac = HmacKey::sha256(b"pdl_ntfset_01_secret")
            .mac(&[b"1671552777:", body])
            .hex();
        let value = format!("ts=1671552777;h1={mac}");
        let h = headers(&[("paddle-signature", value.as_str())]);
        let v = verifier(Paddle, &["pdl_ntfset_01_secret"]);
        v.verify(&request(&h, body), 1671552780).unwrap();
        // Paddle's 5 second default tolerance.
        assert!(v.verify(&request(&h, body), 1671552783).is_err());
    }

    #[test]
    fn pagerduty_multiple_signatures() {
        let body = br#"{"event":{}}"#;
        let mac = HmacKey::sha256(b"pd").mac(&[body]).hex();
        let value = format!("v1=00ff, v1={mac}");
        let h = headers(&[("x-pagerduty-signature", value.as_str())]);
        verifier(Pagerduty, &["pd"])
            .verify(&request(&h, body), 0)
            .unwrap();
    }

    #[test]
    fn round_trips() {
        for s in [Stripe, Paddle, Pagerduty] {
            round_trip(s, "whsec_abc", "whsec_abc");
        }
    }
}
