//! The HTTP API of API.md. Handlers are thin: parse, call the domain module, shape the answer.

pub mod admin;
pub mod auth;
mod backups;
mod chunks;
pub mod client_addr;
mod conn_watch;
pub mod credentials;
pub mod dav;
pub mod error;
mod files;
pub mod groupware;
mod identity;
pub mod json;
pub mod limits;
pub mod portal;
mod quota;
mod serve;
mod snapshots;
mod sync;
mod system;
mod timeouts;
pub mod tls;
mod trash;
mod tus;
mod unread;
pub mod views;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;

pub use serve::{serve, Listeners, TlsListener};
pub use snapshots::SnapshotBody;

use crate::engine::Engine;
use crate::identity::Identity;
use crate::metrics::Metrics;

/// The HTTP layer's own settings; the binary's wiring fills them from the configuration
/// (`Config::http`), so nothing under `http` reads the whole of it.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `None`: the admin routes and `/metrics` do not exist.
    pub admin_token: Option<String>,
    pub max_header_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub limits: limits::LimitsConfig,
    pub plans: crate::quota::Plans,
    pub backup_retention: crate::backup::Retention,
    /// Shown to clients as a staged chunk's `staged_until`.
    pub staged_ttl_secs: u64,
    /// The ceiling on compaction copies when `POST /admin/gc` does not say one.
    pub gc_copy_mib_per_sec: u64,
    /// The trash and old versions.
    pub drive: crate::drive::Policy,
    /// Resumable uploads' limits and expiry.
    pub uploads: crate::uploads::Settings,
    /// Peers whose forwarding headers name the client (`client_addr`).
    pub proxies: client_addr::TrustedProxies,
    /// Where passwords and cookies may be read (`credentials`).
    pub credentials: credentials::CredentialPolicy,
}

/// Everything a request handler may touch. Shared as one `Arc`; each part is itself cheap to
/// share and does its own locking where it needs any.
pub struct App {
    pub settings: Settings,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    /// Files by path: every drive front calls it.
    pub drive: crate::drive::Drive,
    pub identity: Identity,
    pub sync: crate::sync::Sync,
    pub backups: crate::backup::Backups,
    /// Manifest bodies (drive manifests up to 128 MiB, backups up to 256 MiB) are read whole
    /// and parsed into owned structures several times their size; this many at a time, so
    /// that a few clients posting big ones cannot take the server's memory. A tokio
    /// semaphore: it is held across the `.await`s of reading the body.
    pub manifest_permits: Arc<tokio::sync::Semaphore>,
    /// Resumable uploads (tus): the state machine behind `/v1/uploads`.
    pub resumable: crate::uploads::Uploads,
    /// Uploads and downloads in progress, per account and in all (`limits`).
    pub uploads: limits::Allowance,
    pub downloads: limits::Allowance,
    /// The WebDAV front's protocol handler and locks.
    pub dav: dav::Front,
    /// Contacts and calendars over CardDAV/CalDAV (its UID index lives here).
    pub groupware: crate::groupware::Groupware,
}

/// How many manifest bodies may be in memory at once.
const MANIFESTS_AT_ONCE: usize = 4;

pub type AppState = Arc<App>;

/// Run blocking storage work (RocksDB, pack I/O) off the async runtime. Any error a service
/// returns (the engine's, the backups') becomes the API's at this one place.
pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, error::ApiError>
where
    error::ApiError: From<E>,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(error::ApiError::from),
        Err(e) => Err(crate::error::Error::Internal(format!("a blocking task failed: {e}")).into()),
    }
}

/// RFC 3339 in UTC with milliseconds, from unix milliseconds.
pub(crate) fn rfc3339_millis(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}

impl App {
    pub fn new(settings: Settings, engine: Engine, metrics: Arc<Metrics>, identity: Identity) -> Self {
        let engine_clock = engine.clock().clone();
        let sync = crate::sync::Sync::new(engine.clone());
        let backups = crate::backup::Backups::new(engine.clone(), settings.backup_retention);
        let manifest_permits = Arc::new(tokio::sync::Semaphore::new(MANIFESTS_AT_ONCE));
        let drive = crate::drive::Drive::new(engine.clone(), Default::default(), settings.drive);
        let resumable = crate::uploads::Uploads::new(engine.clone(), drive.clone(), settings.uploads);
        let l = &settings.limits;
        let gauge = |kind| metrics.transfers.with_label_values(&[kind]);
        let uploads = limits::Allowance::new("upload", l.uploads_per_account, l.uploads, gauge("upload"));
        let downloads = limits::Allowance::new("download", l.downloads_per_account, l.downloads, gauge("download"));
        App {
            settings,
            engine,
            metrics,
            drive,
            resumable,
            identity,
            sync: sync.clone(),
            backups,
            manifest_permits,
            uploads,
            downloads,
            dav: dav::Front::new(engine_clock),
            groupware: crate::groupware::Groupware::new(sync.clone()),
        }
    }

    /// The account's plan and its limit. An account on a plan that is no longer configured
    /// gets the free limit.
    pub(crate) async fn plan_and_limit(
        &self,
        account: &crate::store::keys::AccountId,
    ) -> Result<(String, u64), error::ApiError> {
        let plan = self.identity.plan(*account).await?;
        let limit = self.settings.plans.limit_or_free(&plan);
        Ok((plan, limit))
    }

    pub(crate) async fn set_plan(
        &self,
        account: &crate::store::keys::AccountId,
        plan: &str,
    ) -> Result<(), error::ApiError> {
        Ok(self.identity.set_plan(*account, plan.to_string()).await?)
    }

    /// A turn to hold one manifest body in memory; waits for one if all are taken.
    pub(crate) async fn manifest_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.manifest_permits.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    pub(crate) fn refusal_counted_api(&self, e: error::ApiError) -> error::ApiError {
        if e.code == error::ErrorCode::QuotaExceeded {
            self.metrics.quota_refusals.inc();
        }
        e
    }
}

pub fn router(app: AppState) -> Router {
    let api = Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/v1/chunking", get(system::chunking))
        .merge(identity::routes())
        .route("/v1/quota", get(quota::get))
        .route("/v1/files", get(files::list))
        .route("/v1/files/{*path}", put(files::put).get(files::get).delete(files::delete).post(trash::post))
        .route("/v1/trash", get(trash::list).delete(trash::purge_all))
        .route("/v1/trash/{id}", delete(trash::purge_one))
        .route("/v1/trash/{id}/restore", post(trash::restore))
        .route("/v1/chunks/missing", post(chunks::missing))
        .route("/v1/chunks/{hash}", put(chunks::put).get(chunks::get))
        .route("/v1/sync", get(sync::summary))
        .route("/v1/sync/{collection}", get(sync::feed))
        .route("/v1/sync/{collection}/batch", post(sync::batch))
        .route("/v1/sync/{collection}/{id}", get(sync::get).put(sync::put).delete(sync::delete))
        .merge(tus::routes())
        .merge(dav::routes())
        .merge(groupware::routes())
        .merge(portal::routes())
        .route("/v1/backups", get(backups::list).post(backups::create))
        .route("/v1/backups/{id}", get(backups::get).delete(backups::delete))
        .route("/v1/backups/{id}/files/{*path}", get(backups::file))
        .route("/admin/gc", post(admin::gc))
        .route("/admin/fsck", post(admin::fsck))
        .route("/admin/keys/rotate", post(admin::rotate_key))
        .route("/admin/stats", get(admin::stats))
        .route("/admin/snapshot", post(snapshots::create))
        .route("/admin/accounts/{id}/plan", put(admin::set_plan))
        .route("/admin/clock", post(admin::clock))
        .layer(DefaultBodyLimit::max(json::MAX_JSON_BODY))
        .fallback(error::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), timeouts::body_idle))
        .layer(axum::middleware::from_fn_with_state(app.clone(), system::count_and_limit_headers))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn(unread::close_if_unread))
        .with_state(app.clone());
    // The portal's bridge rewrites `/portal/api/v1/...` to `/v1/...` before the routes are
    // chosen, so it wraps the whole router (a layer of the router itself runs after routing).
    Router::new().fallback_service(api).layer(axum::middleware::from_fn_with_state(app, portal::bridge))
}
