//! `Idempotency-Key` on every POST: the first response to a key is stored (per API key, for
//! 24 hours) and replayed to retries of the same request; the same key with a different
//! request is refused, and a retry while the first is still running gets 409.

use super::auth::Principal;
use super::error::ApiError;
use super::{AppState, BODY_LIMIT};
use crate::store::Reservation;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// What an `Idempotency-Key` may be: 1 to 255 visible ASCII characters.
pub const KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// How long a key is remembered.
pub const RETENTION_MS: i64 = 24 * 3600 * 1000;

pub(super) async fn idempotency(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return Ok(next.run(req).await);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (b'!'..=b'~').contains(&b))
        })
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?
        .to_owned();
    let who = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or(ApiError::Unauthorized("missing API key"))?;
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update(b" ");
    h.update(parts.uri.to_string());
    h.update(b"\n");
    h.update(&bytes);
    let fingerprint = hex::encode(h.finalize());
    let scoped = format!("{}:{key}", who.key_id);
    match state
        .store
        .idempotency_reserve(&scoped, &fingerprint, crate::ids::now_ms())
        .await?
    {
        Reservation::Existing(prev) if prev.fingerprint != fingerprint => Err(ApiError::field(
            "Idempotency-Key",
            "already used with a different request",
        )),
        Reservation::Existing(prev) if prev.status == 0 => Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still being processed".into(),
        )),
        Reservation::Existing(prev) => {
            let status = u16::try_from(prev.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            let mut resp = (status, prev.body.unwrap_or_default()).into_response();
            if let Some(ct) = prev
                .content_type
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(resp)
        }
        Reservation::Reserved => {
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .map_err(ApiError::internal)?;
            if parts.status.is_server_error() {
                // Nothing durable happened for sure: let a retry run again.
                state.store.idempotency_release(&scoped).await?;
            } else {
                let ct = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                state
                    .store
                    .idempotency_complete(&scoped, i64::from(parts.status.as_u16()), ct, &bytes)
                    .await?;
            }
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
    }
}
