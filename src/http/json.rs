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
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(MAX_JSON_BODY as u64)
            } else {
                ApiError::new(ErrorCode::BadBody, e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::new(ErrorCode::BadJson, format!("the body is not the JSON this call takes: {e}")))
    }
}
