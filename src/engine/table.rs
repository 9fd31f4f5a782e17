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

/// Most ids handled under one hold of the lock. A GC batch (1024 ids) or a big upload's unpin
/// (one per distinct chunk) goes through in steps, so no one waits behind it for more than a
/// step: whole batches held the lock for ~1 ms, and uploads waited 2–4 ms behind them.
const STEP: usize = 64;

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

    /// GC's waits are counted apart: GC may wait, uploads should not.
    fn lock_for_gc(&self) -> MutexGuard<'_, State> {
        timed(&self.waits.chunk_table_gc, || self.state.lock().expect("chunk table poisoned"))
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
        let mut ids = ids.into_iter().peekable();
        while ids.peek().is_some() {
            let mut s = self.lock();
            for id in ids.by_ref().take(STEP) {
                if let Some(n) = s.pins.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        s.pins.remove(id);
                    }
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
        let mut ids = ids.into_iter().peekable();
        while ids.peek().is_some() {
            let mut s = self.lock();
            for id in ids.by_ref().take(STEP) {
                s.claimed.remove(id);
            }
            drop(s);
            self.released.notify_all();
        }
    }

    /// Mark for forgetting those of `ids` that no upload pins or claims; returns them. The
    /// caller must `spare` them when its write is done, whatever its outcome. Each id is
    /// checked and marked under one hold of the lock, which is all the invariant needs.
    pub fn doom(&self, ids: &[ChunkId]) -> Vec<ChunkId> {
        let mut free = Vec::with_capacity(ids.len());
        for step in ids.chunks(STEP) {
            let mut s = self.lock_for_gc();
            let from = free.len();
            free.extend(step.iter().filter(|id| !s.pins.contains_key(id) && !s.claimed.contains_key(id)).copied());
            s.doomed.extend(free[from..].iter().copied());
        }
        free
    }

    pub fn spare(&self, ids: &[ChunkId]) {
        for step in ids.chunks(STEP) {
            let mut s = self.lock_for_gc();
            for id in step {
                s.doomed.remove(id);
            }
            drop(s);
            self.released.notify_all();
        }
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

    #[test]
    fn batches_longer_than_a_step_skip_exactly_the_busy_ids() {
        let t = ChunkTable::default();
        let ids: Vec<ChunkId> = (0..STEP as u32 * 3 + 5).map(|n| ChunkId::of(&n.to_le_bytes())).collect();
        let (pinned, claimed) = (ids[STEP + 1], ids[2 * STEP + 3]);
        t.pin(pinned);
        assert!(t.try_claim(claimed));
        let doomed = t.doom(&ids);
        assert_eq!(doomed.len(), ids.len() - 2);
        assert!(!doomed.contains(&pinned) && !doomed.contains(&claimed));
        t.spare(&doomed);
        t.pin(ids[0]); // would wait forever if any id were still doomed
        t.unpin(ids.iter());
        t.release(ids.iter());
        assert_eq!(t.pinned_count(), 0, "every pin released");
        assert!(t.try_claim(claimed), "released");
    }
}
