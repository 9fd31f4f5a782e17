//! Login activity: what happened to the account, when, from which address and device, kept
//! newest first and trimmed to the configured number of events.

use std::net::IpAddr;

use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::Serialize;

use super::error::Result;
use super::{rfc3339_micros, Identity, Inner};
use crate::store::identity_keys::{self as ik, EventDevice, EventRecord};
use crate::store::keys::AccountId;
use crate::store::CF_EVENTS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    AccountCreated,
    Login,
    LoginFailed,
    Logout,
    DeviceSignedOut,
    PasswordChanged,
    PasswordReset,
    DetailsChanged,
    AppPasswordCreated,
    AppPasswordRevoked,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AccountCreated => "account_created",
            EventKind::Login => "login",
            EventKind::LoginFailed => "login_failed",
            EventKind::Logout => "logout",
            EventKind::DeviceSignedOut => "device_signed_out",
            EventKind::PasswordChanged => "password_changed",
            EventKind::PasswordReset => "password_reset",
            EventKind::DetailsChanged => "details_changed",
            EventKind::AppPasswordCreated => "app_password_created",
            EventKind::AppPasswordRevoked => "app_password_revoked",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EventView {
    pub at: String,
    pub kind: String,
    pub ip: String,
    pub device: Option<EventDevice>,
}

impl Inner {
    /// Add an event to `batch`, and drop the account's oldest events beyond the kept number.
    pub(super) fn record_event(
        &self,
        batch: &mut WriteBatch,
        account: &AccountId,
        kind: EventKind,
        ip: IpAddr,
        device: Option<EventDevice>,
    ) -> Result<()> {
        let at = self.clock.unique_micros() as i64;
        let rec = EventRecord { at, kind: kind.as_str().into(), ip: ip.to_string(), device };
        let cf = self.db().cf(CF_EVENTS);
        batch.put_cf(cf, ik::event_key(account, at), ik::encode_event(&rec));
        let keep_old = self.config.activity_kept.saturating_sub(1);
        for (n, key) in self.event_keys(account)?.into_iter().enumerate() {
            if n >= keep_old {
                batch.delete_cf(cf, key);
            }
        }
        Ok(())
    }

    /// Keys of the account's events, newest first.
    pub(super) fn event_keys(&self, account: &AccountId) -> Result<Vec<Box<[u8]>>> {
        let prefix = ik::event_prefix(account);
        let db = self.db();
        let mut out = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_EVENTS), IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(k);
        }
        Ok(out)
    }

    fn events(&self, account: &AccountId) -> Result<Vec<EventRecord>> {
        let prefix = ik::event_prefix(account);
        let db = self.db();
        let mut out = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_EVENTS), IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= self.config.activity_kept {
                break;
            }
            // A damaged event is skipped rather than hiding the whole list.
            if let Some(e) = ik::decode_event(&v) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

impl Identity {
    /// Newest first.
    pub async fn activity(&self, account: AccountId) -> Result<Vec<EventView>> {
        let events = self.blocking(move |i| i.events(&account)).await?;
        Ok(events
            .into_iter()
            .map(|e| EventView { at: rfc3339_micros(e.at), kind: e.kind, ip: e.ip, device: e.device })
            .collect())
    }
}
