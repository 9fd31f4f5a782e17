//! `GET /v1/quota`.

use axum::extract::State;
use axum::Json;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::AppState;

pub async fn get(State(app): State<AppState>, authed: Authed) -> Result<Json<serde_json::Value>, ApiError> {
    let (plan, limit) = app.plan_and_limit(&authed.account).await?;
    let engine = app.engine.clone();
    let account = authed.account;
    let u = super::blocking(move || engine.usage(&account)).await?;
    Ok(Json(json!({
        "plan": plan,
        "limit": limit,
        "used": u.used,
        "available": limit.saturating_sub(u.used),
        "metadata": u.metadata,
        "services": { "drive": u.drive, "backups": u.backups, "sync": u.sync },
    })))
}
