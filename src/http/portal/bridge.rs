//! `/portal/api/v1/...`: the pages' JavaScript calls the real `/v1` API through here, with the
//! cookie instead of a bearer token. Nothing is decided here: the request is checked for CSRF,
//! its cookie becomes `Authorization: Bearer`, its path loses `/portal/api`, and the `/v1`
//! router answers it with its own rules (codes, quota, versions, 412s, limits).
//!
//! Invariants:
//! - Only the parts of `/v1` a person uses from a browser pass (`ALLOWED`): not the chunk API,
//!   tus, sessions (the portal signs in itself) or anything operator's.
//! - A bearer header or cookie the browser sent is never forwarded; only the cookie's token,
//!   and only where `CredentialPolicy` allows cookies.
//! - Answers are never rendered by the browser as a page of this origin: `nosniff`, a sandboxing
//!   CSP, and file bodies as attachments (a user's uploaded HTML must not run as the portal).

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, COOKIE};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::session::{check_csrf, cookie_token};
use super::text::encode_component;
use crate::http::error::ApiError;
use crate::http::AppState;

const PREFIX: &str = "/portal/api/v1/";

/// First path segments under `/v1/` the bridge passes.
const ALLOWED: &[&str] = &[
    "codes",
    "accounts",
    "account",
    "password-reset",
    "devices",
    "app-passwords",
    "quota",
    "files",
    "trash",
    "sync",
    "backups",
];

/// A middleware around the whole router: requests under `PREFIX` are rewritten before routing.
pub async fn bridge(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(PREFIX) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let rest = &parts.uri.path()[PREFIX.len()..];
    let first = rest.split('/').next().unwrap_or("");
    if !ALLOWED.contains(&first) {
        return ApiError::not_found().into_response();
    }
    let token = cookie_token(&app, &parts);
    if let Err(e) = check_csrf(&parts, token.as_deref()) {
        return e.into_response();
    }
    let download = parts.method == axum::http::Method::GET
        && (first == "files" || (first == "backups" && rest.contains("/files/")))
        && !parts.uri.query().is_some_and(|q| q.contains("versions"));
    let file_name = rest.rsplit(['/']).next().map(percent_decoded).unwrap_or_default();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("/v1/{rest}?{q}"),
        None => format!("/v1/{rest}"),
    };
    parts.uri = match Uri::try_from(path_and_query) {
        Ok(u) => u,
        Err(_) => return ApiError::not_found().into_response(),
    };
    parts.headers.remove(AUTHORIZATION);
    parts.headers.remove(COOKIE);
    if let Some(t) = token {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
            parts.headers.insert(AUTHORIZATION, v);
        }
    }
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    let h = resp.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; sandbox"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let json = h.get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if download && !json {
        let v = format!("attachment; filename*=UTF-8''{}", encode_component(&file_name));
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(CONTENT_DISPOSITION, v);
        }
    }
    resp
}

/// The last segment of a percent-encoded path, decoded (the download's file name only;
/// invalid UTF-8 is replaced).
pub fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (char::from(b[i + 1]).to_digit(16), char::from(b[i + 2]).to_digit(16)) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    let name = String::from_utf8_lossy(&out).into_owned();
    name.rsplit('/').next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_decoded() {
        assert_eq!(percent_decoded("a%20b.txt"), "a b.txt");
        assert_eq!(percent_decoded("%2Fsdcard%2FDCIM%2Fx.jpg"), "x.jpg");
        assert_eq!(percent_decoded("bad%zz%4"), "bad%zz%4");
        assert_eq!(percent_decoded("%E6%97%A5"), "日");
    }
}
