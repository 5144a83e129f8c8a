//! API errors as RFC 7807 `application/problem+json`. User errors carry a precise detail;
//! internal ones are logged with their cause and answered generically.

use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.verify.secrets[0]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// An RFC 7807 problem document.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened, for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Invalid fields (422).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or invalid credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Valid credentials without the needed scope.
    #[error("{0}")]
    Forbidden(String),
    /// Absent, or belonging to another tenant (never revealed).
    #[error("resource not found")]
    NotFound,
    /// Conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// Owned by a manager (the Kubernetes controller): change it there.
    #[error("{0}")]
    Managed(String),
    /// `If-Match` does not match the current version.
    #[error("the resource changed: If-Match does not match its current ETag")]
    PreconditionFailed,
    /// Malformed request (syntax, query parameters).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed request with invalid fields.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// Body over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Not JSON.
    #[error("expected content-type application/json")]
    UnsupportedMediaType,
    /// A dependency (the store) failed; the caller should retry.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: logged, not shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A single-field validation error.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// Wraps an unexpected failure.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError::Internal(Box::new(e))
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not Found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::Managed(_) => (StatusCode::CONFLICT, "managed", "Managed Elsewhere"),
            ApiError::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition Failed",
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad Request"),
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Unprocessable Entity",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload Too Large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported Media Type",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service Unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal Server Error",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Duplicate => {
                ApiError::Conflict("a resource with the same unique name already exists".into())
            }
            StoreError::VersionConflict => {
                ApiError::Conflict("the resource was changed concurrently; read it again".into())
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        if let ApiError::Internal(e) = &self {
            let mut chain = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            tracing::error!(error = %chain, "internal error");
        }
        let problem = Problem {
            kind: format!("https://hookmesh.dev/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: Some(self.to_string()),
            errors: match self {
                ApiError::Validation(errors) => errors,
                _ => Vec::new(),
            },
        };
        let mut resp = (status, serde_json::to_vec(&problem).unwrap_or_default()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
