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
    /// The last stamp `unique_micros` gave, shared by clones.
    last_stamp: Arc<AtomicU64>,
}

impl Clock {
    pub fn system() -> Self {
        Clock { manual: None, last_stamp: Arc::default() }
    }

    /// A clock that stands at `start_ms` until moved.
    pub fn manual(start_ms: u64) -> Self {
        Clock { manual: Some(Arc::new(AtomicU64::new(start_ms * 1000))), last_stamp: Arc::default() }
    }

    /// A manual clock that starts at the system's time: a server under test shows plausible
    /// dates, and its tests move time on with `advance`.
    pub fn manual_from_now() -> Self {
        Self::manual(Self::system().now_ms())
    }

    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
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

    /// The time in microseconds, but never one this clock (or a clone) gave before: records
    /// keyed by time (activity events) do not overwrite each other when two land in the same
    /// microsecond, as parallel failed sign-ins do, or when a manual clock stands still.
    pub fn unique_micros(&self) -> u64 {
        let now = self.now_micros();
        let prev = self.last_stamp.fetch_max(now, Ordering::SeqCst);
        if prev < now {
            return now;
        }
        self.last_stamp.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn now_ms(&self) -> u64 {
        self.now_micros() / 1000
    }

    pub fn now_secs(&self) -> u64 {
        self.now_micros() / 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_never_repeat_even_on_a_clock_that_stands_still() {
        let clock = Clock::manual(1_000);
        let a = clock.unique_micros();
        let b = clock.clone().unique_micros();
        assert_eq!(a, 1_000_000);
        assert!(b > a);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.unique_micros(), 2_000_000);
    }

    #[test]
    fn stamps_are_unique_across_threads() {
        let clock = Clock::system();
        let stamps: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> =
                (0..4).map(|_| s.spawn(|| (0..1000).map(|_| clock.unique_micros()).collect::<Vec<_>>())).collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = stamps.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), stamps.len());
    }
}
