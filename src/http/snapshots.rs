//! `POST /admin/snapshot`: a consistent copy of the metadata, written on the server's host while
//! uploads go on (`crate::snapshot`).

use std::path::PathBuf;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::ApiError;
use super::json::JsonBody;
use super::{blocking, AppState};
use crate::snapshot::{self, Manifest};

/// The body, also what `cairn snapshot --server` sends.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    /// A new directory on the server's host (absolute; its parent must exist).
    pub to: PathBuf,
}

pub async fn create(
    State(app): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<SnapshotBody>,
) -> Result<Json<Manifest>, ApiError> {
    let engine = app.engine.clone();
    let manifest = blocking(move || snapshot::take(&engine, &body.to)).await?;
    tracing::info!(dir = %manifest.dir.display(), packs = manifest.packs.len(), "metadata snapshot taken");
    Ok(Json(manifest))
}
