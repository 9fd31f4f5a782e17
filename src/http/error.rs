//! The one place where failures become HTTP answers:
//! `{"error": {"code": "snake_case", "message": "sentence", ...extra}}`.
//!
//! Handlers return `ApiError`; engine and domain errors convert into it here. Responses that
//! axum or hyper produce on their own (405, 413, rejections) are rewritten into the same shape
//! by `json_errors`, so a client never sees a plain-text error.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::drive::DriveError;
use crate::error::{Error, Refusal};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), extra: Map::new(), retry_after: None }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid credentials")
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the limit of {limit} bytes"),
        )
        .with("limit", limit)
    }

    pub fn quota(used: u64, limit: u64) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "quota_exceeded",
            "this write would exceed the account's storage quota",
        )
        .with("used", used)
        .with("limit", limit)
    }
}

/// Generic code for a status that a handler did not explain itself.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "bad_request",
        431 => "headers_too_large",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), self.code.into());
        body.insert("message".into(), self.message.into());
        body.extend(self.extra);
        let mut resp = (self.status, axum::Json(json!({ "error": body }))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        close_if_body_unread(&mut resp);
        resp
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Refused(Refusal::Quota { used, limit }) => ApiError::quota(used, limit),
            Error::Refused(Refusal::TooLarge { limit }) => ApiError::too_large(limit),
            Error::HashMismatch { expected, actual } => {
                ApiError::bad_request("hash_mismatch", format!("the body hashes to {actual}, not {expected}"))
            }
            // Said apart from a bad token's 401, so that a client (and a test) can tell that
            // the write began and was then refused.
            Error::AccountGone => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the account was deleted while this request was under way",
            ),
            Error::Body(msg) => ApiError::bad_request("bad_body", format!("the request body could not be read: {msg}")),
            full if full.is_disk_full() => {
                tracing::error!(error = %full, "refusing a write: the disk is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    "the server is out of storage space; nothing was stored, try again later",
                )
            }
            other => {
                tracing::error!(error = %other, "request failed inside the server");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server could not complete the request",
                )
            }
        }
    }
}

impl From<DriveError> for ApiError {
    fn from(e: DriveError) -> Self {
        let msg = e.to_string();
        match e {
            DriveError::BadPath(_) => ApiError::bad_request("bad_path", msg),
            DriveError::NotFound => ApiError::not_found(),
            DriveError::PreconditionFailed => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", msg)
            }
            DriveError::MissingChunks(ids) => ApiError::new(StatusCode::CONFLICT, "missing_chunks", msg)
                .with("missing", ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>()),
            DriveError::WrongSize { .. } => ApiError::bad_request("bad_size", msg),
            DriveError::Engine(inner) => inner.into(),
        }
    }
}

/// Rewrite any error response that is not already JSON (axum rejections, 405, 413, 431) into
/// the API's error shape, keeping its status and headers.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json =
        resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let detail = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = match std::str::from_utf8(&detail) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let body = json!({ "error": { "code": code_for(status), "message": message } });
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut resp = Response::from_parts(parts, Body::from(body.to_string()));
    close_if_body_unread(&mut resp);
    resp
}

/// Answers given before the request body was read to its end (too large, too slow, headers
/// refused) end the connection: the rest of that body would otherwise be read as the next
/// request, and a client that reuses the connection would meet a reset instead of an answer.
fn close_if_body_unread(resp: &mut Response) {
    if matches!(resp.status().as_u16(), 408 | 413 | 431) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found()
}
