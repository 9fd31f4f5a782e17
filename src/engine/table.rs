//! Chunks that some request is working on right now: claimed (being looked up or written) or
//! pinned (referenced by an upload that has not committed yet).
//!
//! Invariants:
//! - At most one ingest holds the claim on a chunk id. The holder checks the index and, if the
//!   chunk is absent, writes and indexes it before releasing the claim. So two concurrent
//!   ingests of the same new chunk store it once.
//! - A claim holder that must wait for another claim first releases all of its own (by making
//!   its pending chunks durable and indexed), so waits cannot form a cycle.
//! - GC forgets only chunks it has first marked doomed here, which it can do only for chunks
//!   that are neither pinned nor claimed; while a chunk is doomed nobody can pin it (`pin`
//!   waits). So no upload can be about to reference a chunk GC forgets, and the table's lock is
//!   held only for map operations: GC's database write happens outside it.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::chunk::ChunkId;
use crate::metrics::{timed, LockWaits};

#[derive(Default)]
struct State {
    pins: HashMap<ChunkId, u32>,
    claimed: HashMap<ChunkId, ()>,
    /// Being forgotten by GC right now.
    doomed: HashSet<ChunkId>,
}

/// std Mutex and Condvar: only blocking threads (ingest writers, GC) use the table, and each
/// hold is a hash-map operation.
pub struct ChunkTable {
    state: Mutex<State>,
    released: Condvar,
    waits: LockWaits,
}

impl Default for ChunkTable {
    fn default() -> Self {
        ChunkTable::new(LockWaits::unregistered())
    }
}

impl ChunkTable {
    pub fn new(waits: LockWaits) -> Self {
        ChunkTable { state: Mutex::default(), released: Condvar::new(), waits }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        timed(&self.waits.chunk_table, || self.state.lock().expect("chunk table poisoned"))
    }

    /// Pin a chunk, first waiting out a GC that is forgetting it (then the index no longer has
    /// it, and the upload stores it anew).
    pub fn pin(&self, id: ChunkId) {
        let mut s = self.lock();
        if s.doomed.contains(&id) {
            s = timed(&self.waits.chunk_doomed, || {
                let mut s = s;
                while s.doomed.contains(&id) {
                    s = self.released.wait(s).expect("chunk table poisoned");
                }
                s
            });
        }
        *s.pins.entry(id).or_insert(0) += 1;
    }

    pub fn unpin<'a>(&self, ids: impl IntoIterator<Item = &'a ChunkId>) {
        let mut s = self.lock();
        for id in ids {
            if let Some(n) = s.pins.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    s.pins.remove(id);
                }
            }
        }
    }

    pub fn try_claim(&self, id: ChunkId) -> bool {
        let mut s = self.lock();
        if s.claimed.contains_key(&id) {
            return false;
        }
        s.claimed.insert(id, ());
        true
    }

    pub fn wait_unclaimed(&self, id: &ChunkId) {
        let mut s = self.lock();
        while s.claimed.contains_key(id) {
            s = self.released.wait(s).expect("chunk table poisoned");
        }
    }

    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a ChunkId>) {
        let mut s = self.lock();
        for id in ids {
            s.claimed.remove(id);
        }
        drop(s);
        self.released.notify_all();
    }

    /// Mark for forgetting those of `ids` that no upload pins or claims; returns them. The
    /// caller must `spare` them when its write is done, whatever its outcome.
    pub fn doom(&self, ids: &[ChunkId]) -> Vec<ChunkId> {
        let mut s = self.lock();
        let free: Vec<ChunkId> =
            ids.iter().filter(|id| !s.pins.contains_key(id) && !s.claimed.contains_key(id)).copied().collect();
        s.doomed.extend(free.iter().copied());
        free
    }

    pub fn spare(&self, ids: &[ChunkId]) {
        let mut s = self.lock();
        for id in ids {
            s.doomed.remove(id);
        }
        drop(s);
        self.released.notify_all();
    }

    pub fn pinned_count(&self) -> usize {
        self.lock().pins.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_claim_at_a_time_and_waiters_wake() {
        let t = Arc::new(ChunkTable::default());
        let id = ChunkId([1; 32]);
        assert!(t.try_claim(id));
        assert!(!t.try_claim(id));
        let t2 = t.clone();
        let waiter = std::thread::spawn(move || {
            t2.wait_unclaimed(&id);
            t2.try_claim(id)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        t.release([&id]);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn a_doomed_chunk_cannot_be_pinned_until_spared() {
        let t = Arc::new(ChunkTable::default());
        let id = ChunkId([3; 32]);
        assert_eq!(t.doom(&[id]), vec![id]);
        let t2 = t.clone();
        let pinner = std::thread::spawn(move || t2.pin(id));
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(t.pinned_count(), 0, "pin must wait while the chunk is doomed");
        t.spare(&[id]);
        pinner.join().unwrap();
        assert_eq!(t.pinned_count(), 1);
    }

    #[test]
    fn pins_count_and_show_as_busy() {
        let t = ChunkTable::default();
        let id = ChunkId([2; 32]);
        t.pin(id);
        t.pin(id);
        t.unpin([&id]);
        assert!(t.doom(&[id]).is_empty(), "a pinned chunk cannot be doomed");
        t.unpin([&id]);
        assert_eq!(t.doom(&[id]), vec![id]);
        assert_eq!(t.pinned_count(), 0);
        t.spare(&[id]);
    }
}
