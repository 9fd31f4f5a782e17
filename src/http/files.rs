//! `/v1/files`: the drive. Bodies stream through the engine in both directions.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;

use super::auth::Authed;
use super::error::{ApiError, ErrorCode};
use super::json::{cursor, page_limit};
use super::{views, AppState};
use crate::chunk::ChunkId;
use crate::drive::{self, DriveError, RangeAsk, Upload};
use crate::engine::{ByteRange, Precondition};
use crate::store::keys::{AccountId, ObjectRecord};

pub const MANIFEST_TYPE: &str = "application/vnd.cairn.manifest+json";
/// A manifest body for a very large file (a 50 GiB file is about 800 000 chunks, ~70 MiB of
/// JSON); anything larger is refused with 413 before it is parsed.
const MAX_MANIFEST_BODY: usize = 128 << 20;

/// `If-Match` / `If-None-Match: *` as a write precondition, for files and sync records alike. An
/// `If-Match` tag that is not one of ours matches nothing, so the write fails with 412 as RFC
/// 9110 says.
pub(super) fn write_precondition(headers: &HeaderMap) -> Precondition {
    let get = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::trim);
    if let Some(m) = get(header::IF_MATCH) {
        if m == "*" {
            return Precondition::IfExists;
        }
        return Precondition::IfVersion(m.split(',').find_map(drive::parse_strong_etag).unwrap_or(u64::MAX));
    }
    if get(header::IF_NONE_MATCH) == Some("*") {
        return Precondition::IfAbsent;
    }
    Precondition::None
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
    drive::check_path(&path).map_err(DriveError::from)?;
    let account = authed.account;
    let _transfer = app.uploads.admit(account)?;
    let pre = write_precondition(&headers);
    let (_, limit) = app.plan_and_limit(&account).await?;
    let is_manifest = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(MANIFEST_TYPE));
    let started = Instant::now();
    // A manifest's parsed list is held until the commit; so is its turn.
    let (upload, _turn) = if is_manifest {
        let turn = app.manifest_permit().await;
        (Upload::Chunks(read_manifest(body).await?), Some(turn))
    } else {
        (Upload::Body { stream: body.into_data_stream(), declared: content_length(&headers) }, None)
    };
    let put = app.drive.put(account, &path, upload, pre, limit).await.map_err(|e| app.refusal_counted_api(e.into()))?;
    app.metrics.upload_seconds.observe(started.elapsed().as_secs_f64());
    let status = if put.replaced { StatusCode::OK } else { StatusCode::CREATED };
    let etag = drive::etag(put.record.version);
    Ok((status, [(header::ETAG, etag)], Json(views::File::new(&path, &put.record))).into_response())
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

/// `{"chunks": [{"hash", "size"}]}`, each hash a chunk id and each size at least 1.
async fn read_manifest(body: Body) -> Result<Vec<(ChunkId, u32)>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BODY)
        .await
        .map_err(|_| ApiError::too_large(MAX_MANIFEST_BODY as u64))?;
    let m: ManifestBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadJson, format!("the manifest is not valid: {e}")))?;
    let mut chunks = Vec::with_capacity(m.chunks.len());
    for c in m.chunks {
        let id: ChunkId = c
            .hash
            .parse()
            .map_err(|_| ApiError::new(ErrorCode::BadHash, format!("{:?} is not a chunk hash", c.hash)))?;
        if c.size == 0 {
            return Err(ApiError::new(ErrorCode::BadSize, format!("chunk {id} has size 0")));
        }
        chunks.push((id, c.size));
    }
    Ok(chunks)
}

pub async fn get(
    State(app): State<AppState>,
    authed: Authed,
    method: Method,
    Path(path): Path<String>,
    Query(q): Query<super::trash::VersionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(answer) = super::trash::get(&app, &authed, &path, &q, &method, &headers).await {
        return answer;
    }
    let account = authed.account;
    let (rec, chunks) = app.drive.get(account, &path).await?;
    serve_object(&app, &account, &rec, chunks, &method, &headers).await
}

/// Answer a GET or HEAD of a stored object: `ETag`, `If-None-Match`, `Range`, and the body
/// streamed through the engine. Drive files and backup files alike.
pub(super) async fn serve_object(
    app: &AppState,
    account: &AccountId,
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
            let mut resp = ApiError::new(ErrorCode::RangeNotSatisfiable, format!("the file has {} bytes", rec.size))
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
    // Held by the body: a download counts until its last byte is sent or the client is gone.
    let transfer = app.downloads.admit(*account)?;
    let timer = DownloadTimer(app.metrics.download_seconds.clone(), Instant::now());
    // The first batch is read before the status is sent: a pack store that cannot be read
    // (an object store down, a damaged pack) answers its error (503 with Retry-After, 500),
    // not a 200 whose body breaks off, which a client cannot tell from a network fault.
    let mut stream = Box::pin(app.engine.read_stream(chunks, range));
    let first = match stream.next().await {
        Some(Err(e)) => return Err(e.into()),
        first => first,
    };
    let stream = futures::stream::iter(first).chain(stream).map(move |piece| {
        let _keep = (&timer, &transfer);
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
    app.drive.delete(authed.account, &path, write_precondition(&headers), Some(authed.device_id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
) -> Result<impl IntoResponse, ApiError> {
    let (limit, after) = (page_limit(q.limit)?, cursor(q.after.as_deref(), drive::decode_cursor)?);
    let (items, more) = app.drive.list(authed.account, &q.prefix.unwrap_or_default(), after, limit).await?;
    let next = if more { items.last().map(|(l, _)| drive::encode_cursor(&l.name)) } else { None };
    let names: Vec<_> = items.iter().map(|(l, _)| String::from_utf8_lossy(&l.name)).collect();
    let files = names
        .iter()
        .zip(&items)
        .map(
            |(name, (l, folder))| {
                if *folder {
                    views::File::folder(name, &l.record)
                } else {
                    views::File::new(name, &l.record)
                }
            },
        )
        .collect();
    Ok(Json(views::FileList { files, next }).into_response())
}
