//! `/admin/*`: the operators' API. Every route takes the admin token (`Admin`); without a
//! configured token the routes do not exist.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;

use super::auth::Admin;
use super::error::{ApiError, ErrorCode};
use super::json::JsonBody;
use super::{blocking, AppState};
use crate::engine::{fsck, CopyRate, GcOptions, GcReport, Stats};
use crate::quota::PlanChange;
use crate::store::keys::AccountId;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    grace_seconds: Option<u64>,
    compact_below: Option<f64>,
    /// 0: no ceiling; absent: the server's `gc_copy_mib_per_sec`.
    copy_mib_per_sec: Option<u64>,
    /// Rewrite packs not under the current data key, then retire unused keys.
    rekey: Option<bool>,
}

/// `default_rate` is the server's configured ceiling on compaction copies.
pub fn gc_options(body: &GcBody, default_rate: u64) -> Result<GcOptions, ApiError> {
    let defaults = GcOptions::default();
    let compact_below = body.compact_below.unwrap_or(defaults.compact_below);
    if !(0.0..=1.0).contains(&compact_below) {
        return Err(ApiError::new(ErrorCode::BadCompactBelow, "compact_below is a share from 0 to 1"));
    }
    Ok(GcOptions {
        grace_secs: body.grace_seconds.unwrap_or(defaults.grace_secs),
        compact_below,
        copy_rate: CopyRate::mib_per_sec(body.copy_mib_per_sec.unwrap_or(default_rate)),
        rekey: body.rekey.unwrap_or(defaults.rekey),
    })
}

/// The body is optional: an empty one means the defaults.
pub async fn gc(State(app): State<AppState>, _: Admin, body: axum::body::Bytes) -> Result<Json<GcReport>, ApiError> {
    let body: GcBody = if body.iter().all(u8::is_ascii_whitespace) {
        GcBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(ErrorCode::BadJson, format!("the body is not the JSON this call takes: {e}")))?
    };
    let opts = gc_options(&body, app.config.gc_copy_mib_per_sec)?;
    let engine = app.engine.clone();
    let report = blocking(move || engine.gc(opts)).await?;
    Ok(Json(report))
}

pub async fn fsck(State(app): State<AppState>, _: Admin) -> Result<Json<fsck::Report>, ApiError> {
    let engine = app.engine.clone();
    let report = blocking(move || fsck::check(&engine)).await?;
    app.metrics.fsck_problems.set(report.problems.len() as i64);
    Ok(Json(report))
}

/// `POST /admin/keys/rotate`: a new data key, current at once.
pub async fn rotate_key(State(app): State<AppState>, _: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = app.engine.clone();
    let id = blocking(move || engine.rotate_key()).await?;
    Ok(Json(serde_json::json!({ "key": format!("{id:08x}") })))
}

pub async fn stats(State(app): State<AppState>, _: Admin) -> Result<Json<Stats>, ApiError> {
    let engine = app.engine.clone();
    Ok(Json(blocking(move || engine.stats()).await?))
}

#[derive(Deserialize)]
pub struct PlanBody {
    plan: String,
}

pub async fn set_plan(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PlanBody>,
) -> Result<Json<PlanChange>, ApiError> {
    let Some(limit) = app.plans.limit(&body.plan) else {
        return Err(ApiError::new(ErrorCode::UnknownPlan, format!("no plan is called {:?}", body.plan))
            .with("plans", app.plans.0.keys().cloned().collect::<Vec<_>>()));
    };
    let account: AccountId = id.parse().map_err(|_| ApiError::not_found())?;
    app.set_plan(&account, &body.plan).await?;
    Ok(Json(PlanChange { plan: body.plan, limit }))
}
