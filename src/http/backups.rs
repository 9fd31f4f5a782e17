//! `/v1/backups`: device backups committed from chunks the account holds, listed, restored
//! file by file, deleted.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Authed;
use super::error::ApiError;
use super::{blocking, rfc3339_millis, AppState};
use crate::backup::{self, BackupError, RestoredEntry, Summary};

/// A backup manifest of a phone with very many files (a million entries of one chunk each is
/// about 200 MiB of JSON); anything larger is refused with 413 before it is parsed.
const MAX_BACKUP_BODY: usize = 256 << 20;

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let (code, msg) = (e.code(), e.to_string());
        match e {
            BackupError::Engine(inner) => inner.into(),
            BackupError::NotFound => ApiError::not_found(),
            BackupError::MissingChunks(ids) => ApiError::new(StatusCode::CONFLICT, code, msg)
                .with("missing", ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>()),
            _ => ApiError::bad_request(code, msg),
        }
    }
}

fn summary_json(s: &Summary) -> Value {
    json!({
        "backup_id": backup::format_id(s.id),
        "device_id": s.head.device_id,
        "label": s.head.label,
        "created_at": rfc3339_millis(s.head.created_at),
        "size": s.head.size,
        "files": s.head.files,
    })
}

fn entry_json(e: &RestoredEntry) -> Value {
    let chunks: Vec<Value> = e.chunks.iter().map(|(id, len)| json!({"hash": id.to_hex(), "size": len})).collect();
    json!({"path": e.meta.path, "size": e.size, "mode": e.meta.mode, "mtime": e.meta.mtime, "chunks": chunks})
}

/// An id this server cannot have handed out names no backup: 404, like any other.
fn backup_id(s: &str) -> Result<u64, ApiError> {
    backup::parse_id(s).ok_or_else(ApiError::not_found)
}

pub async fn create(State(app): State<AppState>, authed: Authed, body: Body) -> Result<Response, ApiError> {
    let account = authed.account;
    let turn = app.manifest_permit().await;
    let bytes =
        axum::body::to_bytes(body, MAX_BACKUP_BODY).await.map_err(|_| ApiError::too_large(MAX_BACKUP_BODY as u64))?;
    let (_, limit) = app.plan_and_limit(&account).await?;
    let backups = app.backups.clone();
    let summary = blocking(move || {
        let _turn = turn; // held until the commit is done with the parsed manifest
        let posted = backup::manifest::parse(&bytes);
        drop(bytes);
        backups.commit(&account, posted?, limit)
    })
    .await
    .map_err(|e| app.refusal_counted_api(e))?;
    let body = json!({
        "backup_id": backup::format_id(summary.id),
        "created_at": rfc3339_millis(summary.head.created_at),
        "size": summary.head.size,
        "files": summary.head.files,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    device_id: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    authed: Authed,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let backups = app.backups.clone();
    let found = blocking(move || backups.list(&authed.account, q.device_id.as_deref())).await?;
    Ok(Json(json!({ "backups": found.iter().map(summary_json).collect::<Vec<_>>() })))
}

pub async fn get(State(app): State<AppState>, authed: Authed, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = backup_id(&id)?;
    let backups = app.backups.clone();
    let (summary, entries) = blocking(move || backups.manifest(&authed.account, id)).await?;
    let mut body = summary_json(&summary);
    body["entries"] = entries.iter().map(entry_json).collect();
    Ok(Json(body))
}

pub async fn file(
    State(app): State<AppState>,
    authed: Authed,
    method: Method,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = backup_id(&id)?;
    let account = authed.account;
    let backups = app.backups.clone();
    let (rec, chunks) = blocking(move || backups.file(&account, id, &path)).await?;
    super::files::serve_object(&app, &rec, chunks, &method, &headers)
}

pub async fn delete(State(app): State<AppState>, authed: Authed, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = backup_id(&id)?;
    let backups = app.backups.clone();
    blocking(move || backups.delete(&authed.account, id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
