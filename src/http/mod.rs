//! The HTTP API of API.md. Handlers are thin: parse, call the domain module, shape the answer.

pub mod auth;
pub mod error;
mod identity;
pub mod json;
mod serve;
mod system;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

pub use serve::serve;

use crate::config::Config;
use crate::engine::Engine;
use crate::identity::Identity;
use crate::metrics::Metrics;

/// Everything a request handler may touch. Shared as one `Arc`; each part is itself cheap to
/// share and does its own locking where it needs any.
pub struct App {
    pub config: Arc<Config>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub identity: Identity,
}

pub type AppState = Arc<App>;

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/v1/chunking", get(system::chunking))
        .merge(identity::routes())
        .fallback(error::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), system::count_and_limit_headers))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(app)
}
