//! Read handles of packs, opened on first use and kept for the next read, at most `capacity`
//! at once: a store of many thousand packs must not run the process out of file descriptors
//! (EMFILE would fail uploads and accepted connections along with the reads).
//!
//! Invariant: at most `capacity` handles are in the map; the least recently used one leaves
//! first. A reader that still holds an evicted handle keeps it open until it is done (`Arc`).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

/// How many pack files stay open for reading. A read of an evicted pack costs one `open`
/// (a few microseconds); 256 handles cover 16 GiB of 64 MiB packs.
pub const DEFAULT_CAPACITY: usize = 256;

pub(crate) struct Readers {
    capacity: usize,
    /// std Mutex: held for a map lookup and at most one `open`, never across an `.await`.
    lru: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    files: HashMap<u64, (Arc<File>, u64)>,
    clock: u64,
}

impl Lru {
    /// The kept handle, marked as just used.
    fn touch(&mut self, pack_id: u64) -> Option<Arc<File>> {
        self.clock += 1;
        let now = self.clock;
        let (f, used) = self.files.get_mut(&pack_id)?;
        *used = now;
        Some(f.clone())
    }

    /// Take out the least recently used handle: a scan of at most `capacity` entries, only
    /// on a miss with a full cache.
    fn evict_oldest(&mut self) -> Option<Arc<File>> {
        let oldest = self.files.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id)?;
        self.files.remove(&oldest).map(|(f, _)| f)
    }
}

impl Readers {
    pub fn new(capacity: usize) -> Self {
        Readers { capacity: capacity.max(1), lru: Mutex::default() }
    }

    /// The handle of `pack_id`, opened with `open` if it is not kept. The `open` (and the
    /// `close` of an evicted handle) run outside the lock: a read of another pack never waits
    /// behind a system call.
    pub fn get(&self, pack_id: u64, open: impl FnOnce() -> io::Result<File>) -> io::Result<Arc<File>> {
        if let Some(f) = self.lru.lock().expect("readers poisoned").touch(pack_id) {
            return Ok(f);
        }
        let f = Arc::new(open()?);
        let evicted = {
            let mut lru = self.lru.lock().expect("readers poisoned");
            if let Some(raced) = lru.touch(pack_id) {
                return Ok(raced); // another reader opened it meanwhile; ours closes below
            }
            let evicted = if lru.files.len() >= self.capacity { lru.evict_oldest() } else { None };
            let now = lru.clock;
            lru.files.insert(pack_id, (f.clone(), now));
            evicted
        };
        drop(evicted);
        Ok(f)
    }

    pub fn forget(&self, pack_id: u64) {
        self.lru.lock().expect("readers poisoned").files.remove(&pack_id);
    }

    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.lru.lock().unwrap().files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_and_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = |i: u64| dir.path().join(i.to_string());
        for i in 0..5 {
            std::fs::write(path(i), b"x").unwrap();
        }
        let r = Readers::new(3);
        let opens = std::cell::Cell::new(0);
        let get = |i: u64| {
            r.get(i, || {
                opens.set(opens.get() + 1);
                File::open(path(i))
            })
            .unwrap()
        };
        get(0);
        get(1);
        get(2);
        get(0); // 1 is now the least recently used
        get(3);
        assert_eq!(r.open_count(), 3);
        assert_eq!(opens.get(), 4);
        get(0);
        get(2);
        assert_eq!(opens.get(), 4, "0 and 2 stayed open");
        get(1);
        assert_eq!(opens.get(), 5, "1 was the one closed");
        assert_eq!(r.open_count(), 3);
    }
}
