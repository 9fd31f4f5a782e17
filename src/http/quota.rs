//! `GET /v1/quota`.

use axum::extract::State;
use axum::Json;

use super::auth::Authed;
use super::error::ApiError;
use super::views::{Quota, Services};
use super::AppState;
use crate::store::keys::AccountId;

pub async fn get(State(app): State<AppState>, authed: Authed) -> Result<Json<Quota>, ApiError> {
    Ok(Json(view(&app, &authed.account).await?))
}

/// The account's quota as `GET /v1/quota` shows it (the portal's storage page too).
pub(crate) async fn view(app: &AppState, account: &AccountId) -> Result<Quota, ApiError> {
    let (plan, limit) = app.plan_and_limit(account).await?;
    let engine = app.engine.clone();
    let account = *account;
    let u = super::blocking(move || engine.usage(&account)).await?;
    Ok(Quota {
        plan,
        limit,
        used: u.used,
        available: limit.saturating_sub(u.used),
        metadata: u.metadata,
        services: Services { drive: u.drive, backups: u.backups, sync: u.sync, trash: u.trash, versions: u.versions },
    })
}
