//! The HTTP API of API.md. Handlers are thin: parse, call the domain module, shape the answer.

pub mod error;
pub mod json;
mod serve;
mod system;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

pub use serve::serve;

use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Everything a request handler may touch. Shared as one `Arc`; each part is itself cheap to
/// share and does its own locking where it needs any.
pub struct App {
    pub config: Arc<Config>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub plans: crate::quota::Plans,
    /// Bytes held by uploads in progress; shared with every upload's `Charge`.
    pub reservations: Arc<crate::quota::Reservations>,
}

pub type AppState = Arc<App>;

/// Run blocking storage work (RocksDB, pack I/O) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> crate::error::Result<T> + Send + 'static) -> Result<T, error::ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(error::ApiError::from),
        Err(e) => Err(crate::error::Error::corrupt(format!("a blocking task failed: {e}")).into()),
    }
}

/// RFC 3339 in UTC with milliseconds, from unix milliseconds.
pub(crate) fn rfc3339_millis(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}

impl App {
    /// An engine error as an API error, counting quota refusals on the way.
    pub(crate) fn refusal_counted(&self, e: crate::error::Error) -> error::ApiError {
        self.refusal_counted_api(e.into())
    }

    pub(crate) fn refusal_counted_api(&self, e: error::ApiError) -> error::ApiError {
        if e.code == "quota_exceeded" {
            self.metrics.quota_refusals.inc();
        }
        e
    }
}

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/v1/chunking", get(system::chunking))
        .fallback(error::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), system::count_and_limit_headers))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(app)
}
