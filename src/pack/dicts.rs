//! Which dictionary each pack gets, and reading a pack's dictionary back (cached).
//!
//! The difficulty: ingest's rayon workers compress a chunk before the writer knows which pack
//! it lands in. So the dictionary belongs to the lane, not to the pack being filled, and packs
//! follow it:
//!
//! - The uploads' lane has one dictionary for the life of the process: the first `DICT_LEN`
//!   bytes of compressible chunks appended to it (raw content, no training). Workers compress
//!   against the lane's dictionary as soon as there is one (`LaneDicts::current`).
//! - A pack's dictionary is fixed at its first append: the dictionary of that first chunk if
//!   it has one, else the lane's current one, else none; it is written as the pack's first
//!   entry, before that chunk (`Packs::append_in`).
//! - Once a lane has a dictionary, a compressed chunk for a pack of that lane with entries but
//!   no dictionary (a pack opened before) closes that pack as if it were full: the next pack
//!   starts with the dictionary. Once per lane per process.
//! - A compressed chunk that was not compressed against its pack's dictionary is compressed
//!   again from its raw bytes, against it, under the lane's lock: the rare path. On the
//!   uploads' lane these are the batches in flight when the lane got its dictionary (at most
//!   ~7 MiB, once per process, ~30 ms of the writer's time), and the rule keeps them from going
//!   without; on compaction's, chunks copied from packs with another dictionary or none. It
//!   stays compressed (or becomes raw if it no longer shrinks), and compaction's index move
//!   records the new form.
//!
//! Invariant (the one every reader relies on): an entry with tag 2 in pack P was compressed
//! against exactly the dictionary that is P's first entry. The dictionary lives and dies with
//! its pack, so GC needs no references to it; it is never indexed.
//!
//! Readers load a pack's dictionary on first need, check it against its id (its BLAKE3) and
//! keep it in a bounded cache: a 4 KiB range read costs one entry read plus, once per pack per
//! process, the dictionary's (~110 KiB).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::format::{self, EntryInfo, ENTRY_HEADER_LEN, HEADER_LEN};
use super::keyring::KeySet;
use super::sealed;
use super::Lane;
use crate::codec::{Compression, SealedChunk};
use crate::dictionary::{Builder, Dictionary, MAX_DICT_LEN};
use crate::error::{Error, Result};

/// Packs whose dictionary is kept in memory. Packs of one process share one dictionary (one
/// allocation), so this is usually a few hundred KiB; at worst 64 distinct dictionaries
/// (~14 MiB with zstd's copy of each).
pub const CACHE_CAPACITY: usize = 64;

/// The dictionary of each lane, and whether dictionaries are used at all.
pub struct LaneDicts {
    enabled: AtomicBool,
    level: AtomicI32,
    current: [RwLock<Option<Arc<Dictionary>>>; 2],
    builder: Mutex<Builder>,
}

impl Default for LaneDicts {
    fn default() -> Self {
        LaneDicts {
            enabled: AtomicBool::new(false),
            level: AtomicI32::new(3),
            current: Default::default(),
            builder: Mutex::default(),
        }
    }
}

impl LaneDicts {
    /// Turn dictionaries on or off for new chunks (`pack_dictionary`), at the level chunks are
    /// compressed at. Off, the uploads' lane makes none; packs already written read the same,
    /// and compaction keeps the dictionary of the chunks it copies (else a mix of chunks with
    /// and without one would close a compaction pack early again and again).
    pub fn configure(&self, enabled: bool, level: i32) {
        self.level.store(level, Ordering::Relaxed);
        self.enabled.store(enabled, Ordering::Release);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    pub fn level(&self) -> i32 {
        self.level.load(Ordering::Relaxed)
    }

    /// The dictionary new chunks of `lane` are compressed against, if any.
    pub fn current(&self, lane: Lane) -> Option<Arc<Dictionary>> {
        if lane == Lane::Uploads && !self.enabled() {
            return None;
        }
        self.current[lane as usize].read().expect("dictionary lock poisoned").clone()
    }

    /// Called with every chunk appended: the uploads' lane gathers its dictionary from the
    /// first compressible chunks; a lane without one adopts the first dictionary it is given
    /// (compaction, copying tag 2 chunks).
    pub(crate) fn observe(&self, lane: Lane, chunk: &SealedChunk) {
        if lane == Lane::Uploads && !self.enabled() {
            return;
        }
        let slot = &self.current[lane as usize];
        if slot.read().expect("dictionary lock poisoned").is_some() {
            return;
        }
        let made = match (&chunk.dict, chunk.compression, lane) {
            (Some(d), _, _) => Some(d.clone()),
            (None, Compression::Zstd, Lane::Uploads) => {
                self.builder.lock().expect("dictionary builder poisoned").offer(&chunk.raw)
            }
            _ => None,
        };
        if let Some(d) = made {
            let mut current = slot.write().expect("dictionary lock poisoned");
            if current.is_none() {
                tracing::info!(lane = ?lane, dictionary = %d.id(), "packs of this lane now get a dictionary");
                *current = Some(d);
            }
        }
    }
}

/// Dictionaries of packs, by pack id, the least recently used leaving first.
#[derive(Default)]
pub(crate) struct DictCache {
    lru: Mutex<Lru>,
}

/// Each pack's dictionary with when it was last used, on a clock of uses.
#[derive(Default)]
struct Lru {
    map: HashMap<u64, (Arc<Dictionary>, u64)>,
    clock: u64,
}

impl DictCache {
    /// The dictionary of `pack_id`: kept, or loaded with `load` and kept. A dictionary equal to
    /// one already kept (same id) is shared, not kept twice.
    pub fn get(&self, pack_id: u64, load: impl FnOnce() -> Result<Arc<Dictionary>>) -> Result<Arc<Dictionary>> {
        {
            let mut guard = self.lru.lock().expect("dictionary cache poisoned");
            let Lru { map, clock } = &mut *guard;
            *clock += 1;
            if let Some((d, used)) = map.get_mut(&pack_id) {
                *used = *clock;
                return Ok(d.clone());
            }
        }
        let loaded = load()?;
        let mut guard = self.lru.lock().expect("dictionary cache poisoned");
        let Lru { map, clock } = &mut *guard;
        let d = map.values().find(|(d, _)| d.id() == loaded.id()).map_or(loaded, |(d, _)| d.clone());
        if map.len() >= CACHE_CAPACITY {
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id) {
                map.remove(&oldest);
            }
        }
        map.insert(pack_id, (d.clone(), *clock));
        Ok(d)
    }

    pub fn forget(&self, pack_id: u64) {
        self.lru.lock().expect("dictionary cache poisoned").map.remove(&pack_id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lru.lock().unwrap().map.len()
    }
}

/// Read the dictionary that is the first entry of a pack, through `read(offset, len)` (a file,
/// or ranged reads of an object): two reads, the entry's header and its bytes. Opened if
/// sealed, and checked against its id. An error if the first entry is not a dictionary or does
/// not check out: the caller wanted it for a tag 2 entry, which the rule says follows one.
pub(crate) fn load(name: &str, read: &dyn Fn(u64, usize) -> Result<Vec<u8>>, keys: &KeySet) -> Result<Arc<Dictionary>> {
    let bad = |why: String| Error::corrupt(format!("{name}: dictionary: {why}"));
    let at = HEADER_LEN as u64;
    let head = read(at, ENTRY_HEADER_LEN)?;
    let (info, bytes) = if sealed::is_sealed_entry(&head) {
        let frame = sealed::parse_frame(&head, at).map_err(|e| bad(e.to_string()))?;
        if frame.sealed_len > MAX_DICT_LEN + sealed::OVERHEAD {
            return Err(bad(format!("{} bytes", frame.sealed_len)));
        }
        let mut body = read(at + ENTRY_HEADER_LEN as u64, frame.sealed_len as usize)?;
        let (info, range) = sealed::open_entry(keys, &head, at, &mut body).map_err(|e| bad(e.to_string()))?;
        (info, Bytes::from(body).slice(range))
    } else {
        let info = format::parse_entry_header(&head, at).map_err(|e| bad(e.to_string()))?;
        let body = read(at + ENTRY_HEADER_LEN as u64, info.stored_len as usize)?;
        (info, Bytes::from(body))
    };
    if info.compression != Compression::Dictionary {
        return Err(bad("the pack's first entry is not a dictionary".into()));
    }
    Dictionary::verified(info.id, bytes).map_err(|e| bad(e.to_string()))
}

/// The pack's dictionary from a whole pack's bytes (`entries[0]`, if it is one and checks
/// out), for verifying every entry: fsck, recovery, index rebuilds.
pub(crate) fn from_entry(e: &EntryInfo, stored: &[u8]) -> std::result::Result<Arc<Dictionary>, String> {
    if e.compression != Compression::Dictionary {
        return Err("not a dictionary".into());
    }
    Dictionary::verified(e.id, Bytes::copy_from_slice(stored)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_and_shares_equal_dictionaries() {
        let c = DictCache::default();
        let d = Dictionary::new(Bytes::from_static(b"a dictionary")).unwrap();
        let loads = std::cell::Cell::new(0);
        for id in 0..CACHE_CAPACITY as u64 + 5 {
            let got = c
                .get(id, || {
                    loads.set(loads.get() + 1);
                    Ok(Dictionary::new(Bytes::from_static(b"a dictionary")).unwrap())
                })
                .unwrap();
            assert_eq!(got.id(), d.id());
        }
        assert_eq!(c.len(), CACHE_CAPACITY);
        let again = c.get(CACHE_CAPACITY as u64 + 4, || panic!("kept")).unwrap();
        let other = c.get(CACHE_CAPACITY as u64 + 3, || panic!("kept")).unwrap();
        assert!(Arc::ptr_eq(&again, &other), "one allocation for one dictionary");
        assert!(c.get(0, || Err(Error::corrupt("gone"))).is_err(), "the oldest left");
    }
}
