//! The filter's configuration: the one schema the control plane pushes and the filter reads.
//!
//! [`FilterConfig`] is the raw, serde-facing form. [`FilterConfig::compile`] validates every
//! field once and builds a [`CompiledConfig`](crate::CompiledConfig) (parsed CIDRs, decoded
//! keys, pre-keyed HMAC states) so the per-request path does no parsing. Validation errors
//! name the offending field with a JSON-path-like string (`sources[2].verify.secrets[0]`), so
//! the control plane can answer a 422 that points at the field.
//!
//! Documented for users in `docs/filter-config.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Top-level filter configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Inbound webhook sources; a request is matched to at most one.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// What happens to a request that matches no source.
    #[serde(default)]
    pub default_action: DefaultAction,
    /// How the real client address is derived from the connection.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Sent as `x-hookmesh-ingest-token` with every accepted request of a `hub` source: the
    /// control plane's ingest trusts the filter's `x-hookmesh-*` headers only with it, so a
    /// request that bypasses Envoy is refused. Set by the control plane, never by users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_token: Option<Secret>,
}

/// What to do with requests that match no source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// Answer 404: only declared webhook sources are reachable (the safe default).
    #[default]
    Reject,
    /// Let the request through untouched (for sidecars that also serve other traffic).
    Pass,
}

/// Deployment facts about the proxies in front of Envoy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Number of trusted proxies (load balancers) between the internet and this Envoy.
    /// 0 means the TCP peer is the client. With N > 0 the client is the address the outermost
    /// trusted proxy recorded in `x-forwarded-for`; entries further left are client-supplied
    /// and never trusted. Must match the listener's `xff_num_trusted_hops`.
    #[serde(default)]
    pub trusted_hops: u8,
}

/// One inbound webhook source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name, `[a-z0-9_-]{1,64}`; shown in metrics and sent upstream as `x-hookmesh-source`.
    pub name: String,
    /// Which requests belong to this source.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// Signature verification; `None` means no signature is required.
    #[serde(default)]
    pub verify: Option<VerifyConfig>,
    /// Caller authentication, in addition to or instead of a signature.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Client networks allowed to call this source; empty allows any address.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Token-bucket rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Method, size and transport limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where accepted requests go; the sidecar routes on the `x-hookmesh-mode` header.
    #[serde(default)]
    pub mode: SourceMode,
}

/// Where a source's accepted requests go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SourceMode {
    /// To the application behind the Envoy.
    #[default]
    Edge,
    /// Into hookmesh's ingest (marked `x-hookmesh-mode: hub` for the route).
    Hub,
}

impl SourceConfig {
    /// Every secret in the source, in a fixed order (verification secrets, API keys, Basic
    /// passwords, JWT HMAC secrets), so a store can seal them apart from the rest.
    pub fn secrets_mut(&mut self) -> Vec<&mut Secret> {
        let mut out: Vec<&mut Secret> = Vec::new();
        if let Some(v) = &mut self.verify {
            out.extend(v.secrets.iter_mut());
        }
        match &mut self.auth {
            Some(AuthConfig::ApiKey { keys, .. }) => out.extend(keys.iter_mut()),
            Some(AuthConfig::Basic { users }) => {
                out.extend(users.iter_mut().map(|u| &mut u.password))
            }
            Some(AuthConfig::Jwt(j)) => {
                out.extend(j.keys.iter_mut().filter_map(|k| k.secret.as_mut()))
            }
            None => {}
        }
        out
    }
}

/// Request matching: host and/or path prefix. The longest matching prefix wins; on equal
/// prefixes a source naming a host wins over one that does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact host (case-insensitive, port ignored), or `*.example.com` for any subdomain.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, starting with `/`. Defaults to `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// Signature verification settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// The signature scheme.
    pub scheme: SchemeName,
    /// Active secrets or public keys; a signature made with any of them is accepted (rotation).
    pub secrets: Vec<Secret>,
    /// Maximum age (and future skew) of the signed timestamp, in seconds. Defaults to the
    /// vendor's documented tolerance. Ignored by schemes without a timestamp.
    #[serde(default)]
    pub tolerance_secs: Option<u64>,
    /// GitHub: also accept the legacy `x-hub-signature: sha1=` header.
    #[serde(default)]
    pub allow_sha1: bool,
    /// Twilio, Square: the public origin (`https://hooks.example.com`) the provider calls,
    /// when Envoy cannot reconstruct it (TLS terminated in front, rewritten host). The
    /// request's path and query are appended to it.
    #[serde(default)]
    pub public_origin: Option<String>,
    /// Settings of the `generic_hmac` scheme (required for it, refused for the others).
    #[serde(default)]
    pub generic: Option<GenericHmacConfig>,
}

/// Supported signature schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SchemeName {
    /// Standard Webhooks: `webhook-*` headers, `v1` (HMAC-SHA256, `whsec_`) and `v1a` (ed25519, `whpk_`).
    StandardWebhooks,
    /// Svix: Standard Webhooks with `svix-*` headers.
    Svix,
    /// Stripe: `stripe-signature: t=..,v1=..`.
    Stripe,
    /// GitHub: `x-hub-signature-256: sha256=..`.
    Github,
    /// Shopify: `x-shopify-hmac-sha256` (base64).
    Shopify,
    /// Slack: `x-slack-signature: v0=..` over `v0:ts:body`.
    Slack,
    /// Twilio: `x-twilio-signature`, HMAC-SHA1 over URL + sorted form parameters.
    Twilio,
    /// Paddle Billing: `paddle-signature: ts=..;h1=..`.
    Paddle,
    /// Square: `x-square-hmacsha256-signature` over notification URL + body.
    Square,
    /// Zoom: `x-zm-signature: v0=..` over `v0:ts:body`.
    Zoom,
    /// PagerDuty: `x-pagerduty-signature: v1=..[,v1=..]`.
    Pagerduty,
    /// Linear: `linear-signature` (hex), timestamp in the body's `webhookTimestamp`.
    Linear,
    /// Discord interactions: ed25519 over timestamp + body, hex public key.
    Discord,
    /// Any HMAC scheme described by [`GenericHmacConfig`].
    GenericHmac,
}

impl SchemeName {
    /// Every scheme, for CLIs and documentation.
    pub const ALL: [SchemeName; 14] = [
        SchemeName::StandardWebhooks,
        SchemeName::Svix,
        SchemeName::Stripe,
        SchemeName::Github,
        SchemeName::Shopify,
        SchemeName::Slack,
        SchemeName::Twilio,
        SchemeName::Paddle,
        SchemeName::Square,
        SchemeName::Zoom,
        SchemeName::Pagerduty,
        SchemeName::Linear,
        SchemeName::Discord,
        SchemeName::GenericHmac,
    ];

    /// The snake_case name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemeName::StandardWebhooks => "standard_webhooks",
            SchemeName::Svix => "svix",
            SchemeName::Stripe => "stripe",
            SchemeName::Github => "github",
            SchemeName::Shopify => "shopify",
            SchemeName::Slack => "slack",
            SchemeName::Twilio => "twilio",
            SchemeName::Paddle => "paddle",
            SchemeName::Square => "square",
            SchemeName::Zoom => "zoom",
            SchemeName::Pagerduty => "pagerduty",
            SchemeName::Linear => "linear",
            SchemeName::Discord => "discord",
            SchemeName::GenericHmac => "generic_hmac",
        }
    }

    /// Parses a configuration name.
    pub fn parse(s: &str) -> Option<SchemeName> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }
}

impl fmt::Display for SchemeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A generic HMAC scheme: which header carries the signature and what bytes are signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GenericHmacConfig {
    /// Header carrying the signature.
    pub header: String,
    /// Prefix before the encoded signature (e.g. `sha256=`); stripped before decoding.
    #[serde(default)]
    pub prefix: String,
    /// HMAC digest.
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// Signature encoding.
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// Signed content. Placeholders: `{body}`, `{timestamp}`, `{id}`, `{url}`, `{method}`,
    /// `{path}`, `{header:NAME}`; `{{` and `}}` are literal braces. Default `{body}`.
    #[serde(default = "default_template")]
    pub template: String,
    /// Header with the signed unix timestamp; enables the tolerance check.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Unit of the timestamp header.
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// Header with the message id (for `{id}`).
    #[serde(default)]
    pub id_header: Option<String>,
}

fn default_template() -> String {
    "{body}".to_owned()
}

/// HMAC digest algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    /// HMAC-SHA1 (legacy providers only).
    Sha1,
    /// HMAC-SHA256.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How a signature is encoded in its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Lower- or upper-case hexadecimal.
    #[default]
    Hex,
    /// Standard base64 (padding optional).
    Base64,
}

/// Unit of a timestamp header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    /// Unix seconds.
    #[default]
    Seconds,
    /// Unix milliseconds.
    Milliseconds,
}

/// Caller authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// A static key in a header.
    ApiKey {
        /// Header carrying the key (default `x-api-key`).
        #[serde(default = "default_api_key_header")]
        header: String,
        /// Prefix before the key, e.g. `Bearer `.
        #[serde(default)]
        prefix: String,
        /// Accepted keys.
        keys: Vec<Secret>,
    },
    /// HTTP Basic authentication.
    Basic {
        /// Accepted credentials.
        users: Vec<BasicUser>,
    },
    /// `Authorization: Bearer <JWT>`.
    Jwt(JwtConfig),
}

/// Kubernetes' structural schemas have no tagged unions: one object with every variant's
/// fields, `type` choosing among them, and CEL rules for what each variant requires.
#[cfg(feature = "crd-schema")]
impl schemars::JsonSchema for AuthConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AuthConfig".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Caller authentication: `api_key` (a static key in a header), `basic` (HTTP Basic) or `jwt` (`Authorization: Bearer`).",
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["api_key", "basic", "jwt"]},
                "header": {"type": "string", "description": "api_key: the header carrying the key (default `x-api-key`)."},
                "prefix": {"type": "string", "description": "api_key: the prefix before the key, e.g. `Bearer `."},
                "keys": {"description": "api_key: accepted keys, as Secret references (`<secret>/<key>`); jwt: verification keys (`kid`, `alg`, `secret` as a Secret reference, `public_key_pem`).",
                         "x-kubernetes-preserve-unknown-fields": true},
                "users": generator.subschema_for::<Vec<BasicUser>>(),
                "jwks": {"type": "string", "description": "jwt: a JWKS document as JSON text."},
                "issuer": {"type": "string", "description": "jwt: required `iss`."},
                "audiences": {"type": "array", "items": {"type": "string"}, "description": "jwt: accepted audiences."},
                "leeway_secs": {"type": "integer", "minimum": 0, "description": "jwt: clock skew allowed for `exp`/`nbf` (default 60)."},
            },
            "x-kubernetes-validations": [
                {"rule": "self.type != 'api_key' || has(self.keys)", "message": "api_key needs keys"},
                {"rule": "self.type != 'basic' || has(self.users)", "message": "basic needs users"},
                {"rule": "self.type == 'api_key' || !(has(self.header) || has(self.prefix))", "message": "header and prefix belong to api_key"},
            ],
        })
    }
}

fn default_api_key_header() -> String {
    "x-api-key".to_owned()
}

/// One HTTP Basic credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// JWT bearer validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Keys given one by one.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// A JWKS document (`{"keys": [...]}`) as JSON text; RSA, P-256 EC and `oct` keys are used.
    #[serde(default)]
    pub jwks: Option<String>,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required audience: the token's `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed for `exp`/`nbf`, in seconds (default 60).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_leeway() -> u64 {
    60
}

/// One JWT verification key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Key id; when set, only tokens with this `kid` use the key.
    #[serde(default)]
    pub kid: Option<String>,
    /// Algorithm this key verifies.
    pub alg: JwtAlgorithm,
    /// HS256 shared secret (raw text).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// RS256/ES256 public key as PEM (SubjectPublicKeyInfo).
    #[serde(default)]
    pub public_key_pem: Option<String>,
}

/// JWT signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
pub enum JwtAlgorithm {
    /// HMAC-SHA256.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

/// Token-bucket parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub rate_per_sec: f64,
    /// Bucket size: requests allowed at once after a quiet period.
    pub burst: u32,
    /// What identifies a caller.
    #[serde(default)]
    pub key: RateLimitKey,
}

/// What a rate-limit bucket is keyed by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimitKey {
    /// The real client address (see [`NetworkConfig`]).
    #[default]
    ClientIp,
    /// The value of a request header (a missing header shares one bucket).
    Header(String),
}

/// Method, size and transport limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "crd-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Allowed methods (upper case); empty allows any. Default `["POST"]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Maximum body size in bytes (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Require TLS (directly or at a trusted hop).
    #[serde(default)]
    pub https_only: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            methods: default_methods(),
            max_body_bytes: default_max_body(),
            https_only: false,
        }
    }
}

fn default_methods() -> Vec<String> {
    vec!["POST".to_owned()]
}

fn default_max_body() -> u64 {
    1024 * 1024
}

/// A secret or key. Its `Debug` output is masked so it never reaches logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Where a Kubernetes custom resource holds a secret, it holds a reference instead:
/// `<secret-name>/<key>`, a key of a `Secret` in the resource's namespace, which the controller
/// reads. The pattern keeps values from being pasted in.
#[cfg(feature = "crd-schema")]
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretKeyReference".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A key of a Kubernetes Secret in the same namespace, as `<secret-name>/<key>`; never the secret itself.",
            "pattern": SECRET_REFERENCE_PATTERN,
            "maxLength": 507,
        })
    }
}

/// `<secret-name>/<key>`: a DNS subdomain name, then a Secret data key.
#[cfg(feature = "crd-schema")]
pub const SECRET_REFERENCE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$";

/// A string (`client_ip`) or an object (`{"header": …}`): Kubernetes' structural schemas
/// cannot say "one or the other", so the schema keeps the value as written and the control
/// plane validates it (and reports a bad one in the resource's status).
#[cfg(feature = "crd-schema")]
impl schemars::JsonSchema for RateLimitKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RateLimitKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "What identifies a caller: `client_ip` (default) or `{\"header\": \"<name>\"}`.",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// A configuration field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// JSON-path-like location, e.g. `sources[0].verify.secrets[1]`.
    pub field: String,
    /// What is wrong, never containing the secret itself.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl FilterConfig {
    /// Parses JSON configuration bytes.
    ///
    /// # Errors
    /// A [`ConfigError`] with field `$` and serde's message (line and column) for malformed
    /// JSON or unknown fields.
    pub fn from_json(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        serde_json::from_slice(bytes).map_err(|e| ConfigError::new("$", e.to_string()))
    }

    /// Validates and compiles the configuration for the request path.
    ///
    /// # Errors
    /// The first invalid field found.
    pub fn compile(&self) -> Result<crate::CompiledConfig, ConfigError> {
        crate::compile::compile(self)
    }
}
