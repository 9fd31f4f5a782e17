//! Sliding-window rate limits, kept in memory.
//!
//! Invariants:
//! - A key never holds more than `max` counted events inside the window, however many
//!   requests race: an attempt is counted (`reserve`) before the work it guards, in the same
//!   lock as the check, so N parallel tries cost N tries. A reservation that turns out not to
//!   be a failure is given back (`release`); one that is dropped stays counted.
//! - Each key remembers the instants of its counted events (unix milliseconds from the
//!   limiter's `Clock`), so a limit is exact and `Retry-After` is the moment the oldest event
//!   leaves the window.
//!
//! This module keeps no store: `failures` persists the limits that must survive a restart
//! and seeds them here with `load` (see docs/decisions.md, "Identity").

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Clock;

/// Once the map holds this many keys, idle ones are swept before the next insert, so a flood
/// of distinct keys costs memory only for the keys that are active within one window.
const SWEEP_AT: usize = 4096;

pub struct Limiter<K> {
    max: usize,
    window_ms: u64,
    clock: Clock,
    /// std Mutex: held for a few map operations, never across an `.await`.
    events: Mutex<Book<K>>,
}

struct Book<K> {
    map: HashMap<K, VecDeque<u64>>,
    sweep_at: usize,
}

/// A counted attempt, not yet settled. Dropping it keeps it counted (the safe side: an
/// attempt that ended in an error counts like a failure).
#[must_use = "a reservation is released on success, or dropped to keep it counted"]
#[derive(Debug)]
pub struct Ticket<K> {
    pub key: K,
    /// Unix milliseconds at which it was counted.
    pub at_ms: u64,
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 network, since one subscriber
/// line or host commonly holds a whole /64 and could otherwise rotate through it.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(net))
        }
        v4 => v4,
    }
}

/// How long until the key may try again, in whole seconds (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(max: u32, window: Duration, clock: Clock) -> Self {
        Limiter {
            max: max as usize,
            window_ms: window.as_millis() as u64,
            clock,
            events: Mutex::new(Book { map: HashMap::new(), sweep_at: SWEEP_AT }),
        }
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Count one event if the key is under its limit; refuse without counting otherwise.
    pub fn acquire(&self, key: &K) -> Result<(), RetryAfter> {
        self.reserve(key).map(drop)
    }

    /// Count one attempt now, if the key is under its limit; refuse without counting
    /// otherwise. The ticket gives it back (`release`) if it was not a failure.
    pub fn reserve(&self, key: &K) -> Result<Ticket<K>, RetryAfter> {
        let now = self.clock.now_ms();
        let mut book = self.events.lock().expect("limiter poisoned");
        let q = book.map.entry(key.clone()).or_default();
        self.expire(q, now);
        if let Some(wait) = self.refusal(q, now) {
            return Err(wait);
        }
        q.push_back(now);
        drop(book);
        self.sweep_if_large(now);
        Ok(Ticket { key: key.clone(), at_ms: now })
    }

    /// Give a reservation back: the attempt it counted was not a failure.
    pub fn release(&self, t: Ticket<K>) {
        let mut book = self.events.lock().expect("limiter poisoned");
        if let Some(q) = book.map.get_mut(&t.key) {
            // Equal instants are interchangeable: removing any one of them is the same.
            if let Some(pos) = q.iter().rposition(|&at| at == t.at_ms) {
                q.remove(pos);
            }
        }
    }

    /// Seed an event counted by an earlier process (instants in any order per key).
    pub fn load(&self, key: K, at_ms: u64) {
        let now = self.clock.now_ms();
        if now.saturating_sub(at_ms) >= self.window_ms {
            return;
        }
        let mut book = self.events.lock().expect("limiter poisoned");
        let q = book.map.entry(key).or_default();
        let pos = q.partition_point(|&t| t <= at_ms);
        q.insert(pos, at_ms);
        // Only the newest `max` matter for the decision; older ones would only cost memory.
        while q.len() > self.max.max(1) {
            q.pop_front();
        }
    }

    fn expire(&self, q: &mut VecDeque<u64>, now: u64) {
        while q.front().is_some_and(|&t| now.saturating_sub(t) >= self.window_ms) {
            q.pop_front();
        }
    }

    fn refusal(&self, q: &VecDeque<u64>, now: u64) -> Option<RetryAfter> {
        if q.len() < self.max {
            return None;
        }
        let oldest = *q.front()?;
        let left_ms = self.window_ms.saturating_sub(now.saturating_sub(oldest));
        Some(RetryAfter(left_ms.div_ceil(1000).max(1)))
    }

    fn sweep_if_large(&self, now: u64) {
        let mut book = self.events.lock().expect("limiter poisoned");
        if book.map.len() < book.sweep_at {
            return;
        }
        let window = self.window_ms;
        book.map.retain(|_, q| q.back().is_some_and(|&t| now.saturating_sub(t) < window));
        // If most keys are live, sweeping again soon would be wasted work: wait for growth.
        book.sweep_at = (book.map.len() * 2).max(SWEEP_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, window_secs: u64) -> (Limiter<&'static str>, Clock) {
        let clock = Clock::manual(1_700_000_000_000);
        (Limiter::new(max, Duration::from_secs(window_secs), clock.clone()), clock)
    }

    #[test]
    fn refuses_at_the_limit_until_the_window_passes() {
        let (l, clock) = limiter(3, 60);
        for _ in 0..3 {
            l.acquire(&"k").unwrap();
            clock.advance(Duration::from_secs(1));
        }
        clock.advance(Duration::from_secs(7));
        assert_eq!(l.reserve(&"k").unwrap_err(), RetryAfter(50));
        assert!(l.reserve(&"other").is_ok());
        clock.advance(Duration::from_secs(50));
        assert!(l.reserve(&"k").is_ok(), "the oldest left the window");
    }

    #[test]
    fn acquire_counts_only_what_it_allows() {
        let (l, _) = limiter(2, 60);
        assert!(l.acquire(&"k").is_ok());
        assert!(l.acquire(&"k").is_ok());
        assert!(l.acquire(&"k").is_err());
        assert!(l.acquire(&"k").is_err());
        assert_eq!(l.events.lock().unwrap().map[&"k"].len(), 2);
    }

    /// The lockout bypass of issue 11: checking before the work and counting after it let
    /// every racing attempt through. Reservations held by unfinished attempts count.
    #[test]
    fn parallel_attempts_each_cost_a_try() {
        let (l, _) = limiter(5, 900);
        let held: Vec<_> = (0..60).filter_map(|_| l.reserve(&"k").ok()).collect();
        assert_eq!(held.len(), 5, "only five attempts may be under way or failed at once");
    }

    #[test]
    fn released_reservations_are_given_back_and_dropped_ones_kept() {
        let (l, clock) = limiter(2, 900);
        let a = l.reserve(&"k").unwrap();
        let b = l.reserve(&"k").unwrap();
        assert!(l.reserve(&"k").is_err());
        l.release(a);
        clock.advance(Duration::from_millis(5));
        let c = l.reserve(&"k").unwrap();
        drop(b);
        drop(c);
        assert!(l.reserve(&"k").is_err(), "dropped tickets stay counted");
    }

    #[test]
    fn loaded_events_count_until_they_leave_the_window() {
        let (l, clock) = limiter(2, 60);
        let now = clock.now_ms();
        l.load("k", now - 59_000);
        l.load("k", now - 10_000);
        l.load("old", now - 60_000);
        assert_eq!(l.reserve(&"k").unwrap_err(), RetryAfter(1));
        assert!(l.reserve(&"old").is_ok(), "an event older than the window is not loaded");
        clock.advance(Duration::from_secs(1));
        assert!(l.reserve(&"k").is_ok());
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(v4), v4);
        assert_eq!(ip_key("::ffff:192.0.2.7".parse().unwrap()), v4);
    }

    #[test]
    fn idle_keys_are_swept() {
        let clock = Clock::manual(1_000_000);
        let l = Limiter::new(1, Duration::from_millis(1), clock.clone());
        for k in 0..SWEEP_AT {
            l.acquire(&k).unwrap();
        }
        clock.advance(Duration::from_secs(1));
        for k in SWEEP_AT..4 * SWEEP_AT {
            l.acquire(&k).unwrap();
        }
        let book = l.events.lock().unwrap();
        assert!(!book.map.contains_key(&0), "idle keys are gone");
        assert!(book.map.len() <= 3 * SWEEP_AT);
    }
}
