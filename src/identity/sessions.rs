//! Sessions: a bearer token of 256 bits from the OS, kept only as its BLAKE3 hash, opening one
//! device record of one account. A session lives `session_ttl_secs` past its last use; the
//! device list is the account's live sessions.

use std::net::IpAddr;

use rand::RngCore;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::Serialize;

use super::activity::EventKind;
use super::error::{IdentityError, Result};
use super::failures::Attempt;
use super::identifiers::Identifier;
use super::{rfc3339_secs, Identity, Inner};
use crate::store::identity_keys::{self as ik, DeviceId, DeviceRecord, EventDevice, HexBytes, SessionRecord};
use crate::store::keys::AccountId;
use crate::store::CF_SESSIONS;

/// Longest device name, model or OS string we keep.
const MAX_DEVICE_FIELD: usize = 128;

/// What a client says about itself at sign-in.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    pub model: String,
    pub os: String,
}

impl DeviceInfo {
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [("device.name", &self.name), ("device.model", &self.model), ("device.os", &self.os)] {
            if v.chars().count() > MAX_DEVICE_FIELD || v.chars().any(char::is_control) {
                return Err(IdentityError::field(
                    field,
                    format!("at most {MAX_DEVICE_FIELD} characters, no control characters"),
                ));
            }
        }
        if self.name.trim().is_empty() {
            return Err(IdentityError::field("device.name", "must not be empty"));
        }
        Ok(())
    }
}

/// An authenticated request's session.
#[derive(Clone, Debug)]
pub struct Session {
    pub account: AccountId,
    pub device_id: DeviceId,
    pub token_hash: [u8; 32],
}

pub struct NewSession {
    pub token: String,
    pub account: AccountId,
    pub device_id: DeviceId,
    pub expires_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceView {
    pub device_id: String,
    pub name: String,
    pub model: String,
    pub os: String,
    pub last_seen: String,
    /// The device of the session that asked.
    pub current: bool,
    /// An app password rather than a signed-in client.
    pub app_password: bool,
}

/// `None` for anything that is not 64 hex digits: such a token cannot exist.
pub(super) fn token_hash(token: &str) -> Option<[u8; 32]> {
    let mut raw = [0u8; 32];
    if token.len() != 64 {
        return None;
    }
    hex::decode_to_slice(token, &mut raw).ok()?;
    Some(*blake3::hash(&raw).as_bytes())
}

impl Inner {
    fn ttl(&self) -> u64 {
        self.config.session_ttl_secs
    }

    /// App passwords live until revoked; sessions a TTL past their last use.
    pub(super) fn alive(&self, d: &DeviceRecord, now: u64) -> bool {
        d.app_password || now < d.last_seen.saturating_add(self.ttl())
    }

    pub(super) fn device(&self, a: &AccountId, d: &DeviceId) -> Result<Option<DeviceRecord>> {
        Ok(self.db().get(CF_SESSIONS, &ik::device_key(a, d))?.and_then(|v| ik::decode_device(&v)))
    }

    pub(super) fn event_device(&self, a: &AccountId, d: &DeviceId) -> Result<Option<EventDevice>> {
        Ok(self.device(a, d)?.map(|r| event_device(d, &r)))
    }

    /// Add a new device and its session to `batch`; the token is returned once, never kept.
    pub(super) fn add_session(
        &self,
        batch: &mut WriteBatch,
        a: &AccountId,
        info: &DeviceInfo,
        now: u64,
        app_password: bool,
    ) -> (String, DeviceId) {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let hash = *blake3::hash(&raw).as_bytes();
        let device_id = DeviceId::random();
        let dev = DeviceRecord {
            name: info.name.clone(),
            model: info.model.clone(),
            os: info.os.clone(),
            created_at: now,
            last_seen: now,
            token_hash: HexBytes(hash.to_vec()),
            app_password,
        };
        let cf = self.db().cf(CF_SESSIONS);
        batch.put_cf(cf, ik::session_key(&hash), ik::encode_session(&SessionRecord { account: *a, device: device_id }));
        batch.put_cf(cf, ik::device_key(a, &device_id), ik::encode_device(&dev));
        (hex::encode(raw), device_id)
    }

    /// Add to `batch` the removal of one device and its session.
    pub(super) fn remove_device(
        &self,
        batch: &mut WriteBatch,
        a: &AccountId,
        d: &DeviceId,
        rec: Option<&DeviceRecord>,
    ) {
        let cf = self.db().cf(CF_SESSIONS);
        batch.delete_cf(cf, ik::device_key(a, d));
        if let Some(hash) = rec.and_then(|r| <[u8; 32]>::try_from(r.token_hash.0.as_slice()).ok()) {
            batch.delete_cf(cf, ik::session_key(&hash));
        }
    }

    /// Every device of the account (also expired and unreadable ones), oldest key first.
    pub(super) fn devices(&self, a: &AccountId) -> Result<Vec<(DeviceId, Option<DeviceRecord>)>> {
        let prefix = ik::device_prefix(a);
        let db = self.db();
        let mut out = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_SESSIONS), IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(d) = ik::device_id_from_key(&k) {
                out.push((d, ik::decode_device(&v)));
            }
        }
        Ok(out)
    }

    /// Add to `batch` the end of every session of the account but `keep`'s.
    pub(super) fn revoke_devices(&self, batch: &mut WriteBatch, a: &AccountId, keep: Option<DeviceId>) -> Result<()> {
        for (d, rec) in self.devices(a)? {
            if Some(d) != keep {
                self.remove_device(batch, a, &d, rec.as_ref());
            }
        }
        Ok(())
    }

    /// The session `hash` opens, if it is of the kind asked for: a bearer token never opens an
    /// app password's session, nor an app password a bearer session.
    pub(super) fn authenticate(&self, hash: [u8; 32], app_password: bool) -> Result<Option<Session>> {
        let Some(s) = self.db().get(CF_SESSIONS, &ik::session_key(&hash))?.and_then(|v| ik::decode_session(&v)) else {
            return Ok(None);
        };
        let Some(account) = self.account(&s.account)? else {
            return Ok(None);
        };
        let now = self.now_secs();
        let device = self.device(&s.account, &s.device)?;
        if device.as_ref().is_some_and(|d| d.app_password != app_password) {
            return Ok(None);
        }
        match device {
            Some(d) if self.alive(&d, now) && d.token_hash.0 == hash => {
                // Touch at most every minute (sooner for short TTLs): one write per active
                // session per minute, not one per request.
                let every = (self.ttl() / 10).min(60);
                if now.saturating_sub(d.last_seen) >= every {
                    self.touch(&account.id_hash.0, &s.account, &s.device, now)?;
                }
                Ok(Some(Session { account: s.account, device_id: s.device, token_hash: hash }))
            }
            other => {
                let id_hash = super::id_hash_of(&account.id_hash.0)?;
                let _held = self.lock(&id_hash);
                let mut batch = WriteBatch::default();
                self.remove_device(&mut batch, &s.account, &s.device, other.as_ref());
                batch.delete_cf(self.db().cf(CF_SESSIONS), ik::session_key(&hash));
                self.db().commit(batch)?;
                Ok(None)
            }
        }
    }

    /// Move `last_seen` forward, under the lock so that a concurrent sign-out is not undone.
    /// Unsynced: losing a touch in a crash only makes a session look a minute older.
    fn touch(&self, id_hash: &[u8], a: &AccountId, d: &DeviceId, now: u64) -> Result<()> {
        let _held = self.lock(&super::id_hash_of(id_hash)?);
        if let Some(mut rec) = self.device(a, d)? {
            rec.last_seen = rec.last_seen.max(now);
            let mut batch = WriteBatch::default();
            batch.put_cf(self.db().cf(CF_SESSIONS), ik::device_key(a, d), ik::encode_device(&rec));
            self.db().write_unsynced(batch)?;
        }
        Ok(())
    }
}

fn event_device(d: &DeviceId, r: &DeviceRecord) -> EventDevice {
    EventDevice { device_id: d.to_string(), name: r.name.clone(), model: r.model.clone(), os: r.os.clone() }
}

impl Identity {
    /// Sign in. Unknown identifier and wrong password answer alike, after the same Argon2
    /// work; the attempt counts toward the lockouts before it is verified (and is given back
    /// if it succeeds), and the lockouts refuse even a correct password.
    pub async fn login(
        &self,
        identifier: &str,
        password: String,
        device: DeviceInfo,
        ip: IpAddr,
    ) -> Result<NewSession> {
        let id = Identifier::parse("identifier", identifier)?;
        device.validate()?;
        let id_hash = self.inner.secrets.lookup(&id);
        let attempt = self.inner.login_failures.begin(&id_hash, ip)?;
        let proven = self.prove_password(id_hash, password).await?;
        self.blocking(move |i| i.finish_login(&id_hash, proven, &device, ip, attempt)).await
    }

    /// The account and the password hash that `password` was verified against, or `None` if
    /// it is wrong or there is no account (after a dummy verification of the same cost).
    async fn prove_password(&self, id_hash: [u8; 32], password: String) -> Result<Option<(AccountId, String)>> {
        let found = self.blocking(move |i| i.account_by_hash(&id_hash)).await?.map(|(a, rec)| (a, rec.password));
        let ok = self.inner.hashers.verify(password, found.as_ref().map(|(_, phc)| phc.clone())).await?;
        Ok(found.filter(|_| ok))
    }

    /// The session a bearer token opens, if it is live. Ends it if it has expired.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Session>> {
        let Some(hash) = token_hash(token) else {
            return Ok(None);
        };
        self.blocking(move |i| i.authenticate(hash, false)).await
    }

    pub async fn logout(&self, s: &Session, ip: IpAddr) -> Result<()> {
        let s = s.clone();
        self.blocking(move |i| i.sign_out(&s, &s.device_id, EventKind::Logout, ip)).await
    }

    /// `NotFound` for a device that is not this account's (or no longer signed in).
    pub async fn sign_out_device(&self, s: &Session, device: &str, ip: IpAddr) -> Result<()> {
        let d: DeviceId = device.parse().map_err(|_| IdentityError::NotFound)?;
        let s = s.clone();
        self.blocking(move |i| i.sign_out(&s, &d, EventKind::DeviceSignedOut, ip)).await
    }

    pub async fn devices(&self, s: &Session) -> Result<Vec<DeviceView>> {
        let s = s.clone();
        self.blocking(move |i| {
            let now = i.now_secs();
            let mut out: Vec<DeviceView> = i
                .devices(&s.account)?
                .into_iter()
                .filter_map(|(d, rec)| rec.filter(|r| i.alive(r, now)).map(|r| (d, r)))
                .map(|(d, r)| DeviceView {
                    device_id: d.to_string(),
                    last_seen: rfc3339_secs(r.last_seen as i64),
                    current: d == s.device_id,
                    app_password: r.app_password,
                    name: r.name,
                    model: r.model,
                    os: r.os,
                })
                .collect();
            out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.device_id.cmp(&b.device_id)));
            Ok(out)
        })
        .await
    }
}

impl Inner {
    /// The end of a sign-in, under the identifier's lock: a session only for a password
    /// proven against the hash the account still has. The account may have been deleted, or
    /// its password changed or reset (ending every session) while Argon2 ran; a session made
    /// from the old password then would outlive the revocation. Anything else is a failure:
    /// counted, stored and, for an existing account, shown in its activity, all unsynced, so
    /// that a failure costs the same whether or not the account exists (docs/decisions.md,
    /// "Passwords and timing").
    fn finish_login(
        &self,
        id_hash: &[u8; 32],
        proven: Option<(AccountId, String)>,
        device: &DeviceInfo,
        ip: IpAddr,
        attempt: Attempt,
    ) -> Result<NewSession> {
        let _held = self.lock(id_hash);
        let now_found = self.account_by_hash(id_hash)?;
        let mut batch = WriteBatch::default();
        match (proven, now_found) {
            (Some((was, phc)), Some((account, rec))) if account == was && rec.password == phc => {
                let now = self.now_secs();
                let (token, device_id) = self.add_session(&mut batch, &account, device, now, false);
                let ev = EventDevice {
                    device_id: device_id.to_string(),
                    name: device.name.clone(),
                    model: device.model.clone(),
                    os: device.os.clone(),
                };
                self.record_event(&mut batch, &account, EventKind::Login, ip, Some(ev))?;
                self.db().commit(batch)?;
                self.login_failures.succeeded(attempt);
                let expires_at = rfc3339_secs(now.saturating_add(self.ttl()) as i64);
                Ok(NewSession { token, account, device_id, expires_at })
            }
            (_, now_found) => {
                self.login_failures.failed(self.db(), &mut batch, attempt);
                if let Some((account, _)) = now_found {
                    self.record_event(&mut batch, &account, EventKind::LoginFailed, ip, None)?;
                }
                self.db().write_unsynced(batch)?;
                Err(IdentityError::BadCredentials)
            }
        }
    }

    fn sign_out(&self, s: &Session, d: &DeviceId, kind: EventKind, ip: IpAddr) -> Result<()> {
        let rec = self.account(&s.account)?.ok_or(IdentityError::NotFound)?;
        let id_hash = super::id_hash_of(&rec.id_hash.0)?;
        let _held = self.lock(&id_hash);
        let Some(dev) = self.device(&s.account, d)?.filter(|r| self.alive(r, self.now_secs())) else {
            return Err(IdentityError::NotFound);
        };
        let mut batch = WriteBatch::default();
        self.remove_device(&mut batch, &s.account, d, Some(&dev));
        self.record_event(&mut batch, &s.account, kind, ip, Some(event_device(d, &dev)))?;
        self.db().commit(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{identity_in, registered, EMAIL};
    use super::*;
    use crate::clock::Clock;
    use crate::identity::Purpose;

    #[test]
    fn only_well_formed_tokens_hash() {
        assert!(token_hash(&"ab".repeat(32)).is_some());
        assert!(token_hash("short").is_none());
        assert!(token_hash(&"zz".repeat(32)).is_none());
        assert!(token_hash(&"é".repeat(32)).is_none());
    }

    #[test]
    fn device_fields_are_bounded() {
        let ok = DeviceInfo { name: "Ada's phone".into(), model: "P8".into(), os: "Android 15".into() };
        assert!(ok.validate().is_ok());
        assert!(DeviceInfo { name: "".into(), ..ok.clone() }.validate().is_err());
        assert!(DeviceInfo { model: "x".repeat(129), ..ok.clone() }.validate().is_err());
        assert!(DeviceInfo { os: "a\nb".into(), ..ok }.validate().is_err());
    }

    /// Issue 11: a sign-in whose password was verified before a reset opened a session after
    /// the reset had ended them all (only the account id was looked at again). Here the reset
    /// runs between the verification and the end of the sign-in, as it can while Argon2 runs.
    #[tokio::test]
    async fn a_reset_while_a_sign_in_verifies_ends_that_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let identity = identity_in(dir.path(), Clock::system());
        let i = &identity.inner;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (email, (account, id_hash)) = (EMAIL, registered(&identity).await);
        let device = DeviceInfo { name: "phone".into(), model: String::new(), os: String::new() };

        let attempt = i.login_failures.begin(&id_hash, ip).unwrap();
        let proven = identity.prove_password(id_hash, "correct horse".into()).await.unwrap();
        assert_eq!(proven.as_ref().map(|(a, _)| *a), Some(account), "the old password was right");
        let code = i.codes().issue(&id_hash, Purpose::ResetPassword, 600, 5).unwrap();
        identity.reset_password(email, code, "battery staple".into(), ip).await.unwrap();
        let late = i.finish_login(&id_hash, proven, &device, ip, attempt);
        assert!(matches!(late, Err(IdentityError::BadCredentials)), "{:?}", late.map(|s| s.device_id));
        assert!(i.devices(&account).unwrap().is_empty(), "no session outlives the reset");

        // Without a reset in between, the same steps sign in.
        let attempt = i.login_failures.begin(&id_hash, ip).unwrap();
        let proven = identity.prove_password(id_hash, "battery staple".into()).await.unwrap();
        let s = i.finish_login(&id_hash, proven, &device, ip, attempt).unwrap();
        assert_eq!(s.account, account);
        assert_eq!(i.devices(&account).unwrap().len(), 1);
    }
}
