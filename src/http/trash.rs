//! `/v1/trash` and a file's old versions (`?versions`, `?version=V`, `?restore-version=V` on
//! `/v1/files/{path}`): translation only; `drive` decides.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Authed;
use super::error::{ApiError, ErrorCode};
use super::json::{cursor, page_limit, OptionalJson};
use super::{rfc3339_millis, views, AppState};
use crate::drive::{self, trash};

#[derive(Deserialize)]
pub struct TrashQuery {
    after: Option<String>,
    limit: Option<usize>,
}

fn trash_id(s: &str) -> Result<u64, ApiError> {
    trash::parse_id(s).ok_or_else(ApiError::not_found)
}

pub async fn list(
    State(app): State<AppState>,
    authed: Authed,
    Query(q): Query<TrashQuery>,
) -> Result<Response, ApiError> {
    let (limit, after) = (page_limit(q.limit)?, cursor(q.after.as_deref(), trash::parse_id)?);
    let (items, more) = app.drive.trash(authed.account, after, limit).await?;
    let next = if more { items.last().map(|i| trash::format_id(i.id)) } else { None };
    let entries = items
        .iter()
        .map(|i| views::TrashEntry {
            id: trash::format_id(i.id),
            file: views::File::new(&i.path, &i.record),
            deleted_at: rfc3339_millis(i.deleted_at_ms),
            device_id: i.device.map(|d| d.to_string()),
        })
        .collect();
    Ok(Json(views::Trash { items: entries, next }).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    path: Option<String>,
}

/// The body is optional: without one the file goes back to its old path.
pub async fn restore(
    State(app): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RestoreBody>,
) -> Result<Response, ApiError> {
    let id = trash_id(&id)?;
    let (_, limit) = app.plan_and_limit(&authed.account).await?;
    let (path, rec) = app.drive.restore(authed.account, id, body.path, limit).await?;
    let etag = drive::etag(rec.version);
    Ok(([(header::ETAG, etag)], Json(views::File::new(&path, &rec))).into_response())
}

pub async fn purge_one(
    State(app): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.drive.purge(authed.account, Some(trash_id(&id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn purge_all(State(app): State<AppState>, authed: Authed) -> Result<impl IntoResponse, ApiError> {
    let purged = app.drive.purge(authed.account, None).await?;
    Ok(Json(views::Purged { purged }))
}

/// What `GET /v1/files/{path}` and `POST` may ask besides the live file.
#[derive(Deserialize, Default)]
pub struct VersionQuery {
    versions: Option<String>,
    version: Option<String>,
    #[serde(rename = "restore-version")]
    restore_version: Option<String>,
}

fn version_of(s: &str) -> Result<u64, ApiError> {
    s.trim_matches('"').parse().map_err(|_| ApiError::new(ErrorCode::BadVersion, "a version is a number"))
}

/// `GET ?versions` lists the kept versions, `GET ?version=V` reads one; `None`: a plain read.
pub async fn get(
    app: &AppState,
    authed: &Authed,
    path: &str,
    q: &VersionQuery,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Result<Response, ApiError>> {
    if q.versions.is_some() {
        return Some(list_versions(app, authed, path).await);
    }
    let v = q.version.as_deref()?;
    Some(
        async {
            let (rec, chunks) = app.drive.get_version(authed.account, path, version_of(v)?).await?;
            super::files::serve_object(app, &authed.account, &rec, chunks, method, headers).await
        }
        .await,
    )
}

async fn list_versions(app: &AppState, authed: &Authed, path: &str) -> Result<Response, ApiError> {
    let kept = app.drive.versions(authed.account, path).await?;
    let versions = kept.iter().map(|r| views::File::new(path, r)).collect();
    Ok(Json(views::Versions { versions }).into_response())
}

/// `POST /v1/files/{path}?restore-version=V`.
pub async fn post(
    State(app): State<AppState>,
    authed: Authed,
    Path(path): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let Some(v) = q.restore_version.as_deref() else {
        return Err(ApiError::new(ErrorCode::MethodNotAllowed, "POST on a file takes ?restore-version=V"));
    };
    let (_, limit) = app.plan_and_limit(&authed.account).await?;
    let put = app
        .drive
        .restore_version(authed.account, &path, version_of(v)?, limit)
        .await
        .map_err(|e| app.refusal_counted_api(e.into()))?;
    let etag = drive::etag(put.record.version);
    Ok(([(header::ETAG, etag)], Json(views::File::new(&path, &put.record))).into_response())
}
