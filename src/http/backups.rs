//! `/v1/backups`: device backups committed from chunks the account holds, listed, restored
//! file by file, deleted.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::auth::Authed;
use super::error::{ApiError, ErrorCode};
use super::{blocking, rfc3339_millis, views, AppState};
use crate::backup::{self, BackupError, RestoredEntry, Summary};
use crate::chunk::ChunkId;

/// A backup manifest of a phone with very many files (a million entries of one chunk each is
/// about 200 MiB of JSON); anything larger is refused with 413 before it is parsed.
const MAX_BACKUP_BODY: usize = 256 << 20;

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let msg = e.to_string();
        let bad = |code| ApiError::new(code, msg.clone());
        match e {
            BackupError::Engine(inner) => inner.into(),
            BackupError::NotFound => ApiError::not_found(),
            BackupError::MissingChunks(ids) => ApiError::new(ErrorCode::MissingChunks, msg)
                .with("missing", ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>()),
            BackupError::BadJson(_) => bad(ErrorCode::BadJson),
            BackupError::BadField { .. } => bad(ErrorCode::BadField),
            BackupError::TooManyEntries => bad(ErrorCode::TooManyEntries),
            BackupError::BadPath(_) => bad(ErrorCode::BadPath),
            BackupError::BadMtime(_) => bad(ErrorCode::BadMtime),
            BackupError::BadHash(_) => bad(ErrorCode::BadHash),
            BackupError::BadChunkSize { .. } => bad(ErrorCode::BadSize),
            BackupError::SizeMismatch { .. } => bad(ErrorCode::SizeMismatch),
            BackupError::DuplicatePath(_) => bad(ErrorCode::DuplicatePath),
        }
    }
}

/// A backup as listings show it; a manifest adds its entries.
#[derive(Serialize)]
struct SummaryOut<'a> {
    backup_id: String,
    device_id: &'a str,
    label: &'a str,
    created_at: String,
    size: u64,
    files: u64,
}

impl<'a> From<&'a Summary> for SummaryOut<'a> {
    fn from(s: &'a Summary) -> Self {
        SummaryOut {
            backup_id: backup::format_id(s.id),
            device_id: &s.head.device_id,
            label: &s.head.label,
            created_at: rfc3339_millis(s.head.created_at),
            size: s.head.size,
            files: s.head.files,
        }
    }
}

/// A backup's manifest as the API shows it, serialized straight from the restored entries: a
/// `serde_json::Value` tree of a million-entry manifest would be several times its text.
#[derive(Serialize)]
struct ManifestOut<'a> {
    #[serde(flatten)]
    summary: SummaryOut<'a>,
    entries: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    path: &'a str,
    size: u64,
    mode: u32,
    mtime: &'a str,
    chunks: ChunksOut<'a>,
}

/// `[{"hash", "size"}]`, each hash written as hex while serializing.
struct ChunksOut<'a>(&'a [(ChunkId, u32)]);

impl Serialize for ChunksOut<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.len()))?;
        for (id, size) in self.0 {
            seq.serialize_element(&ChunkOut { hash: &id.to_hex(), size: *size })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    hash: &'a str,
    size: u32,
}

fn manifest_out<'a>(s: &'a Summary, entries: &'a [RestoredEntry]) -> ManifestOut<'a> {
    let entries = entries
        .iter()
        .map(|e| EntryOut {
            path: &e.meta.path,
            size: e.size,
            mode: e.meta.mode,
            mtime: &e.meta.mtime,
            chunks: ChunksOut(&e.chunks),
        })
        .collect();
    ManifestOut { summary: s.into(), entries }
}

/// An id this server cannot have handed out names no backup: 404, like any other.
fn backup_id(s: &str) -> Result<u64, ApiError> {
    backup::parse_id(s).ok_or_else(ApiError::not_found)
}

pub async fn create(State(app): State<AppState>, authed: Authed, body: Body) -> Result<Response, ApiError> {
    let account = authed.account;
    let _transfer = app.uploads.admit(account)?;
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
    let body = views::BackupCreated {
        backup_id: backup::format_id(summary.id),
        created_at: rfc3339_millis(summary.head.created_at),
        size: summary.head.size,
        files: summary.head.files,
    };
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
) -> Result<impl IntoResponse, ApiError> {
    let backups = app.backups.clone();
    let found = blocking(move || backups.list(&authed.account, q.device_id.as_deref())).await?;
    Ok(Json(views::Backups { backups: found.iter().map(SummaryOut::from).collect() }).into_response())
}

pub async fn get(State(app): State<AppState>, authed: Authed, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = backup_id(&id)?;
    let backups = app.backups.clone();
    // Serialized on the blocking thread too: a big manifest is seconds of CPU, which must not
    // hold up the runtime.
    let text = blocking(move || {
        let (summary, entries) = backups.manifest(&authed.account, id)?;
        serde_json::to_vec(&manifest_out(&summary, &entries))
            .map_err(|e| BackupError::Engine(crate::error::Error::corrupt(format!("encoding a manifest: {e}"))))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
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
    super::files::serve_object(&app, &account, &rec, chunks, &method, &headers).await
}

pub async fn delete(State(app): State<AppState>, authed: Authed, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = backup_id(&id)?;
    let backups = app.backups.clone();
    blocking(move || backups.delete(&authed.account, id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
