//! hookmesh edge filter: verifies webhook signatures, authenticates callers, enforces client
//! address allowlists, token-bucket rate limits and request limits inside Envoy, before a
//! request reaches any application.
//!
//! # Design
//! All decisions are plain, host-independent Rust so they are unit-tested natively and reused
//! by the control plane (outbound signing, `hookmesh sig`). Configuration is validated and
//! compiled once ([`FilterConfig::compile`]); per request, [`decide_head`] and [`decide_body`]
//! only match, compare and count. The proxy-wasm glue lives in `host.rs` and is compiled for
//! `wasm32` only; nothing else imports `proxy_wasm`.
//!
//! # Example
//! ```
//! use hookmesh_filter::{sign, FilterConfig, Headers, SchemeName, SignInput};
//! let cfg = FilterConfig::from_json(br#"{"sources": [{"name": "stripe",
//!     "match": {"path_prefix": "/stripe"},
//!     "verify": {"scheme": "stripe", "secrets": ["whsec_test"]}}]}"#).unwrap();
//! let compiled = cfg.compile().unwrap();
//! assert_eq!(compiled.source_names().collect::<Vec<_>>(), ["stripe"]);
//!
//! let input = SignInput { body: b"{}", id: "evt_1", timestamp: 1_700_000_000, url: None, method: "POST" };
//! let headers = sign(SchemeName::Stripe, "whsec_test", None, &input).unwrap();
//! assert_eq!(headers[0].0, "stripe-signature");
//! ```
#![deny(missing_docs)]

mod allow;
mod auth;
mod compile;
pub mod config;
mod crypto;
mod decide;
mod headers;
pub mod ratelimit;
pub mod verify;

#[cfg(target_arch = "wasm32")]
mod host;

pub use allow::{client_address, parse_peer, Allowlist, Cidr};
pub use auth::AuthError;
pub use compile::CompiledConfig;
pub use config::{ConfigError, FilterConfig, SchemeName, Secret};
pub use decide::{
    check_body_size, decide_body, decide_head, HeadVerdict, Outcome, Rejection, RequestHead,
};
pub use headers::{DuplicateHeader, Headers};
pub use verify::{
    sign, SignError, SignInput, SignedRequest, StandardSigner, Verifier, VerifyError,
};

/// Helpers to derive public keys from signing keys, for tests and the CLI.
pub mod keys {
    pub use crate::verify::public_keys::*;
}
