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
use crate::uploads::parse::HeaderError;
use crate::uploads::UploadError;

/// Every error the API answers: its code and its status, said once. Handlers name a variant,
/// never a string, so a code cannot be misspelled and is compared as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    BadJson,
    BadBody,
    BadPath,
    BadHash,
    BadSize,
    BadCursor,
    BadLimit,
    BadCollection,
    BadId,
    BadVersion,
    EmptyChunk,
    TooManyChunks,
    BatchTooLarge,
    HashMismatch,
    UnknownPlan,
    BadCompactBelow,
    BadField,
    BadMtime,
    TooManyEntries,
    SizeMismatch,
    DuplicatePath,
    BadIdentifier,
    WeakPassword,
    BadPurpose,
    ConfirmationRequired,
    Unauthorized,
    BadCredentials,
    WrongPassword,
    BadCode,
    TlsRequired,
    /// A state-changing portal request without its CSRF token, or from another site.
    CsrfRejected,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    MissingChunks,
    IdentifierTaken,
    ResyncRequired,
    PreconditionFailed,
    VersionConflict,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RateLimited,
    TooManyTransfers,
    HeadersTooLarge,
    Internal,
    NotReady,
    StorageUnavailable,
    QuotaExceeded,
    InsufficientStorage,
    // Resumable uploads (tus).
    BadHeader,
    BadChecksumAlgorithm,
    OffsetMismatch,
    UnsupportedMediaType,
    TusVersion,
    UploadTooLarge,
    PastLength,
    UploadOverQuota,
    UploadLocked,
    TooManyUploads,
    ChecksumMismatch,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::BadJson => StatusCode::BAD_REQUEST,
            ErrorCode::BadBody => StatusCode::BAD_REQUEST,
            ErrorCode::BadPath => StatusCode::BAD_REQUEST,
            ErrorCode::BadHash => StatusCode::BAD_REQUEST,
            ErrorCode::BadSize => StatusCode::BAD_REQUEST,
            ErrorCode::BadCursor => StatusCode::BAD_REQUEST,
            ErrorCode::BadLimit => StatusCode::BAD_REQUEST,
            ErrorCode::BadCollection => StatusCode::BAD_REQUEST,
            ErrorCode::BadId => StatusCode::BAD_REQUEST,
            ErrorCode::BadVersion => StatusCode::BAD_REQUEST,
            ErrorCode::EmptyChunk => StatusCode::BAD_REQUEST,
            ErrorCode::TooManyChunks => StatusCode::BAD_REQUEST,
            ErrorCode::BatchTooLarge => StatusCode::BAD_REQUEST,
            ErrorCode::HashMismatch => StatusCode::BAD_REQUEST,
            ErrorCode::UnknownPlan => StatusCode::BAD_REQUEST,
            ErrorCode::BadCompactBelow => StatusCode::BAD_REQUEST,
            ErrorCode::BadField => StatusCode::BAD_REQUEST,
            ErrorCode::BadMtime => StatusCode::BAD_REQUEST,
            ErrorCode::TooManyEntries => StatusCode::BAD_REQUEST,
            ErrorCode::SizeMismatch => StatusCode::BAD_REQUEST,
            ErrorCode::DuplicatePath => StatusCode::BAD_REQUEST,
            ErrorCode::BadIdentifier => StatusCode::BAD_REQUEST,
            ErrorCode::WeakPassword => StatusCode::BAD_REQUEST,
            ErrorCode::BadPurpose => StatusCode::BAD_REQUEST,
            ErrorCode::ConfirmationRequired => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::BadCredentials => StatusCode::UNAUTHORIZED,
            ErrorCode::WrongPassword => StatusCode::UNAUTHORIZED,
            ErrorCode::BadCode => StatusCode::FORBIDDEN,
            ErrorCode::TlsRequired => StatusCode::FORBIDDEN,
            ErrorCode::CsrfRejected => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::MissingChunks => StatusCode::CONFLICT,
            ErrorCode::IdentifierTaken => StatusCode::CONFLICT,
            ErrorCode::ResyncRequired => StatusCode::GONE,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::VersionConflict => StatusCode::PRECONDITION_FAILED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyTransfers => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::BadHeader => StatusCode::BAD_REQUEST,
            ErrorCode::BadChecksumAlgorithm => StatusCode::BAD_REQUEST,
            ErrorCode::OffsetMismatch => StatusCode::CONFLICT,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::TusVersion => StatusCode::PRECONDITION_FAILED,
            ErrorCode::UploadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PastLength => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UploadOverQuota => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UploadLocked => StatusCode::LOCKED,
            ErrorCode::TooManyUploads => StatusCode::TOO_MANY_REQUESTS,
            // tus's checksum extension: "460 Checksum Mismatch".
            ErrorCode::ChecksumMismatch => StatusCode::from_u16(460).expect("a valid status"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadBody => "bad_body",
            ErrorCode::BadPath => "bad_path",
            ErrorCode::BadHash => "bad_hash",
            ErrorCode::BadSize => "bad_size",
            ErrorCode::BadCursor => "bad_cursor",
            ErrorCode::BadLimit => "bad_limit",
            ErrorCode::BadCollection => "bad_collection",
            ErrorCode::BadId => "bad_id",
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::EmptyChunk => "empty_chunk",
            ErrorCode::TooManyChunks => "too_many_chunks",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::HashMismatch => "hash_mismatch",
            ErrorCode::UnknownPlan => "unknown_plan",
            ErrorCode::BadCompactBelow => "bad_compact_below",
            ErrorCode::BadField => "bad_field",
            ErrorCode::BadMtime => "bad_mtime",
            ErrorCode::TooManyEntries => "too_many_entries",
            ErrorCode::SizeMismatch => "size_mismatch",
            ErrorCode::DuplicatePath => "duplicate_path",
            ErrorCode::BadIdentifier => "bad_identifier",
            ErrorCode::WeakPassword => "weak_password",
            ErrorCode::BadPurpose => "bad_purpose",
            ErrorCode::ConfirmationRequired => "confirmation_required",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::BadCode => "bad_code",
            ErrorCode::TlsRequired => "tls_required",
            ErrorCode::CsrfRejected => "csrf_rejected",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Conflict => "conflict",
            ErrorCode::MissingChunks => "missing_chunks",
            ErrorCode::IdentifierTaken => "identifier_taken",
            ErrorCode::ResyncRequired => "resync_required",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::VersionConflict => "version_conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyTransfers => "too_many_transfers",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::BadHeader => "bad_header",
            ErrorCode::BadChecksumAlgorithm => "bad_checksum_algorithm",
            ErrorCode::OffsetMismatch => "offset_mismatch",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::TusVersion => "unsupported_tus_version",
            ErrorCode::UploadTooLarge => "upload_too_large",
            ErrorCode::PastLength => "past_upload_length",
            // The quota refusal's code and body, said at creation with tus's 413.
            ErrorCode::UploadOverQuota => "quota_exceeded",
            ErrorCode::UploadLocked => "upload_locked",
            ErrorCode::TooManyUploads => "too_many_uploads",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), extra: Map::new(), retry_after: None }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such resource")
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or invalid credentials")
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, format!("the body is over the limit of {limit} bytes"))
            .with("limit", limit)
    }

    pub fn quota(used: u64, limit: u64) -> Self {
        Self::new(ErrorCode::QuotaExceeded, "this write would exceed the account's storage quota")
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
        423 => "upload_locked",
        422 => "bad_request",
        431 => "headers_too_large",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), self.code.as_str().into());
        body.insert("message".into(), self.message.into());
        body.extend(self.extra);
        let mut resp = (self.code.status(), axum::Json(json!({ "error": body }))).into_response();
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
                ApiError::new(ErrorCode::HashMismatch, format!("the body hashes to {actual}, not {expected}"))
            }
            // Said apart from a bad token's 401, so that a client (and a test) can tell that
            // the write began and was then refused.
            Error::AccountGone => {
                ApiError::new(ErrorCode::Unauthorized, "the account was deleted while this request was under way")
            }
            Error::Body(msg) => ApiError::new(ErrorCode::BadBody, format!("the request body could not be read: {msg}")),
            // A client retries after a pause; a throttled or failing store clears in seconds.
            Error::Unavailable(why) => {
                tracing::warn!(error = %why, "a request failed: the object store is unavailable");
                let mut e = ApiError::new(
                    ErrorCode::StorageUnavailable,
                    "the storage behind the server is unavailable; nothing was changed, try again later",
                );
                e.retry_after = Some(5);
                e
            }
            full if full.is_disk_full() => {
                tracing::error!(error = %full, "refusing a write: the disk is full");
                ApiError::new(
                    ErrorCode::InsufficientStorage,
                    "the server is out of storage space; nothing was stored, try again later",
                )
            }
            other => {
                tracing::error!(error = %other, "request failed inside the server");
                ApiError::new(ErrorCode::Internal, "the server could not complete the request")
            }
        }
    }
}

impl From<crate::snapshot::SnapshotError> for ApiError {
    fn from(e: crate::snapshot::SnapshotError) -> Self {
        use crate::snapshot::SnapshotError as S;
        match e {
            S::NotAbsolute(_) | S::NoParent(_) => ApiError::new(ErrorCode::BadRequest, e.to_string()),
            S::Exists(_) => ApiError::new(ErrorCode::Conflict, e.to_string()),
            S::Store(inner) => inner.into(),
            other => {
                tracing::error!(error = %other, "snapshot failed");
                ApiError::new(ErrorCode::Internal, format!("the snapshot failed: {other}"))
            }
        }
    }
}

impl From<DriveError> for ApiError {
    fn from(e: DriveError) -> Self {
        let msg = e.to_string();
        match e {
            DriveError::BadPath(_) => ApiError::new(ErrorCode::BadPath, msg),
            DriveError::NotFound => ApiError::not_found(),
            DriveError::Exists
            | DriveError::IsFolder
            | DriveError::UnderFile
            | DriveError::NoParent
            | DriveError::SamePath
            | DriveError::Nested => ApiError::new(ErrorCode::Conflict, msg),
            DriveError::TooMany | DriveError::PropsTooLarge => ApiError::new(ErrorCode::PayloadTooLarge, msg),
            DriveError::PreconditionFailed => ApiError::new(ErrorCode::PreconditionFailed, msg),
            DriveError::MissingChunks(ids) => ApiError::new(ErrorCode::MissingChunks, msg)
                .with("missing", ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>()),
            DriveError::WrongSize { .. } => ApiError::new(ErrorCode::BadSize, msg),
            DriveError::Engine(inner) => inner.into(),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let msg = e.to_string();
        match e {
            UploadError::Drive(d) => d.into(),
            UploadError::NotFound => ApiError::not_found(),
            UploadError::Busy => ApiError::new(ErrorCode::UploadLocked, msg),
            UploadError::OffsetMismatch { offset, .. } => {
                ApiError::new(ErrorCode::OffsetMismatch, msg).with("offset", offset)
            }
            UploadError::PastLength { length } => ApiError::new(ErrorCode::PastLength, msg).with("length", length),
            UploadError::TooBig { max } => ApiError::new(ErrorCode::UploadTooLarge, msg).with("limit", max),
            UploadError::OverQuota { used, limit } => {
                ApiError::new(ErrorCode::UploadOverQuota, msg).with("used", used).with("limit", limit)
            }
            UploadError::TooMany { max } => ApiError::new(ErrorCode::TooManyUploads, msg).with("limit", max),
            UploadError::ChecksumMismatch => ApiError::new(ErrorCode::ChecksumMismatch, msg),
            UploadError::BadLength(_) => ApiError::new(ErrorCode::BadHeader, msg),
        }
    }
}

impl From<HeaderError> for ApiError {
    fn from(e: HeaderError) -> Self {
        let code = match e {
            HeaderError::UnsupportedAlgorithm(_) => ErrorCode::BadChecksumAlgorithm,
            HeaderError::Metadata(_) | HeaderError::Checksum => ErrorCode::BadHeader,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Rewrite any error response that is not already JSON (axum rejections, 405, 413, 431) into
/// the API's error shape, keeping its status and headers.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    // JSON is ours already; XML is a WebDAV error body naming its precondition (RFC 4918).
    let typed = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/json") || v.starts_with(b"application/xml") || v.starts_with(b"text/xml")
    });
    if !(status.is_client_error() || status.is_server_error()) || typed {
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
