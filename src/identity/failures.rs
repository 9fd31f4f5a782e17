//! Failures that close a door for a while: wrong passwords (sign-in, password change) and
//! wrong verification codes. Each kind is limited per identifier and per client address, and
//! its count survives a restart.
//!
//! Invariants:
//! - An attempt is counted on both limits before its work starts (`begin`), in the limiter's
//!   lock, so N parallel attempts cost N tries: none can pass the check while another is still
//!   verifying. It is given back if it succeeds (`succeeded`), kept and stored if it fails
//!   (`failed`), and kept in memory if it ends in an error. If either limit refuses, nothing is
//!   counted.
//! - A kept failure is stored as one record per limit in the `limits` column family, in the
//!   caller's batch. At open, records still inside their window are loaded back; the sweeper
//!   deletes the others. Records are never changed, only added and swept, so no lock orders
//!   their writes.

use std::net::IpAddr;
use std::time::Duration;

use rocksdb::{IteratorMode, WriteBatch};

use super::error::{IdentityError, Result};
use super::limits::{ip_key, Limiter, RetryAfter, Ticket};
use crate::clock::Clock;
use crate::store::identity_keys as ik;
use crate::store::{Db, CF_LIMITS};

/// The stored kinds of each set (per identifier, per address). Stable: they are in keys.
pub const LOGIN_KINDS: (u8, u8) = (1, 2);
pub const CODE_KINDS: (u8, u8) = (3, 4);

pub struct Failures {
    kinds: (u8, u8),
    clock: Clock,
    by_identifier: Limiter<[u8; 32]>,
    by_ip: Limiter<IpAddr>,
}

/// One attempt, counted on both limits until it is settled.
#[must_use = "settle an attempt with `succeeded` or `failed`"]
pub struct Attempt {
    id: Ticket<[u8; 32]>,
    ip: Ticket<IpAddr>,
}

fn limited(w: RetryAfter) -> IdentityError {
    IdentityError::RateLimited { retry_after: w.0 }
}

impl Failures {
    pub fn new(kinds: (u8, u8), per_identifier: u32, per_ip: u32, window: Duration, clock: &Clock) -> Self {
        Failures {
            kinds,
            clock: clock.clone(),
            by_identifier: Limiter::new(per_identifier, window, clock.clone()),
            by_ip: Limiter::new(per_ip, window, clock.clone()),
        }
    }

    /// Count an attempt of this identifier from this address, or refuse it (`RateLimited`)
    /// while either has used up its failures.
    pub fn begin(&self, id_hash: &[u8; 32], ip: IpAddr) -> Result<Attempt> {
        let id = self.by_identifier.reserve(id_hash).map_err(limited)?;
        match self.by_ip.reserve(&ip_key(ip)) {
            Ok(ip) => Ok(Attempt { id, ip }),
            Err(w) => {
                self.by_identifier.release(id);
                Err(limited(w))
            }
        }
    }

    /// Not a failure: the attempt is given back.
    pub fn succeeded(&self, a: Attempt) {
        self.by_identifier.release(a.id);
        self.by_ip.release(a.ip);
    }

    /// A failure: it stays counted, and `batch` stores it for the next process.
    pub fn failed(&self, db: &Db, batch: &mut WriteBatch, a: Attempt) {
        let cf = db.cf(CF_LIMITS);
        batch.put_cf(cf, ik::limit_key(self.kinds.0, &a.id.key, a.id.at_ms), []);
        batch.put_cf(cf, ik::limit_key(self.kinds.1, &ik::ip_bytes(a.ip.key), a.ip.at_ms), []);
    }

    /// Take a stored failure back into the count. `false` if the kind is not this set's.
    fn load(&self, kind: u8, subject: &[u8], at_ms: u64) -> bool {
        if kind == self.kinds.0 {
            if let Ok(id) = <[u8; 32]>::try_from(subject) {
                self.by_identifier.load(id, at_ms);
            }
        } else if kind == self.kinds.1 {
            if let Some(ip) = ik::ip_from_bytes(subject) {
                self.by_ip.load(ip, at_ms);
            }
        } else {
            return false;
        }
        true
    }

    /// Whether a stored failure of this set has left its window. `None` if not this set's.
    fn expired(&self, kind: u8, at_ms: u64) -> Option<bool> {
        let window = if kind == self.kinds.0 {
            self.by_identifier.window_ms()
        } else if kind == self.kinds.1 {
            self.by_ip.window_ms()
        } else {
            return None;
        };
        Some(self.clock.now_ms().saturating_sub(at_ms) >= window)
    }
}

/// At open: every stored failure still inside its window counts again.
pub fn load_all(db: &Db, sets: &[&Failures]) -> Result<()> {
    for item in db.raw().iterator_cf(db.cf(CF_LIMITS), IteratorMode::Start) {
        let (k, _) = item?;
        if let Some((kind, subject, at_ms)) = ik::parse_limit_key(&k) {
            for set in sets {
                if set.load(kind, subject, at_ms) {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Delete stored failures that left their window (and keys no set can read). Unsynced: a
/// lost sweep is done again, and an expired record that comes back no longer counts.
pub fn sweep(db: &Db, sets: &[&Failures]) -> Result<usize> {
    let cf = db.cf(CF_LIMITS);
    let mut batch = WriteBatch::default();
    let mut n = 0;
    for item in db.raw().iterator_cf(cf, IteratorMode::Start) {
        let (k, _) = item?;
        let stale = match ik::parse_limit_key(&k) {
            Some((kind, _, at_ms)) => sets.iter().find_map(|s| s.expired(kind, at_ms)).unwrap_or(true),
            None => true,
        };
        if stale {
            batch.delete_cf(cf, &k);
            n += 1;
        }
    }
    if n > 0 {
        db.write_unsynced(batch)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(clock: &Clock) -> Failures {
        Failures::new(LOGIN_KINDS, 2, 3, Duration::from_secs(60), clock)
    }

    #[test]
    fn either_limit_refuses_and_a_refusal_counts_nothing() {
        let clock = Clock::manual(1_700_000_000_000);
        let f = set(&clock);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let t1 = f.begin(&a, ip).unwrap();
        let t2 = f.begin(&a, ip).unwrap();
        assert!(matches!(f.begin(&a, ip), Err(IdentityError::RateLimited { retry_after: 60 })));
        let t3 = f.begin(&b, ip).unwrap();
        // The address is used up now; `b` is refused, and its refusal did not count for `b`.
        assert!(f.begin(&b, ip).is_err());
        f.succeeded(t3);
        let t4 = f.begin(&b, ip).unwrap();
        for t in [t1, t2, t4] {
            f.succeeded(t);
        }
        assert!(f.begin(&a, ip).is_ok());
    }

    #[test]
    fn stored_failures_count_in_the_next_process_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let clock = Clock::manual(1_700_000_000_000);
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let f = set(&clock);
        let mut batch = WriteBatch::default();
        for _ in 0..2 {
            let t = f.begin(&[7; 32], ip).unwrap();
            f.failed(&db, &mut batch, t);
        }
        db.write_unsynced(batch).unwrap();

        let again = set(&clock);
        load_all(&db, &[&again]).unwrap();
        assert!(again.begin(&[7; 32], ip).is_err(), "the lockout outlives the limiter");
        assert_eq!(sweep(&db, &[&again]).unwrap(), 0);
        clock.advance(Duration::from_secs(60));
        assert!(again.begin(&[7; 32], ip).is_ok());
        assert_eq!(sweep(&db, &[&again]).unwrap(), 4);
    }
}
