//! Who is asking: the bearer session of a user (`Authed`), the operator (`Admin`), and the
//! peer address (`ClientIp`). Every authenticated handler takes one of these as an argument;
//! a handler that takes none is public.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::identity::Session;
use crate::store::identity_keys::DeviceId;
use crate::store::keys::AccountId;

/// A request with a live session: `Authorization: Bearer TOKEN`. Anything else is `401`.
#[derive(Clone, Debug)]
pub struct Authed {
    pub account: AccountId,
    pub device_id: DeviceId,
    pub session: Session,
}

/// The token of `Authorization: Bearer TOKEN` (scheme case-insensitive, RFC 9110).
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let session = app.identity.authenticate(token).await?.ok_or_else(ApiError::unauthorized)?;
        Ok(Authed { account: session.account, device_id: session.device_id, session })
    }
}

/// `Option<Authed>`: no `Authorization` header is `None`; a header with a bad token is `401`.
impl OptionalFromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Option<Self>, ApiError> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(None);
        }
        <Authed as FromRequestParts<AppState>>::from_request_parts(parts, app).await.map(Some)
    }
}

/// The operator: `Authorization: Bearer ADMIN_TOKEN`. Without a configured admin token the
/// `/admin/*` routes do not exist (`404`); a wrong token, a user's included, is `401`.
#[derive(Clone, Copy, Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = app.settings.admin_token.as_deref() else {
            return Err(ApiError::not_found());
        };
        let given = bearer(parts).unwrap_or("");
        // Hashes first: compared in constant time whatever the lengths, so neither the
        // token's bytes nor its length leak through timing.
        let (a, b) = (blake3::hash(given.as_bytes()), blake3::hash(expected.as_bytes()));
        if bool::from(a.as_bytes().ct_eq(b.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// The client's address: the peer's, or behind a trusted proxy the one it forwarded
/// (`client_addr`), IPv4-mapped addresses shown as IPv4. Without either (a router driven
/// in-process) it is `0.0.0.0`.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        if let Some(client) = parts.extensions.get::<super::client_addr::Client>() {
            return Ok(ClientIp(client.ip));
        }
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip().to_canonical());
        Ok(ClientIp(ip))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::http::App;
    use crate::identity::Identity;
    use crate::metrics::Metrics;

    const TOKEN: &str = "operator-token-0123456789";

    fn app(dir: &std::path::Path, admin: Option<&str>) -> AppState {
        let config = Config { data_dir: dir.to_path_buf(), admin_token: admin.map(String::from), ..Config::default() };
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::open(config.engine(), metrics.clone()).unwrap();
        let identity = Identity::open(engine.clone(), &config.identity, &config.notifier).unwrap();
        Arc::new(App::new(config.http(), engine, metrics, identity))
    }

    /// A stand-in for the admin routes of a later issue, guarded like them.
    fn admin_router(app: AppState) -> Router {
        Router::new().route("/admin/ping", get(|_: Admin| async { "pong" })).with_state(app)
    }

    async fn status(router: &Router, auth: Option<&str>) -> StatusCode {
        let mut req = Request::get("/admin/ping");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        router.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn admin_routes_need_the_admin_token() {
        let dir = tempfile::tempdir().unwrap();
        let r = admin_router(app(dir.path(), Some(TOKEN)));
        assert_eq!(status(&r, Some(&format!("Bearer {TOKEN}"))).await, StatusCode::OK);
        assert_eq!(status(&r, Some(&format!("bearer {TOKEN}"))).await, StatusCode::OK);
        assert_eq!(status(&r, None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&r, Some("Bearer operator-token-012345678")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&r, Some(&format!("Basic {TOKEN}"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&r, Some(&format!("Bearer {}", "ab".repeat(32)))).await, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn admin_routes_do_not_exist_without_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let r = admin_router(app(dir.path(), None));
        assert_eq!(status(&r, Some(&format!("Bearer {TOKEN}"))).await, StatusCode::NOT_FOUND);
        assert_eq!(status(&r, None).await, StatusCode::NOT_FOUND);
    }
}
