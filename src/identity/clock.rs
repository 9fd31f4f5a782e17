//! The time that rate limits count in: unix milliseconds, from the system clock in the server
//! and from a hand-moved clock in tests, so that a test can pass a window without sleeping.
//!
//! Wall-clock time, not `Instant`: counted failures are stored and read back after a restart,
//! and only wall-clock time means the same thing in the next process. A clock that steps back
//! only makes windows last longer (ages saturate at zero), never shorter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that stands at `start_ms` until moved.
    #[cfg(test)]
    pub fn manual(start_ms: u64) -> Self {
        Clock { manual: Some(Arc::new(AtomicU64::new(start_ms))) }
    }

    /// Move a manual clock forward (every clone sees it); a system clock ignores this.
    #[cfg(test)]
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(ms) = &self.manual {
            ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        }
    }

    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => super::now_millis(),
        }
    }
}
