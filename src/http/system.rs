//! Endpoints and middleware that belong to no service: health, metrics, chunking parameters,
//! request accounting.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::Admin;
use super::error::{ApiError, ErrorCode};
use super::views::{Chunking, Status};
use super::AppState;

pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// An operator's page: its counters describe every account (new versus deduplicated chunks tell
/// who holds what), so it takes the admin token, and does not exist without one.
pub async fn metrics(State(app): State<AppState>, _: Admin) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// Clients chunk with exactly these parameters so that their chunks dedup against ours.
pub async fn chunking(State(app): State<AppState>) -> Json<Chunking> {
    let p = app.engine.chunking();
    Json(Chunking { algorithm: "fastcdc-2020", min: p.min, avg: p.avg, max: p.max })
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this path does not take that method")
}

/// Refuse oversized header blocks with `431` (hyper is configured with room to spare, so the
/// limit and its JSON answer are ours), and count responses by status class.
pub async fn count_and_limit_headers(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let resp = if header_bytes > app.settings.max_header_bytes {
        ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!("request headers are over {} bytes", app.settings.max_header_bytes),
        )
        .into_response()
    } else {
        next.run(req).await
    };
    let class = match resp.status().as_u16() {
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    };
    app.metrics.requests.with_label_values(&[class]).inc();
    resp
}

/// Ready to serve: a blocking thread is free and the database answers, within a second. Unlike
/// `/healthz` (the process accepts connections) this fails when requests would hang.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let engine = app.engine.clone();
    let probe = tokio::task::spawn_blocking(move || engine.db().get(crate::store::CF_META, b"readyz").map(|_| ()));
    match tokio::time::timeout(std::time::Duration::from_secs(1), probe).await {
        Ok(Ok(Ok(()))) => Json(Status { status: "ready" }).into_response(),
        _ => ApiError::new(ErrorCode::NotReady, "the server cannot serve requests now").into_response(),
    }
}
