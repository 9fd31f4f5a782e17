//! The browser's session: a cookie holding a normal session token, and the CSRF rule every
//! state-changing portal request passes.
//!
//! Invariants:
//! - The cookie is `HttpOnly; SameSite=Strict; Path=/` (and `Secure` when the request came over
//!   TLS, directly or through a trusted proxy). It is read only where `CredentialPolicy` allows
//!   cookies (`credentials`): over plain HTTP from afar it is ignored, as if absent.
//! - The token in it is an ordinary session of `Identity` (device "web browser"): signing the
//!   device out anywhere, a password change, or deleting the account ends it like any other.
//! - A state-changing request (any method but GET/HEAD/OPTIONS) must carry `X-Cairn-CSRF` equal to
//!   the page's token (`csrf_token`: derived from the session token, so a page of another session
//!   cannot be replayed), and must not come from another site (`Origin`, `Sec-Fetch-Site`).
//!   A cross-origin form cannot set the header, and the server never answers CORS preflights.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Redirect, Response};

use crate::http::client_addr::{Client, Scheme};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::AppState;
use crate::identity::{DeviceInfo, Session};

pub const COOKIE_NAME: &str = "cairn_session";
/// The header a page's JavaScript sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-cairn-csrf";
/// The CSRF token of a page without a session (sign-in, sign-up): only the header's presence
/// and the origin checks defend those (against login CSRF); there is no session to tie it to.
pub const ANONYMOUS_CSRF: &str = "anonymous";
/// The device name every browser session is shown with.
pub const DEVICE_NAME: &str = "web browser";

/// The session token in the request's cookie, if the channel may carry one.
pub fn cookie_token(app: &AppState, parts: &Parts) -> Option<String> {
    let client = parts.extensions.get::<Client>()?;
    if !app.settings.credentials.allows(client) {
        return None;
    }
    cookie_value(&parts.headers)
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The CSRF token of pages shown to the holder of `token`. Derived, not stored: a keyed hash of
/// a secret the browser holds but its scripts cannot read (the cookie is HttpOnly).
pub fn csrf_token(token: &str) -> String {
    let k = blake3::derive_key("cairn portal csrf v1", token.as_bytes());
    hex::encode(&k[..16])
}

fn refused(why: &str) -> ApiError {
    ApiError::new(ErrorCode::CsrfRejected, format!("cross-site request refused: {why}"))
}

/// Whether the request is TLS as far as the client is concerned (for `Secure` and the origin).
fn over_tls(parts: &Parts) -> bool {
    parts.extensions.get::<Client>().is_some_and(|c| c.tls || (c.proxied && c.forwarded_scheme == Some(Scheme::Https)))
}

/// The CSRF rule for a state-changing request; `token` is the session the request would act
/// for (`None`: anonymous).
pub fn check_csrf(parts: &Parts, token: Option<&str>) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let h = &parts.headers;
    if let Some(site) = h.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Err(refused("Sec-Fetch-Site is not same-origin"));
        }
    }
    if let Some(origin) = h.get(ORIGIN) {
        let host = h.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let authority = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, a)| a);
        if host.is_empty() || authority != Some(host) {
            return Err(refused("Origin is another site"));
        }
    }
    let given = h.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| refused("no CSRF token"))?;
    let expected = token.map_or_else(|| ANONYMOUS_CSRF.to_string(), csrf_token);
    // A signed-in browser whose page was anonymous (a second tab) may still act anonymously.
    if given != expected && !(given == ANONYMOUS_CSRF && is_anonymous_action(parts)) {
        return Err(refused("wrong CSRF token"));
    }
    Ok(())
}

/// Calls that act for no session: a stale page may send them with the anonymous token.
fn is_anonymous_action(parts: &Parts) -> bool {
    matches!(
        parts.uri.path(),
        "/portal/session" | "/portal/api/v1/codes" | "/portal/api/v1/accounts" | "/portal/api/v1/password-reset"
    )
}

/// The `Set-Cookie` that signs a browser in (`max_age` in seconds) or, with `None`, out.
pub fn set_cookie(secure: bool, token: Option<(&str, u64)>) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = match token {
        Some((t, max_age)) => {
            format!("{COOKIE_NAME}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
        }
        None => format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&v).expect("a token is hex")
}

/// A state-changing portal request that passed the CSRF rule, on a channel that may carry the
/// cookie (`403 tls_required` otherwise).
pub struct Guarded {
    /// Whether the cookie this request sets must be `Secure`.
    pub secure: bool,
}

impl FromRequestParts<AppState> for Guarded {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        crate::http::credentials::CredentialsAllowed::from_request_parts(parts, app).await?;
        check_csrf(parts, cookie_token(app, parts).as_deref())?;
        Ok(Guarded { secure: over_tls(parts) })
    }
}

/// The browser as a device: its name is fixed, its system guessed from `User-Agent` (shown in
/// the devices list only).
pub fn device(headers: &HeaderMap) -> DeviceInfo {
    let ua = headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map_or("", |(_, os)| os);
    let model = ["Firefox", "Edg/", "Chrome", "Safari"]
        .iter()
        .find(|b| ua.contains(*b))
        .map_or("", |b| b.trim_end_matches('/'));
    DeviceInfo { name: DEVICE_NAME.into(), model: model.into(), os: os.into() }
}

/// A page request from a signed-in browser. Without a valid session the page answers a
/// redirect to the sign-in page (clearing a stale cookie).
pub struct Web {
    pub session: Session,
    pub csrf: String,
    pub ip: IpAddr,
}

impl FromRequestParts<AppState> for Web {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie_token(app, parts) else {
            return Err(Redirect::to("/portal/signin").into_response());
        };
        match app.identity.authenticate(&token).await {
            Ok(Some(session)) => {
                let crate::http::auth::ClientIp(ip) =
                    crate::http::auth::ClientIp::from_request_parts(parts, app).await.unwrap_or_else(|e| match e {});
                Ok(Web { session, csrf: csrf_token(&token), ip })
            }
            Ok(None) => {
                let mut r = Redirect::to("/portal/signin").into_response();
                r.headers_mut().insert(SET_COOKIE, set_cookie(over_tls(parts), None));
                Err(r)
            }
            Err(e) => Err(ApiError::from(e).into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri("/portal/api/v1/account");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn state_changing_requests_need_the_token_and_the_same_origin() {
        let t = "ab".repeat(32);
        let good = csrf_token(&t);
        let host = ("host", "cloud.example:8443");
        assert!(check_csrf(&parts("GET", &[]), Some(&t)).is_ok(), "reads are free");
        assert!(check_csrf(&parts("POST", &[host, (CSRF_HEADER, &good)]), Some(&t)).is_ok());
        let same = ("origin", "https://cloud.example:8443");
        assert!(check_csrf(&parts("PATCH", &[host, same, (CSRF_HEADER, &good)]), Some(&t)).is_ok());
        for bad in [
            parts("POST", &[host]),
            parts("POST", &[host, (CSRF_HEADER, "0123")]),
            parts("POST", &[host, (CSRF_HEADER, &csrf_token(&"cd".repeat(32)))]),
            parts("DELETE", &[host, ("origin", "https://evil.example"), (CSRF_HEADER, &good)]),
            parts("POST", &[host, ("origin", "null"), (CSRF_HEADER, &good)]),
            parts("PUT", &[host, ("sec-fetch-site", "cross-site"), (CSRF_HEADER, &good)]),
            parts("POST", &[host, (CSRF_HEADER, ANONYMOUS_CSRF)]),
        ] {
            assert_eq!(check_csrf(&bad, Some(&t)).unwrap_err().code, ErrorCode::CsrfRejected);
        }
        assert!(check_csrf(&parts("POST", &[host, (CSRF_HEADER, ANONYMOUS_CSRF)]), None).is_ok());
    }

    #[test]
    fn the_cookie_is_secure_over_tls_and_cleared_with_max_age_0() {
        let set = set_cookie(true, Some(("ab12", 60))).to_str().unwrap().to_string();
        assert_eq!(set, "cairn_session=ab12; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure");
        let clear = set_cookie(false, None).to_str().unwrap().to_string();
        assert_eq!(clear, "cairn_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; cairn_session=abc; b=2"));
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        h.insert(COOKIE, HeaderValue::from_static("cairn_session="));
        assert_eq!(cookie_value(&h), None);
    }
}
