//! The two caches in front of the bucket.
//!
//! `Blocks`: recently read ranges of packs, in memory, as aligned `BLOCK`-byte blocks, least
//! recently used out first. A read fetches only the blocks it misses, in one ranged GET from
//! the first missing block to the last, so a cold read of `n` bytes fetches less than
//! `n + 2 * BLOCK`; a read that carries on where the last miss of the same pack ended (a
//! download) fetches `READ_AHEAD` more, so long reads are not one request per batch.
//!
//! `Disk`: whole packs already uploaded, kept on local disk (`cache/`) up to a size, least
//! recently used out first. A pack enters it when its upload is verified (it is the local copy
//! moved aside), never from a download: the newest packs are the ones most read.
//!
//! Invariants: both only hold bytes of sealed, immutable packs, so an entry is never stale,
//! only evicted (and dropped when its pack is removed); the bytes are checked on every use as
//! any pack's are (entry headers, seals, chunk hashes), so a cache never serves what the
//! bucket would not.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use crate::error::{Error, Result};

/// The unit of the memory cache: about a chunk (64 KiB average), so that a small cold read
/// fetches little beyond its chunk.
pub const BLOCK: u64 = 64 << 10;
/// Extra bytes fetched by a read that continues the previous miss in the same pack.
pub const READ_AHEAD: u64 = 8 << 20;

pub(crate) struct Blocks {
    capacity: u64,
    /// std Mutex: map operations only, never held across a fetch.
    lru: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    blocks: HashMap<(u64, u64), (Bytes, u64)>,
    /// Use order: tick to block, oldest first.
    order: BTreeMap<u64, (u64, u64)>,
    tick: u64,
    bytes: u64,
    /// Where the last miss of each recently missed pack ended, to see a download coming.
    last_miss_end: HashMap<u64, u64>,
}

impl Lru {
    fn get(&mut self, key: (u64, u64)) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (b, used) = self.blocks.get_mut(&key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key);
        Some(b.clone())
    }

    fn put(&mut self, key: (u64, u64), b: Bytes, capacity: u64) {
        if b.len() as u64 > capacity {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        self.bytes += b.len() as u64;
        if let Some((old, used)) = self.blocks.insert(key, (b, tick)) {
            self.bytes -= old.len() as u64;
            self.order.remove(&used);
        }
        self.order.insert(tick, key);
        while self.bytes > capacity {
            let Some((_, k)) = self.order.pop_first() else { break };
            if let Some((old, _)) = self.blocks.remove(&k) {
                self.bytes -= old.len() as u64;
            }
        }
    }
}

impl Blocks {
    pub fn new(capacity: u64) -> Self {
        Blocks { capacity, lru: Mutex::new(Lru::default()) }
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().expect("block cache poisoned")
    }

    /// Bytes `range` of pack `pack` (which is `size` bytes long), from the cache where it has
    /// them and through `fetch` (one ranged read) where it does not.
    pub fn read(
        &self,
        pack: u64,
        size: u64,
        range: Range<u64>,
        fetch: impl FnOnce(Range<u64>) -> Result<Bytes>,
    ) -> Result<Vec<u8>> {
        if range.end > size {
            // The index points past the object's end: the object was cut short (or replaced).
            return Err(Error::corrupt(format!("pack {pack} in the bucket is {size} bytes, read up to {}", range.end)));
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let (first, last) = (range.start / BLOCK, (range.end - 1) / BLOCK);
        let mut have: Vec<Option<Bytes>> = {
            let mut lru = self.lru();
            (first..=last).map(|b| lru.get((pack, b))).collect()
        };
        if let (Some(lo), Some(hi)) = (have.iter().position(Option::is_none), have.iter().rposition(Option::is_none)) {
            let start = (first + lo as u64) * BLOCK;
            let sequential = self.lru().last_miss_end.get(&pack) == Some(&start);
            let ahead = if sequential { READ_AHEAD } else { 0 };
            let end = ((first + hi as u64 + 1) * BLOCK + ahead).min(size);
            let got = fetch(start..end)?;
            if got.len() as u64 != end - start {
                return Err(Error::corrupt(format!(
                    "pack {pack} in the bucket: {} bytes read of {}",
                    got.len(),
                    end - start
                )));
            }
            let mut lru = self.lru();
            if lru.last_miss_end.len() > 1024 {
                lru.last_miss_end.clear();
            }
            lru.last_miss_end.insert(pack, end);
            for (i, at) in (start..end).step_by(BLOCK as usize).enumerate() {
                let b = got.slice(i * BLOCK as usize..((i + 1) * BLOCK as usize).min(got.len()));
                let n = at / BLOCK;
                if (first..=last).contains(&n) {
                    have[(n - first) as usize] = Some(b.clone());
                }
                lru.put((pack, n), b, self.capacity);
            }
        }
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for (i, b) in have.into_iter().enumerate() {
            let b = b.expect("every block is here now");
            let at = (first + i as u64) * BLOCK;
            let from = range.start.saturating_sub(at) as usize;
            let to = ((range.end - at) as usize).min(b.len());
            out.extend_from_slice(&b[from..to]);
        }
        Ok(out)
    }

    /// Drop a removed pack's blocks.
    pub fn forget(&self, pack: u64) {
        let mut lru = self.lru();
        let keys: Vec<_> = lru.blocks.keys().filter(|k| k.0 == pack).copied().collect();
        for k in keys {
            if let Some((old, used)) = lru.blocks.remove(&k) {
                lru.bytes -= old.len() as u64;
                lru.order.remove(&used);
            }
        }
        lru.last_miss_end.remove(&pack);
    }
}

pub(crate) struct Disk {
    dir: PathBuf,
    capacity: u64,
    /// std Mutex: held for map operations and for an `open` or `unlink`, never across a read.
    state: Mutex<DiskState>,
}

#[derive(Default)]
struct DiskState {
    files: HashMap<u64, (u64, u64)>,
    order: BTreeMap<u64, u64>,
    tick: u64,
    bytes: u64,
}

impl DiskState {
    fn touch(&mut self, id: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, used)) = self.files.get_mut(&id) {
            self.order.remove(used);
            *used = tick;
            self.order.insert(tick, id);
        }
    }
}

impl Disk {
    /// The cache directory, with what a previous run left in it (oldest name first, so the
    /// newest packs stay longest).
    pub fn open(dir: &Path, capacity: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let disk = Disk { dir: dir.to_path_buf(), capacity, state: Mutex::new(DiskState::default()) };
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            match name.to_str().and_then(super::super::parse_pack_name) {
                Some(id) => found.push((id, entry.metadata()?.len())),
                None if name.to_str().is_some_and(|n| n.ends_with(".tmp")) => fs::remove_file(entry.path())?,
                None => {}
            }
        }
        found.sort_unstable();
        let mut st = disk.state();
        for (id, len) in found {
            st.files.insert(id, (len, 0));
            st.bytes += len;
            st.touch(id);
        }
        drop(st);
        disk.evict(0)?;
        Ok(disk)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().expect("disk cache poisoned")
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(super::super::pack_name(id))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached pack, opened (an open file stays readable if it is evicted meanwhile).
    pub fn open_pack(&self, id: u64) -> Option<File> {
        let mut st = self.state();
        if !st.files.contains_key(&id) {
            return None;
        }
        st.touch(id);
        File::open(self.path(id)).ok()
    }

    /// Make room for `incoming` bytes, dropping the least recently used packs.
    fn evict(&self, incoming: u64) -> io::Result<()> {
        let mut st = self.state();
        while st.bytes + incoming > self.capacity {
            let Some((_, id)) = st.order.pop_first() else { break };
            if let Some((len, _)) = st.files.remove(&id) {
                st.bytes -= len;
                match fs::remove_file(self.path(id)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Take in the local copy of an uploaded pack (moved, not copied), or delete it if it
    /// does not fit. Either way it has left `from`.
    pub fn admit(&self, id: u64, from: &Path, len: u64) -> io::Result<()> {
        if len > self.capacity {
            return fs::remove_file(from);
        }
        self.evict(len)?;
        fs::rename(from, self.path(id))?;
        let mut st = self.state();
        st.files.insert(id, (len, 0));
        st.bytes += len;
        st.touch(id);
        Ok(())
    }

    /// Empty the cache (the disk is full: uploads come before cached copies). Returns the
    /// bytes given back.
    pub fn clear(&self) -> io::Result<u64> {
        let before = self.state().bytes;
        let mut st = self.state();
        while let Some((_, id)) = st.order.pop_first() {
            if let Some((len, _)) = st.files.remove(&id) {
                st.bytes -= len;
                match fs::remove_file(self.path(id)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(before - st.bytes)
    }

    /// Drop a removed pack.
    pub fn forget(&self, id: u64) -> io::Result<()> {
        let mut st = self.state();
        if let Some((len, used)) = st.files.remove(&id) {
            st.bytes -= len;
            st.order.remove(&used);
        }
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_small_read_fetches_at_most_its_blocks_and_a_warm_one_nothing() {
        let pack: Vec<u8> = (0..(1u32 << 20)).map(|i| i as u8).collect();
        let blocks = Blocks::new(1 << 20);
        let fetched = std::cell::Cell::new(0u64);
        let fetch = |r: Range<u64>| {
            fetched.set(fetched.get() + r.end - r.start);
            Ok(Bytes::copy_from_slice(&pack[r.start as usize..r.end as usize]))
        };
        let got = blocks.read(1, pack.len() as u64, 100_000..104_096, fetch).unwrap();
        assert_eq!(got, &pack[100_000..104_096]);
        assert!(fetched.get() <= 2 * BLOCK, "fetched {}", fetched.get());
        let before = fetched.get();
        let got = blocks.read(1, pack.len() as u64, 100_100..100_200, fetch).unwrap();
        assert_eq!(got, &pack[100_100..100_200]);
        assert_eq!(fetched.get(), before, "a warm read fetches nothing");
    }

    #[test]
    fn the_least_recently_used_blocks_leave_first() {
        let blocks = Blocks::new(2 * BLOCK);
        let size = 4 * BLOCK;
        let zero = |r: Range<u64>| Ok(Bytes::from(vec![0u8; (r.end - r.start) as usize]));
        blocks.read(1, size, 0..1, zero).unwrap();
        blocks.read(2, size, 0..1, zero).unwrap();
        blocks.read(1, size, 0..1, |_| panic!("block (1, 0) is cached")).unwrap();
        blocks.read(3, size, 0..1, zero).unwrap();
        // (2, 0) was the least recently used: it went.
        blocks.read(1, size, 0..1, |_| panic!("block (1, 0) is still cached")).unwrap();
        let mut refetched = false;
        blocks
            .read(2, size, 0..1, |r| {
                refetched = true;
                zero(r)
            })
            .unwrap();
        assert!(refetched);
    }

    #[test]
    fn the_disk_cache_keeps_the_newest_packs_within_its_size_and_finds_them_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (packs, cache) = (dir.path().join("packs"), dir.path().join("cache"));
        fs::create_dir_all(&packs).unwrap();
        let disk = Disk::open(&cache, 2500).unwrap();
        for id in 1..=3u64 {
            let from = packs.join(super::super::super::pack_name(id));
            fs::write(&from, vec![id as u8; 1000]).unwrap();
            disk.admit(id, &from, 1000).unwrap();
            assert!(!from.exists(), "moved, not copied");
        }
        assert!(disk.open_pack(1).is_none(), "the oldest went to make room");
        assert!(disk.open_pack(2).is_some() && disk.open_pack(3).is_some());
        let too_big = packs.join("big");
        fs::write(&too_big, vec![0u8; 3000]).unwrap();
        disk.admit(9, &too_big, 3000).unwrap();
        assert!(!too_big.exists() && disk.open_pack(9).is_none(), "deleted: it does not fit");
        drop(disk);
        let disk = Disk::open(&cache, 2500).unwrap();
        assert!(disk.open_pack(3).is_some(), "found again after a restart");
        disk.forget(3).unwrap();
        assert!(disk.open_pack(3).is_none());
        assert_eq!(disk.clear().unwrap(), 1000);
        assert!(disk.open_pack(2).is_none());
    }
}
