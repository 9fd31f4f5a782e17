//! How many backups of one device are kept.

/// Keep the newest `keep` backups of each device; older ones are dropped when a new backup of
/// that device is committed, in the same batch. `keep` is at least 1, so a commit never drops
/// the backup it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    keep: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep: 10 }
    }
}

impl Retention {
    /// `None` for 0: a policy that keeps nothing would delete every backup as it lands.
    pub fn keep_last(keep: usize) -> Option<Self> {
        (keep > 0).then_some(Retention { keep })
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Which of a device's existing backups to drop when one more is committed. `existing`
    /// are backup ids (which grow with time), in any order.
    pub fn to_drop(&self, mut existing: Vec<u64>) -> Vec<u64> {
        existing.sort_unstable_by(|a, b| b.cmp(a));
        // The new backup takes one of the `keep` places.
        existing.split_off((self.keep - 1).min(existing.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_and_the_new_one_counts() {
        let r = Retention::keep_last(3).unwrap();
        assert_eq!(r.to_drop(vec![]), Vec::<u64>::new());
        assert_eq!(r.to_drop(vec![5, 9]), Vec::<u64>::new());
        assert_eq!(r.to_drop(vec![5, 9, 7]), vec![5]);
        assert_eq!(r.to_drop(vec![1, 5, 9, 7, 3]), vec![5, 3, 1]);
    }

    #[test]
    fn keeping_one_drops_every_earlier_backup_and_zero_is_refused() {
        let r = Retention::keep_last(1).unwrap();
        assert_eq!(r.to_drop(vec![4, 2]), vec![4, 2]);
        assert_eq!(Retention::keep_last(0), None);
        assert_eq!(Retention::default().keep(), 10);
    }
}
