//! The time the server counts in: wall-clock time from the system in the server, and from a
//! hand-moved clock in tests, so that a test passes a window, a grace period or an expiry
//! without sleeping. One clock is handed to the engine (versions, staged-chunk expiry, GC's
//! grace, sync tombstones) and from it to identity (rate limits, codes' windows).
//!
//! Wall-clock time, not `Instant`: what is stored (failure records, zero-since stamps, modified
//! times) is read back after a restart, and only wall-clock time means the same thing in the
//! next process. A clock that steps back only makes windows last longer, never shorter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock. Otherwise microseconds since the epoch, shared by clones.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that stands at `start_ms` until moved.
    pub fn manual(start_ms: u64) -> Self {
        Clock { manual: Some(Arc::new(AtomicU64::new(start_ms * 1000))) }
    }

    /// Move a manual clock forward (every clone sees it); a system clock ignores this.
    pub fn advance(&self, by: Duration) {
        if let Some(us) = &self.manual {
            us.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
        }
    }

    pub fn now_micros(&self) -> u64 {
        match &self.manual {
            Some(us) => us.load(Ordering::SeqCst),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_micros() / 1000
    }

    pub fn now_secs(&self) -> u64 {
        self.now_micros() / 1_000_000
    }
}
