//! `/v1/chunks`: for clients that chunk on their side. "Missing" is answered from this
//! account's own holdings only, so nothing here tells one account what another stores.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Authed;
use super::error::{ApiError, ErrorCode};
use super::json::JsonBody;
use super::{blocking, views, AppState};
use crate::chunk::ChunkId;
use crate::engine::Precondition;
use crate::store::keys::Namespace;

pub const MAX_MISSING_QUERY: usize = 10_000;

fn parse_hash(s: &str) -> Result<ChunkId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::new(ErrorCode::BadHash, format!("{s:?} is not a chunk hash (64 lowercase hex digits)")))
}

#[derive(Deserialize)]
pub struct MissingBody {
    chunks: Vec<String>,
}

pub async fn missing(
    State(app): State<AppState>,
    authed: Authed,
    JsonBody(body): JsonBody<MissingBody>,
) -> Result<impl IntoResponse, ApiError> {
    if body.chunks.len() > MAX_MISSING_QUERY {
        return Err(ApiError::new(
            ErrorCode::TooManyChunks,
            format!("ask about at most {MAX_MISSING_QUERY} chunks at a time"),
        ));
    }
    // First occurrence kept, in the asked order; a set, so 10 000 hashes are 10 000 probes.
    let mut seen = std::collections::HashSet::with_capacity(body.chunks.len());
    let mut ids = Vec::with_capacity(body.chunks.len());
    for h in &body.chunks {
        let id = parse_hash(h)?;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    let engine = app.engine.clone();
    let account = authed.account;
    let probe = ids.clone();
    let held = blocking(move || engine.holds(&account, &probe)).await?;
    let missing: Vec<String> = ids.iter().zip(held).filter(|(_, h)| !h).map(|(id, _)| id.to_hex()).collect();
    Ok(Json(views::Missing { missing }))
}

pub async fn put(
    State(app): State<AppState>,
    authed: Authed,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let max = app.engine.chunking().max as usize;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::too_large(max as u64));
    }
    let id = parse_hash(&hash)?;
    let _transfer = app.uploads.admit(authed.account)?;
    let raw = axum::body::to_bytes(body, max).await.map_err(|_| ApiError::too_large(max as u64))?;
    if raw.is_empty() {
        return Err(ApiError::new(ErrorCode::EmptyChunk, "a chunk is 1 byte or more"));
    }
    let account = authed.account;
    let (_, limit) = app.plan_and_limit(&account).await?;
    let charge = app.drive.charge(account, limit);
    let engine = app.engine.clone();
    let (put, held_before) = blocking(move || {
        let held_before = engine.holds(&account, &[id])?[0];
        let ingested = engine.ingest_chunk(raw, &id, charge)?;
        let put = engine.put_object(&account, Namespace::Staged, &id.0, ingested, limit, Precondition::None)?;
        Ok::<_, crate::error::Error>((put, held_before))
    })
    .await
    .map_err(|e| app.refusal_counted_api(e))?;
    let put = put.map_err(|_| ApiError::new(ErrorCode::Conflict, "the chunk changed while it was staged"))?;
    let status = if held_before { StatusCode::OK } else { StatusCode::CREATED };
    let until = put.record.modified + (app.settings.staged_ttl_secs as i64) * 1000;
    Ok((
        status,
        Json(views::ChunkStaged {
            hash: id.to_hex(),
            size: put.record.size,
            staged_until: super::rfc3339_millis(until),
        }),
    )
        .into_response())
}

pub async fn get(State(app): State<AppState>, authed: Authed, Path(hash): Path<String>) -> Result<Response, ApiError> {
    let id = parse_hash(&hash)?;
    let account = authed.account;
    let engine = app.engine.clone();
    let data = blocking(move || {
        if !engine.holds(&account, &[id])?[0] {
            return Ok(None);
        }
        engine.read_chunk(&id).map(Some)
    })
    .await?
    .ok_or_else(ApiError::not_found)?;
    app.metrics.read_bytes.inc_by(data.len() as u64);
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}
