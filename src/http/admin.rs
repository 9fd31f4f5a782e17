//! `/admin/*`: the operators' API. Every route takes the admin token (`Admin`); without a
//! configured token the routes do not exist.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::{ApiError, ErrorCode};
use super::json::{JsonBody, OptionalJson};
use super::{blocking, AppState};
use crate::engine::{fsck, CopyRate, GcOptions, GcReport, Stats};
use crate::quota::PlanChange;
use crate::store::keys::AccountId;

/// `POST /admin/gc`'s body, also what `cairn gc --server` sends.
#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compact_below: Option<f64>,
    /// 0: no ceiling; absent: the server's `gc_copy_mib_per_sec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_mib_per_sec: Option<u64>,
    /// Rewrite packs not under the current data key, then retire unused keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rekey: Option<bool>,
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
pub async fn gc(
    State(app): State<AppState>,
    _: Admin,
    OptionalJson(body): OptionalJson<GcBody>,
) -> Result<Json<GcReport>, ApiError> {
    let opts = gc_options(&body, app.settings.gc_copy_mib_per_sec)?;
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
pub async fn rotate_key(State(app): State<AppState>, _: Admin) -> Result<Json<KeyRotated>, ApiError> {
    let engine = app.engine.clone();
    let id = blocking(move || engine.rotate_key()).await?;
    Ok(Json(KeyRotated::new(id)))
}

/// `POST /admin/keys/rotate`'s answer and `cairn rotate-key`'s report: the new key's id.
#[derive(Serialize, Deserialize)]
pub struct KeyRotated {
    pub key: String,
}

impl KeyRotated {
    pub fn new(id: u32) -> Self {
        KeyRotated { key: format!("{id:08x}") }
    }
}

pub async fn stats(State(app): State<AppState>, _: Admin) -> Result<Json<Stats>, ApiError> {
    let engine = app.engine.clone();
    Ok(Json(blocking(move || engine.stats()).await?))
}

/// `PUT /admin/accounts/{id}/plan`'s body, also what `cairn plan --server` sends.
#[derive(Deserialize, Serialize)]
pub struct PlanBody {
    pub plan: String,
}

pub async fn set_plan(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PlanBody>,
) -> Result<Json<PlanChange>, ApiError> {
    let Some(limit) = app.settings.plans.limit(&body.plan) else {
        return Err(ApiError::new(ErrorCode::UnknownPlan, format!("no plan is called {:?}", body.plan))
            .with("plans", app.settings.plans.0.keys().cloned().collect::<Vec<_>>()));
    };
    let account: AccountId = id.parse().map_err(|_| ApiError::not_found())?;
    app.set_plan(&account, &body.plan).await?;
    Ok(Json(PlanChange { plan: body.plan, limit }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockBody {
    advance_secs: u64,
}

/// Move the test clock (`test_clock = true`) forward; on a server with the system clock the
/// route does not exist. Time only moves forward: windows never reopen behind a test.
pub async fn clock(
    State(app): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<ClockBody>,
) -> Result<Json<super::views::ClockNow>, ApiError> {
    let clock = app.engine.clock();
    if !clock.is_manual() {
        return Err(ApiError::not_found());
    }
    clock.advance(std::time::Duration::from_secs(body.advance_secs));
    Ok(Json(super::views::ClockNow { now_ms: clock.now_ms() }))
}
