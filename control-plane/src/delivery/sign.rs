//! Standard Webhooks signing of outbound deliveries, with the filter crate's scheme code:
//! `webhook-id` (the event id, the same on every retry so receivers can deduplicate),
//! `webhook-timestamp` (this attempt) and `webhook-signature` carrying one `v1,` signature per
//! active secret during a rotation.

use hookmesh_filter::{sign, SchemeName, SignError, SignInput};

/// The headers for one attempt.
///
/// # Errors
/// A secret that is not a `whsec_` key (the API never stores one).
pub fn headers(
    event_id: &str,
    timestamp: i64,
    body: &[u8],
    secrets: &[String],
    svix: bool,
) -> Result<Vec<(String, String)>, SignError> {
    // The same scheme under Svix's header names, for receivers built on Svix's libraries.
    let (scheme, [id_name, timestamp_name, signature_name]) = if svix {
        (
            SchemeName::Svix,
            ["svix-id", "svix-timestamp", "svix-signature"],
        )
    } else {
        (
            SchemeName::StandardWebhooks,
            ["webhook-id", "webhook-timestamp", "webhook-signature"],
        )
    };
    let mut signatures = Vec::with_capacity(secrets.len());
    let input = SignInput {
        body,
        id: event_id,
        timestamp,
        url: None,
        method: "POST",
    };
    for secret in secrets {
        let signed = sign(scheme, secret, None, &input)?;
        if let Some((_, sig)) = signed.into_iter().find(|(n, _)| *n == signature_name) {
            signatures.push(sig);
        }
    }
    Ok(vec![
        (id_name.to_owned(), event_id.to_owned()),
        (timestamp_name.to_owned(), timestamp.to_string()),
        (signature_name.to_owned(), signatures.join(" ")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookmesh_filter::config::{Secret, VerifyConfig};
    use hookmesh_filter::{Headers, SignedRequest, Verifier};

    #[test]
    fn both_secrets_verify_during_rotation() {
        let (old, new) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
            "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCE=".to_owned(),
        );
        let h = headers(
            "evt_1",
            1_700_000_000,
            b"{}",
            &[new.clone(), old.clone()],
            false,
        )
        .unwrap();
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
