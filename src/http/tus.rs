//! `/v1/uploads`: tus 1.0 resumable uploads (core, creation, creation-with-upload,
//! creation-defer-length, termination, expiration, checksum). This front only turns headers
//! into calls of `uploads::Uploads` and its answers back into headers; the service decides.
//! Errors are the API's JSON errors, with the statuses tus names (API.md, "As built").

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{options, post};
use axum::Router;

use super::auth::Authed;
use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::drive;
use crate::engine::Precondition;
use crate::store::upload_keys::UploadId;
use crate::uploads::parse::{self, parse_checksum, parse_metadata};
use crate::uploads::{NewUpload, PatchPiece, UploadState};

const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum";
const OFFSET_TYPE: &str = "application/offset+octet-stream";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/uploads", post(create).options(capabilities))
        .route("/v1/uploads/{id}", options(capabilities).head(status).patch(patch).delete(terminate))
        .layer(axum::middleware::map_response(tus_headers))
}

/// Every answer says the protocol version; a refused version also lists the ones we speak.
async fn tus_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(HeaderName::from_static("tus-resumable"), HeaderValue::from_static(TUS_VERSION));
    if resp.status() == StatusCode::PRECONDITION_FAILED {
        resp.headers_mut().insert(HeaderName::from_static("tus-version"), HeaderValue::from_static(TUS_VERSION));
    }
    resp
}

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn bad_header(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadHeader, msg)
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    get(headers, name)
        .map(|v| v.parse::<u64>().map_err(|_| bad_header(format!("{name} is not a non-negative integer"))))
        .transpose()
}

/// `Tus-Resumable` must name the version we speak (412 otherwise).
fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match get(headers, "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        Some(v) => Err(ApiError::new(ErrorCode::TusVersion, format!("tus version {v:?} is not supported (1.0.0 is)"))),
        None => Err(ApiError::new(ErrorCode::TusVersion, "send Tus-Resumable: 1.0.0")),
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let t = get(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(OFFSET_TYPE) {
        return Ok(());
    }
    Err(ApiError::new(ErrorCode::UnsupportedMediaType, format!("an upload's bytes are sent as {OFFSET_TYPE}")))
}

fn checksum(headers: &HeaderMap) -> Result<Option<parse::Checksum>, ApiError> {
    Ok(get(headers, "upload-checksum").map(parse_checksum).transpose()?)
}

/// An upload id that is not one of ours is an upload that does not exist.
fn upload_id(id: &str) -> Result<UploadId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found())
}

/// The optional precondition on the drive file, from the metadata keys `if_match` (an entity
/// tag, or `*`) and `if_none_match` (`*`), as `If-Match` / `If-None-Match` on a PUT.
fn precondition(meta: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<Precondition, ApiError> {
    let text = |k: &str| meta.get(k).map(|v| String::from_utf8_lossy(v).trim().to_string());
    if let Some(m) = text("if_match") {
        if m == "*" {
            return Ok(Precondition::IfExists);
        }
        return Ok(Precondition::IfVersion(m.split(',').find_map(drive::parse_strong_etag).unwrap_or(u64::MAX)));
    }
    match text("if_none_match").as_deref() {
        None => Ok(Precondition::None),
        Some("*") => Ok(Precondition::IfAbsent),
        Some(_) => Err(bad_header("the metadata key if_none_match may only be *")),
    }
}

fn expires(ms: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// The headers that tell a client where its upload stands.
fn state_headers(st: &UploadState) -> Vec<(HeaderName, String)> {
    let mut h = vec![
        (HeaderName::from_static("upload-offset"), st.offset.to_string()),
        (HeaderName::from_static("upload-expires"), expires(st.expires_ms)),
    ];
    if let Some(v) = st.done {
        h.push((header::ETAG, drive::etag(v)));
    }
    h
}

fn respond(status: StatusCode, headers: Vec<(HeaderName, String)>) -> Response {
    let mut resp = status.into_response();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

pub async fn capabilities(State(app): State<AppState>) -> Response {
    let max = app.resumable.settings().max_size.to_string();
    respond(
        StatusCode::NO_CONTENT,
        vec![
            (HeaderName::from_static("tus-version"), TUS_VERSION.into()),
            (HeaderName::from_static("tus-extension"), EXTENSIONS.into()),
            (HeaderName::from_static("tus-max-size"), max),
            (HeaderName::from_static("tus-checksum-algorithm"), parse::ALGORITHMS.into()),
        ],
    )
}

pub async fn create(
    State(app): State<AppState>,
    authed: Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let account = authed.account;
    let length = match (number(&headers, "upload-length")?, get(&headers, "upload-defer-length")) {
        (Some(n), None) => Some(n),
        (None, Some("1")) => None,
        _ => return Err(bad_header("send Upload-Length, or Upload-Defer-Length: 1")),
    };
    let metadata = get(&headers, "upload-metadata").unwrap_or("").to_string();
    let meta = parse_metadata(&metadata)?;
    let path = meta
        .get("path")
        .and_then(|p| String::from_utf8(p.clone()).ok())
        .ok_or_else(|| bad_header("Upload-Metadata must name the drive path: key `path`, a UTF-8 value"))?;
    let pre = precondition(&meta)?;
    let declared = number(&headers, header::CONTENT_LENGTH.as_str())?;
    let with_body = declared.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    let sum = checksum(&headers)?;
    if with_body {
        check_content_type(&headers)?;
    }
    let (_, limit) = app.plan_and_limit(&account).await?;
    let new = NewUpload { path, length, metadata, pre };
    let mut st = app.resumable.create(account, new, limit).await.map_err(|e| app.refusal_counted_api(e.into()))?;
    if with_body {
        // The upload exists whatever becomes of its first bytes: its offset says what arrived.
        let _transfer = app.uploads.admit(account)?;
        let piece = PatchPiece { offset: 0, declared, set_length: None, checksum: sum, body: body.into_data_stream() };
        st = match app.resumable.patch(account, st.id, piece, limit).await {
            Ok(st) => st,
            Err(e) => {
                tracing::debug!(error = %e, "the first bytes of a new upload were not all taken");
                app.resumable.status(account, st.id, limit).await?
            }
        };
    }
    let mut h = state_headers(&st);
    h.push((header::LOCATION, format!("/v1/uploads/{}", st.id)));
    Ok(respond(StatusCode::CREATED, h))
}

pub async fn status(
    State(app): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let id = upload_id(&id)?;
    let (_, limit) = app.plan_and_limit(&authed.account).await?;
    let st = app.resumable.status(authed.account, id, limit).await?;
    let mut h = state_headers(&st);
    match st.length {
        Some(n) => h.push((HeaderName::from_static("upload-length"), n.to_string())),
        None => h.push((HeaderName::from_static("upload-defer-length"), "1".into())),
    }
    if !st.metadata.is_empty() {
        h.push((HeaderName::from_static("upload-metadata"), st.metadata.clone()));
    }
    h.push((header::CACHE_CONTROL, "no-store".into()));
    Ok(respond(StatusCode::OK, h))
}

pub async fn patch(
    State(app): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    check_content_type(&headers)?;
    let id = upload_id(&id)?;
    let offset = number(&headers, "upload-offset")?.ok_or_else(|| bad_header("send Upload-Offset"))?;
    let piece = PatchPiece {
        offset,
        declared: number(&headers, header::CONTENT_LENGTH.as_str())?,
        set_length: number(&headers, "upload-length")?,
        checksum: checksum(&headers)?,
        body: body.into_data_stream(),
    };
    let account = authed.account;
    let _transfer = app.uploads.admit(account)?;
    let (_, limit) = app.plan_and_limit(&account).await?;
    let st = app.resumable.patch(account, id, piece, limit).await.map_err(|e| app.refusal_counted_api(e.into()))?;
    Ok(respond(StatusCode::NO_CONTENT, state_headers(&st)))
}

pub async fn terminate(
    State(app): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    app.resumable.terminate(authed.account, upload_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
