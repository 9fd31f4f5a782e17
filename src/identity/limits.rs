//! Sliding-window rate limits, kept in memory.
//!
//! Each key remembers the instants of its counted events inside the window (at most `max` of
//! them), so a limit is exact and `Retry-After` is the moment the oldest event leaves the
//! window. The state does not survive a restart (see docs/decisions.md, "Identity").

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Once the map holds this many keys, idle ones are swept before the next insert, so a flood
/// of distinct keys costs memory only for the keys that are active within one window.
const SWEEP_AT: usize = 4096;

pub struct Limiter<K> {
    max: usize,
    window: Duration,
    /// std Mutex: held for a few map operations, never across an `.await`.
    events: Mutex<Book<K>>,
}

struct Book<K> {
    map: HashMap<K, VecDeque<Instant>>,
    sweep_at: usize,
}

/// How long until the key may try again, in whole seconds (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(max: u32, window: Duration) -> Self {
        Limiter { max: max as usize, window, events: Mutex::new(Book { map: HashMap::new(), sweep_at: SWEEP_AT }) }
    }

    /// Refused if the key already has `max` events in the window; nothing is counted.
    pub fn check(&self, key: &K) -> Result<(), RetryAfter> {
        self.check_at(key, Instant::now())
    }

    /// Count one event for the key (a failure, say).
    pub fn record(&self, key: &K) {
        self.record_at(key, Instant::now())
    }

    /// Count one event if the key is under its limit; refuse without counting otherwise.
    pub fn acquire(&self, key: &K) -> Result<(), RetryAfter> {
        let now = Instant::now();
        let mut book = self.events.lock().expect("limiter poisoned");
        let q = book.map.entry(key.clone()).or_default();
        self.expire(q, now);
        if let Some(wait) = self.refusal(q, now) {
            return Err(wait);
        }
        q.push_back(now);
        drop(book);
        self.sweep_if_large(now);
        Ok(())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let mut book = self.events.lock().expect("limiter poisoned");
        match book.map.get_mut(key) {
            None => Ok(()),
            Some(q) => {
                self.expire(q, now);
                self.refusal(q, now).map_or(Ok(()), Err)
            }
        }
    }

    fn record_at(&self, key: &K, now: Instant) {
        let mut book = self.events.lock().expect("limiter poisoned");
        let q = book.map.entry(key.clone()).or_default();
        self.expire(q, now);
        q.push_back(now);
        // Only the newest `max` matter for the decision; older ones would only cost memory.
        while q.len() > self.max.max(1) {
            q.pop_front();
        }
        drop(book);
        self.sweep_if_large(now);
    }

    fn expire(&self, q: &mut VecDeque<Instant>, now: Instant) {
        while q.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            q.pop_front();
        }
    }

    fn refusal(&self, q: &VecDeque<Instant>, now: Instant) -> Option<RetryAfter> {
        if q.len() < self.max {
            return None;
        }
        let oldest = *q.front()?;
        let left = self.window.saturating_sub(now.duration_since(oldest));
        Some(RetryAfter((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)))
    }

    fn sweep_if_large(&self, now: Instant) {
        let mut book = self.events.lock().expect("limiter poisoned");
        if book.map.len() < book.sweep_at {
            return;
        }
        let window = self.window;
        book.map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        // If most keys are live, sweeping again soon would be wasted work: wait for growth.
        book.sweep_at = (book.map.len() * 2).max(SWEEP_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_at_the_limit_until_the_window_passes() {
        let l = Limiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            l.record_at(&"k", t0 + Duration::from_secs(i));
        }
        let wait = l.check_at(&"k", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, RetryAfter(50));
        assert!(l.check_at(&"other", t0).is_ok());
        assert!(l.check_at(&"k", t0 + Duration::from_secs(60)).is_ok(), "the oldest left the window");
    }

    #[test]
    fn acquire_counts_only_what_it_allows() {
        let l = Limiter::new(2, Duration::from_secs(60));
        assert!(l.acquire(&1).is_ok());
        assert!(l.acquire(&1).is_ok());
        assert!(l.acquire(&1).is_err());
        assert!(l.acquire(&1).is_err());
        assert_eq!(l.events.lock().unwrap().map[&1].len(), 2);
    }

    #[test]
    fn idle_keys_are_swept() {
        let l = Limiter::new(1, Duration::from_millis(1));
        let t0 = Instant::now();
        for k in 0..SWEEP_AT {
            l.record_at(&k, t0);
        }
        let later = t0 + Duration::from_secs(1);
        for k in SWEEP_AT..4 * SWEEP_AT {
            l.record_at(&k, later);
        }
        let book = l.events.lock().unwrap();
        assert!(!book.map.contains_key(&0), "idle keys are gone");
        assert!(book.map.len() <= 3 * SWEEP_AT);
    }
}
