//! WebDAV locks (RFC 4918 class 2), kept in memory, per account, timed by the engine's clock.
//!
//! Why our own and not `dav-server`'s `MemLs`: that one is one tree for every user (account A's
//! lock on `/notes.txt` would block account B's file of that name), never expires a lock, and
//! has no bound on how many a client may take.
//!
//! Invariants: a lock belongs to one account and is only ever seen through that account's
//! handle; an expired lock is gone before any decision is made; an account holds at most
//! `PER_ACCOUNT` locks and the server `OVERALL`. A restart forgets every lock (they are leases:
//! a client that still wants one finds it gone at its next refresh or write, and locks again).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures::FutureExt;
use xmltree::Element;

use crate::clock::Clock;
use crate::store::keys::AccountId;

/// Locks one account may hold: a desktop client locks each file it has open.
pub const PER_ACCOUNT: usize = 1000;
/// Locks the server holds in all.
pub const OVERALL: usize = 100_000;
/// The longest a lock lasts without a refresh; `Infinite` and longer asks get this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Every account's locks. std Mutex, not tokio's: held for a scan of one account's short list,
/// never across an `.await`.
pub struct LockTable {
    clock: Clock,
    locks: Mutex<HashMap<AccountId, Vec<DavLock>>>,
}

impl LockTable {
    pub fn new(clock: Clock) -> Arc<Self> {
        Arc::new(LockTable { clock, locks: Mutex::new(HashMap::new()) })
    }

    /// The lock system one request of `account` sees.
    pub fn of(self: &Arc<Self>, account: AccountId) -> AccountLocks {
        AccountLocks { table: self.clone(), account }
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.clock.now_ms())
    }

    /// Run `f` on the account's live locks (expired ones dropped first).
    fn with<T>(&self, account: &AccountId, f: impl FnOnce(&mut Vec<DavLock>, usize) -> T) -> T {
        let now = self.now();
        let mut all = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = all.values().map(Vec::len).sum();
        let mine = all.entry(*account).or_default();
        mine.retain(|l| l.timeout_at.is_none_or(|t| t > now));
        let out = f(mine, total);
        if mine.is_empty() {
            all.remove(account);
        }
        out
    }
}

#[derive(Clone)]
pub struct AccountLocks {
    table: Arc<LockTable>,
    account: AccountId,
}

impl fmt::Debug for AccountLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountLocks").field("account", &self.account).finish()
    }
}

/// A path as locks compare it: its bytes without a trailing slash (the root is empty).
fn key(p: &DavPath) -> &[u8] {
    let b = p.as_bytes();
    b.strip_suffix(b"/").unwrap_or(b)
}

fn beneath(p: &[u8], folder: &[u8]) -> bool {
    p.len() > folder.len() && p.starts_with(folder) && p[folder.len()] == b'/'
}

/// Whether lock `l` applies to `p`: on it, or deep on a folder above it.
fn covers(l: &DavLock, p: &[u8]) -> bool {
    let lp = key(&l.path);
    lp == p || (l.deep && beneath(p, lp))
}

fn held(l: &DavLock, tokens: &[String], principal: Option<&str>, ignore_principal: bool) -> bool {
    tokens.contains(&l.token) && (ignore_principal || principal == l.principal.as_deref())
}

/// The locks that stand in the way at `p` (and beneath it if `deep`); `shared_ok` lets shared
/// locks share. As `MemLs` decides it: an exclusive lock not held refuses; shared locks refuse
/// only if none of them is held.
fn conflict(
    locks: &[DavLock],
    p: &[u8],
    deep: bool,
    tokens: &[String],
    principal: Option<&str>,
    ignore_principal: bool,
    shared_ok: bool,
) -> Option<DavLock> {
    let relevant = locks.iter().filter(|l| covers(l, p) || (deep && beneath(key(&l.path), p)));
    let (mut holds, mut first_shared) = (false, None);
    for l in relevant {
        if held(l, tokens, principal, ignore_principal) {
            holds = true;
        } else if !l.shared {
            return Some(l.clone());
        } else if !shared_ok {
            first_shared.get_or_insert(l);
        }
    }
    if holds {
        None
    } else {
        first_shared.cloned()
    }
}

fn token() -> String {
    format!("opaquelocktoken:{}", hex::encode(rand::random::<[u8; 16]>()))
}

impl DavLockSystem for AccountLocks {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let timeout = timeout.unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT);
        let lock = DavLock {
            token: token(),
            path: Box::new(path.clone()),
            principal: principal.map(str::to_string),
            owner: owner.map(|o| Box::new(o.clone())),
            timeout_at: Some(self.table.now() + timeout),
            timeout: Some(timeout),
            shared,
            deep,
        };
        let r = self.table.with(&self.account, |locks, total| {
            if locks.len() >= PER_ACCOUNT || total >= OVERALL {
                // No status says "too many locks"; 423 with the new lock as the conflict is
                // what a client understands: it cannot lock now.
                return Err(lock);
            }
            if let Some(c) = conflict(locks, key(path), deep, &[], None, true, shared) {
                return Err(c);
            }
            locks.push(lock.clone());
            Ok(lock)
        });
        futures::future::ready(r).boxed()
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let r = self.table.with(&self.account, |locks, _| {
            let i = locks.iter().position(|l| l.token == token && covers(l, key(path))).ok_or(())?;
            locks.remove(i);
            Ok(())
        });
        futures::future::ready(r).boxed()
    }

    fn refresh(&'_ self, path: &DavPath, token: &str, timeout: Option<Duration>) -> LsFuture<'_, Result<DavLock, ()>> {
        let timeout = timeout.unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT);
        let now = self.table.now();
        let r = self.table.with(&self.account, |locks, _| {
            let l = locks.iter_mut().find(|l| l.token == token && covers(l, key(path))).ok_or(())?;
            l.timeout = Some(timeout);
            l.timeout_at = Some(now + timeout);
            Ok(l.clone())
        });
        futures::future::ready(r).boxed()
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let r = self.table.with(&self.account, |locks, _| {
            match conflict(locks, key(path), deep, submitted_tokens, principal, ignore_principal, false) {
                Some(c) => Err(c),
                None => Ok(()),
            }
        });
        futures::future::ready(r).boxed()
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let r =
            self.table.with(&self.account, |locks, _| locks.iter().filter(|l| covers(l, key(path))).cloned().collect());
        futures::future::ready(r).boxed()
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        self.table.with(&self.account, |locks, _| {
            let p = key(path);
            locks.retain(|l| !(key(&l.path) == p || beneath(key(&l.path), p)));
        });
        futures::future::ready(Ok(())).boxed()
    }
}
