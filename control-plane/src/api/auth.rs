//! API keys: `Authorization: Bearer <key>`, stored only as a SHA-256 hash, with scopes and an
//! optional tenant binding.
//!
//! A fast hash suffices: keys are 256 random bits, not passwords, so there is nothing to brute
//! force, and the lookup by hash takes constant time in the key's value.

use super::error::ApiError;
use super::AppState;
use crate::store::{Kind, Resource};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every API key, so leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "hm_";

/// Resources whose access scopes can be granted one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Inbound sources.
    Sources,
    /// Outbound endpoints.
    Endpoints,
    /// Event types.
    EventTypes,
    /// Events, deliveries and attempts.
    Events,
}

impl Area {
    fn name(self) -> &'static str {
        match self {
            Area::Sources => "sources",
            Area::Endpoints => "endpoints",
            Area::EventTypes => "event_types",
            Area::Events => "events",
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read.
    Read,
    /// Create, change, delete.
    Write,
}

/// Every scope an API key may hold.
pub const SCOPES: [&str; 11] = [
    "admin",
    "write",
    "read",
    "sources:read",
    "sources:write",
    "endpoints:read",
    "endpoints:write",
    "event_types:read",
    "event_types:write",
    "events:read",
    "events:write",
];

/// The stored form of an API key (the `resources` body; the hash is the unique key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Display name.
    pub name: String,
    /// Bound tenant; `None` for a global key.
    pub tenant_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    /// Unix ms after which the key is refused.
    pub expires_at: Option<i64>,
    /// Unix ms when it was revoked.
    pub revoked_at: Option<i64>,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// API key id (the audit actor).
    pub key_id: String,
    /// Bound tenant, or `None` for a global key.
    pub tenant_id: Option<String>,
    scopes: Vec<String>,
}

impl Principal {
    /// A principal with the given scopes (tests, bootstrap).
    pub fn new(key_id: &str, tenant_id: Option<&str>, scopes: &[&str]) -> Principal {
        Principal {
            key_id: key_id.to_owned(),
            tenant_id: tenant_id.map(str::to_owned),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the key is an admin (of its tenant, or of everything when global).
    pub fn is_admin(&self) -> bool {
        self.has("admin")
    }

    /// Whether the key is a global admin.
    pub fn is_global_admin(&self) -> bool {
        self.is_admin() && self.tenant_id.is_none()
    }

    /// Requires `access` to `area`.
    ///
    /// # Errors
    /// 403 naming the missing scope.
    pub fn require(&self, area: Area, access: Access) -> Result<(), ApiError> {
        let ok = self.is_admin()
            || self.has("write")
            || (access == Access::Read && self.has("read"))
            || self.has(&format!("{}:write", area.name()))
            || (access == Access::Read && self.has(&format!("{}:read", area.name())));
        if ok {
            Ok(())
        } else {
            let need = match access {
                Access::Read => "read",
                Access::Write => "write",
            };
            Err(ApiError::Forbidden(format!(
                "this API key lacks the `{}:{need}` scope",
                area.name()
            )))
        }
    }

    /// Requires an admin key.
    ///
    /// # Errors
    /// 403.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this API key lacks the `admin` scope".into(),
            ))
        }
    }

    /// Requires a global admin key.
    ///
    /// # Errors
    /// 403.
    pub fn require_global_admin(&self) -> Result<(), ApiError> {
        if self.is_global_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only a global admin key (not bound to a tenant) may do this".into(),
            ))
        }
    }

    /// Whether the caller may see a resource of `tenant_id`; other tenants' resources are
    /// reported as absent, never as forbidden.
    ///
    /// # Errors
    /// 404.
    pub fn see(&self, tenant_id: &str) -> Result<(), ApiError> {
        match &self.tenant_id {
            Some(own) if own != tenant_id => Err(ApiError::NotFound),
            _ => Ok(()),
        }
    }

    /// The tenant a new resource goes to: the key's own, or the one a global key names.
    ///
    /// # Errors
    /// 422 when a global key names none; 404 when a bound key names another.
    pub fn tenant_for_create(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match (&self.tenant_id, requested) {
            (Some(own), None) => Ok(own.clone()),
            (Some(own), Some(r)) if r == own => Ok(own.clone()),
            (Some(_), Some(_)) => Err(ApiError::NotFound),
            (None, Some(r)) => Ok(r.to_owned()),
            (None, None) => Err(ApiError::field(
                "tenant_id",
                "required with a global API key",
            )),
        }
    }

    /// The tenant filter for a list: the key's own, or what a global key asks for.
    ///
    /// # Errors
    /// 404 when a bound key asks for another tenant.
    pub fn tenant_filter(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        match (&self.tenant_id, requested) {
            (Some(own), Some(r)) if r != own => Err(ApiError::NotFound),
            (Some(own), _) => Ok(Some(own.clone())),
            (None, r) => Ok(r.map(str::to_owned)),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized("missing API key"))
    }
}

/// A new random API key.
pub fn generate_key() -> String {
    format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(crate::ids::random_bytes(32))
    )
}

/// The stored hash of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Resolves `Authorization: Bearer` into a [`Principal`] for the handlers.
pub async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header =
        req.headers()
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "missing API key: send `Authorization: Bearer <key>`",
            ))?;
    let key = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(ApiError::Unauthorized(
            "malformed Authorization header: expected `Bearer <key>`",
        ))?;
    let hash = hash_key(key);
    let row = match state.caches.keys.get(&hash) {
        Some(row) => row,
        None => {
            let row = state.store.get_by_key(Kind::ApiKey, &hash).await?;
            state.caches.keys.put(hash, row.clone());
            row
        }
    };
    let row = row.ok_or(ApiError::Unauthorized("invalid API key"))?;
    let principal = principal_of(&row, crate::ids::now_ms())?;
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

fn principal_of(row: &Resource, now: i64) -> Result<Principal, ApiError> {
    let rec: KeyRecord = serde_json::from_value(row.body.clone()).map_err(ApiError::internal)?;
    if rec.revoked_at.is_some() {
        return Err(ApiError::Unauthorized("this API key was revoked"));
    }
    if rec.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::Unauthorized("this API key has expired"));
    }
    Ok(Principal {
        key_id: row.id.clone(),
        tenant_id: rec.tenant_id,
        scopes: rec.scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_grant_what_they_say() {
        let reader = Principal::new("k", Some("t1"), &["sources:read"]);
        assert!(reader.require(Area::Sources, Access::Read).is_ok());
        assert!(reader.require(Area::Sources, Access::Write).is_err());
        assert!(reader.require(Area::Endpoints, Access::Read).is_err());
        let writer = Principal::new("k", Some("t1"), &["write"]);
        assert!(writer.require(Area::EventTypes, Access::Write).is_ok());
        assert!(writer.require_admin().is_err());
        let tenant_admin = Principal::new("k", Some("t1"), &["admin"]);
        assert!(tenant_admin.require_admin().is_ok());
        assert!(tenant_admin.require_global_admin().is_err());
        assert!(matches!(tenant_admin.see("t2"), Err(ApiError::NotFound)));
        assert!(matches!(
            tenant_admin.tenant_for_create(Some("t2")),
            Err(ApiError::NotFound)
        ));
        assert_eq!(tenant_admin.tenant_for_create(None).unwrap(), "t1");
        let global = Principal::new("k", None, &["admin"]);
        assert!(matches!(
            global.tenant_for_create(None),
            Err(ApiError::Validation(_))
        ));
        assert_eq!(global.tenant_filter(None).unwrap(), None);
    }

    #[test]
    fn expired_and_revoked_keys_are_refused() {
        let row = |expires_at: Option<i64>, revoked_at: Option<i64>| Resource {
            kind: Kind::ApiKey,
            id: "key_1".into(),
            tenant_id: String::new(),
            unique_key: "h".into(),
            body: serde_json::to_value(KeyRecord {
                name: "k".into(),
                tenant_id: None,
                scopes: vec!["read".into()],
                prefix: "hm_".into(),
                expires_at,
                revoked_at,
            })
            .unwrap(),
            secrets: None,
            version: 1,
            created_at: 0,
            updated_at: 0,
        };
        assert!(principal_of(&row(Some(1_000), None), 999).is_ok());
        let expired = principal_of(&row(Some(1_000), None), 1_000).unwrap_err();
        assert_eq!(expired.to_string(), "this API key has expired");
        let revoked = principal_of(&row(None, Some(5)), 0).unwrap_err();
        assert_eq!(revoked.to_string(), "this API key was revoked");
    }

    #[test]
    fn keys_are_random_prefixed_and_hashed() {
        let (a, b) = (generate_key(), generate_key());
        assert!(a.starts_with(KEY_PREFIX) && a.len() == 46, "{a}");
        assert_ne!(a, b);
        assert_eq!(hash_key(&a).len(), 64);
        assert_ne!(hash_key(&a), hash_key(&b));
    }
}
