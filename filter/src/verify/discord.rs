//! Discord interactions: `x-signature-ed25519` is a hex ed25519 signature over
//! `x-signature-timestamp` followed by the body; the application's public key is hex.

use super::{check_timestamp, parse_unix, SignError, SignInput, SignedRequest, VerifyError};
use crate::config::ConfigError;
use crate::crypto::decode_hex;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

const SIGNATURE: &str = "x-signature-ed25519";
const TIMESTAMP: &str = "x-signature-timestamp";

pub(super) struct Discord {
    keys: Vec<VerifyingKey>,
}

impl Discord {
    pub(super) fn new(secrets: &[&str], field: &str) -> Result<Discord, ConfigError> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                decode_hex(s)
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                    .ok_or_else(|| {
                        ConfigError::new(
                            format!("{field}[{i}]"),
                            "expected the application's ed25519 public key: 64 hex characters",
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Discord { keys })
    }

    pub(super) fn verify(
        &self,
        req: &SignedRequest<'_>,
        now: i64,
        tolerance: Option<u64>,
    ) -> Result<(), VerifyError> {
        let signature = decode_hex(req.header(SIGNATURE)?)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or_else(|| VerifyError::malformed(SIGNATURE, "expected 128 hex characters"))?;
        let ts = req.header(TIMESTAMP)?;
        check_timestamp(parse_unix(TIMESTAMP, ts)?, now, tolerance)?;
        let message = [ts.as_bytes(), req.body].concat();
        if self
            .keys
            .iter()
            .any(|k| k.verify_strict(&message, &signature).is_ok())
        {
            Ok(())
        } else {
            Err(VerifyError::NoMatch)
        }
    }
}

/// Signs with a hex ed25519 seed (32 bytes), as a test sender.
pub(super) fn sign(
    secret: &str,
    input: &SignInput<'_>,
) -> Result<Vec<(String, String)>, SignError> {
    let seed = decode_hex(secret)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| SignError::Secret("expected a 32-byte ed25519 seed in hex".into()))?;
    let ts = input.timestamp.to_string();
    let sig = SigningKey::from_bytes(&seed).sign(&[ts.as_bytes(), input.body].concat());
    Ok(vec![
        (SIGNATURE.to_owned(), hex::encode(sig.to_bytes())),
        (TIMESTAMP.to_owned(), ts),
    ])
}

/// The hex public key for a hex ed25519 seed.
///
/// # Errors
/// When the seed is not 32 bytes of hex.
pub fn public_key_for(seed_hex: &str) -> Result<String, SignError> {
    let seed = decode_hex(seed_hex)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| SignError::Secret("expected a 32-byte ed25519 seed in hex".into()))?;
    Ok(hex::encode(
        SigningKey::from_bytes(&seed).verifying_key().as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::SchemeName::Discord as D;

    /// Signed by an independent ed25519 implementation (Python `cryptography` 48.0.0) with
    /// the seed `[7; 32]`, framed the Discord way: timestamp followed by body.
    #[test]
    fn vector_from_an_independent_implementation() {
        let pk = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
        assert_eq!(public_key_for(&hex::encode([7u8; 32])).unwrap(), pk);
        let sig = "f7caed702889e902c2cde4a4fb00f601284aa47ff4caf84588d7c8c3d8fe7183fd73e13e30d0c07d1515b6684f7b3cfaa231c421768d9667b104f760cf0da302";
        let h = headers(&[(SIGNATURE, sig), (TIMESTAMP, "1700000000")]);
        let v = Discord::new(&[pk], "s").unwrap();
        v.verify(&request(&h, br#"{"type":1}"#), 1_700_000_000, Some(300))
            .unwrap();
        assert_eq!(
            v.verify(&request(&h, br#"{"type":2}"#), 1_700_000_000, Some(300)),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn round_trip_and_bad_keys() {
        let seed = hex::encode([9u8; 32]);
        round_trip(D, &seed, &public_key_for(&seed).unwrap());
        assert!(Discord::new(&["abcd"], "s").is_err());
        // An empty or non-numeric timestamp is refused before any signature check.
        let signed = sign(
            &seed,
            &SignInput {
                body: b"{}",
                id: "",
                timestamp: 1,
                url: None,
                method: "POST",
            },
        )
        .unwrap();
        let h = headers(&[(SIGNATURE, signed[0].1.as_str()), (TIMESTAMP, "")]);
        let v = Discord::new(&[&public_key_for(&seed).unwrap()], "s").unwrap();
        assert!(matches!(
            v.verify(&request(&h, b"{}"), 0, None),
            Err(VerifyError::Malformed { .. })
        ));
    }
}
