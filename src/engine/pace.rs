//! How fast compaction may copy. Copies share the disk with uploads: unpaced, a rewrite of
//! hundreds of MiB keeps the device queue full, and each upload's `fdatasync` and commit wait
//! behind it (docs/benchmarks.md: upload p99 12–16 ms unpaced, 2.6 ms at 64 MiB/s, against
//! 0.7–1.0 ms with no GC). A ceiling trades GC duration for upload tails.

use std::time::{Duration, Instant};

/// A ceiling on compaction's copy rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRate {
    bytes_per_sec: u64,
}

impl CopyRate {
    /// `None` for 0: no ceiling.
    pub fn mib_per_sec(mib: u64) -> Option<Self> {
        (mib > 0).then(|| CopyRate { bytes_per_sec: mib.saturating_mul(1 << 20) })
    }

    pub fn as_mib_per_sec(&self) -> u64 {
        self.bytes_per_sec >> 20
    }

    /// How long to wait, `elapsed` into a run that has copied `copied` bytes, to be back
    /// under the ceiling.
    fn ahead(&self, copied: u64, elapsed: Duration) -> Duration {
        Duration::from_secs_f64(copied as f64 / self.bytes_per_sec as f64).saturating_sub(elapsed)
    }
}

/// Paces one collection's copies: call `copied` after each.
pub(crate) struct Pacer {
    rate: Option<CopyRate>,
    started: Instant,
    copied: u64,
}

impl Pacer {
    pub fn new(rate: Option<CopyRate>) -> Self {
        Pacer { rate, started: Instant::now(), copied: 0 }
    }

    /// Blocking: sleeps while the run is ahead of its rate.
    pub fn copied(&mut self, bytes: u64) {
        self.copied += bytes;
        if let Some(rate) = self.rate {
            let wait = rate.ahead(self.copied, self.started.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_waits_only_while_it_is_ahead_of_its_rate() {
        let r = CopyRate::mib_per_sec(64).unwrap();
        assert_eq!(r.ahead(64 << 20, Duration::from_millis(250)), Duration::from_millis(750));
        assert_eq!(r.ahead(32 << 20, Duration::from_secs(2)), Duration::ZERO, "behind: no wait");
        assert_eq!(r.as_mib_per_sec(), 64);
        assert_eq!(CopyRate::mib_per_sec(0), None);
    }

    #[test]
    fn a_paced_copy_takes_at_least_its_share_of_a_second() {
        let mut p = Pacer::new(CopyRate::mib_per_sec(100));
        let t = Instant::now();
        p.copied(10 << 20); // a tenth of a second's worth
        assert!(t.elapsed() >= Duration::from_millis(99));
    }
}
