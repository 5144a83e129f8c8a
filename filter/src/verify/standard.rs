//! Standard Webhooks (`webhook-*` headers) and Svix (`svix-*`, the same scheme).
//!
//! Signed content is `{id}.{timestamp}.{body}`. The signature header is a space-separated list
//! of `v1,<base64 HMAC-SHA256>` (secrets `whsec_<base64>`) and `v1a,<base64 ed25519>` (public
//! keys `whpk_<base64>`, signing keys `whsk_<base64>`); unknown versions are ignored, as the
//! specification asks.

use super::{check_timestamp, parse_unix, SignError, SignInput, SignedRequest, VerifyError};
use crate::config::ConfigError;
use crate::crypto::{decode_base64, encode_base64, encode_base64_into, HmacKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

pub(super) struct Standard {
    id_header: String,
    timestamp_header: String,
    signature_header: String,
    hmac_keys: Vec<HmacKey>,
    public_keys: Vec<VerifyingKey>,
}

impl Standard {
    pub(super) fn new(
        prefix: &str,
        secrets: &[&str],
        field: &str,
    ) -> Result<Standard, ConfigError> {
        let mut hmac_keys = Vec::new();
        let mut public_keys = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            let err = |m: &str| ConfigError::new(format!("{field}[{i}]"), m);
            if let Some(pk) = s.strip_prefix("whpk_") {
                let bytes =
                    decode_base64(pk).ok_or_else(|| err("not valid base64 after `whpk_`"))?;
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| err("an ed25519 public key (`whpk_`) must be 32 bytes"))?;
                public_keys.push(
                    VerifyingKey::from_bytes(&arr)
                        .map_err(|_| err("not a valid ed25519 public key"))?,
                );
            } else if s.starts_with("whsk_") {
                return Err(err(
                    "`whsk_` is a signing key: configure its public key (`whpk_`) to verify",
                ));
            } else {
                let raw = s.strip_prefix("whsec_").unwrap_or(s);
                let key =
                    decode_base64(raw).ok_or_else(|| err("not valid base64 after `whsec_`"))?;
                if key.len() < 16 {
                    return Err(err(
                        "secret is shorter than 16 bytes (24 base64 characters)",
                    ));
                }
                hmac_keys.push(HmacKey::sha256(&key));
            }
        }
        Ok(Standard {
            id_header: format!("{prefix}-id"),
            timestamp_header: format!("{prefix}-timestamp"),
            signature_header: format!("{prefix}-signature"),
            hmac_keys,
            public_keys,
        })
    }

    pub(super) fn verify(
        &self,
        req: &SignedRequest<'_>,
        now: i64,
        tolerance: Option<u64>,
    ) -> Result<(), VerifyError> {
        let signatures = req.header(&self.signature_header)?;
        let id = req.header(&self.id_header)?;
        let ts = req.header(&self.timestamp_header)?;
        check_timestamp(parse_unix(&self.timestamp_header, ts)?, now, tolerance)?;

        let mut v1 = Vec::new();
        let mut v1a = Vec::new();
        for item in signatures.split(' ').filter(|s| !s.is_empty()) {
            match item.split_once(',') {
                Some(("v1", b64)) => v1.extend(decode_base64(b64)),
                Some(("v1a", b64)) => v1a.extend(
                    decode_base64(b64)
                        .and_then(|b| <[u8; 64]>::try_from(b).ok())
                        .map(|b| Signature::from_bytes(&b)),
                ),
                _ => {}
            }
        }
        if v1.is_empty() && v1a.is_empty() {
            return Err(VerifyError::malformed(
                &self.signature_header,
                "no `v1,<base64>` or `v1a,<base64>` signature",
            ));
        }
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", req.body];
        if !v1.is_empty() {
            for key in &self.hmac_keys {
                let tag = key.mac(&parts);
                if v1.iter().any(|s| tag.matches(s)) {
                    return Ok(());
                }
            }
        }
        if !v1a.is_empty() && !self.public_keys.is_empty() {
            let message = parts.concat();
            for pk in &self.public_keys {
                if v1a.iter().any(|s| pk.verify_strict(&message, s).is_ok()) {
                    return Ok(());
                }
            }
        }
        Err(VerifyError::NoMatch)
    }
}

/// Signs with a `whsec_` secret (`v1`) or a `whsk_` signing key (`v1a`).
pub(super) fn sign(
    prefix: &str,
    secret: &str,
    input: &SignInput<'_>,
) -> Result<Vec<(String, String)>, SignError> {
    let ts = input.timestamp.to_string();
    let mut signature = String::new();
    StandardSigner::new(secret)?.sign_into(input.id, &ts, input.body, &mut signature);
    Ok(vec![
        (format!("{prefix}-id"), input.id.to_owned()),
        (format!("{prefix}-timestamp"), ts),
        (format!("{prefix}-signature"), signature),
    ])
}

/// A Standard Webhooks (or Svix) secret prepared once for signing many messages: a `whsec_`
/// HMAC key with its pads derived, or a `whsk_` ed25519 signing key.
#[derive(Clone)]
pub struct StandardSigner(SignerKey);

#[derive(Clone)]
enum SignerKey {
    Hmac(Box<HmacKey>),
    Ed25519(Box<SigningKey>),
}

impl std::fmt::Debug for StandardSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            SignerKey::Hmac(_) => "StandardSigner(v1, ***)",
            SignerKey::Ed25519(_) => "StandardSigner(v1a, ***)",
        })
    }
}

impl StandardSigner {
    /// Prepares `secret`: `whsec_<base64>` (the prefix may be left out) or `whsk_<base64>`.
    ///
    /// # Errors
    /// [`SignError::Secret`] when the key does not decode.
    pub fn new(secret: &str) -> Result<StandardSigner, SignError> {
        if let Some(sk) = secret.strip_prefix("whsk_") {
            return Ok(StandardSigner(SignerKey::Ed25519(Box::new(signing_key(
                sk,
            )?))));
        }
        let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = decode_base64(raw)
            .ok_or_else(|| SignError::Secret("not valid base64 after `whsec_`".into()))?;
        Ok(StandardSigner(SignerKey::Hmac(Box::new(HmacKey::sha256(
            &key,
        )))))
    }

    /// Appends the signature of `{id}.{timestamp}.{body}` (`v1,…` or `v1a,…`) to `out`.
    pub fn sign_into(&self, id: &str, timestamp: &str, body: &[u8], out: &mut String) {
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
        match &self.0 {
            SignerKey::Hmac(key) => {
                out.push_str("v1,");
                key.mac(&parts).base64_into(out);
            }
            SignerKey::Ed25519(key) => {
                out.push_str("v1a,");
                encode_base64_into(&key.sign(&parts.concat()).to_bytes(), out);
            }
        }
    }
}

/// A `whsk_` key: base64 of the 32-byte seed, or of seed + public key (64 bytes).
fn signing_key(b64: &str) -> Result<SigningKey, SignError> {
    let bytes = decode_base64(b64)
        .ok_or_else(|| SignError::Secret("not valid base64 after `whsk_`".into()))?;
    let seed: [u8; 32] = bytes
        .get(..32)
        .filter(|_| bytes.len() == 32 || bytes.len() == 64)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| SignError::Secret("a `whsk_` key must be 32 or 64 bytes".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The `whpk_` public key belonging to a `whsk_` signing key.
///
/// # Errors
/// When the key is not a `whsk_` key of 32 or 64 bytes.
pub fn public_key_for(signing: &str) -> Result<String, SignError> {
    let sk = signing
        .strip_prefix("whsk_")
        .ok_or_else(|| SignError::Secret("expected a `whsk_` key".into()))?;
    Ok(format!(
        "whpk_{}",
        encode_base64(signing_key(sk)?.verifying_key().as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::SchemeName::{StandardWebhooks, Svix};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    /// The Standard Webhooks / Svix reference libraries' test vector.
    #[test]
    fn published_vector_both_header_families() {
        for (scheme, p) in [(StandardWebhooks, "webhook"), (Svix, "svix")] {
            let h = headers(&[
                (&format!("{p}-id"), ID),
                (&format!("{p}-timestamp"), "1614265330"),
                (
                    &format!("{p}-signature"),
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                ),
            ]);
            verifier(scheme, &[SECRET])
                .verify(&request(&h, BODY), 1614265330)
                .unwrap();
        }
    }

    #[test]
    fn a_prepared_signer_reproduces_the_published_signature() {
        let mut out = "kept ".to_owned();
        StandardSigner::new(SECRET)
            .unwrap()
            .sign_into(ID, "1614265330", BODY, &mut out);
        assert_eq!(out, "kept v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(matches!(
            StandardSigner::new("whsec_not base64!"),
            Err(SignError::Secret(_))
        ));
        assert!(matches!(
            StandardSigner::new("whsk_AAAA"),
            Err(SignError::Secret(_))
        ));
        assert_eq!(
            format!("{:?}", StandardSigner::new(SECRET).unwrap()),
            "StandardSigner(v1, ***)"
        );
    }

    #[test]
    fn any_listed_signature_and_any_secret_may_match() {
        let h = headers(&[
            ("webhook-id", ID),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v2,zzz v1,Ym9ndXM= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let other = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCE=";
        verifier(StandardWebhooks, &[other, SECRET])
            .verify(&request(&h, BODY), 1614265330)
            .unwrap();
        assert_eq!(
            verifier(StandardWebhooks, &[other]).verify(&request(&h, BODY), 1614265330),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn ed25519_v1a_round_trip() {
        let seed = [7u8; 32];
        let whsk = format!("whsk_{}", encode_base64(&seed));
        let whpk = public_key_for(&whsk).unwrap();
        round_trip(StandardWebhooks, &whsk, &whpk);
        // A v1a signature does not verify against an HMAC secret, nor against another key.
        let input = SignInput {
            body: BODY,
            id: ID,
            timestamp: 5,
            url: None,
            method: "POST",
        };
        let signed = sign("webhook", &whsk, &input).unwrap();
        let pairs: Vec<(&str, &str)> = signed
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let h = headers(&pairs);
        assert_eq!(
            verifier(StandardWebhooks, &[SECRET]).verify(&request(&h, BODY), 5),
            Err(VerifyError::NoMatch)
        );
        let other = public_key_for(&format!("whsk_{}", encode_base64(&[8u8; 32]))).unwrap();
        assert_eq!(
            verifier(StandardWebhooks, &[&other]).verify(&request(&h, BODY), 5),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn hmac_round_trip_and_errors() {
        round_trip(Svix, SECRET, SECRET);
        let h = headers(&[
            ("webhook-id", ID),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", "v2,abc"),
        ]);
        assert_eq!(
            verifier(StandardWebhooks, &[SECRET])
                .verify(&request(&h, BODY), 1614265330)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
        let h = headers(&[("webhook-id", ID), ("webhook-signature", "v1,abc")]);
        assert_eq!(
            verifier(StandardWebhooks, &[SECRET]).verify(&request(&h, BODY), 0),
            Err(VerifyError::MissingHeader("webhook-timestamp".into()))
        );
    }

    #[test]
    fn bad_secrets_are_config_errors() {
        let err = |s: &str| {
            Standard::new(
                "webhook",
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", s],
                "v.secrets",
            )
            .err()
            .unwrap()
        };
        assert_eq!(err("whsec_***").field, "v.secrets[1]");
        assert!(err("whsec_YQ==").message.contains("shorter than 16 bytes"));
        assert!(err("whpk_YQ==").message.contains("32 bytes"));
        assert!(err("whsk_YQ==").message.contains("public key"));
    }
}
