//! What one client, or all of them together, may hold of the server at once, and how long any
//! wait on a client may last. Every transfer (an upload or a download body) takes a permit
//! from its account's allowance and from the server's; past either, the request is answered
//! `429` with `Retry-After` before any byte of its body is read.
//!
//! Invariant, checked by `LimitsConfig::validate`: the blocking threads that transfers can hold
//! (two per upload: cutter and writer; one per download: its reader) stay below tokio's
//! blocking pool size by `RESERVED_BLOCKING` threads, so authentication and every small request
//! always find a thread: they never queue behind transfers, however slow their clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::error::{ApiError, ErrorCode};
use crate::store::keys::AccountId;

/// Blocking threads an upload holds while its body arrives.
const THREADS_PER_UPLOAD: usize = 2;
const THREADS_PER_DOWNLOAD: usize = 1;
/// Threads left for everything that is not a transfer: sessions, small reads and writes,
/// commits, GC.
pub const RESERVED_BLOCKING: usize = 128;
/// tokio's blocking pool, set explicitly where the runtime is built.
pub const BLOCKING_THREADS: usize = 512;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections at once; the accept loop waits for one to close past this.
    pub max_connections: usize,
    /// Uploads (file bodies, chunks, manifests) in progress at once, per account and in all.
    pub uploads_per_account: usize,
    pub uploads: usize,
    /// Downloads whose body is still being sent, per account and in all.
    pub downloads_per_account: usize,
    pub downloads: usize,
    /// A request's head (or the next one on a kept-alive connection) must arrive within this.
    pub header_read_secs: u64,
    /// A request body that sends nothing for this long is ended with `408`.
    pub body_idle_secs: u64,
    /// A response that the client does not read for this long has its connection closed.
    pub write_stall_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            uploads_per_account: 8,
            uploads: 64,
            downloads_per_account: 8,
            downloads: 128,
            header_read_secs: 30,
            body_idle_secs: 30,
            write_stall_secs: 30,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let held = self.uploads * THREADS_PER_UPLOAD + self.downloads * THREADS_PER_DOWNLOAD;
        if held + RESERVED_BLOCKING > BLOCKING_THREADS {
            return Err(format!(
                "[limits] uploads and downloads could hold {held} blocking threads; at most {} may be",
                BLOCKING_THREADS - RESERVED_BLOCKING
            ));
        }
        if [self.uploads_per_account, self.uploads, self.downloads_per_account, self.downloads, self.max_connections]
            .contains(&0)
        {
            return Err("[limits] every count must be at least 1".into());
        }
        if self.header_read_secs == 0 || self.body_idle_secs == 0 || self.write_stall_secs == 0 {
            return Err("[limits] timeouts must be at least 1 second".into());
        }
        Ok(())
    }

    pub fn body_idle(&self) -> Duration {
        Duration::from_secs(self.body_idle_secs)
    }

    pub fn write_stall(&self) -> Duration {
        Duration::from_secs(self.write_stall_secs)
    }
}

/// One kind of transfer's allowance: so many per account, so many in all.
pub struct Allowance {
    kind: &'static str,
    per_account: usize,
    total: usize,
    /// std Mutex: a counter update, never held across an `.await`.
    held: Arc<Mutex<Held>>,
    /// `cairn_transfers_in_progress{kind}`, kept with `held`.
    gauge: prometheus::IntGauge,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_account: HashMap<AccountId, usize>,
}

/// A transfer in progress; dropping it gives its place back.
pub struct Permit {
    account: AccountId,
    held: Arc<Mutex<Held>>,
    gauge: prometheus::IntGauge,
}

impl Allowance {
    pub fn new(kind: &'static str, per_account: usize, total: usize, gauge: prometheus::IntGauge) -> Self {
        Allowance { kind, per_account, total, held: Arc::default(), gauge }
    }

    /// A place for one more transfer of `account`, or `429` if it or the server is at its limit.
    pub fn admit(&self, account: AccountId) -> Result<Permit, ApiError> {
        let mut held = self.held.lock().expect("allowance poisoned");
        let mine = held.by_account.get(&account).copied().unwrap_or(0);
        if mine >= self.per_account || held.total >= self.total {
            return Err(self.busy(mine >= self.per_account));
        }
        held.total += 1;
        *held.by_account.entry(account).or_insert(0) += 1;
        self.gauge.inc();
        Ok(Permit { account, held: self.held.clone(), gauge: self.gauge.clone() })
    }

    fn busy(&self, own: bool) -> ApiError {
        let whose = if own { "this account" } else { "the server" };
        let mut e = ApiError::new(
            ErrorCode::TooManyTransfers,
            format!("{whose} has as many {}s in progress as it may; retry when one ends", self.kind),
        );
        e.retry_after = Some(1);
        e
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("allowance poisoned");
        held.total -= 1;
        self.gauge.dec();
        if let Some(n) = held.by_account.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                held.by_account.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_account_and_total_limits_hold_and_permits_give_their_place_back() {
        let a = Allowance::new("upload", 2, 3, prometheus::IntGauge::new("g", "g").unwrap());
        let (x, y) = (AccountId([1; 16]), AccountId([2; 16]));
        let p1 = a.admit(x).unwrap();
        let _p2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).err().unwrap().code, ErrorCode::TooManyTransfers, "x is at its own limit");
        let _p3 = a.admit(y).unwrap();
        let e = a.admit(y).err().unwrap();
        assert!(e.message.contains("the server"), "{}", e.message);
        assert_eq!(a.gauge.get(), 3);
        drop(p1);
        assert!(a.admit(y).is_ok(), "x's permit went back to the pool");
    }

    #[test]
    fn the_defaults_leave_threads_for_small_requests() {
        LimitsConfig::default().validate().unwrap();
        let greedy = LimitsConfig { uploads: 400, ..LimitsConfig::default() };
        assert!(greedy.validate().is_err());
    }
}
