//! Extractors whose rejections are problem+json too.

use super::error::ApiError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// JSON in and out; body errors become 400/413/415/422 problems.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(AppJson(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(data_error(&e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::BadRequest(format!(
                "malformed JSON: {}",
                e.body_text()
            ))),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(_)) => Err(ApiError::PayloadTooLarge),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// serde's "path: message at line L column C" as a field error.
fn data_error(text: &str) -> ApiError {
    let text = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(text);
    match text.split_once(": ") {
        Some((path, msg)) if !path.contains(' ') => ApiError::field(path, msg),
        _ => ApiError::field("$", text),
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters; bad ones become a 400 problem.
pub struct AppQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| AppQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::BadRequest(format!("invalid query: {}", e.body_text()))
            })
    }
}

/// `?limit=&after=` cursor pagination.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// Return items after this id (the previous page's `next`).
    pub after: Option<String>,
    /// Only this tenant's items (global admin keys).
    pub tenant_id: Option<String>,
}

impl PageParams {
    /// The validated limit.
    ///
    /// # Errors
    /// A limit outside 1..=1000.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=1000) => Ok(i64::from(n)),
            Some(_) => Err(ApiError::BadRequest(
                "limit must be between 1 and 1000".into(),
            )),
        }
    }
}

/// A page of items and the cursor to the next page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items, ordered by id.
    pub data: Vec<T>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched items (the extra one only says there is more).
    pub fn from_fetched(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Page<T> {
        let more = items.len() as i64 > limit;
        items.truncate(limit.max(0) as usize);
        let next = if more { items.last().map(&id) } else { None };
        Page { data: items, next }
    }
}

/// The version an `If-Match` header demands, if any (`"3"`, `W/"3"`; `*` means any).
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(axum::http::header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let v = v
            .to_str()
            .map_err(|_| ApiError::BadRequest("If-Match is not text".into()))?
            .trim();
        if v == "*" {
            return Ok(IfMatch(None));
        }
        let tag = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
        tag.parse().map(|n| IfMatch(Some(n))).map_err(|_| {
            ApiError::BadRequest(format!("If-Match `{v}` is not an ETag this API issued"))
        })
    }
}

/// The `ETag` of a version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// An optional RFC 3339 time from a query parameter, as unix ms; 400 naming the parameter.
///
/// # Errors
/// Not an RFC 3339 time.
pub fn time_param(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|t| {
            crate::ids::parse_rfc3339(t)
                .ok_or_else(|| ApiError::BadRequest(format!("{name}: not an RFC 3339 time")))
        })
        .transpose()
}

/// An optional RFC 3339 time from a JSON body's field, as unix ms; 422 naming the field.
///
/// # Errors
/// Not an RFC 3339 time.
pub fn time_field(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|t| {
            crate::ids::parse_rfc3339(t)
                .ok_or_else(|| ApiError::field(name, "not an RFC 3339 time"))
        })
        .transpose()
}
