//! `/v1/files`: the drive. Bodies stream through the engine in both directions.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::{blocking, AppState};
use crate::chunk::ChunkId;
use crate::drive::{self, RangeAsk};
use crate::engine::{Adoption, ByteRange, Precondition};
use crate::quota::Charge;
use crate::store::keys::{Namespace, ObjectRecord};

pub const MANIFEST_TYPE: &str = "application/vnd.cairn.manifest+json";
/// A manifest body for a very large file (a 50 GiB file is about 800 000 chunks, ~70 MiB of
/// JSON); anything larger is refused with 413 before it is parsed.
const MAX_MANIFEST_BODY: usize = 128 << 20;

fn checked_path(path: &str) -> Result<(), ApiError> {
    drive::check_path(path).map_err(|e| ApiError::bad_request("bad_path", e.to_string()))
}

/// `If-Match` / `If-None-Match: *` as a write precondition, for files and sync records alike. An
/// `If-Match` tag that is not one of ours matches nothing, so the write fails with 412 as RFC
/// 9110 says.
pub(super) fn write_precondition(headers: &HeaderMap) -> Precondition {
    let get = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::trim);
    if let Some(m) = get(header::IF_MATCH) {
        if m == "*" {
            return Precondition::IfExists;
        }
        return Precondition::IfVersion(m.split(',').find_map(drive::parse_etag).unwrap_or(u64::MAX));
    }
    if get(header::IF_NONE_MATCH) == Some("*") {
        return Precondition::IfAbsent;
    }
    Precondition::None
}

fn precondition_failed() -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "the file's current version does not match the request's precondition",
    )
}

fn file_json(path: &str, rec: &ObjectRecord) -> serde_json::Value {
    json!({
        "path": path,
        "size": rec.size,
        "hash": hex::encode(rec.hash),
        "version": rec.version.to_string(),
        "modified": super::rfc3339_millis(rec.modified),
    })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

pub async fn put(
    State(app): State<AppState>,
    authed: Authed,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    checked_path(&path)?;
    let account = authed.account;
    let pre = write_precondition(&headers);
    let (_, limit) = app.plan_and_limit(&account).await?;
    let is_manifest = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(MANIFEST_TYPE));
    if !is_manifest && content_length(&headers).is_some_and(|n| n > limit) {
        app.metrics.quota_refusals.inc();
        let used = app.engine.usage(&account)?.used;
        return Err(ApiError::quota(used, limit));
    }
    // Refuse before reading a body that can only fail its precondition.
    let engine = app.engine.clone();
    let p = path.clone();
    let current = blocking(move || engine.get_object(&account, Namespace::Drive, p.as_bytes())).await?;
    if !pre.check(current.as_ref()) {
        return Err(precondition_failed());
    }
    let started = Instant::now();
    let charge = Charge::new(app.engine.clone(), app.reservations.clone(), account, limit);
    let ingested = if is_manifest {
        adopt_manifest(&app, &account, body).await?
    } else {
        app.engine.ingest(body.into_data_stream(), charge.clone()).await.map_err(|e| app.refusal_counted(e))?
    };
    let engine = app.engine.clone();
    let p = path.clone();
    let put = blocking(move || engine.put_object(&account, Namespace::Drive, p.as_bytes(), ingested, limit, pre))
        .await
        .map_err(|e| app.refusal_counted_api(e))?
        .map_err(|_| precondition_failed())?;
    drop(charge);
    app.metrics.upload_seconds.observe(started.elapsed().as_secs_f64());
    let status = if put.replaced { StatusCode::OK } else { StatusCode::CREATED };
    let etag = drive::etag(put.record.version);
    Ok((status, [(header::ETAG, etag)], Json(file_json(&path, &put.record))).into_response())
}

#[derive(Deserialize)]
struct ManifestBody {
    chunks: Vec<ManifestChunk>,
}

#[derive(Deserialize)]
struct ManifestChunk {
    hash: String,
    size: u32,
}

async fn adopt_manifest(
    app: &AppState,
    account: &crate::store::keys::AccountId,
    body: Body,
) -> Result<crate::engine::Ingested, ApiError> {
    let _turn = app.manifest_permit().await;
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BODY)
        .await
        .map_err(|_| ApiError::too_large(MAX_MANIFEST_BODY as u64))?;
    let m: ManifestBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the manifest is not valid: {e}")))?;
    let mut chunks = Vec::with_capacity(m.chunks.len());
    for c in m.chunks {
        let id: ChunkId = c
            .hash
            .parse()
            .map_err(|_| ApiError::bad_request("bad_hash", format!("{:?} is not a chunk hash", c.hash)))?;
        if c.size == 0 {
            return Err(ApiError::bad_request("bad_size", format!("chunk {id} has size 0")));
        }
        chunks.push((id, c.size));
    }
    let engine = app.engine.clone();
    let account = *account;
    match blocking(move || engine.adopt_chunks(&account, chunks)).await? {
        Ok(ingested) => Ok(ingested),
        Err(Adoption::Missing(ids)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "missing_chunks", "some chunks must be uploaded first")
                .with("missing", ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>()))
        }
        Err(Adoption::WrongSize { id, size, actual }) => {
            Err(ApiError::bad_request("bad_size", format!("chunk {id} is {actual} bytes, not {size}")))
        }
    }
}

pub async fn get(
    State(app): State<AppState>,
    authed: Authed,
    method: Method,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    checked_path(&path)?;
    let account = authed.account;
    let engine = app.engine.clone();
    let (rec, chunks) = blocking(move || engine.get_object_and_chunks(&account, Namespace::Drive, path.as_bytes()))
        .await?
        .ok_or_else(ApiError::not_found)?;
    serve_object(&app, &rec, chunks, &method, &headers)
}

/// Answer a GET or HEAD of a stored object: `ETag`, `If-None-Match`, `Range`, and the body
/// streamed through the engine. Drive files and backup files alike.
pub(super) fn serve_object(
    app: &AppState,
    rec: &ObjectRecord,
    chunks: Vec<(ChunkId, u32)>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = drive::etag(rec.version);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|l| drive::tag_list_matches(l, rec.version))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let ask = drive::parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), rec.size);
    let (status, range) = match ask {
        RangeAsk::Whole => (StatusCode::OK, ByteRange::all(rec.size)),
        RangeAsk::Part(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeAsk::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the file has {} bytes", rec.size),
            )
            .with("size", rec.size)
            .into_response();
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{}", rec.size)).expect("ascii"));
            return Ok(resp);
        }
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::ETAG, &etag)
        .header(header::CONTENT_LENGTH, range.len())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {}-{}/{}", range.start, range.end - 1, rec.size));
    }
    if method == Method::HEAD || range.is_empty() {
        return Ok(resp.body(Body::empty()).expect("valid response"));
    }
    let timer = DownloadTimer(app.metrics.download_seconds.clone(), Instant::now());
    let stream = app.engine.read_stream(chunks, range).map(move |piece| {
        let _keep = &timer;
        piece
    });
    Ok(resp.body(Body::from_stream(stream)).expect("valid response"))
}

/// Observes the download's duration when its body stream is dropped: finished or abandoned.
struct DownloadTimer(prometheus::Histogram, Instant);

impl Drop for DownloadTimer {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}

pub async fn delete(
    State(app): State<AppState>,
    authed: Authed,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    checked_path(&path)?;
    let account = authed.account;
    let pre = write_precondition(&headers);
    let engine = app.engine.clone();
    match blocking(move || engine.delete_object(&account, Namespace::Drive, path.as_bytes(), pre)).await? {
        Ok(Some(_)) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(None) => Err(ApiError::not_found()),
        Err(_) => Err(precondition_failed()),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(app): State<AppState>,
    authed: Authed,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = match q.limit {
        None => 100,
        Some(0) => return Err(ApiError::bad_request("bad_limit", "limit is 1 to 1000")),
        Some(n) => n.min(1000),
    };
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            drive::decode_cursor(c)
                .ok_or_else(|| ApiError::bad_request("bad_cursor", "after is not a cursor this server gave"))?,
        ),
    };
    let account = authed.account;
    let prefix = q.prefix.unwrap_or_default();
    let engine = app.engine.clone();
    let mut items = blocking(move || {
        engine.list_objects(&account, Namespace::Drive, prefix.as_bytes(), after.as_deref(), limit + 1)
    })
    .await?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(|l| drive::encode_cursor(&l.name)) } else { None };
    let files: Vec<_> = items.iter().map(|l| file_json(&String::from_utf8_lossy(&l.name), &l.record)).collect();
    Ok(Json(json!({ "files": files, "next": next })))
}
