//! Which dictionary each pack gets, and reading a pack's dictionary back (cached).
//!
//! The difficulty: ingest's rayon workers compress a chunk before the writer knows which pack
//! it lands in. So the dictionary belongs to the lane, not to the pack being filled, and packs
//! follow it:
//!
//! - The uploads' lane makes a dictionary from the first `DICT_LEN` bytes of compressible
//!   chunks appended to it (raw content, no training), and the next one the same way once
//!   `DEFAULT_SPAN` bytes have been stored against the current one. A dictionary is used only
//!   after the engine has recorded it with the chunks it came from (`LaneDicts::record_made`):
//!   GC retires it when one of those chunks leaves the index (`engine::gc`), so deleted data
//!   does not live on in a dictionary. Workers compress against the lane's current dictionary
//!   (`LaneDicts::current`).
//! - A pack's dictionary is fixed at its first append (`for_new_pack`); it is written as the
//!   pack's first entry, before that chunk (`Packs::append_in`).
//! - A compressed chunk for an uploads pack whose dictionary is not the lane's current one (a
//!   pack opened before the lane made it) closes that pack as if it were full, so the next
//!   pack starts with the current dictionary (`closes_pack`). Once per dictionary.
//! - A compressed chunk that was not compressed against its pack's dictionary is compressed
//!   again from its raw bytes, against it, under the lane's lock: the rare path. On the
//!   uploads' lane these are the batches in flight when the lane got a new dictionary (at most
//!   ~7 MiB, ~30 ms of the writer's time), and the rule keeps them from going without; on
//!   compaction's, chunks copied from packs with another dictionary or none. It stays
//!   compressed (or becomes raw if it no longer shrinks), and compaction's index move records
//!   the new form.
//!
//! Invariants:
//! - (every reader relies on it) an entry with tag 2 in pack P was compressed against exactly
//!   the dictionary that is P's first entry. The dictionary lives and dies with its pack; it is
//!   never indexed.
//! - (deletion relies on it) a dictionary some pack carries either has a record naming its
//!   sources, or is retired, and GC rewrites every quiet pack that carries a retired one.
//!
//! Readers load a pack's dictionary on first need, check it against its id (its BLAKE3) and
//! keep it in a bounded cache: a 4 KiB range read costs one entry read plus, once per pack per
//! process, the dictionary's (~110 KiB).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::format::{self, EntryInfo, ENTRY_HEADER_LEN, HEADER_LEN};
use super::keyring::KeySet;
use super::sealed;
use super::Lane;
use crate::chunk::ChunkId;
use crate::codec::{Compression, SealedChunk};
use crate::dictionary::{self, Builder, Dictionary, Made, MAX_DICT_LEN};
use crate::error::{Error, Result};

/// Packs whose dictionary is kept in memory. Packs of one process share one dictionary (one
/// allocation), so this is usually a few hundred KiB; at worst 64 distinct dictionaries
/// (~14 MiB with zstd's copy of each).
pub const CACHE_CAPACITY: usize = 64;

/// Bytes of compressed chunks the uploads' lane stores against one dictionary before it makes
/// the next. Retiring a dictionary rewrites every pack that carries it, so this bounds that
/// work (and a server's first dictionary would otherwise be its only one until restart); a new
/// one costs the writer one re-compression of the batches in flight (~7 MiB, `dicts` above),
/// under 0.2% of 4 GiB.
pub const DEFAULT_SPAN: u64 = 4 << 30;

/// The dictionary of each lane, and whether dictionaries are used at all.
pub struct LaneDicts {
    enabled: AtomicBool,
    level: AtomicI32,
    span: AtomicU64,
    current: [RwLock<Option<Arc<Dictionary>>>; 2],
    /// The uploads' lane's next dictionary. A std Mutex: taken on the writer's blocking thread
    /// for a few field updates per compressible chunk, and across one synced database write
    /// once per dictionary (`record_made`).
    next: Mutex<Next>,
    /// Whether `next` holds a dictionary waiting for its record: checked after every append, so
    /// an atomic rather than the lock.
    made_waiting: AtomicBool,
    /// Raw bytes of compressed chunks appended since the uploads' current dictionary became
    /// current.
    used: AtomicU64,
}

/// What the uploads' lane gathers towards its next dictionary.
#[derive(Default)]
struct Next {
    builder: Builder,
    /// Made, not yet recorded, so not yet used.
    made: Option<Made>,
}

impl Default for LaneDicts {
    fn default() -> Self {
        LaneDicts {
            enabled: AtomicBool::new(false),
            level: AtomicI32::new(3),
            span: AtomicU64::new(DEFAULT_SPAN),
            current: Default::default(),
            next: Mutex::default(),
            made_waiting: AtomicBool::new(false),
            used: AtomicU64::new(0),
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

    /// Bytes stored against one dictionary before the next is made (`DEFAULT_SPAN`).
    pub fn set_span(&self, bytes: u64) {
        self.span.store(bytes.max(1), Ordering::Relaxed);
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

    /// Called with every chunk appended. The uploads' lane gathers its next dictionary from
    /// compressible chunks while it has none, or once the current one has served its span; it
    /// is used only after `record_made`. Compaction's lane adopts the first dictionary it is
    /// given (copying tag 2 chunks, whose dictionaries GC has checked are still recorded).
    pub(crate) fn observe(&self, lane: Lane, chunk: &SealedChunk) {
        if lane == Lane::Compaction {
            if let Some(d) = &chunk.dict {
                let mut current = self.current[lane as usize].write().expect("dictionary lock poisoned");
                current.get_or_insert_with(|| d.clone());
            }
            return;
        }
        if !self.enabled() || !chunk.compression.is_compressed() {
            return;
        }
        let has_current = self.current[lane as usize].read().expect("dictionary lock poisoned").is_some();
        // Counted without the lock: concurrent uploads' writers all pass here per chunk.
        let used = self.used.fetch_add(chunk.raw.len() as u64, Ordering::Relaxed);
        if has_current && used < self.span.load(Ordering::Relaxed) {
            return;
        }
        let mut next = self.next.lock().expect("dictionary builder poisoned");
        if next.made.is_none() {
            next.made = next.builder.offer(chunk.id, &chunk.raw);
            self.made_waiting.store(next.made.is_some(), Ordering::Release);
        }
    }

    /// Write down the dictionary the uploads' lane has made (with `record`: its id, its
    /// sources), and only then make it the lane's current one, so that no chunk is ever
    /// compressed against a dictionary GC does not know how to retire. A failed `record`
    /// drops the dictionary; the lane gathers another.
    pub fn record_made(&self, record: impl FnOnce(&Made) -> Result<()>) -> Result<()> {
        if !self.made_waiting.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut next = self.next.lock().expect("dictionary builder poisoned");
        self.made_waiting.store(false, Ordering::Release);
        let Some(made) = next.made.take() else {
            return Ok(());
        };
        record(&made)?;
        let d = made.dict;
        tracing::info!(dictionary = %d.id(), sources = made.sources.len(), "new packs of uploads get a new dictionary");
        *self.current[Lane::Uploads as usize].write().expect("dictionary lock poisoned") = Some(d);
        self.used.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Stop using the dictionaries `gone` names (GC found one of their sources gone): a lane
    /// whose current dictionary is among them has none until it makes (uploads) or adopts
    /// (compaction) another.
    pub fn retire(&self, gone: &HashSet<ChunkId>) {
        for slot in &self.current {
            let mut current = slot.write().expect("dictionary lock poisoned");
            if current.as_ref().is_some_and(|d| gone.contains(d.id())) {
                *current = None;
            }
        }
    }
}

/// Whether a compressed chunk closes `lane`'s open pack, whose dictionary is `pack`, so that
/// the next pack carries another: on the uploads' lane, when that is not the lane's current
/// dictionary (the lane made a new one since the pack was opened); on compaction's, when the
/// pack has none and the chunk or the lane has one.
pub(crate) fn closes_pack(
    lane: Lane,
    pack: Option<&Arc<Dictionary>>,
    chunk: Option<&Arc<Dictionary>>,
    current: Option<&Arc<Dictionary>>,
) -> bool {
    match lane {
        Lane::Uploads => current.is_some() && !dictionary::same(pack, current),
        Lane::Compaction => pack.is_none() && (chunk.is_some() || current.is_some()),
    }
}

/// The dictionary a new pack of `lane` starts with, given its first chunk's: the uploads'
/// lane's current one (never a chunk's, which may be one just retired); compaction's, the
/// chunk's if it has one, for a copy that needs no re-compression.
pub(crate) fn for_new_pack(
    lane: Lane,
    chunk: Option<&Arc<Dictionary>>,
    current: Option<Arc<Dictionary>>,
) -> Option<Arc<Dictionary>> {
    match lane {
        Lane::Uploads => current,
        Lane::Compaction => chunk.cloned().or(current),
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
    use crate::codec;
    use crate::dictionary::DICT_LEN;

    fn text_chunk(seed: u8, d: Option<&Arc<Dictionary>>) -> SealedChunk {
        let words: Vec<u8> =
            (0..64 << 10).map(|i: usize| b"the quick brown fox "[(i * 7 + seed as usize) % 20]).collect();
        codec::seal_with(Bytes::from(words), 3, d)
    }

    /// Offer chunks to the uploads' lane until it has made a dictionary; returns their ids.
    fn feed_until_made(l: &LaneDicts, seed: u8) -> Vec<ChunkId> {
        let mut ids = Vec::new();
        for i in 0..=(DICT_LEN / (64 << 10)) as u8 + 1 {
            let c = text_chunk(seed.wrapping_add(i), l.current(Lane::Uploads).as_ref());
            ids.push(c.id);
            l.observe(Lane::Uploads, &c);
            if l.made_waiting.load(Ordering::Acquire) {
                return ids;
            }
        }
        panic!("no dictionary made");
    }

    #[test]
    fn a_dictionary_is_used_only_once_recorded_with_its_sources() {
        let l = LaneDicts::default();
        l.configure(true, 3);
        let ids = feed_until_made(&l, 0);
        assert!(l.current(Lane::Uploads).is_none(), "made, not recorded: not used");
        // A failed record drops it: the lane gathers another.
        assert!(l.record_made(|_| Err(Error::corrupt("disk gone"))).is_err());
        assert!(l.current(Lane::Uploads).is_none());
        let ids = [ids, feed_until_made(&l, 10)].concat();
        let mut recorded = None;
        l.record_made(|m| {
            recorded = Some((*m.dict.id(), m.sources.clone()));
            Ok(())
        })
        .unwrap();
        let (id, sources) = recorded.expect("recorded");
        assert_eq!(l.current(Lane::Uploads).map(|d| *d.id()), Some(id));
        assert!(!sources.is_empty() && sources.iter().all(|s| ids[2..].contains(s)), "{sources:?}");
        // Nothing waiting: the next call records nothing.
        l.record_made(|_| panic!("nothing to record")).unwrap();
    }

    #[test]
    fn the_lane_makes_its_next_dictionary_after_its_span() {
        let l = LaneDicts::default();
        l.configure(true, 3);
        l.set_span(3 << 16);
        feed_until_made(&l, 0);
        l.record_made(|_| Ok(())).unwrap();
        let first = *l.current(Lane::Uploads).unwrap().id();
        // Within the span the builder is not fed; past it, the next dictionary is gathered.
        for seed in 0..3 {
            l.observe(Lane::Uploads, &text_chunk(50 + seed, l.current(Lane::Uploads).as_ref()));
            l.record_made(|_| panic!("still within the span")).unwrap();
        }
        feed_until_made(&l, 103); // another phase of the text than seed 0 (the generator repeats every 20)
        assert_eq!(l.current(Lane::Uploads).map(|d| *d.id()), Some(first), "the old one until recorded");
        l.record_made(|_| Ok(())).unwrap();
        assert_ne!(l.current(Lane::Uploads).map(|d| *d.id()), Some(first));
    }

    #[test]
    fn a_retired_dictionary_leaves_every_lane() {
        let l = LaneDicts::default();
        l.configure(true, 3);
        feed_until_made(&l, 0);
        l.record_made(|_| Ok(())).unwrap();
        let d = l.current(Lane::Uploads).unwrap();
        l.observe(Lane::Compaction, &text_chunk(7, Some(&d)));
        assert!(l.current(Lane::Compaction).is_some(), "compaction adopted it");
        l.retire(&HashSet::from([ChunkId([9; 32])]));
        assert!(l.current(Lane::Uploads).is_some(), "another dictionary's retirement changes nothing");
        l.retire(&HashSet::from([*d.id()]));
        assert!(l.current(Lane::Uploads).is_none() && l.current(Lane::Compaction).is_none());
        // An uploads pack never starts with a chunk's own (possibly retired) dictionary.
        assert!(for_new_pack(Lane::Uploads, Some(&d), None).is_none());
        assert_eq!(for_new_pack(Lane::Compaction, Some(&d), None).map(|x| *x.id()), Some(*d.id()));
        // Made again from new chunks.
        feed_until_made(&l, 30);
        l.record_made(|_| Ok(())).unwrap();
        assert!(l.current(Lane::Uploads).is_some_and(|n| n.id() != d.id()));
    }

    #[test]
    fn an_uploads_pack_closes_when_its_dictionary_is_not_the_lanes() {
        let a = Dictionary::new(Bytes::from_static(b"one dictionary")).unwrap();
        let b = Dictionary::new(Bytes::from_static(b"another")).unwrap();
        assert!(closes_pack(Lane::Uploads, None, None, Some(&a)));
        assert!(closes_pack(Lane::Uploads, Some(&a), Some(&a), Some(&b)));
        assert!(!closes_pack(Lane::Uploads, Some(&a), Some(&b), Some(&a)), "b's chunk is compressed again");
        assert!(!closes_pack(Lane::Uploads, Some(&a), None, None), "a lane with none keeps its pack");
        assert!(closes_pack(Lane::Compaction, None, Some(&a), None));
        assert!(!closes_pack(Lane::Compaction, Some(&a), Some(&b), Some(&a)));
    }

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
