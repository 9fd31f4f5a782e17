//! `/dav/files/`: the drive over WebDAV (RFC 4918 classes 1 and 2, RFC 4331 quota), for the
//! clients people already have (Finder, Explorer, GNOME Files, davfs2, rclone).
//!
//! A front only: `dav-server` speaks the protocol (XML, multistatus, `If` headers, locking
//! rules), `fs::DriveFs` turns each of its file-system calls into one drive-service call, and
//! `locks` keeps the locks. This module authenticates (HTTP Basic with an app password, never
//! the account password), admits the transfer, answers what dav-server would answer worse
//! (`Depth: infinity` PROPFIND, the service's 412 and 507), and passes the rest through.

mod basic;
mod file;
mod fs;
pub mod locks;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use dav_server::{DavConfig, DavHandler, DavMethodSet};

pub use basic::{if_header_is_safe, parse_basic};

use super::auth::ClientIp;
use super::credentials::CredentialsAllowed;
use super::error::ApiError;
use super::AppState;
use crate::drive::DriveError;
use crate::error::{Error, Refusal};
use crate::identity::Session;
use crate::store::identity_keys::DeviceId;
use crate::store::keys::AccountId;

pub const PREFIX: &str = "/dav/files";

/// What every WebDAV request shares: the protocol handler and the lock table.
pub struct Front {
    handler: DavHandler,
    locks: Arc<locks::LockTable>,
}

impl Front {
    pub fn new(clock: crate::clock::Clock) -> Self {
        let handler = DavHandler::builder()
            .strip_prefix(PREFIX)
            .methods(DavMethodSet::WEBDAV_RW)
            .read_buf_size(256 * 1024)
            .build_handler();
        Front { handler, locks: locks::LockTable::new(clock) }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route(PREFIX, any(handle)).route("/dav/files/", any(handle)).route("/dav/files/{*path}", any(handle))
}

/// `CredentialsAllowed` first: an app password never crosses a network in clear.
async fn handle(State(app): State<AppState>, _: CredentialsAllowed, ClientIp(ip): ClientIp, req: Request) -> Response {
    let session = match authenticate(&app, req.headers(), ip).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    match app.plan_and_limit(&session.account).await {
        Ok((_, limit)) => serve_as(&app, session.account, session.device_id, limit, req).await,
        Err(e) => e.into_response(),
    }
}

/// Basic credentials: the account's identifier and one of its app passwords.
pub(super) async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
) -> Result<Session, Response> {
    let challenge = |resp: Response| {
        let mut resp = resp;
        if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"cairn\", charset=\"UTF-8\""));
        }
        resp
    };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(parse_basic);
    let Some((identifier, password)) = given else {
        return Err(challenge(ApiError::unauthorized().into_response()));
    };
    app.identity
        .authenticate_basic(&identifier, &password, ip)
        .await
        .map_err(|e| challenge(ApiError::from(e).into_response()))
}

/// A request of `account` (signed in on `device`, its plan allowing `limit` bytes), once
/// authenticated: public for the fuzz target `dav_requests`, which drives it without accounts.
pub async fn serve_as(app: &AppState, account: AccountId, device: DeviceId, limit: u64, req: Request) -> Response {
    match serve(app, account, device, limit, req).await {
        Ok(resp) | Err(resp) => resp,
    }
}

async fn serve(
    app: &AppState,
    account: AccountId,
    device: DeviceId,
    limit: u64,
    req: Request,
) -> Result<Response, Response> {
    let api = |e: ApiError| e.into_response();
    let method = req.method().clone();
    if req.headers().get("if").is_some_and(|v| !if_header_is_safe(v.as_bytes())) {
        return Err(api(ApiError::new(super::error::ErrorCode::BadRequest, "the If header is malformed")));
    }
    if method == "PROPFIND" && depth_infinity(req.headers()) {
        return Err(dav_error(StatusCode::FORBIDDEN, "propfind-finite-depth"));
    }
    let _transfer = match method {
        Method::PUT => Some(app.uploads.admit(account).map_err(api)?),
        Method::GET => Some(app.downloads.admit(account).map_err(api)?),
        _ => None,
    };
    let failure: fs::Failure = Arc::new(Mutex::new(None));
    let drive_fs = fs::DriveFs {
        drive: app.drive.clone(),
        engine: app.engine.clone(),
        account,
        device,
        limit,
        pre: super::files::write_precondition(req.headers()),
        failure: failure.clone(),
    };
    let config = DavConfig::new()
        .filesystem(Box::new(drive_fs))
        .locksystem(Box::new(app.dav.locks.of(account)))
        .principal(account.to_string());
    let resp = app.dav.handler.handle_with(config, req).await.map(Body::new);
    let failed = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    let failed_status = resp.status().is_client_error() || resp.status().is_server_error();
    Ok(match failed {
        Some(e) if failed_status => restate(app, e).unwrap_or(resp),
        _ => resp,
    })
}

/// The drive service's refusals that dav-server cannot say, in DAV's words; `None` where its
/// own answer stands (405 for a folder that exists, 409 for a missing parent, ...). Each of
/// these ends the connection: the body may not have been read to its end.
fn restate(app: &AppState, e: DriveError) -> Option<Response> {
    let mut resp = match e {
        DriveError::PreconditionFailed => StatusCode::PRECONDITION_FAILED.into_response(),
        DriveError::Engine(Error::Refused(Refusal::Quota { .. })) => {
            app.metrics.quota_refusals.inc();
            dav_error(StatusCode::INSUFFICIENT_STORAGE, "quota-not-exceeded")
        }
        e @ DriveError::BadPath(_) => ApiError::from(e).into_response(),
        _ => return None,
    };
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(resp)
}

fn depth_infinity(headers: &HeaderMap) -> bool {
    headers.get("depth").and_then(|v| v.to_str().ok()).is_some_and(|d| d.trim().eq_ignore_ascii_case("infinity"))
}

/// An RFC 4918 error body naming the precondition that failed.
fn dav_error(status: StatusCode, condition: &str) -> Response {
    let body =
        format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:{condition}/></D:error>\n");
    (status, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], body).into_response()
}
