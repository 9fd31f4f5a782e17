//! Chunks that some request is working on right now: claimed (being looked up or written) or
//! pinned (referenced by an upload that has not committed yet).
//!
//! Invariants:
//! - At most one ingest holds the claim on a chunk id. The holder checks the index and, if the
//!   chunk is absent, writes and indexes it before releasing the claim. So two concurrent
//!   ingests of the same new chunk store it once.
//! - A claim holder that must wait for another claim first releases all of its own (by making
//!   its pending chunks durable and indexed), so waits cannot form a cycle.
//! - GC takes this table's lock, and checks `is_busy`, around the moment it forgets a chunk, so it
//!   never forgets one that an upload is about to reference.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::chunk::ChunkId;

#[derive(Default)]
struct State {
    pins: HashMap<ChunkId, u32>,
    claimed: HashMap<ChunkId, ()>,
}

/// std Mutex and Condvar: only blocking threads (ingest writers, GC) use the table, and each
/// hold is a hash-map operation.
#[derive(Default)]
pub struct ChunkTable {
    state: Mutex<State>,
    released: Condvar,
}

impl ChunkTable {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("chunk table poisoned")
    }

    pub fn pin(&self, id: ChunkId) {
        *self.lock().pins.entry(id).or_insert(0) += 1;
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

    /// Run `f` with the table locked; `f` is told whether a chunk is pinned or claimed. GC
    /// uses this to forget chunks atomically with respect to uploads.
    pub fn with_busy_check<R>(&self, f: impl FnOnce(&dyn Fn(&ChunkId) -> bool) -> R) -> R {
        let s = self.lock();
        f(&|id| s.pins.contains_key(id) || s.claimed.contains_key(id))
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
    fn pins_count_and_show_as_busy() {
        let t = ChunkTable::default();
        let id = ChunkId([2; 32]);
        t.pin(id);
        t.pin(id);
        t.unpin([&id]);
        assert!(t.with_busy_check(|busy| busy(&id)));
        t.unpin([&id]);
        assert!(!t.with_busy_check(|busy| busy(&id)));
        assert_eq!(t.pinned_count(), 0);
    }
}
