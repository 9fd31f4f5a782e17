//! Old versions of drive files: how they are named and which are kept.
//!
//! Overwriting a file moves its previous version into the `Versions` namespace under
//! `path ++ NUL ++ version` (a path has no NUL, so one file's versions are one key range and
//! sort oldest first). The record keeps its version, time and chunks: an old version costs only
//! the chunks the live file and the others do not share (the dedup rule), and its ETag is the
//! one it had when it was live.
//!
//! Which survive is `Retention::doomed`, applied to a file's versions whenever it is written.

/// `path ++ NUL ++ version (big-endian)`.
pub fn name(path: &str, version: u64) -> Vec<u8> {
    let mut n = prefix(path);
    n.extend_from_slice(&version.to_be_bytes());
    n
}

/// Every version name of `path` starts with this.
pub fn prefix(path: &str) -> Vec<u8> {
    let mut n = Vec::with_capacity(path.len() + 9);
    n.extend_from_slice(path.as_bytes());
    n.push(0);
    n
}

/// The path and version a name holds.
pub fn parse(name: &[u8]) -> Option<(&str, u64)> {
    let split = name.len().checked_sub(9)?;
    let (path, rest) = name.split_at(split);
    if rest[0] != 0 {
        return None;
    }
    let version = u64::from_be_bytes(rest[1..].try_into().ok()?);
    Some((std::str::from_utf8(path).ok()?, version))
}

/// How many old versions a file keeps, and how densely with age, like Nextcloud's and
/// Dropbox's rules: every version younger than a day; then the newest of each day for a month;
/// then the newest of each week for three months; then the newest of each 30 days; and never
/// more than `max` in all (the newest ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max: usize,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

impl Default for Retention {
    fn default() -> Self {
        Retention { max: 50 }
    }
}

impl Retention {
    /// The bucket an age falls in: versions sharing one keep only their newest.
    /// `None`: younger than a day, every one is kept.
    fn bucket(age_ms: i64) -> Option<(u8, i64)> {
        let days = age_ms / DAY_MS;
        match days {
            0 => None,
            1..=30 => Some((1, days)),
            31..=90 => Some((2, days / 7)),
            _ => Some((3, days / 30)),
        }
    }

    /// Of `kept` (version, modified ms), the versions to drop at `now_ms`.
    pub fn doomed(&self, now_ms: i64, kept: &[(u64, i64)]) -> Vec<u64> {
        let mut newest_first: Vec<(u64, i64)> = kept.to_vec();
        newest_first.sort_unstable_by(|a, b| b.cmp(a));
        let mut seen = std::collections::HashSet::new();
        let mut survivors = 0;
        let mut out = Vec::new();
        for (version, modified) in newest_first {
            let fresh = match Self::bucket(now_ms.saturating_sub(modified)) {
                None => true,
                Some(b) => seen.insert(b),
            };
            if fresh && survivors < self.max {
                survivors += 1;
            } else {
                out.push(version);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_version() {
        let a = name("a/b.txt", 5);
        assert_eq!(parse(&a), Some(("a/b.txt", 5)));
        assert!(name("a/b.txt", 5) < name("a/b.txt", 6));
        assert!(a.starts_with(&prefix("a/b.txt")));
        assert!(!a.starts_with(&prefix("a/b")), "a shorter path's prefix is not a prefix");
        assert_eq!(parse(b"short"), None);
    }

    #[test]
    fn a_day_keeps_all_then_one_a_day_then_one_a_week() {
        let r = Retention { max: 100 };
        let now = 400 * DAY_MS;
        let hour = DAY_MS / 24;
        // Three in the last hours, two on day 3, two in week 6 (days 42 and 44), one at 200 days.
        let kept = [
            (10, now - hour),
            (9, now - 2 * hour),
            (8, now - 3 * hour),
            (7, now - 3 * DAY_MS - hour),
            (6, now - 3 * DAY_MS - 2 * hour),
            (5, now - 44 * DAY_MS),
            (4, now - 45 * DAY_MS),
            (3, now - 200 * DAY_MS),
        ];
        let mut doomed = r.doomed(now, &kept);
        doomed.sort_unstable();
        assert_eq!(doomed, vec![4, 6], "day 3 keeps its newest; week 6 keeps its newest");
    }

    #[test]
    fn never_more_than_max_and_the_newest_stay() {
        let r = Retention { max: 2 };
        let kept: Vec<(u64, i64)> = (1..=5).map(|v| (v, 1000 + v as i64)).collect();
        let mut doomed = r.doomed(2000, &kept);
        doomed.sort_unstable();
        assert_eq!(doomed, vec![1, 2, 3]);
    }
}
