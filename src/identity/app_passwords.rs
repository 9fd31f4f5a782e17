//! App passwords: what a DAV client (rclone, a file manager, a phone's contacts app) signs in
//! with, so that nobody types the account password into them.
//!
//! An app password is a device whose session token is the password: a 256-bit secret from the
//! OS, shown once and kept only as its BLAKE3 hash, named by the user. It shows in the device
//! list, is revoked like a device, and goes with every other session on a password change or
//! reset. It differs from a sign-in in three ways: it never expires from disuse; it opens only
//! Basic authentication (identifier + app password), never the bearer API, so a leaked rclone
//! configuration cannot manage the account; and a bearer token is never taken as one.
//!
//! A Basic attempt counts toward the same lockout as a sign-in, before it is checked: parallel
//! guesses are counted as they come, and a correct password is refused while locked.

use std::net::IpAddr;

use rocksdb::WriteBatch;
use serde::Serialize;

use super::activity::EventKind;
use super::error::{IdentityError, Result};
use super::identifiers::Identifier;
use super::sessions::{token_hash, DeviceInfo, Session};
use super::{rfc3339_secs, Identity};
use crate::store::identity_keys::{DeviceId, EventDevice};

/// Longest app password name.
const MAX_NAME: usize = 64;
/// App passwords an account may hold at once.
pub const MAX_PER_ACCOUNT: usize = 50;

/// A new app password: the secret, shown once.
#[derive(Clone, Debug, Serialize)]
pub struct NewAppPassword {
    pub id: String,
    pub name: String,
    pub password: String,
    pub created_at: String,
}

/// An app password as its owner lists it: never the secret.
#[derive(Clone, Debug, Serialize)]
pub struct AppPassword {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used: String,
}

impl Identity {
    /// Make an app password named `name` for the session's account.
    pub async fn create_app_password(&self, s: &Session, name: String, ip: IpAddr) -> Result<NewAppPassword> {
        let info = DeviceInfo { name: name.trim().to_string(), model: String::new(), os: "app password".into() };
        if info.name.chars().count() > MAX_NAME {
            return Err(IdentityError::field("name", format!("at most {MAX_NAME} characters")));
        }
        info.validate().map_err(|_| IdentityError::field("name", "1 to 64 characters, no control characters"))?;
        let s = s.clone();
        self.blocking(move |i| {
            let rec = i.account(&s.account)?.ok_or(IdentityError::NotFound)?;
            let _held = i.lock(&super::id_hash_of(&rec.id_hash.0)?);
            let held = i.devices(&s.account)?.into_iter().filter(|(_, r)| r.as_ref().is_some_and(|r| r.app_password));
            if held.count() >= MAX_PER_ACCOUNT {
                return Err(IdentityError::field(
                    "name",
                    format!("an account has at most {MAX_PER_ACCOUNT} app passwords"),
                ));
            }
            let now = i.now_secs();
            let mut batch = WriteBatch::default();
            let (password, id) = i.add_session(&mut batch, &s.account, &info, now, true);
            let ev =
                EventDevice { device_id: id.to_string(), name: info.name.clone(), model: String::new(), os: info.os };
            i.record_event(&mut batch, &s.account, EventKind::AppPasswordCreated, ip, Some(ev))?;
            i.db().commit(batch)?;
            Ok(NewAppPassword { id: id.to_string(), name: info.name, password, created_at: rfc3339_secs(now as i64) })
        })
        .await
    }

    /// The account's app passwords, newest first.
    pub async fn app_passwords(&self, s: &Session) -> Result<Vec<AppPassword>> {
        let account = s.account;
        self.blocking(move |i| {
            let mut out: Vec<(u64, AppPassword)> = i
                .devices(&account)?
                .into_iter()
                .filter_map(|(d, r)| r.filter(|r| r.app_password).map(|r| (d, r)))
                .map(|(d, r)| {
                    let view = AppPassword {
                        id: d.to_string(),
                        name: r.name,
                        created_at: rfc3339_secs(r.created_at as i64),
                        last_used: rfc3339_secs(r.last_seen as i64),
                    };
                    (r.created_at, view)
                })
                .collect();
            out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
            Ok(out.into_iter().map(|(_, v)| v).collect())
        })
        .await
    }

    /// Revoke app password `id`; `NotFound` unless it is one of the account's.
    pub async fn revoke_app_password(&self, s: &Session, id: &str, ip: IpAddr) -> Result<()> {
        let d: DeviceId = id.parse().map_err(|_| IdentityError::NotFound)?;
        let s = s.clone();
        self.blocking(move |i| {
            let rec = i.account(&s.account)?.ok_or(IdentityError::NotFound)?;
            let _held = i.lock(&super::id_hash_of(&rec.id_hash.0)?);
            let dev = i.device(&s.account, &d)?.filter(|r| r.app_password).ok_or(IdentityError::NotFound)?;
            let mut batch = WriteBatch::default();
            i.remove_device(&mut batch, &s.account, &d, Some(&dev));
            let ev = EventDevice { device_id: d.to_string(), name: dev.name, model: dev.model, os: dev.os };
            i.record_event(&mut batch, &s.account, EventKind::AppPasswordRevoked, ip, Some(ev))?;
            i.db().commit(batch)?;
            Ok(())
        })
        .await
    }

    /// Basic authentication: the session `password` opens if it is an app password of the
    /// account `identifier` names. The account password never works here. Every failure
    /// answers alike (`BadCredentials`), counts toward the sign-in lockout and shows in the
    /// account's activity.
    pub async fn authenticate_basic(&self, identifier: &str, password: &str, ip: IpAddr) -> Result<Session> {
        let id = Identifier::parse("identifier", identifier).map_err(|_| IdentityError::BadCredentials)?;
        let id_hash = self.inner.secrets.lookup(&id);
        let attempt = self.inner.login_failures.begin(&id_hash, ip)?;
        let hash = token_hash(password);
        self.blocking(move |i| {
            let owner = i.account_by_hash(&id_hash)?;
            let session = match hash {
                Some(h) => i.authenticate(h, true)?,
                None => None,
            };
            match (owner, session) {
                (Some((account, _)), Some(s)) if s.account == account => {
                    i.login_failures.succeeded(attempt);
                    Ok(s)
                }
                (owner, _) => {
                    let mut batch = WriteBatch::default();
                    i.login_failures.failed(i.db(), &mut batch, attempt);
                    if let Some((account, _)) = owner {
                        i.record_event(&mut batch, &account, EventKind::LoginFailed, ip, None)?;
                    }
                    i.db().write_unsynced(batch)?;
                    Err(IdentityError::BadCredentials)
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::identity::testing::{identity_in, registered, EMAIL, PASSWORD};

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    async fn signed_in(identity: &Identity) -> Session {
        let info = DeviceInfo { name: "phone".into(), model: String::new(), os: String::new() };
        let s = identity.login(EMAIL, PASSWORD.into(), info, IP).await.unwrap();
        identity.authenticate(&s.token).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn an_app_password_opens_basic_only_and_outlives_the_session_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(1_700_000_000_000);
        let identity = identity_in(dir.path(), clock.clone());
        registered(&identity).await;
        let s = signed_in(&identity).await;
        let app = identity.create_app_password(&s, "rclone on my laptop".into(), IP).await.unwrap();
        let via_basic = identity.authenticate_basic(EMAIL, &app.password, IP).await.unwrap();
        assert_eq!((via_basic.account, via_basic.device_id.to_string()), (s.account, app.id.clone()));
        assert!(identity.authenticate(&app.password).await.unwrap().is_none(), "not a bearer token");
        let listed = identity.app_passwords(&s).await.unwrap();
        assert_eq!((listed.len(), listed[0].name.as_str()), (1, "rclone on my laptop"));
        // A year of disuse later it still works.
        clock.advance(Duration::from_secs(365 * 24 * 3600));
        assert!(identity.authenticate_basic(EMAIL, &app.password, IP).await.is_ok());
        // The account password, a bearer token and a revoked app password do not.
        let s = signed_in(&identity).await;
        for wrong in [PASSWORD.to_string(), "00".repeat(32)] {
            let e = identity.authenticate_basic(EMAIL, &wrong, IP).await.unwrap_err();
            assert!(matches!(e, IdentityError::BadCredentials), "{e:?}");
        }
        identity.revoke_app_password(&s, &app.id, IP).await.unwrap();
        assert!(identity.authenticate_basic(EMAIL, &app.password, IP).await.is_err());
        assert!(matches!(identity.revoke_app_password(&s, &app.id, IP).await, Err(IdentityError::NotFound)));
    }

    #[tokio::test]
    async fn basic_failures_count_toward_the_sign_in_lockout() {
        let dir = tempfile::tempdir().unwrap();
        let identity = identity_in(dir.path(), Clock::manual(1_700_000_000_000));
        registered(&identity).await;
        let s = signed_in(&identity).await;
        let app = identity.create_app_password(&s, "dav".into(), IP).await.unwrap();
        let limit = identity.config().failed_logins_per_identifier;
        for _ in 0..limit {
            let _ = identity.authenticate_basic(EMAIL, "wrong", IP).await;
        }
        let e = identity.authenticate_basic(EMAIL, &app.password, IP).await.unwrap_err();
        assert!(matches!(e, IdentityError::RateLimited { .. }), "locked even for the right one: {e:?}");
    }
}
