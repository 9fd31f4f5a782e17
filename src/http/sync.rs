//! `/v1/sync`: records with versions, a per-account change feed, atomic batches.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::auth::Authed;
use super::error::{ApiError, ErrorCode};
use super::json::JsonBody;
use super::{views, AppState};
use crate::drive;
use crate::engine::Precondition;
use crate::sync::{self, Op, SyncError, View};

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        let msg = e.to_string();
        match e {
            SyncError::BadCollection => ApiError::new(ErrorCode::BadCollection, msg),
            SyncError::BadId => ApiError::new(ErrorCode::BadId, msg),
            SyncError::TooLarge => ApiError::too_large(sync::MAX_PAYLOAD as u64),
            SyncError::BatchTooLarge => ApiError::new(ErrorCode::BatchTooLarge, msg),
            SyncError::NotFound => ApiError::not_found(),
            SyncError::Conflict { current } => ApiError::new(ErrorCode::VersionConflict, msg)
                .with("current", current.map_or(Value::Null, |v| view_json(&v))),
            SyncError::Conflicts(ids) => ApiError::new(ErrorCode::VersionConflict, msg).with("conflicts", ids),
            SyncError::ResyncRequired => ApiError::new(ErrorCode::ResyncRequired, msg),
            SyncError::Engine(e) => e.into(),
        }
    }
}

/// A record as the API shows it. The payload is the stored JSON text, written out verbatim:
/// `&RawValue` is only checked to be JSON (a scan, no tree), never parsed into a `Value` and
/// serialized again. With `json!` every payload went through `to_value`, a `Value` tree and
/// back, which was ~9% of all CPU samples of a feed-read benchmark (docs/benchmarks.md,
/// issue 5); typed, feed reads/s with 32 clients went up 1.5–2.1x (issue 13).
#[derive(Serialize)]
struct ViewOut<'a> {
    id: &'a str,
    version: String,
    seq: u64,
    deleted: bool,
    payload: Option<&'a RawValue>,
}

impl<'a> From<&'a View> for ViewOut<'a> {
    fn from(v: &'a View) -> Self {
        // Stored payloads were valid JSON when written; one that is not any more shows as null.
        let payload = v.payload.as_deref().and_then(|p| serde_json::from_str::<&RawValue>(p).ok());
        ViewOut { id: &v.id, version: v.version.to_string(), seq: v.seq, deleted: v.deleted, payload }
    }
}

#[derive(Serialize)]
struct FeedOut<'a> {
    records: Vec<ViewOut<'a>>,
    next: u64,
    more: bool,
}

/// A record as a `Value`, for error bodies (a conflict's current record): rare, so the tree
/// does not matter there.
fn view_json(v: &View) -> Value {
    serde_json::to_value(ViewOut::from(v)).unwrap_or(Value::Null)
}

/// A JSON answer serialized from borrowed, typed data (no `Value` tree in between).
fn json_response(body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::from(crate::error::Error::corrupt(format!("cannot encode an answer: {e}"))).into_response(),
    }
}

/// Run sync work off the runtime, mapping its errors.
async fn run<T: Send + 'static>(f: impl FnOnce() -> Result<T, SyncError> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(crate::error::Error::Internal(format!("a blocking task failed: {e}")).into()),
    }
}

fn parse_version(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.trim_matches('"').parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// A write's outcome as API.md shows it: `with_id` for puts, `deleted` in batches.
fn written(v: &View, with_id: bool, deleted: Option<bool>) -> views::RecordWritten<'_> {
    views::RecordWritten { id: with_id.then_some(v.id.as_str()), version: v.version.to_string(), seq: v.seq, deleted }
}

pub async fn summary(State(app): State<AppState>, authed: Authed) -> Result<impl IntoResponse, ApiError> {
    let s = app.sync.clone();
    let all = run(move || s.summary(&authed.account)).await?;
    let collections = all
        .into_iter()
        .map(|(name, m)| (name, views::CollectionSummary { count: m.count, bytes: m.bytes, seq: m.seq }))
        .collect();
    Ok(Json(views::SyncSummary { collections }))
}

#[derive(Deserialize)]
pub struct FeedQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

pub async fn feed(
    State(app): State<AppState>,
    authed: Authed,
    Path(collection): Path<String>,
    Query(q): Query<FeedQuery>,
) -> Result<Response, ApiError> {
    sync::check_collection(&collection)?;
    let limit = q.limit.unwrap_or(100).clamp(1, sync::MAX_FEED);
    let s = app.sync.clone();
    let feed = run(move || s.feed(&authed.account, &collection, q.since.unwrap_or(0), limit)).await?;
    let records = feed.records.iter().map(ViewOut::from).collect();
    Ok(json_response(&FeedOut { records, next: feed.next, more: feed.more }))
}

pub async fn get(
    State(app): State<AppState>,
    authed: Authed,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    sync::check_collection(&collection)?;
    sync::check_id(&id)?;
    let s = app.sync.clone();
    let v = run(move || s.get(&authed.account, &collection, &id)).await?;
    let etag = drive::etag(v.version);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|l| drive::tag_list_matches(l, v.version))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag)], json_response(&ViewOut::from(&v))).into_response())
}

#[derive(Deserialize)]
pub struct PutBody {
    payload: Box<RawValue>,
}

/// One write with the API's single-record conflict answer: 412 with the current record.
async fn write_one(app: &AppState, authed: &Authed, collection: String, id: String, op: Op) -> Result<View, ApiError> {
    let (s, account) = (app.sync.clone(), authed.account);
    let (_, limit) = app.plan_and_limit(&account).await?;
    let result = run(move || match s.apply(&account, &collection, vec![op], limit) {
        Err(SyncError::Conflicts(_)) => {
            let current = s.get(&account, &collection, &id).ok().map(Box::new);
            Err(SyncError::Conflict { current })
        }
        other => other,
    })
    .await
    .map_err(|e| app.refusal_counted_api(e))?;
    result.into_iter().next().ok_or_else(ApiError::not_found)
}

pub async fn put(
    State(app): State<AppState>,
    authed: Authed,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    sync::check_collection(&collection)?;
    sync::check_id(&id)?;
    let payload = body.payload.get().as_bytes().to_vec();
    if payload.len() > sync::MAX_PAYLOAD {
        return Err(SyncError::TooLarge.into());
    }
    let op = Op::Put { id: id.clone(), payload, expect: super::files::write_precondition(&headers) };
    let v = write_one(&app, &authed, collection, id, op).await?;
    let etag = drive::etag(v.version);
    Ok(([(header::ETAG, etag)], Json(written(&v, true, None))).into_response())
}

pub async fn delete(
    State(app): State<AppState>,
    authed: Authed,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    sync::check_collection(&collection)?;
    sync::check_id(&id)?;
    let s = app.sync.clone();
    let (account, c, i) = (authed.account, collection.clone(), id.clone());
    if run(move || s.get(&account, &c, &i)).await.is_err() {
        return Err(ApiError::not_found()); // absent or already a tombstone
    }
    let op = Op::Delete { id: id.clone(), expect: super::files::write_precondition(&headers) };
    let v = write_one(&app, &authed, collection, id, op).await?;
    Ok(Json(written(&v, false, None)).into_response())
}

#[derive(Deserialize)]
pub struct BatchBody {
    #[serde(default)]
    put: Vec<BatchPut>,
    #[serde(default)]
    delete: Vec<BatchDelete>,
}

#[derive(Deserialize)]
struct BatchPut {
    id: String,
    payload: Box<RawValue>,
    if_version: Option<Value>,
}

#[derive(Deserialize)]
struct BatchDelete {
    id: String,
    if_version: Option<Value>,
}

/// Versions are opaque strings: one this server never issued names no record's version, so the
/// item conflicts (`412`) like any other stale version. Only a value that cannot be a version
/// at all (an object, a list, a boolean) is a bad request.
fn expect_from(v: Option<&Value>) -> Result<Precondition, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Precondition::None),
        Some(v @ (Value::String(_) | Value::Number(_))) => {
            Ok(Precondition::IfVersion(parse_version(v).unwrap_or(u64::MAX)))
        }
        Some(_) => Err(ApiError::new(ErrorCode::BadVersion, "if_version is a version string this server gave")),
    }
}

pub async fn batch(
    State(app): State<AppState>,
    authed: Authed,
    Path(collection): Path<String>,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<impl IntoResponse, ApiError> {
    sync::check_collection(&collection)?;
    if body.put.len() + body.delete.len() > sync::MAX_BATCH {
        return Err(SyncError::BatchTooLarge.into());
    }
    let mut ops = Vec::with_capacity(body.put.len() + body.delete.len());
    for p in body.put {
        sync::check_id(&p.id)?;
        let payload = p.payload.get().as_bytes().to_vec();
        if payload.len() > sync::MAX_PAYLOAD {
            return Err(SyncError::TooLarge.into());
        }
        ops.push(Op::Put { expect: expect_from(p.if_version.as_ref())?, id: p.id, payload });
    }
    for d in body.delete {
        sync::check_id(&d.id)?;
        ops.push(Op::Delete { expect: expect_from(d.if_version.as_ref())?, id: d.id });
    }
    let (_, limit) = app.plan_and_limit(&authed.account).await?;
    let s = app.sync.clone();
    let account = authed.account;
    let written_views =
        run(move || s.apply(&account, &collection, ops, limit)).await.map_err(|e| app.refusal_counted_api(e))?;
    let records = written_views.iter().map(|v| written(v, true, Some(v.deleted))).collect();
    Ok(Json(views::Batch { records }).into_response())
}
