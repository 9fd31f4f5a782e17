//! The web portal: a person's account and cloud data in a browser, served by `cairn serve` on
//! the API's own origin under `/portal/`.
//!
//! Shape (docs/decisions.md):
//! - Pages are rendered on the server (maud) from the same services `/v1` calls (identity,
//!   drive, sync, backups, quota); they only read.
//! - Every change a page makes is a call of the real `/v1` API from the page's small script,
//!   through `bridge` (cookie in, bearer token to `/v1`): no rule is written twice. The portal's
//!   own writes are the two `/v1` cannot do for a browser, signing in and out (the cookie), and
//!   moving a file (the drive service's move, which `/v1` does not expose).
//! - `session` owns the cookie and the CSRF rule; `layout` the frame and security headers;
//!   `text` the escaping-free text helpers (maud escapes every spliced value).
//!
//! Invariants: every page carries the strict CSP of `layout`; nothing user-supplied is
//! spliced with `PreEscaped` (the only raw HTML is none); every state-changing portal request
//! passes `session::check_csrf`.

mod account;
pub mod bridge;
mod data;
mod layout;
mod records;
pub mod session;
pub mod text;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::SET_COOKIE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub use bridge::bridge;

use super::auth::ClientIp;
use super::error::ApiError;
use super::json::JsonBody;
use super::AppState;
use session::{cookie_token, set_cookie, Guarded, Web};

/// Portal bodies are a few short strings (sign-in, a move).
const MAX_PORTAL_BODY: usize = 64 << 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(home))
        .route("/portal/", get(home))
        .route("/portal/signin", get(account::signin))
        .route("/portal/signup", get(account::signup))
        .route("/portal/forgot", get(account::forgot))
        .route("/portal/account", get(account::account))
        .route("/portal/security", get(account::security))
        .route("/portal/delete", get(account::delete))
        .route("/portal/storage", get(data::storage))
        .route("/portal/files", get(data::files))
        .route("/portal/files/move", post(data::move_file))
        .route("/portal/backups", get(data::backups))
        .route("/portal/backups/{id}", get(data::backup))
        .route("/portal/contacts", get(records::contacts))
        .route("/portal/calendar", get(records::calendar))
        .route("/portal/notes", get(records::notes))
        .route("/portal/notes/{id}", get(records::note))
        .route("/portal/session", post(sign_in))
        .route("/portal/session/end", post(sign_out))
        .route("/portal/assets/portal.js", get(|| async { layout::asset(JS, "text/javascript; charset=utf-8") }))
        .route("/portal/assets/portal.css", get(|| async { layout::asset(CSS, "text/css; charset=utf-8") }))
        .layer(DefaultBodyLimit::max(MAX_PORTAL_BODY))
}

const JS: &str = include_str!("assets/portal.js");
const CSS: &str = include_str!("assets/portal.css");

async fn home(State(app): State<AppState>, parts: axum::http::request::Parts) -> Redirect {
    if cookie_token(&app, &parts).is_some() {
        Redirect::to("/portal/account")
    } else {
        Redirect::to("/portal/signin")
    }
}

#[derive(Deserialize)]
struct SignIn {
    identifier: String,
    password: String,
}

/// Sign a browser in: an ordinary session of device "web browser", its token in the cookie.
async fn sign_in(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    guard: Guarded,
    headers: axum::http::HeaderMap,
    JsonBody(b): JsonBody<SignIn>,
) -> Result<Response, ApiError> {
    let s = app.identity.login(&b.identifier, b.password, session::device(&headers), ip).await?;
    let max_age = app.identity.config().session_ttl_secs;
    let body = serde_json::json!({
        "account_id": s.account.to_string(),
        "device_id": s.device_id.to_string(),
        "expires_at": s.expires_at,
    });
    let mut r = (StatusCode::CREATED, Json(body)).into_response();
    r.headers_mut().insert(SET_COOKIE, set_cookie(guard.secure, Some((&s.token, max_age))));
    Ok(layout::secure(r))
}

/// Sign this browser out: its session ends (like `DELETE /v1/sessions/current`) and the
/// cookie is cleared.
async fn sign_out(State(app): State<AppState>, guard: Guarded, web: Web) -> Result<Response, ApiError> {
    app.identity.logout(&web.session, web.ip).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(SET_COOKIE, set_cookie(guard.secure, None));
    Ok(r)
}
