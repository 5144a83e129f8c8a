//! Caller authentication: an API key in a header, HTTP Basic, or a JWT bearer token
//! (HS256, RS256, ES256; keys inline or from a JWKS document).

use crate::config::{AuthConfig, ConfigError, JwtAlgorithm, JwtConfig};
use crate::crypto::{ct_eq, decode_base64, decode_base64url, HmacKey};
use crate::headers::{DuplicateHeader, Headers};
use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs8::DecodePublicKey;
use serde::Deserialize;

/// Why a caller was not authenticated. `Display` never includes the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was sent.
    #[error("missing credentials in header `{0}`")]
    Missing(String),
    /// The credential header appears more than once.
    #[error("header `{}` appears more than once", .0 .0)]
    Duplicate(#[from] DuplicateHeader),
    /// The credential is not in the expected form.
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// Well-formed but not accepted.
    #[error("credentials not accepted")]
    Rejected,
    /// A JWT was refused for a reason given.
    #[error("token refused: {0}")]
    Token(&'static str),
}

impl AuthError {
    /// A fixed snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "missing_credentials",
            AuthError::Duplicate(_) => "duplicate_header",
            AuthError::Malformed(_) => "malformed_credentials",
            AuthError::Rejected => "invalid_credentials",
            AuthError::Token(_) => "invalid_token",
        }
    }
}

/// A compiled authenticator.
pub(crate) enum Authenticator {
    ApiKey {
        header: String,
        prefix: String,
        keys: Vec<Vec<u8>>,
    },
    Basic {
        users: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Jwt(Box<Jwt>),
}

impl Authenticator {
    pub(crate) fn new(cfg: &AuthConfig, field: &str) -> Result<Authenticator, ConfigError> {
        match cfg {
            AuthConfig::ApiKey {
                header,
                prefix,
                keys,
            } => {
                if keys.is_empty() {
                    return Err(ConfigError::new(
                        format!("{field}.keys"),
                        "at least one key is required",
                    ));
                }
                if let Some(i) = keys.iter().position(|k| k.expose().len() < 16) {
                    return Err(ConfigError::new(
                        format!("{field}.keys[{i}]"),
                        "API keys must be at least 16 characters",
                    ));
                }
                Ok(Authenticator::ApiKey {
                    header: header.to_ascii_lowercase(),
                    prefix: prefix.clone(),
                    keys: keys
                        .iter()
                        .map(|k| k.expose().as_bytes().to_vec())
                        .collect(),
                })
            }
            AuthConfig::Basic { users } => {
                if users.is_empty() {
                    return Err(ConfigError::new(
                        format!("{field}.users"),
                        "at least one user is required",
                    ));
                }
                if let Some(i) = users
                    .iter()
                    .position(|u| u.username.contains(':') || u.username.is_empty())
                {
                    return Err(ConfigError::new(
                        format!("{field}.users[{i}].username"),
                        "must be non-empty and must not contain `:`",
                    ));
                }
                Ok(Authenticator::Basic {
                    users: users
                        .iter()
                        .map(|u| {
                            (
                                u.username.as_bytes().to_vec(),
                                u.password.expose().as_bytes().to_vec(),
                            )
                        })
                        .collect(),
                })
            }
            AuthConfig::Jwt(j) => Ok(Authenticator::Jwt(Box::new(Jwt::new(j, field)?))),
        }
    }

    /// A short name for the upstream `x-hookmesh-verified` header.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Authenticator::ApiKey { .. } => "api_key",
            Authenticator::Basic { .. } => "basic",
            Authenticator::Jwt(_) => "jwt",
        }
    }

    pub(crate) fn check(&self, headers: &Headers, now: i64) -> Result<(), AuthError> {
        match self {
            Authenticator::ApiKey {
                header,
                prefix,
                keys,
            } => {
                let value = headers
                    .unique(header)?
                    .ok_or_else(|| AuthError::Missing(header.clone()))?;
                let key = value
                    .strip_prefix(prefix.as_str())
                    .ok_or(AuthError::Malformed(
                        "the key does not start with the configured prefix",
                    ))?;
                // Compare against every key so timing does not reveal which one is close.
                let matched = keys.iter().fold(false, |m, k| ct_eq(k, key.as_bytes()) | m);
                matched.then_some(()).ok_or(AuthError::Rejected)
            }
            Authenticator::Basic { users } => {
                let value = authorization(headers)?;
                let encoded = strip_scheme(value, "basic").ok_or(AuthError::Malformed(
                    "expected `Authorization: Basic <base64>`",
                ))?;
                let decoded = decode_base64(encoded)
                    .ok_or(AuthError::Malformed("Basic credentials are not base64"))?;
                let colon = decoded
                    .iter()
                    .position(|b| *b == b':')
                    .ok_or(AuthError::Malformed("Basic credentials have no `:`"))?;
                let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
                let matched = users
                    .iter()
                    .fold(false, |m, (u, p)| (ct_eq(u, user) & ct_eq(p, pass)) | m);
                matched.then_some(()).ok_or(AuthError::Rejected)
            }
            Authenticator::Jwt(j) => {
                let token = strip_scheme(authorization(headers)?, "bearer").ok_or(
                    AuthError::Malformed("expected `Authorization: Bearer <token>`"),
                )?;
                j.check(token, now)
            }
        }
    }
}

fn authorization(headers: &Headers) -> Result<&str, AuthError> {
    headers
        .unique("authorization")?
        .ok_or_else(|| AuthError::Missing("authorization".to_owned()))
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

enum JwtKey {
    Hs256(Box<HmacKey>),
    Rs256(Box<rsa::pkcs1v15::VerifyingKey<sha2::Sha256>>),
    Es256(p256::ecdsa::VerifyingKey),
}

impl JwtKey {
    fn alg(&self) -> JwtAlgorithm {
        match self {
            JwtKey::Hs256(_) => JwtAlgorithm::HS256,
            JwtKey::Rs256(_) => JwtAlgorithm::RS256,
            JwtKey::Es256(_) => JwtAlgorithm::ES256,
        }
    }

    fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        match self {
            JwtKey::Hs256(k) => k.mac(&[input]).matches(sig),
            JwtKey::Rs256(k) => {
                rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
            JwtKey::Es256(k) => {
                p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
            }
        }
    }
}

pub(crate) struct Jwt {
    keys: Vec<(Option<String>, JwtKey)>,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: i64,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    k: Option<String>,
}

impl Jwt {
    fn new(cfg: &JwtConfig, field: &str) -> Result<Jwt, ConfigError> {
        let mut keys = Vec::new();
        for (i, k) in cfg.keys.iter().enumerate() {
            let f = format!("{field}.keys[{i}]");
            let key = match (k.alg, &k.secret, &k.public_key_pem) {
                (JwtAlgorithm::HS256, Some(s), None) => {
                    if s.expose().len() < 32 {
                        return Err(ConfigError::new(
                            format!("{f}.secret"),
                            "HS256 secrets must be at least 32 characters",
                        ));
                    }
                    JwtKey::Hs256(Box::new(HmacKey::sha256(s.expose().as_bytes())))
                }
                (JwtAlgorithm::RS256, None, Some(pem)) => JwtKey::Rs256(Box::new(
                    rsa::RsaPublicKey::from_public_key_pem(pem)
                        .map(rsa::pkcs1v15::VerifyingKey::new)
                        .map_err(|_| {
                            ConfigError::new(
                                format!("{f}.public_key_pem"),
                                "not an RSA public key in PEM",
                            )
                        })?,
                )),
                (JwtAlgorithm::ES256, None, Some(pem)) => JwtKey::Es256(
                    p256::ecdsa::VerifyingKey::from_public_key_pem(pem).map_err(|_| {
                        ConfigError::new(
                            format!("{f}.public_key_pem"),
                            "not a P-256 public key in PEM",
                        )
                    })?,
                ),
                (JwtAlgorithm::HS256, _, _) => {
                    return Err(ConfigError::new(
                        f,
                        "HS256 takes `secret` and no `public_key_pem`",
                    ))
                }
                _ => {
                    return Err(ConfigError::new(
                        f,
                        "RS256/ES256 take `public_key_pem` and no `secret`",
                    ))
                }
            };
            keys.push((k.kid.clone(), key));
        }
        if let Some(doc) = &cfg.jwks {
            let f = format!("{field}.jwks");
            let jwks: Jwks = serde_json::from_str(doc)
                .map_err(|e| ConfigError::new(&f, format!("not a JWKS document: {e}")))?;
            for (i, jwk) in jwks.keys.iter().enumerate() {
                if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
                    continue;
                }
                let key =
                    jwk_key(jwk).map_err(|m| ConfigError::new(format!("{f}.keys[{i}]"), m))?;
                if let Some(key) = key {
                    keys.push((jwk.kid.clone(), key));
                }
            }
        }
        if keys.is_empty() {
            return Err(ConfigError::new(
                field,
                "a JWT authenticator needs at least one key (`keys` or `jwks`)",
            ));
        }
        Ok(Jwt {
            keys,
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            leeway: cfg.leeway_secs.min(3600) as i64,
        })
    }

    fn check(&self, token: &str, now: i64) -> Result<(), AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("a JWT has three dot-separated parts"));
        };
        let header: JoseHeader = decode_base64url(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::Malformed("JWT header is not base64url JSON"))?;
        let alg = match header.alg.as_str() {
            "HS256" => JwtAlgorithm::HS256,
            "RS256" => JwtAlgorithm::RS256,
            "ES256" => JwtAlgorithm::ES256,
            _ => return Err(AuthError::Token("algorithm not allowed")),
        };
        let sig =
            decode_base64url(s).ok_or(AuthError::Malformed("JWT signature is not base64url"))?;
        let input = &token.as_bytes()[..h.len() + 1 + p.len()];
        let mut candidates = self
            .keys
            .iter()
            .filter(|(kid, k)| {
                k.alg() == alg && (kid.is_none() || header.kid.is_none() || *kid == header.kid)
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(AuthError::Token("no key for this algorithm and kid"));
        }
        if !candidates.any(|(_, k)| k.verify(input, &sig)) {
            return Err(AuthError::Token("bad signature"));
        }
        let claims: Claims = decode_base64url(p)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::Malformed("JWT claims are not base64url JSON"))?;
        let exp = claims.exp.ok_or(AuthError::Token("no exp claim"))?;
        if (now as f64) > exp + self.leeway as f64 {
            return Err(AuthError::Token("expired"));
        }
        if claims
            .nbf
            .is_some_and(|nbf| (now as f64) + (self.leeway as f64) < nbf)
        {
            return Err(AuthError::Token("not yet valid (nbf)"));
        }
        if let Some(iss) = &self.issuer {
            if claims.iss.as_ref() != Some(iss) {
                return Err(AuthError::Token("wrong issuer"));
            }
        }
        if !self.audiences.is_empty() {
            let ok = match &claims.aud {
                Some(Audience::One(a)) => self.audiences.contains(a),
                Some(Audience::Many(v)) => v.iter().any(|a| self.audiences.contains(a)),
                None => false,
            };
            if !ok {
                return Err(AuthError::Token("wrong audience"));
            }
        }
        Ok(())
    }
}

/// A JWK as a verification key; `Ok(None)` for key types this filter does not use.
fn jwk_key(jwk: &Jwk) -> Result<Option<JwtKey>, String> {
    let b64 = |name: &str, v: &Option<String>| {
        v.as_deref()
            .and_then(decode_base64url)
            .ok_or_else(|| format!("`{name}` is missing or not base64url"))
    };
    match jwk.kty.as_str() {
        "RSA" => {
            let n = rsa::BigUint::from_bytes_be(&b64("n", &jwk.n)?);
            let e = rsa::BigUint::from_bytes_be(&b64("e", &jwk.e)?);
            let pk = rsa::RsaPublicKey::new(n, e).map_err(|e| format!("invalid RSA key: {e}"))?;
            Ok(Some(JwtKey::Rs256(Box::new(
                rsa::pkcs1v15::VerifyingKey::new(pk),
            ))))
        }
        "EC" if jwk.crv.as_deref() == Some("P-256") => {
            let (x, y) = (b64("x", &jwk.x)?, b64("y", &jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            let point = p256::EncodedPoint::from_affine_coordinates(
                x.as_slice().into(),
                y.as_slice().into(),
                false,
            );
            p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                .map(|k| Some(JwtKey::Es256(k)))
                .map_err(|_| "not a point on P-256".into())
        }
        "oct" => Ok(Some(JwtKey::Hs256(Box::new(HmacKey::sha256(&b64(
            "k", &jwk.k,
        )?))))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BasicUser, JwtKeyConfig, Secret};
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    use p256::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;

    const RSA_PRIVATE: &str = include_str!("../tests/data/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/data/rsa_public.pem");
    const EC_PRIVATE: &str = include_str!("../tests/data/ec_private.pem");
    const EC_PUBLIC: &str = include_str!("../tests/data/ec_public.pem");
    const HS: &str = "an-hs256-secret-of-at-least-32-chars!";
    const NOW: i64 = 1_700_000_000;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        Headers::new(
            pairs
                .iter()
                .map(|(a, b)| ((*a).into(), (*b).into()))
                .collect(),
        )
    }

    fn token(alg: &str, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = serde_json::json!({"alg": alg, "typ": "JWT"});
        if let Some(k) = kid {
            header["kid"] = k.into();
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = match alg {
            "HS256" => HmacKey::sha256(HS.as_bytes())
                .mac(&[input.as_bytes()])
                .as_bytes()
                .to_vec(),
            "RS256" => {
                let k = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PRIVATE).unwrap();
                rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k)
                    .sign(input.as_bytes())
                    .to_vec()
            }
            "ES256" => {
                let k = p256::ecdsa::SigningKey::from_pkcs8_pem(EC_PRIVATE).unwrap();
                let s: p256::ecdsa::Signature = k.sign(input.as_bytes());
                s.to_bytes().to_vec()
            }
            _ => b"x".to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn bearer(t: &str) -> Headers {
        h(&[("authorization", &format!("Bearer {t}"))])
    }

    fn jwt(cfg: JwtConfig) -> Authenticator {
        Authenticator::new(&AuthConfig::Jwt(cfg), "auth").unwrap()
    }

    fn base() -> JwtConfig {
        JwtConfig {
            keys: vec![
                JwtKeyConfig {
                    kid: None,
                    alg: JwtAlgorithm::HS256,
                    secret: Some(Secret(HS.into())),
                    public_key_pem: None,
                },
                JwtKeyConfig {
                    kid: Some("r1".into()),
                    alg: JwtAlgorithm::RS256,
                    secret: None,
                    public_key_pem: Some(RSA_PUBLIC.into()),
                },
                JwtKeyConfig {
                    kid: None,
                    alg: JwtAlgorithm::ES256,
                    secret: None,
                    public_key_pem: Some(EC_PUBLIC.into()),
                },
            ],
            jwks: None,
            issuer: Some("https://issuer.example".into()),
            audiences: vec!["hookmesh".into()],
            leeway_secs: 60,
        }
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({"iss": "https://issuer.example", "aud": ["other", "hookmesh"], "exp": NOW + 10, "nbf": NOW - 10})
    }

    #[test]
    fn jwt_algorithms_and_claims() {
        let a = jwt(base());
        for alg in ["HS256", "RS256", "ES256"] {
            a.check(&bearer(&token(alg, None, claims())), NOW)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
        }
        a.check(&bearer(&token("RS256", Some("r1"), claims())), NOW)
            .unwrap();
        let refused = |t: String, why: &str| {
            assert_eq!(
                a.check(&bearer(&t), NOW).unwrap_err().to_string(),
                format!("token refused: {why}")
            );
        };
        refused(
            token("RS256", Some("other"), claims()),
            "no key for this algorithm and kid",
        );
        refused(token("none", None, claims()), "algorithm not allowed");
        refused(
            token(
                "HS256",
                None,
                serde_json::json!({"exp": NOW - 61, "iss": "https://issuer.example", "aud": "hookmesh"}),
            ),
            "expired",
        );
        refused(
            token(
                "HS256",
                None,
                serde_json::json!({"iss": "https://issuer.example", "aud": "hookmesh"}),
            ),
            "no exp claim",
        );
        refused(
            token(
                "HS256",
                None,
                serde_json::json!({"exp": NOW + 100, "nbf": NOW + 61, "iss": "https://issuer.example", "aud": "hookmesh"}),
            ),
            "not yet valid (nbf)",
        );
        refused(
            token(
                "HS256",
                None,
                serde_json::json!({"exp": NOW + 100, "iss": "https://evil", "aud": "hookmesh"}),
            ),
            "wrong issuer",
        );
        refused(
            token(
                "HS256",
                None,
                serde_json::json!({"exp": NOW + 100, "iss": "https://issuer.example", "aud": "x"}),
            ),
            "wrong audience",
        );
        // Any altered byte of the claims breaks the signature.
        let t = token("ES256", None, claims());
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::json!({"iss": "https://issuer.example", "aud": "hookmesh", "exp": NOW + 99999}).to_string());
        parts[1] = &forged;
        refused(parts.join("."), "bad signature");
        assert_eq!(
            a.check(&bearer("a.b"), NOW).unwrap_err().code(),
            "malformed_credentials"
        );
        assert_eq!(
            a.check(&h(&[]), NOW).unwrap_err(),
            AuthError::Missing("authorization".into())
        );
    }

    #[test]
    fn jwks_document() {
        let rsa_pk = rsa::RsaPublicKey::from_public_key_pem(RSA_PUBLIC).unwrap();
        let ec_pk = p256::PublicKey::from_public_key_pem(EC_PUBLIC).unwrap();
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&ec_pk, false);
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "n": URL_SAFE_NO_PAD.encode(rsa_pk.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(rsa_pk.e().to_bytes_be())},
            {"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()), "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())},
            {"kty": "OKP", "crv": "Ed25519", "x": "ignored"},
            {"kty": "RSA", "use": "enc", "n": "x", "e": "y"}
        ]});
        let mut cfg = base();
        cfg.keys.clear();
        cfg.jwks = Some(jwks.to_string());
        let a = jwt(cfg.clone());
        a.check(&bearer(&token("RS256", Some("r1"), claims())), NOW)
            .unwrap();
        a.check(&bearer(&token("ES256", None, claims())), NOW)
            .unwrap();
        assert!(a
            .check(&bearer(&token("HS256", None, claims())), NOW)
            .is_err());
        cfg.jwks = Some(
            "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AA\", \"y\": \"AA\"}]}"
                .into(),
        );
        assert_eq!(
            Authenticator::new(&AuthConfig::Jwt(cfg), "auth")
                .err()
                .unwrap()
                .field,
            "auth.jwks.keys[0]"
        );
    }

    #[test]
    fn api_key_and_basic() {
        let a = Authenticator::new(
            &AuthConfig::ApiKey {
                header: "X-Api-Key".into(),
                prefix: "Key ".into(),
                keys: vec![Secret("k-0123456789abcdef".into())],
            },
            "auth",
        )
        .unwrap();
        a.check(&h(&[("x-api-key", "Key k-0123456789abcdef")]), 0)
            .unwrap();
        assert_eq!(
            a.check(&h(&[("x-api-key", "Key k-0123456789abcdeX")]), 0),
            Err(AuthError::Rejected)
        );
        assert_eq!(
            a.check(&h(&[("x-api-key", "k-0123456789abcdef")]), 0)
                .unwrap_err()
                .code(),
            "malformed_credentials"
        );
        assert_eq!(
            a.check(
                &h(&[
                    ("x-api-key", "Key k-0123456789abcdef"),
                    ("x-api-key", "Key other")
                ]),
                0
            )
            .unwrap_err()
            .code(),
            "duplicate_header"
        );
        assert!(Authenticator::new(
            &AuthConfig::ApiKey {
                header: "x".into(),
                prefix: String::new(),
                keys: vec![Secret("short".into())]
            },
            "a"
        )
        .is_err());

        let b = Authenticator::new(
            &AuthConfig::Basic {
                users: vec![BasicUser {
                    username: "stripe".into(),
                    password: Secret("p:ss".into()),
                }],
            },
            "auth",
        )
        .unwrap();
        let ok = format!("Basic {}", STANDARD.encode("stripe:p:ss"));
        b.check(&h(&[("authorization", &ok)]), 0).unwrap();
        let bad = format!("basic {}", STANDARD.encode("stripe:p:sx"));
        assert_eq!(
            b.check(&h(&[("authorization", &bad)]), 0),
            Err(AuthError::Rejected)
        );
        assert_eq!(
            b.check(&h(&[("authorization", "Bearer x")]), 0)
                .unwrap_err()
                .code(),
            "malformed_credentials"
        );
    }
}
