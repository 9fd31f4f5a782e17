//! JSON request bodies: accepted with or without `Content-Type`, refused with a `400` in the
//! API's error shape when they do not parse or lack a field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// Largest JSON body any endpoint takes (a 100-record sync batch of 256 KiB payloads fits).
pub const MAX_JSON_BODY: usize = 32 << 20;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse(&bytes).map(JsonBody)
    }
}

fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(MAX_JSON_BODY as u64)
    } else {
        ApiError::new(ErrorCode::BadBody, e.body_text())
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadJson, format!("the body is not the JSON this call takes: {e}")))
}

/// A body that may be left out: empty (or only whitespace) means `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes =
            Bytes::from_request(req, state).await.map_err(|e| ApiError::new(ErrorCode::BadBody, e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// A page size from `?limit=`: 100 when absent, at most 1000; 0 is refused.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(0) => Err(ApiError::new(ErrorCode::BadLimit, "limit is 1 to 1000")),
        Some(n) => Ok(n.min(1000)),
    }
}

/// A listing cursor from `?after=` (absent or empty: from the start), read by `parse`.
pub fn cursor<T>(after: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
    match after {
        None | Some("") => Ok(None),
        Some(c) => parse(c)
            .map(Some)
            .ok_or_else(|| ApiError::new(ErrorCode::BadCursor, "after is not a cursor this server gave")),
    }
}
