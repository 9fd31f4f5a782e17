//! Clearing away what expired and will never be presented again: codes past their TTL (every
//! identifier that ever asked for a code leaves one behind, also strangers' that never sign
//! up), sessions past theirs (a phone that was wiped never logs out), and stored failures
//! that have left their rate-limit window.
//!
//! Each candidate is re-read under its lock stripe before it goes, so that a code issued or a
//! session used since the scan saw it is never removed. Deletes are unsynced: a sweep lost in a
//! crash is simply done again.

use std::time::Duration;

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::error::Result;
use super::failures;
use super::{id_hash_of, Identity, Inner};
use crate::store::identity_keys::{self as ik};
use crate::store::keys::AccountId;
use crate::store::{CF_CODES, CF_SESSIONS};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub codes: usize,
    pub sessions: usize,
    pub failures: usize,
}

impl Inner {
    fn sweep_codes(&self, now_ms: u64) -> Result<usize> {
        let db = self.db();
        let mut stale = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_CODES), IteratorMode::Start) {
            let (k, v) = item?;
            if ik::decode_code(&v).is_none_or(|c| c.expires_at_ms <= now_ms) {
                stale.push(k);
            }
        }
        let mut n = 0;
        for k in stale {
            let Some(id_hash) = k.get(..32).and_then(|h| <[u8; 32]>::try_from(h).ok()) else {
                continue;
            };
            let _held = self.lock(&id_hash);
            let still_stale =
                db.get(CF_CODES, &k)?.is_some_and(|v| ik::decode_code(&v).is_none_or(|c| c.expires_at_ms <= now_ms));
            if still_stale {
                let mut batch = WriteBatch::default();
                batch.delete_cf(db.cf(CF_CODES), &k);
                db.write_unsynced(batch)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn sweep_sessions(&self, now: u64) -> Result<usize> {
        let db = self.db();
        let mut stale = Vec::new();
        let from = [b'd'];
        for item in db.raw().iterator_cf(db.cf(CF_SESSIONS), IteratorMode::From(&from, Direction::Forward)) {
            let (k, v) = item?;
            let Some(device) = ik::device_id_from_key(&k) else {
                break;
            };
            if ik::decode_device(&v).is_none_or(|d| !self.alive(&d, now)) {
                let account = AccountId(k[1..17].try_into().expect("device keys hold an account id"));
                stale.push((account, device));
            }
        }
        let mut n = 0;
        for (account, device) in stale {
            let Some(rec) = self.account(&account)? else {
                continue;
            };
            let _held = self.lock(&id_hash_of(&rec.id_hash.0)?);
            let current = db.get(CF_SESSIONS, &ik::device_key(&account, &device))?;
            let Some(v) = current else { continue };
            let dev = ik::decode_device(&v);
            if dev.as_ref().is_none_or(|d| !self.alive(d, now)) {
                let mut batch = WriteBatch::default();
                self.remove_device(&mut batch, &account, &device, dev.as_ref());
                db.write_unsynced(batch)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Identity {
    /// One pass over codes and sessions.
    pub async fn sweep(&self) -> Result<Swept> {
        self.blocking(|i| {
            let swept = Swept {
                codes: i.sweep_codes(i.clock.now_ms())?,
                sessions: i.sweep_sessions(i.now_secs())?,
                failures: failures::sweep(i.db(), &i.failure_sets())?,
            };
            let counted = &i.engine.metrics().swept;
            for (what, n) in [("codes", swept.codes), ("sessions", swept.sessions), ("failures", swept.failures)] {
                counted.with_label_values(&[what]).inc_by(n as u64);
            }
            Ok(swept)
        })
        .await
    }

    /// Sweep every `sweep_interval_secs` until the returned task is aborted.
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let identity = self.clone();
        let every = Duration::from_secs(self.inner.config.sweep_interval_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match identity.sweep().await {
                    Ok(s) if s != Swept::default() => {
                        tracing::debug!(codes = s.codes, sessions = s.sessions, failures = s.failures, "swept expired")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "sweeping expired codes and sessions failed")
                    }
                }
            }
        })
    }
}
