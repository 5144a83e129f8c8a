//! Standard Webhooks signing of outbound deliveries, with the filter crate's scheme code:
//! `webhook-id` (the event id, the same on every retry so receivers can deduplicate),
//! `webhook-timestamp` (this attempt) and `webhook-signature` carrying one `v1,` signature per
//! active secret during a rotation.

use axum::http::header::{HeaderName, HeaderValue, InvalidHeaderValue};
use bytes::Bytes;
use hookmesh_filter::StandardSigner;

const STANDARD_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("webhook-id"),
    HeaderName::from_static("webhook-timestamp"),
    HeaderName::from_static("webhook-signature"),
];
const SVIX_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("svix-id"),
    HeaderName::from_static("svix-timestamp"),
    HeaderName::from_static("svix-signature"),
];

/// The headers for one attempt: the id, the timestamp and one signature per signer.
///
/// # Errors
/// An id that cannot be a header value (the ids hookmesh makes always can).
pub fn headers(
    event_id: &str,
    timestamp: i64,
    body: &[u8],
    signers: &[StandardSigner],
    svix: bool,
) -> Result<[(HeaderName, HeaderValue); 3], InvalidHeaderValue> {
    // The same scheme under Svix's header names, for receivers built on Svix's libraries.
    let [id_name, timestamp_name, signature_name] = if svix { SVIX_NAMES } else { STANDARD_NAMES };
    let timestamp = timestamp.to_string();
    // `v1,` and 44 base64 characters per HMAC signature, a space between two.
    let mut signatures = String::with_capacity(49 * signers.len());
    for (i, signer) in signers.iter().enumerate() {
        if i > 0 {
            signatures.push(' ');
        }
        signer.sign_into(event_id, &timestamp, body, &mut signatures);
    }
    Ok([
        (id_name, HeaderValue::from_str(event_id)?),
        (
            timestamp_name,
            HeaderValue::from_maybe_shared(Bytes::from(timestamp))?,
        ),
        (
            signature_name,
            HeaderValue::from_maybe_shared(Bytes::from(signatures))?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookmesh_filter::config::{Secret, VerifyConfig};
    use hookmesh_filter::{Headers, SchemeName, SignedRequest, Verifier};

    #[test]
    fn both_secrets_verify_during_rotation() {
        let (old, new) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
            "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCE=".to_owned(),
        );
        let signers = [&new, &old].map(|s| StandardSigner::new(s).unwrap());
        let h: Vec<(String, String)> = headers("evt_1", 1_700_000_000, b"{}", &signers, false)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(h[2].1.matches("v1,").count(), 2);
        for secret in [old, new] {
            let v = Verifier::new(
                &VerifyConfig {
                    scheme: SchemeName::StandardWebhooks,
                    secrets: vec![Secret(secret)],
                    tolerance_secs: None,
                    allow_sha1: false,
                    public_origin: None,
                    generic: None,
                },
                "v",
            )
            .unwrap();
            let headers = Headers::new(h.clone());
            v.verify(
                &SignedRequest {
                    headers: &headers,
                    body: b"{}",
                    method: "POST",
                    origin: None,
                    path: "/",
                },
                1_700_000_000,
            )
            .unwrap();
        }
    }
}
