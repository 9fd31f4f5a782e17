//! Accounts and identity: sign-up by a proven email or phone, password sign-in to sessions
//! tied to devices, code-confirmed changes, login activity, and account deletion.
//!
//! `Identity` is one cheap handle (an `Arc`) shared by every request. Flows are `async` and
//! keep the runtime free: Argon2 runs on the bounded hasher pool, RocksDB work on the blocking
//! pool. Every change to one account's records happens under that account's lock stripe (chosen
//! by the keyed hash of its identifier, which sign-up knows before the account exists), so
//! codes are spent once and devices are never resurrected by a concurrent touch.

mod accounts;
mod activity;
mod app_passwords;
mod codes;
mod delete;
mod error;
mod failures;
mod identifiers;
mod limits;
mod notify;
mod password;
mod plan;
mod profile;
mod secrets;
mod sessions;
mod settings;
mod signup;
mod sweep;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use accounts::PasswordChange;
pub use activity::EventView;
pub use app_passwords::{AppPassword, NewAppPassword};
pub use codes::Purpose;
pub use error::{IdentityError, Result};
pub use identifiers::{Identifier, Kind};
pub use profile::{Patch, ProfileChanges, ProfileView};
/// Where the identity key lives in the data directory when not configured (snapshots copy it).
pub use secrets::KEY_FILE as IDENTITY_KEY_FILE;
pub use sessions::{DeviceInfo, DeviceView, NewSession, Session};
pub use settings::{IdentityConfig, NotifierConfig, SmtpConfig, SmtpTls, WebhookConfig};
pub use signup::Registration;
pub use sweep::Swept;

use crate::clock::Clock;
use crate::engine::Engine;
use crate::store::Db;
use failures::Failures;
use limits::Limiter;
use notify::Notifier;
use password::Hashers;
use secrets::Secrets;

/// Stripes of the per-account lock; see the module comment.
const STRIPES: usize = 256;

#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    config: IdentityConfig,
    secrets: Secrets,
    notifier: Notifier,
    hashers: Hashers,
    sends_by_identifier: Limiter<[u8; 32]>,
    sends_by_ip: Limiter<IpAddr>,
    /// Wrong passwords (sign-in and password change), per identifier and per address.
    login_failures: Failures,
    /// Wrong codes, whatever their purpose, per identifier and per address.
    code_failures: Failures,
    /// std Mutex: held on blocking threads for one read-check-commit, never across `.await`.
    stripes: Vec<Mutex<()>>,
    /// Codes' and sessions' lifetimes, event times and rate-limit windows count in this one
    /// clock, the engine's: a test moves all of them together.
    clock: Clock,
}

impl Identity {
    /// Load (or create) the identifier key and set up the notifier. Blocking (file I/O).
    /// Its own settings only: identity knows nothing of the rest of the configuration. The
    /// key file and the outbox live in the engine's data directory.
    pub fn open(engine: Engine, settings: &IdentityConfig, notifier: &NotifierConfig) -> Result<Self> {
        let clock = engine.config().clock.clone();
        Self::open_with_clock(engine, settings, notifier, clock)
    }

    /// `open`, with the clock that rate limits count in (a manual one in tests).
    fn open_with_clock(
        engine: Engine,
        settings: &IdentityConfig,
        notifier: &NotifierConfig,
        clock: Clock,
    ) -> Result<Self> {
        let c = settings.clone();
        c.validate().map_err(IdentityError::Internal)?;
        let data_dir = engine.config().data_dir.clone();
        let secrets = Secrets::load(c.key.as_deref(), &data_dir)?;
        let notifier = Notifier::from_config(notifier, &data_dir)?;
        let send_window = Duration::from_secs(c.code_send_window_secs);
        let fail_window = Duration::from_secs(c.failed_login_window_secs);
        let code_window = Duration::from_secs(c.code_failure_window_secs);
        let inner = Inner {
            engine,
            secrets,
            notifier,
            hashers: Hashers::for_this_machine(),
            sends_by_identifier: Limiter::new(c.code_sends_per_identifier, send_window, clock.clone()),
            sends_by_ip: Limiter::new(c.code_sends_per_ip, send_window, clock.clone()),
            login_failures: Failures::new(
                failures::LOGIN_KINDS,
                c.failed_logins_per_identifier,
                c.failed_logins_per_ip,
                fail_window,
                &clock,
            ),
            code_failures: Failures::new(
                failures::CODE_KINDS,
                c.code_failures_per_identifier,
                c.code_failures_per_ip,
                code_window,
                &clock,
            ),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            config: c,
            clock,
        };
        failures::load_all(inner.db(), &inner.failure_sets())?;
        Ok(Identity { inner: Arc::new(inner) })
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.inner.config
    }

    /// Run store work on the blocking pool.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| IdentityError::Internal(format!("blocking task: {e}")))?
    }
}

impl Inner {
    fn db(&self) -> &Db {
        self.engine.db()
    }

    fn now_secs(&self) -> u64 {
        self.clock.now_secs()
    }

    fn lock(&self, id_hash: &[u8; 32]) -> MutexGuard<'_, ()> {
        let i = u16::from_le_bytes([id_hash[0], id_hash[1]]) as usize % STRIPES;
        self.stripes[i].lock().expect("identity lock poisoned")
    }

    fn codes(&self) -> codes::Codes<'_> {
        codes::Codes { db: self.db(), secrets: &self.secrets, now_ms: self.clock.now_ms() }
    }

    /// Every set of persisted failure limits (for loading and sweeping their records).
    fn failure_sets(&self) -> [&Failures; 2] {
        [&self.login_failures, &self.code_failures]
    }
}

fn id_hash_of(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| IdentityError::Internal("an account record has a damaged identifier hash".into()))
}

/// RFC 3339 in UTC, as the API shows every time.
pub fn rfc3339_secs(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

pub fn rfc3339_micros(unix_micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_micros) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// An identity over a fresh store, for unit tests of flows that need one.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::metrics::Metrics;

    /// Counting rate-limit time on `clock`.
    pub fn identity_in(dir: &std::path::Path, clock: Clock) -> Identity {
        let engine = Engine::open(crate::engine::EngineConfig::new(dir), Arc::new(Metrics::new())).unwrap();
        Identity::open_with_clock(engine, &IdentityConfig::default(), &NotifierConfig::default(), clock).unwrap()
    }

    /// A test address and password.
    pub const EMAIL: &str = "ada@example.com";
    pub const PASSWORD: &str = "correct horse";

    /// `EMAIL` registered with `PASSWORD` from a test address: the account and the keyed hash
    /// of its identifier.
    pub async fn registered(identity: &Identity) -> (crate::store::keys::AccountId, [u8; 32]) {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let id_hash = identity.inner.secrets.lookup(&Identifier::parse("identifier", EMAIL).unwrap());
        let code = identity.inner.codes().issue(&id_hash, Purpose::Register, 600, 5).unwrap();
        let r = Registration { identifier: EMAIL.into(), password: PASSWORD.into(), code, nickname: None };
        (identity.register(r, ip).await.unwrap(), id_hash)
    }
}
