//! Packfiles on local disk: appending, syncing, sealing, reading and crash recovery.
//!
//! Where packs live is this module's business alone; the engine speaks to it in pack ids and
//! entries. `remote` keeps sealed packs in an S3-compatible bucket instead, around these same
//! local packs for the open ones; `open_store` picks one from `[storage]`.

pub mod dicts;
pub mod format;
pub mod keyring;
mod open;
mod readers;
pub mod remote;
pub mod sealed;
mod space;
mod store;

pub use dicts::LaneDicts;
pub use keyring::{KeySet, KeySource, Keyring};
pub use store::{overhead, stored_cost, PackKeys, PackStore};

pub use remote::settings::{Backend, StorageConfig};
pub use space::Low as LowSpace;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use format::{EntryInfo, FormatError, ENTRY_HEADER_LEN, TRAILER_LEN};
use open::{Durability, OpenPack, SealFailed};

use crate::chunk::ChunkId;
use crate::codec::{self, Compression, SealedChunk};
use crate::dictionary::{self, Dictionary};
use crate::error::{Error, Result};
use crate::metrics::{timed, LockWaits};

/// A pack that was just sealed: the engine records it in the `packs` column family.
#[derive(Debug, Clone)]
pub struct SealedPack {
    pub id: u64,
    pub size: u64,
    pub entries: Vec<EntryInfo>,
}

/// Who is appending, and so which open pack the bytes go to. Uploads and compaction never
/// share a pack: an upload's `fdatasync` then never has to write out compaction's copies, and
/// neither waits on the other's sync lock (compaction copies hundreds of MiB; an upload wants
/// its few chunks durable now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Uploads,
    Compaction,
}

impl Lane {
    const ALL: [Lane; 2] = [Lane::Uploads, Lane::Compaction];
}

/// Proof of an append, and the means to make it durable.
#[derive(Clone)]
pub struct Appended {
    pub pack_id: u64,
    pub entry: EntryInfo,
    lane: Lane,
    durable: Arc<Durability>,
}

pub struct Packs {
    dir: PathBuf,
    target_size: u64,
    /// The open pack of each lane. std Mutex, not tokio's: it is only ever taken on blocking
    /// threads, for one positioned write, and never across an `.await`, a seal or a sync.
    open: [Mutex<Option<OpenPack>>; 2],
    /// A pack created ahead of need for the uploads' lane. Creating one costs a header write,
    /// two fsyncs and a rename (3–7 ms here); the uploads' lane takes the spare under its lock
    /// instead, and the appender that took it makes the next one after letting go of the lock.
    /// Compaction creates its own packs: its lane's lock is GC's alone, and it must not race
    /// uploads for the spare.
    spare: Mutex<Option<OpenPack>>,
    next_id: AtomicU64,
    /// Read handles, opened on first use, a bounded number at once. Positioned reads need no
    /// lock on the file itself.
    readers: readers::Readers,
    /// Holds on packs that GC and fsck must not judge from the index, by pack id: one from the
    /// pack's creation until its seal is done (open, spare or being sealed), plus one per entry
    /// appended but not yet indexed (or abandoned). A pack with none is "quiet", and stays so.
    unindexed: Mutex<HashMap<u64, u64>>,
    /// Uploads stop short of filling the disk.
    space: space::Space,
    waits: LockWaits,
    /// Data keys: new entries and tables are sealed under the current one (if sealing is on).
    keyring: Arc<Keyring>,
    /// The lanes' dictionaries (see `dicts`), shared with ingest's workers.
    dicts: Arc<LaneDicts>,
    /// Packs' dictionaries, read back for tag 2 entries.
    dict_cache: dicts::DictCache,
}

/// The pack store `storage` asks for, opened on `dir` (see `Packs::open` and
/// `remote::RemotePacks::open`), with the packs a crash left unsealed, now recovered.
#[allow(clippy::too_many_arguments)]
pub fn open_store(
    dir: &Path,
    storage: &StorageConfig,
    target_size: u64,
    min_free: u64,
    id_floor: u64,
    waits: LockWaits,
    keyring: Arc<Keyring>,
    registry: &prometheus::Registry,
) -> Result<(Box<dyn PackStore>, Vec<SealedPack>)> {
    Ok(match storage.backend {
        Backend::Local => {
            let (p, recovered) = Packs::open(dir, target_size, min_free, id_floor, waits, keyring)?;
            (Box::new(p), recovered)
        }
        Backend::S3 => {
            let (p, recovered) =
                remote::RemotePacks::open(dir, storage, target_size, min_free, id_floor, waits, keyring, registry)?;
            (Box::new(p), recovered)
        }
    })
}

fn pack_name(id: u64) -> String {
    format!("{id:016x}.pack")
}

fn parse_pack_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".pack")?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

impl Packs {
    /// Open the pack directory. Any pack left unsealed (or with a damaged seal) by a crash is
    /// recovered: its verified entries are kept, the torn tail cut off, and it is sealed. The
    /// recovered packs are returned so the caller can record them. Pack ids continue above both
    /// what is on disk and `id_floor` (the highest id the database has heard of).
    pub fn open(
        dir: &Path,
        target_size: u64,
        min_free: u64,
        id_floor: u64,
        waits: LockWaits,
        keyring: Arc<Keyring>,
    ) -> Result<(Self, Vec<SealedPack>)> {
        fs::create_dir_all(dir)?;
        remove_torn_creations(dir)?;
        let ids = list_ids(dir)?;
        let mut recovered = Vec::new();
        let keys = keyring.keys();
        for &id in &ids {
            let path = dir.join(pack_name(id));
            if read_sealed(&path, &keys).is_ok() {
                continue;
            }
            // A pack whose very header is unreadable is left alone for fsck to report: refusing
            // to start would make one bad file take every account offline.
            match recover(&path, id, &keys) {
                Ok(p) => recovered.push(p),
                Err(e) => tracing::error!(pack = id, error = %e, "cannot recover pack; leaving it for fsck"),
            }
        }
        let next = ids.iter().copied().max().unwrap_or(0).max(id_floor) + 1;
        let packs = Packs {
            dir: dir.to_path_buf(),
            target_size,
            open: Default::default(),
            spare: Mutex::new(None),
            next_id: AtomicU64::new(next),
            readers: readers::Readers::new(readers::DEFAULT_CAPACITY),
            unindexed: Mutex::new(HashMap::new()),
            space: space::Space::new(dir, min_free),
            waits,
            keyring,
            dicts: Arc::default(),
            dict_cache: dicts::DictCache::default(),
        };
        Ok((packs, recovered))
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(pack_name(id))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Only the uploads' waits are measured: they are what `LockWaits` watches, and GC's own
    /// lane would bury them under one sample per copied chunk.
    fn lane(&self, lane: Lane) -> MutexGuard<'_, Option<OpenPack>> {
        let lock = || self.open[lane as usize].lock().expect("pack lock poisoned");
        match lane {
            Lane::Uploads => timed(&self.waits.pack_lane, lock),
            Lane::Compaction => lock(),
        }
    }

    /// The chunk as the current key wants it: sealed under that key (reusing a seal made
    /// ahead, on a worker thread, if it is under that key), or plain if sealing is off.
    fn sealed_for<'c>(&self, chunk: &'c SealedChunk) -> Result<Cow<'c, SealedChunk>> {
        let keys = self.keyring.keys();
        match keys.current() {
            None if chunk.cipher.is_none() => Ok(Cow::Borrowed(chunk)),
            None => Ok(Cow::Owned(SealedChunk { cipher: None, ..chunk.clone() })),
            Some(key) if chunk.cipher.as_ref().is_some_and(|c| c.key_id == key) => Ok(Cow::Borrowed(chunk)),
            Some(_) => Ok(Cow::Owned(encrypt(&keys, chunk.clone())?)),
        }
    }

    fn append_in(&self, lane: Lane, slot: &mut Option<OpenPack>, chunk: &SealedChunk) -> Result<Appended> {
        // Checked again under the lane's lock: a rotation since the caller's check must not let
        // an entry under the old key in after `retire_keys` looked at this lane.
        let chunk = self.sealed_for(chunk)?;
        let chunk = chunk.as_ref();
        if lane == Lane::Uploads {
            let cost = OpenPack::entry_cost(chunk) + self.dictionary_cost(slot.as_ref());
            self.space.admit(cost).map_err(|low| Error::DiskFull { reserve: low.reserve })?;
        }
        if slot.is_none() {
            *slot = Some(match lane {
                Lane::Uploads => self.take_spare()?,
                Lane::Compaction => self.create()?,
            });
        }
        let p = slot.as_mut().expect("just opened");
        let chunk = self.fit_dictionary(lane, p, chunk)?;
        let entry = p.append(chunk.as_ref())?;
        self.hold(p.id, 1);
        Ok(Appended { pack_id: p.id, entry, lane, durable: p.durable.clone() })
    }

    /// Keep the dictionary invariant (`dicts`) for `chunk` going into `p`: a pack's first
    /// append writes its dictionary first, if it gets one; a compressed chunk that was not
    /// compressed against the pack's dictionary is compressed again from its raw bytes, against
    /// it (the rare path: the chunks in flight when the lane got its dictionary, and
    /// compaction copying from other packs).
    fn fit_dictionary<'c>(&self, lane: Lane, p: &mut OpenPack, chunk: &'c SealedChunk) -> Result<Cow<'c, SealedChunk>> {
        if p.entries.is_empty() && p.dict.is_none() {
            if let Some(d) = dicts::for_new_pack(lane, chunk.dict.as_ref(), self.dicts.current(lane)) {
                let entry = SealedChunk {
                    id: *d.id(),
                    raw: d.bytes().clone(),
                    compression: Compression::Dictionary,
                    stored: d.bytes().clone(),
                    cipher: None,
                    dict: None,
                };
                p.append(self.sealed_for(&entry)?.as_ref())?;
                p.dict = Some(d);
            }
        }
        let fits = match chunk.compression {
            Compression::ZstdDict => dictionary::same(chunk.dict.as_ref(), p.dict.as_ref()),
            Compression::Zstd => p.dict.is_none(),
            Compression::Raw | Compression::Dictionary => true,
        };
        if fits {
            return Ok(Cow::Borrowed(chunk));
        }
        let again = codec::seal_with(chunk.raw.clone(), self.dicts.level(), p.dict.as_ref());
        Ok(Cow::Owned(self.sealed_for(&again)?.into_owned()))
    }

    /// Bytes the uploads' dictionary adds to an append that opens a pack (`fit_dictionary`
    /// writes it first), for the free-space check.
    fn dictionary_cost(&self, open: Option<&OpenPack>) -> u64 {
        let opens = open.is_none_or(|p| p.entries.is_empty() && p.dict.is_none());
        let dict = self.dicts.current(Lane::Uploads).filter(|_| opens);
        dict.map_or(0, |d| (ENTRY_HEADER_LEN + d.bytes().len()) as u64)
    }

    /// The dictionary a read of `e` needs: its pack's, for a tag 2 entry.
    fn dict_for(&self, pack_id: u64, e: &EntryInfo) -> Result<Option<Arc<Dictionary>>> {
        (e.compression == Compression::ZstdDict).then(|| self.dictionary(pack_id)).transpose()
    }

    /// The spare pack, or a new one if there is none (the first pack, or a refill failed or is
    /// still under way).
    fn take_spare(&self) -> Result<OpenPack> {
        let current = self.keyring.keys().current();
        match self.spare.lock().expect("spare lock poisoned").take() {
            Some(mut p) if p.table_key == current => {
                p.last_append = Instant::now();
                Ok(p)
            }
            Some(stale) => {
                // Made before a rotation (or before sealing was turned off): sealed empty,
                // for GC to delete.
                if let Err(e) = self.seal(stale) {
                    tracing::warn!(error = %e, "cannot seal a stale spare pack");
                }
                self.create()
            }
            None => self.create(),
        }
    }

    /// Make a spare if there is none. A failure is only logged: the next lane to fill then
    /// creates its pack itself and reports the error to its appender.
    fn refill_spare(&self) {
        if self.spare.lock().expect("spare lock poisoned").is_some() {
            return;
        }
        match self.create() {
            Ok(p) => {
                let extra = self.spare.lock().expect("spare lock poisoned").replace(p);
                // Two appenders refilled at once; keep one spare, seal the other as an empty
                // pack, which GC deletes.
                if let Some(extra) = extra {
                    if let Err(e) = self.seal(extra) {
                        tracing::warn!(error = %e, "cannot seal an extra spare pack");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot create a spare pack"),
        }
    }

    /// A new pack file, held from before its name appears until its seal is done.
    fn create(&self) -> Result<OpenPack> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.hold(id, 1);
        OpenPack::create(&self.path(id), id, self.keyring.keys().current()).map_err(|e| {
            self.hold(id, -1);
            e.into()
        })
    }

    /// Seal a pack that is out of every lane, then release its creation hold (also when the
    /// seal fails: the pack is then quiet but unsealed, which fsck reports and a restart
    /// recovers).
    fn seal(&self, p: OpenPack) -> Result<SealedPack> {
        let id = p.id;
        let sealed = p.seal(&self.keyring.keys()).map(|(id, entries, size)| SealedPack { id, size, entries });
        self.hold(id, -1);
        sealed.map_err(|e| sealing_failed(id, e))
    }

    /// Count holds on a pack; see `unindexed`.
    fn hold(&self, pack_id: u64, delta: i64) {
        let mut unindexed = self.unindexed.lock().expect("unindexed poisoned");
        let n = unindexed.entry(pack_id).or_insert(0);
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            unindexed.remove(&pack_id);
        }
    }

    /// Take a failed pack out of its lane, if it is still there, and release its creation
    /// hold. It stays on disk unsealed: fsck reports it, and the next start recovers what in it
    /// verifies. Entries synced before the failure are indexed and stay readable; none after.
    fn retire(&self, lane: Lane, pack_id: u64) {
        let taken = {
            let mut slot = self.lane(lane);
            if slot.as_ref().is_some_and(|p| p.id == pack_id) {
                slot.take()
            } else {
                None
            }
        };
        if taken.is_some() {
            tracing::error!(pack = pack_id, "a sync of this pack failed; new appends go to a new pack");
            self.hold(pack_id, -1);
        }
    }

    /// Take the lane's pack out if it has been idle for `idle`, then seal it. Appenders open
    /// a new pack meanwhile; this one takes no more appends.
    fn seal_lane_if(&self, lane: Lane, idle: Duration) -> Result<Option<SealedPack>> {
        let taken = {
            let mut slot = self.lane(lane);
            match slot.as_ref() {
                Some(p) if p.last_append.elapsed() >= idle => slot.take(),
                _ => None,
            }
        };
        taken.map(|p| self.seal(p)).transpose()
    }

    fn reader(&self, pack_id: u64) -> Result<Arc<File>> {
        Ok(self.readers.get(pack_id, || File::open(self.path(pack_id)))?)
    }
}

impl PackStore for Packs {
    fn size(&self, pack_id: u64) -> Result<u64> {
        Ok(fs::metadata(self.path(pack_id))?.len())
    }

    fn table(&self, pack_id: u64) -> Result<Vec<EntryInfo>> {
        read_sealed(&self.path(pack_id), &self.keyring.keys())
    }

    fn verify(&self, pack_id: u64, bad: &mut dyn FnMut(EntryInfo, String)) -> Result<(Vec<EntryInfo>, u64)> {
        let (entries, end) = verified_entries(&self.path(pack_id), &self.keyring.keys(), bad)?;
        Ok((chunks_only(entries), end))
    }

    fn dictionary(&self, pack_id: u64) -> Result<Arc<Dictionary>> {
        self.dict_cache.get(pack_id, || {
            let file = self.reader(pack_id)?;
            let read = |at: u64, len: usize| -> Result<Vec<u8>> {
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, at)?;
                Ok(buf)
            };
            dicts::load(&format!("pack {pack_id}"), &read, &self.keyring.keys())
        })
    }

    fn dictionaries(&self) -> Arc<LaneDicts> {
        self.dicts.clone()
    }

    fn keys_of(&self, pack_id: u64) -> Result<PackKeys> {
        let (header, entries) = table_entries(&self.path(pack_id), &self.keyring.keys())?;
        Ok(PackKeys { table: header.table_key, entries: entries.iter().filter_map(|(_, k)| *k).collect() })
    }

    fn stale(&self, pack_id: u64) -> Result<bool> {
        let Some(current) = self.keyring.keys().current() else {
            return Ok(false); // sealing is off: nothing is rewritten for its key's sake
        };
        let used = self.keys_of(pack_id)?;
        Ok(used.table != Some(current) || used.entries.iter().any(|k| *k != current))
    }

    /// Read an entry for compaction: opened, decompressed and verified. The copy keeps the
    /// entry's sealed bytes when they are under the current key (copied byte for byte);
    /// otherwise `append` seals it anew.
    fn copy_out(&self, pack_id: u64, e: &EntryInfo) -> Result<SealedChunk> {
        let file = self.reader(pack_id)?;
        let mut buf = vec![0u8; (e.end() - e.offset) as usize];
        file.read_exact_at(&mut buf, e.offset)?;
        self.copy_out_of(pack_id, e, buf, self.dict_for(pack_id, e)?)
    }

    /// A new data key, current at once: the open packs are sealed (returned, for recording)
    /// and the spare dropped, so that every pack made from now on is under the new key.
    fn rotate_key(&self) -> Result<(u32, Vec<SealedPack>)> {
        let id = self.keyring.rotate().map_err(|e| Error::Internal(e.to_string()))?;
        let mut sealed = Vec::new();
        for lane in Lane::ALL {
            sealed.extend(self.seal_lane(lane)?);
        }
        let spare = self.spare.lock().expect("spare lock poisoned").take();
        if let Some(p) = spare {
            sealed.push(self.seal(p)?);
        }
        Ok((id, sealed))
    }

    /// Drop the data keys no pack uses. The lanes and the spare are locked meanwhile, so no
    /// entry under an old key can be appended between the look and the drop.
    fn retire_keys(&self) -> Result<Vec<u32>> {
        self.retire_keys_beside(BTreeSet::new())
    }

    /// Append one chunk to the lane's open pack, first taking that pack out of the lane if the
    /// chunk would take it past the target size. Returns the pack this sealed, if any, for the
    /// caller to record.
    fn append(&self, lane: Lane, chunk: &SealedChunk) -> Result<(Appended, Option<SealedPack>)> {
        // Sealed before the lane's lock is taken, when the caller did not already.
        let chunk = self.sealed_for(chunk)?;
        let chunk = chunk.as_ref();
        self.dicts.observe(lane, chunk);
        let lane_dict = self.dicts.current(lane);
        let mut slot = self.lane(lane);
        let mut full = None;
        if let Some(p) = slot.as_ref() {
            let size = p.sealed_size() + OpenPack::entry_cost(chunk) + format::TABLE_RECORD_LEN as u64;
            // A pack opened before its lane had its dictionary is closed by the first
            // compressible chunk after, so that the next pack can carry it (`dicts`).
            let wants_dict = chunk.compression.is_compressed()
                && dicts::closes_pack(lane, p.dict.as_ref(), chunk.dict.as_ref(), lane_dict.as_ref());
            if !p.entries.is_empty() && (size > self.target_size || wants_dict) {
                full = slot.take();
            }
        }
        let took_spare = slot.is_none() && lane == Lane::Uploads;
        let appended = self.append_in(lane, &mut slot, chunk);
        drop(slot);
        // The full pack is out of the lane, so nobody appends to it: seal it (a table write and
        // an fsync) without holding up other appenders. Our chunk went elsewhere, so a failed
        // seal is not this append's error: the pack stays unsealed, every entry in it still
        // readable, for fsck to report and the next start to recover.
        let sealed = full.and_then(|p| {
            let id = p.id;
            self.seal(p).map_err(|e| tracing::error!(pack = id, error = %e, "cannot seal a full pack")).ok()
        });
        if took_spare {
            self.refill_spare();
        }
        Ok((appended?, sealed))
    }

    /// The appender is done with these entries: indexed, or abandoned as dead bytes.
    fn settle(&self, done: &[Appended]) {
        for a in done {
            self.hold(a.pack_id, -1);
        }
    }

    /// Sealed packs with no entry waiting to be indexed. Once quiet, a pack stays quiet: it
    /// takes no more appends.
    fn quiet(&self) -> Result<Vec<u64>> {
        let ids = self.list()?;
        let unindexed = self.unindexed.lock().expect("unindexed poisoned");
        Ok(ids.into_iter().filter(|id| !unindexed.contains_key(id)).collect())
    }

    /// Make an append durable. Takes no lock but its own pack's sync lock. A pack whose sync
    /// failed can never be trusted again (see `Durability`), so it leaves its lane at once:
    /// the next append starts a new pack instead of failing on this one until it fills.
    fn sync(&self, a: &Appended) -> Result<()> {
        let waits = (a.lane == Lane::Uploads).then_some(&self.waits.pack_sync);
        a.durable.sync_to(a.entry.end(), waits).map_err(|e| {
            self.retire(a.lane, a.pack_id);
            e.into()
        })
    }

    /// Seal the open packs that have been idle for `idle`. A lane whose seal fails does not
    /// keep the other from being sealed; the packs sealed come back with the first error.
    fn seal_if_idle(&self, idle: Duration) -> (Vec<SealedPack>, Result<()>) {
        let (mut sealed, mut outcome) = (Vec::new(), Ok(()));
        for lane in Lane::ALL {
            match self.seal_lane_if(lane, idle) {
                Ok(p) => sealed.extend(p),
                Err(e) if outcome.is_ok() => outcome = Err(e),
                Err(e) => tracing::error!(error = %e, "cannot seal a pack"),
            }
        }
        (sealed, outcome)
    }

    /// Seal one lane's open pack now, if it has one.
    fn seal_lane(&self, lane: Lane) -> Result<Option<SealedPack>> {
        self.seal_lane_if(lane, Duration::ZERO)
    }

    /// Seal every open pack and delete the spare (clean shutdown). Returns what was sealed,
    /// for recording.
    fn close(&self) -> (Vec<SealedPack>, Result<()>) {
        let (sealed, outcome) = self.seal_if_idle(Duration::ZERO);
        let spare = self.spare.lock().expect("spare lock poisoned").take();
        let removed = spare.map_or(Ok(()), |p| {
            let id = p.id;
            drop(p);
            let removed = self.remove(id);
            self.hold(id, -1);
            removed
        });
        (sealed, outcome.and(removed))
    }

    fn list(&self) -> Result<Vec<u64>> {
        Ok(list_ids(&self.dir)?)
    }

    /// Read one entry's stored bytes, checking that the entry header says what the index says.
    fn read_stored(&self, pack_id: u64, want: &EntryInfo) -> Result<Bytes> {
        let mut run = self.read_stored_run(pack_id, std::slice::from_ref(want))?;
        Ok(run.pop().expect("one entry asked, one read"))
    }

    /// Read the stored bytes of a run of entries that lie back to back in one pack (each
    /// starting where the one before ends), headers included, with one positioned read; each
    /// entry header is checked against what the index says. The bytes come back as views of
    /// the one buffer: one read and one allocation per run instead of two reads and one
    /// allocation per chunk.
    fn read_stored_run(&self, pack_id: u64, run: &[EntryInfo]) -> Result<Vec<Bytes>> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(Vec::new());
        };
        debug_assert!(run.windows(2).all(|w| w[0].end() == w[1].offset), "a run is back to back");
        let file = self.reader(pack_id)?;
        let buf = read_exact_at_uninit(&file, (last.end() - first.offset) as usize, first.offset)?;
        self.open_run(pack_id, run, first.offset, buf)
    }

    /// Read, decompress and verify one chunk. A chunk that does not hash to its id is an error,
    /// never data.
    fn read_chunk(&self, pack_id: u64, want: &EntryInfo, verify: bool) -> Result<Bytes> {
        let stored = self.read_stored(pack_id, want)?;
        unseal_checked(pack_id, want, stored, verify, self.dict_for(pack_id, want)?.as_deref())
    }

    fn remove(&self, pack_id: u64) -> Result<()> {
        self.readers.forget(pack_id);
        self.dict_cache.forget(pack_id);
        fs::remove_file(self.path(pack_id))?;
        open::sync_parent(&self.path(pack_id))?;
        Ok(())
    }
}

impl Packs {
    /// `retire_keys`, keeping also the keys in `elsewhere` (those of packs that are no longer
    /// on this disk: see `remote`).
    pub(crate) fn retire_keys_beside(&self, elsewhere: BTreeSet<u32>) -> Result<Vec<u32>> {
        let lanes = Lane::ALL.map(|lane| self.lane(lane));
        let spare = self.spare.lock().expect("spare lock poisoned");
        let mut in_use: BTreeSet<u32> = lanes.iter().filter_map(|l| l.as_ref()).flat_map(|p| p.keys_used()).collect();
        in_use.extend(elsewhere);
        let mut open: BTreeSet<u64> = lanes.iter().filter_map(|l| l.as_ref()).map(|p| p.id).collect();
        if let Some(p) = spare.as_ref() {
            in_use.extend(p.keys_used());
            open.insert(p.id);
        }
        let keys = self.keyring.keys();
        for id in self.list()?.into_iter().filter(|id| !open.contains(id)) {
            let path = self.path(id);
            match table_entries(&path, &keys) {
                Ok((header, entries)) => {
                    in_use.extend(header.table_key.into_iter().chain(entries.iter().filter_map(|e| e.1)))
                }
                Err(_) => in_use.extend(keys_in_file(&path)?),
            }
        }
        self.keyring.retire(&in_use).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Whether a pack is held (open, being sealed, or with entries waiting to be indexed): see
    /// `unindexed`.
    pub(crate) fn held(&self, pack_id: u64) -> bool {
        self.unindexed.lock().expect("unindexed poisoned").contains_key(&pack_id)
    }

    /// Close the kept read handle of a pack that is leaving this directory.
    pub(crate) fn forget_reader(&self, pack_id: u64) {
        self.readers.forget(pack_id);
    }

    pub(crate) fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The cache of packs' dictionaries (shared with `remote`, whose pack ids are the same).
    pub(crate) fn dict_cache(&self) -> &dicts::DictCache {
        &self.dict_cache
    }

    /// `copy_out` of an entry's bytes (header included), however they were read; `dict` is
    /// the pack's dictionary if `e` is tag 2, and goes with the copy.
    pub(crate) fn copy_out_of(
        &self,
        pack_id: u64,
        e: &EntryInfo,
        buf: Vec<u8>,
        dict: Option<Arc<Dictionary>>,
    ) -> Result<SealedChunk> {
        let cipher = sealed::is_sealed_entry(&buf).then(|| codec::Ciphered {
            key_id: format::u32_at(&buf, 8),
            header: buf[..ENTRY_HEADER_LEN].try_into().expect("48 bytes"),
            body: Bytes::copy_from_slice(&buf[ENTRY_HEADER_LEN..]),
        });
        let stored = self.open_run(pack_id, std::slice::from_ref(e), e.offset, buf)?.pop().expect("one entry");
        let raw = unseal_checked(pack_id, e, stored.clone(), true, dict.as_deref())?;
        let cipher = cipher.filter(|c| Some(c.key_id) == self.keyring.keys().current());
        let dict = dict.filter(|_| e.compression == Compression::ZstdDict);
        Ok(SealedChunk { id: e.id, raw, compression: e.compression, stored, cipher, dict })
    }

    /// The stored bytes of each entry of `run`, read into `buf` (which starts at `start`):
    /// plain entries as they are, sealed ones opened in place. Each entry must be the one the
    /// index says: same chunk, lengths and compression (for a sealed entry, as its sealed
    /// bytes say, after they authenticate).
    pub(crate) fn open_run(&self, pack_id: u64, run: &[EntryInfo], start: u64, mut buf: Vec<u8>) -> Result<Vec<Bytes>> {
        let bad = |at: u64, why: String| Error::corrupt(format!("pack {pack_id} at {at}: {why}"));
        let keys = self.keyring.keys();
        let mut ranges = Vec::with_capacity(run.len());
        for want in run {
            let at = (want.offset - start) as usize;
            let (head, rest) = buf[at..].split_at_mut(ENTRY_HEADER_LEN);
            let (found, range) = if sealed::is_sealed_entry(head) {
                let body =
                    rest.get_mut(..want.stored_len as usize).ok_or_else(|| bad(want.offset, "truncated".into()))?;
                let (found, r) =
                    sealed::open_entry(&keys, head, want.offset, body).map_err(|e| bad(want.offset, e.to_string()))?;
                (found, r.start + at + ENTRY_HEADER_LEN..r.end + at + ENTRY_HEADER_LEN)
            } else {
                let found =
                    format::parse_entry_header(head, want.offset).map_err(|e| bad(want.offset, e.to_string()))?;
                (found, at + ENTRY_HEADER_LEN..at + ENTRY_HEADER_LEN + want.stored_len as usize)
            };
            if found != *want {
                return Err(bad(want.offset, format!("entry is not {}", want.id)));
            }
            ranges.push(range);
        }
        let buf = Bytes::from(buf);
        Ok(ranges.into_iter().map(|r| buf.slice(r)).collect())
    }
}

/// `len` bytes of `file` at `at`, read into a buffer that is not zero-filled first (a
/// download's read thread reads about 1 MiB at a time; zeroing it cost as much as a tenth of
/// the copy). A file that ends before `len` is `UnexpectedEof`, as `read_exact_at`.
fn read_exact_at_uninit(file: &File, len: usize, mut at: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf = Vec::<u8>::with_capacity(len);
    while buf.len() < len {
        let want = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: the kernel writes at most `spare.len()` bytes into `spare`, memory this
        // vector owns; `set_len` below covers only what it wrote.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at as libc::off_t) };
        match n {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer")),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => {
                // SAFETY: the first `buf.len() + n` bytes are initialised: the old ones, then
                // the `n` the read just wrote.
                unsafe { buf.set_len(buf.len() + n as usize) };
                at += n as u64;
            }
        }
    }
    Ok(buf)
}

/// Seal a chunk under the current key (on whatever thread calls it: ingest's workers do, so
/// the writer only writes). Unchanged if sealing is off.
pub fn encrypt(keys: &KeySet, mut chunk: SealedChunk) -> Result<SealedChunk> {
    if let Some(key) = keys.current() {
        let c = sealed::seal_entry(keys, key, &chunk.id, chunk.raw_len(), chunk.compression, &chunk.stored)
            .map_err(|e| Error::Internal(format!("sealing chunk {}: {e}", chunk.id)))?;
        chunk.cipher = Some(c);
    }
    Ok(chunk)
}

fn sealing_failed(pack: u64, e: SealFailed) -> Error {
    match e {
        SealFailed::Io(e) => Error::Io(e),
        SealFailed::Key(e) => Error::Internal(format!("sealing the table of pack {pack}: {e}")),
    }
}

/// Decompress stored bytes read from `pack_id` and, if asked, check them against their id.
/// `dict`: the pack's dictionary, which a tag 2 entry needs (`PackStore::dictionary`).
pub fn unseal_checked(
    pack_id: u64,
    want: &EntryInfo,
    stored: Bytes,
    verify: bool,
    dict: Option<&Dictionary>,
) -> Result<Bytes> {
    if want.compression == Compression::Dictionary {
        return Err(Error::corrupt(format!("pack {pack_id}: the index points at the pack's dictionary")));
    }
    let raw = codec::unseal_bytes(want.compression, stored, want.raw_len as usize, dict)
        .map_err(|e| Error::corrupt(format!("chunk {} in pack {pack_id}: {e}", want.id)))?;
    if verify && ChunkId::of(&raw) != want.id {
        return Err(Error::corrupt(format!("chunk {} in pack {pack_id} fails its hash", want.id)));
    }
    Ok(raw)
}

fn remove_torn_creations(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn list_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(id) = entry?.file_name().to_str().and_then(parse_pack_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Entries, each with the key it is sealed under (`None`: a plain entry).
type Keyed = Vec<(EntryInfo, Option<u32>)>;

/// The chunks among verified entries: a pack's dictionary is verified with them, but is no
/// chunk and is never indexed.
pub(crate) fn chunks_only(entries: Keyed) -> Vec<EntryInfo> {
    entries.into_iter().map(|(e, _)| e).filter(|e| e.compression != Compression::Dictionary).collect()
}

/// What verifying a pack knows of its dictionary so far.
#[derive(Default)]
enum PackDict {
    #[default]
    None,
    Good(Arc<Dictionary>),
    Bad,
}

impl PackDict {
    /// Decompress and hash-check one entry of the pack (its dictionary included: that one
    /// becomes the pack's). `position` is its place among the pack's entries.
    fn check(
        &mut self,
        position: usize,
        first: Option<Compression>,
        e: &EntryInfo,
        stored: Vec<u8>,
    ) -> std::result::Result<(), String> {
        format::check_dictionary_rule(position, e, first).map_err(|err| err.to_string())?;
        let dict = match (e.compression, &*self) {
            (Compression::Dictionary, _) => {
                return match dicts::from_entry(e, &stored) {
                    Ok(d) => {
                        *self = PackDict::Good(d);
                        Ok(())
                    }
                    Err(why) => {
                        *self = PackDict::Bad;
                        Err(why)
                    }
                };
            }
            (Compression::ZstdDict, PackDict::Good(d)) => Some(d.clone()),
            (Compression::ZstdDict, _) => return Err("the pack's dictionary is damaged".into()),
            _ => None,
        };
        match codec::unseal(e.compression, stored, e.raw_len as usize, dict.as_deref()) {
            Ok(raw) if ChunkId::of(&raw) == e.id => Ok(()),
            Ok(_) => Err("content does not hash to its id".into()),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// The table of a sealed pack, read from its tail without reading the entries.
pub fn read_sealed(path: &Path, keys: &KeySet) -> Result<Vec<EntryInfo>> {
    Ok(table_entries(path, keys)?.1.into_iter().map(|(e, _)| e).collect())
}

/// A sealed pack's header and table, each entry with its key (`None`: a plain entry).
fn table_entries(path: &Path, keys: &KeySet) -> Result<(format::PackHeader, Keyed)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    table_entries_at(&path.display().to_string(), len, &|buf, at| file.read_exact_at(buf, at), keys)
}

/// `table_entries` of a pack `len` bytes long that `read_at` reads (a file, or ranged reads of
/// an object): three reads, of the header, the trailer and the table. `name` names the pack
/// in errors.
pub(crate) fn table_entries_at(
    name: &str,
    len: u64,
    read_at: &dyn Fn(&mut [u8], u64) -> io::Result<()>,
    keys: &KeySet,
) -> Result<(format::PackHeader, Keyed)> {
    let bad = |e: FormatError| Error::corrupt(format!("{name}: {e}"));
    if len < (format::HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(bad(FormatError::Truncated { need: format::HEADER_LEN + TRAILER_LEN, have: len as usize }));
    }
    let mut header = [0u8; format::HEADER_LEN];
    read_at(&mut header, 0)?;
    let parsed = format::parse_header(&header).map_err(bad)?;
    let mut tail = [0u8; TRAILER_LEN];
    read_at(&mut tail, len - TRAILER_LEN as u64)?;
    let table_offset = match parsed.table_key {
        Some(_) => sealed::parse_trailer(&tail).map_err(bad)?.table_offset,
        None => format::parse_trailer(&tail).map_err(bad)?.table_offset,
    };
    let table_end = len - TRAILER_LEN as u64;
    if table_offset > table_end || table_end - table_offset > (64 << 30) {
        return Err(bad(FormatError::Layout));
    }
    let mut table = vec![0u8; (table_end - table_offset) as usize];
    read_at(&mut table, table_offset)?;
    let entries = match parsed.table_key {
        Some(_) => sealed::open_table(keys, &header, &tail, &mut table)
            .map_err(|e| Error::corrupt(format!("{name}: {e}")))?
            .into_iter()
            .map(|t| (t.info, Some(t.key)))
            .collect(),
        None => {
            let trailer = format::parse_trailer(&tail).map_err(bad)?;
            format::parse_table(&table, &trailer).map_err(bad)?.into_iter().map(|e| (e, None)).collect()
        }
    };
    Ok((parsed, entries))
}

/// Every key a pack file uses: from its table if it is sealed, else from its entries' frames
/// (which name their key in the clear), so that no key is retired from under a pack whose
/// table is damaged or not yet written.
fn keys_in_file(path: &Path) -> Result<BTreeSet<u32>> {
    keys_in_bytes(&fs::read(path)?, &path.display().to_string())
}

/// `keys_in_file` of a pack's bytes, however they were read.
pub(crate) fn keys_in_bytes(bytes: &[u8], name: &str) -> Result<BTreeSet<u32>> {
    let Ok(header) = format::parse_header(bytes) else {
        return Err(Error::corrupt(format!("{name}: unreadable header; no key is retired while it is")));
    };
    let mut keys: BTreeSet<u32> = header.table_key.into_iter().collect();
    let (frames, _) = sealed::scan_frames(bytes);
    keys.extend(frames.iter().map(|f| f.key_id));
    Ok(keys)
}

/// Every entry in a pack file whose bytes open and hash to its id, sealed or not, with its key.
/// Used by recovery, by fsck and by index rebuilds; damaged entries are reported through `bad`
/// (a sealed entry that fails authentication names no chunk: its id is sealed too).
pub fn verified_entries(path: &Path, keys: &KeySet, bad: impl FnMut(EntryInfo, String)) -> Result<(Keyed, u64)> {
    verified_entries_in(&fs::read(path)?, &path.display().to_string(), keys, bad)
}

/// `verified_entries` of a whole pack's bytes, however they were read.
pub(crate) fn verified_entries_in(
    bytes: &[u8],
    name: &str,
    keys: &KeySet,
    mut bad: impl FnMut(EntryInfo, String),
) -> Result<(Keyed, u64)> {
    let header = format::parse_header(bytes).map_err(|e| Error::corrupt(format!("{name}: {e}")))?;
    if header.table_key.is_some() {
        return Ok(verified_sealed(bytes, keys, bad));
    }
    let (entries, end) = match format::parse_sealed(bytes) {
        Ok((_, entries)) => {
            let end = entries.last().map_or(format::HEADER_LEN as u64, |e| e.end());
            (entries, end)
        }
        Err(_) => format::scan_entries(bytes),
    };
    let mut good = Vec::with_capacity(entries.len());
    let mut dict = PackDict::default();
    let first = entries.first().map(|e| e.compression);
    for (position, e) in entries.into_iter().enumerate() {
        let stored = bytes[e.data_offset() as usize..e.end() as usize].to_vec();
        match dict.check(position, first, &e, stored) {
            Ok(()) => good.push((e, None)),
            Err(why) => bad(e, why),
        }
    }
    Ok((good, end))
}

/// `verified_entries` of a version 2 pack: its frames, from the table if that opens, else by
/// walking them; each opened, decompressed and hashed.
fn verified_sealed(bytes: &[u8], keys: &KeySet, mut bad: impl FnMut(EntryInfo, String)) -> (Keyed, u64) {
    let (frames, end): (Vec<(u64, Option<EntryInfo>)>, u64) = match sealed::parse_pack(bytes, keys) {
        Ok((_, entries)) => {
            let end = entries.last().map_or(format::HEADER_LEN as u64, |e| e.info.end());
            (entries.into_iter().map(|e| (e.info.offset, Some(e.info))).collect(), end)
        }
        Err(_) => {
            let (frames, end) = sealed::scan_frames(bytes);
            (frames.into_iter().map(|f| (f.offset, None)).collect(), end)
        }
    };
    let unknown = |offset| EntryInfo {
        id: ChunkId([0; 32]),
        offset,
        raw_len: 0,
        stored_len: 0,
        compression: codec::Compression::Raw,
    };
    let mut good = Vec::with_capacity(frames.len());
    let mut dict = PackDict::default();
    let mut first = None;
    for (position, (offset, listed)) in frames.into_iter().enumerate() {
        let at = offset as usize;
        let head = &bytes[at..at + ENTRY_HEADER_LEN];
        let key = format::u32_at(head, 8);
        let Ok(frame) = sealed::parse_frame(head, offset) else {
            bad(listed.unwrap_or(unknown(offset)), "unreadable entry frame".into());
            continue;
        };
        let mut body = bytes[at + ENTRY_HEADER_LEN..frame.end() as usize].to_vec();
        let opened = sealed::open_entry(keys, head, offset, &mut body);
        match opened {
            Ok((e, _)) if listed.is_some_and(|l| l != e) => bad(e, "entry is not what the table says".into()),
            Ok((e, range)) => {
                if position == 0 {
                    first = Some(e.compression);
                }
                match dict.check(position, first, &e, body[range].to_vec()) {
                    Ok(()) => good.push((e, Some(key))),
                    Err(why) => bad(e, why),
                }
            }
            Err(err) => bad(listed.unwrap_or(unknown(offset)), err.to_string()),
        }
    }
    (good, end)
}

/// Bring an unsealed pack back to a sealed one: keep what verifies, drop the torn tail.
/// An entry in the middle that fails verification is left as dead bytes rather than cutting
/// off the good entries after it, which the index may point at.
fn recover(path: &Path, id: u64, keys: &KeySet) -> Result<SealedPack> {
    let mut header = [0u8; format::HEADER_LEN];
    File::open(path)?.read_exact_at(&mut header, 0)?;
    let table_key = format::parse_header(&header).ok().and_then(|h| h.table_key);
    // Without its key nothing in the pack can be verified: cutting it would only destroy what
    // the right key (a master key put back, say) could still read.
    if let Some(key) = table_key.filter(|k| keys.cipher(*k).is_none()) {
        return Err(Error::corrupt(format!(
            "{}: sealed under data key {key:08x}, which this server does not have",
            path.display()
        )));
    }
    let (entries, end) = verified_entries(path, keys, |e, why| {
        tracing::warn!(pack = id, offset = e.offset, %why, "dropping a damaged entry while recovering a pack");
    })?;
    tracing::info!(pack = id, entries = entries.len(), "recovered an unsealed pack");
    let (id, entries, size) =
        OpenPack::reopen(path, id, table_key, entries, end)?.seal(keys).map_err(|e| sealing_failed(id, e))?;
    Ok(SealedPack { id, size, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u32, len: usize) -> SealedChunk {
        // Incompressible, so that entry sizes are what the test says.
        let mut raw = vec![0u8; len];
        blake3::Hasher::new().update(&n.to_le_bytes()).finalize_xof().fill(&mut raw);
        codec::seal(raw.into(), 3)
    }

    /// Sealing on, with its keys in a directory of their own beside the packs'.
    fn keyring(dir: &Path) -> Arc<Keyring> {
        let keys = dir.join("keys");
        fs::create_dir_all(&keys).unwrap();
        Keyring::open(&keys, &KeySource { encrypt: true, ..Default::default() }).unwrap()
    }

    fn packs(dir: &Path, target: u64) -> Packs {
        Packs::open(&dir.join("packs"), target, 0, 0, LockWaits::unregistered(), keyring(dir)).expect("open").0
    }

    #[test]
    fn lanes_write_to_different_packs_and_neither_is_quiet_until_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 1 << 20);
        let (up, _) = p.append(Lane::Uploads, &chunk(1, 1000)).unwrap();
        let (gc, _) = p.append(Lane::Compaction, &chunk(2, 1000)).unwrap();
        assert_ne!(up.pack_id, gc.pack_id);
        p.settle(&[up.clone(), gc.clone()]);
        // Open packs and the spare are all held, whatever their entries' state.
        assert_eq!(p.quiet().unwrap(), Vec::<u64>::new());
        assert_eq!(p.list().unwrap().len(), 3, "two open packs and a spare");
        let sealed = p.seal_lane(Lane::Compaction).unwrap().expect("compaction had a pack");
        assert_eq!(sealed.id, gc.pack_id);
        assert_eq!(p.quiet().unwrap(), vec![gc.pack_id]);
        assert_eq!(p.read_chunk(gc.pack_id, &gc.entry, true).unwrap(), chunk(2, 1000).raw.to_vec());
    }

    #[test]
    fn after_a_failed_sync_the_next_append_goes_to_a_new_pack() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 1 << 20);
        let (bad, _) = p.append(Lane::Uploads, &chunk(1, 1000)).unwrap();
        // As if the kernel had reported a writeback error to this pack's fsync.
        assert!(bad.durable.checked(Err(io::Error::other("EIO"))).is_err());
        assert!(p.sync(&bad).is_err());
        p.settle(std::slice::from_ref(&bad));
        let (next, _) = p.append(Lane::Uploads, &chunk(2, 1000)).unwrap();
        assert_ne!(next.pack_id, bad.pack_id, "the failed pack left the lane");
        p.sync(&next).unwrap();
        p.settle(std::slice::from_ref(&next));
        assert!(p.quiet().unwrap().contains(&bad.pack_id), "no longer held: fsck judges it");
    }

    #[test]
    fn uploads_stop_at_the_free_space_reserve_and_compaction_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = Packs::open(
            &dir.path().join("packs"),
            1 << 20,
            u64::MAX / 2,
            0,
            LockWaits::unregistered(),
            keyring(dir.path()),
        )
        .unwrap()
        .0;
        let refused = p.append(Lane::Uploads, &chunk(1, 1000)).err().expect("refused");
        assert!(refused.is_disk_full(), "{refused}");
        let (copy, _) = p.append(Lane::Compaction, &chunk(2, 1000)).unwrap();
        p.settle(std::slice::from_ref(&copy));
    }

    #[test]
    fn a_full_lane_takes_the_spare_and_a_new_spare_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 3000);
        let (first, _) = p.append(Lane::Uploads, &chunk(1, 1000)).unwrap();
        let spare = p.spare.lock().unwrap().as_ref().map(|s| s.id).expect("a spare after the first pack");
        let (second, sealed) = p.append(Lane::Uploads, &chunk(2, 2500)).unwrap();
        assert_eq!(sealed.expect("the first pack was full").id, first.pack_id);
        assert_eq!(second.pack_id, spare, "the lane moved on to the spare");
        let next = p.spare.lock().unwrap().as_ref().map(|s| s.id).expect("a new spare");
        assert!(next != spare && next != first.pack_id);
        p.settle(&[first.clone(), second.clone()]);
        p.sync(&second).unwrap();
        assert_eq!(p.read_chunk(second.pack_id, &second.entry, true).unwrap(), chunk(2, 2500).raw.to_vec());
    }

    #[test]
    fn a_run_of_entries_reads_in_one_go_and_each_header_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 1 << 20);
        let chunks: Vec<_> = (0..3).map(|n| chunk(n, 1000 + n as usize)).collect();
        let appended: Vec<_> = chunks.iter().map(|c| p.append(Lane::Uploads, c).unwrap().0).collect();
        p.settle(&appended);
        let run: Vec<_> = appended.iter().map(|a| a.entry).collect();
        let stored = p.read_stored_run(appended[0].pack_id, &run).unwrap();
        for (s, c) in stored.iter().zip(&chunks) {
            assert_eq!(s, &c.stored);
        }
        // An index that disagrees with an entry's header is damage, not data.
        let mut wrong = run.clone();
        wrong[1].id = chunks[0].id;
        assert!(p.read_stored_run(appended[0].pack_id, &wrong).is_err());
    }

    #[test]
    fn close_seals_every_lane_and_deletes_the_spare() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 1 << 20);
        let (a, _) = p.append(Lane::Uploads, &chunk(1, 100)).unwrap();
        let (b, _) = p.append(Lane::Compaction, &chunk(2, 100)).unwrap();
        p.settle(&[a.clone(), b.clone()]);
        let (sealed, outcome) = p.close();
        outcome.unwrap();
        let mut sealed: Vec<u64> = sealed.iter().map(|s| s.id).collect();
        sealed.sort_unstable();
        assert_eq!(sealed, vec![a.pack_id, b.pack_id]);
        assert_eq!(p.list().unwrap(), sealed, "no spare left behind");
        assert_eq!(p.quiet().unwrap(), sealed);
    }

    #[test]
    fn a_spare_left_by_a_crash_is_recovered_as_an_empty_pack() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 1 << 20);
        let (a, _) = p.append(Lane::Uploads, &chunk(1, 100)).unwrap();
        p.sync(&a).unwrap();
        let spare = p.spare.lock().unwrap().as_ref().map(|s| s.id).unwrap();
        drop(p); // no close: as after a SIGKILL
        let (p, recovered) =
            Packs::open(&dir.path().join("packs"), 1 << 20, 0, 0, LockWaits::unregistered(), keyring(dir.path()))
                .unwrap();
        let empty = recovered.iter().find(|r| r.id == spare).expect("the spare was recovered");
        assert!(empty.entries.is_empty());
        let open = recovered.iter().find(|r| r.id == a.pack_id).expect("the open pack was recovered");
        assert_eq!(open.entries, vec![a.entry]);
        assert_eq!(p.quiet().unwrap().len(), 2);
    }

    /// Text-like bytes as the peers bench makes them: lines of words from a vocabulary of 2000
    /// (the same for every seed), different for each `seed`.
    pub(crate) fn text(seed: u64, len: usize) -> Bytes {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words: Vec<Vec<u8>> =
            (0..2000).map(|_| (0..2 + next() % 8).map(|_| b'a' + (next() % 26) as u8).collect()).collect();
        let mut y = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            out.extend_from_slice(&words[(y % 2000) as usize]);
            out.push(if y.is_multiple_of(12) { b'\n' } else { b' ' });
        }
        out.truncate(len);
        out.into()
    }

    /// A text chunk as ingest's workers make it: against the lane's dictionary if it has one.
    fn text_chunk(p: &Packs, seed: u64) -> SealedChunk {
        codec::seal_with(text(seed, 64 << 10), 3, p.dicts.current(Lane::Uploads).as_ref())
    }

    /// An append to the uploads' lane, then the engine's part: a dictionary the chunk
    /// completed is recorded (here: nowhere) and becomes the lane's.
    fn append_recorded(p: &Packs, c: &SealedChunk) -> Appended {
        let (a, _) = p.append(Lane::Uploads, c).unwrap();
        p.dicts.record_made(|_| Ok(())).unwrap();
        a
    }

    /// Dictionaries on; `n` text chunks appended: the first two go in plain (the second
    /// completes the lane's dictionary), the third opens a pack that carries it, with every
    /// chunk after. Returns the appends stored against the dictionary.
    fn dictionary_pack(p: &Packs, n: u64) -> Vec<(Appended, SealedChunk)> {
        p.dicts.configure(true, 3);
        let mut out = Vec::new();
        for seed in 0..n {
            let c = text_chunk(p, seed);
            let a = append_recorded(p, &c);
            p.sync(&a).unwrap();
            p.settle(std::slice::from_ref(&a));
            if a.entry.compression == Compression::ZstdDict {
                out.push((a, c));
            }
        }
        out
    }

    #[test]
    fn chunks_compressed_against_the_lanes_dictionary_go_to_a_pack_that_carries_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 64 << 20);
        let appended = dictionary_pack(&p, 6);
        assert_eq!(appended.len(), 4, "the first two went in plain, the rest against the dictionary");
        let pack = appended[0].0.pack_id;
        assert!(appended.iter().all(|(a, _)| a.pack_id == pack), "one pack, opened with the dictionary");
        let dict = p.dicts.current(Lane::Uploads).unwrap();
        // Chunks 2 to 5, which are not in the dictionary themselves.
        let plain_size: usize = (2..6).map(|s| codec::seal(text(s, 64 << 10), 3).stored.len()).sum();
        let dict_size: usize = appended.iter().map(|(a, _)| (a.entry.stored_len - sealed::OVERHEAD) as usize).sum();
        assert!(dict_size * 10 < plain_size * 9, "{dict_size} against {plain_size} without the dictionary");
        for (a, c) in &appended {
            assert_eq!(p.read_chunk(pack, &a.entry, false).unwrap(), c.raw);
        }
        // Sealed, the table lists the dictionary first; reads are the same.
        let sealed = p.seal_lane(Lane::Uploads).unwrap().unwrap();
        assert_eq!(sealed.id, pack);
        assert_eq!(sealed.entries[0].compression, Compression::Dictionary);
        assert_eq!(sealed.entries[0].id, *dict.id());
        p.dict_cache.forget(pack);
        for (a, c) in &appended {
            assert_eq!(p.read_chunk(pack, &a.entry, true).unwrap(), c.raw);
        }
        // Verification lists chunks only: the dictionary is never indexed.
        let (verified, _) = p.verify(pack, &mut |e, why| panic!("{e:?}: {why}")).unwrap();
        assert_eq!(verified, appended.iter().map(|(a, _)| a.entry).collect::<Vec<_>>());
    }

    #[test]
    fn a_pack_with_a_dictionary_survives_a_crash_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 64 << 20);
        let appended = dictionary_pack(&p, 5);
        let pack = appended[0].0.pack_id;
        drop(p); // no close: as after a SIGKILL
        let (p, recovered) =
            Packs::open(&dir.path().join("packs"), 64 << 20, 0, 0, LockWaits::unregistered(), keyring(dir.path()))
                .unwrap();
        let r = recovered.iter().find(|r| r.id == pack).expect("recovered");
        assert_eq!(r.entries[0].compression, Compression::Dictionary);
        assert_eq!(&r.entries[1..], appended.iter().map(|(a, _)| a.entry).collect::<Vec<_>>());
        for (a, c) in &appended {
            assert_eq!(p.read_chunk(pack, &a.entry, true).unwrap(), c.raw);
        }
    }

    #[test]
    fn compaction_copies_keep_or_redo_the_dictionary_compression() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 64 << 20);
        let appended = dictionary_pack(&p, 4);
        let from = appended[0].0.pack_id;
        p.seal_lane(Lane::Uploads).unwrap();
        // A copy carries its pack's dictionary; compaction's new pack adopts it and takes the
        // stored bytes as they are.
        let out = p.copy_out(from, &appended[0].0.entry).unwrap();
        assert_eq!(out.compression, Compression::ZstdDict);
        let (copy, _) = p.append(Lane::Compaction, &out).unwrap();
        assert_ne!(copy.pack_id, from);
        assert_eq!(copy.entry.compression, Compression::ZstdDict);
        assert_eq!(copy.entry.raw_len, appended[0].0.entry.raw_len);
        // A chunk compressed against another dictionary is compressed again for this pack's.
        let other = crate::dictionary::Dictionary::new(text(99, crate::dictionary::DICT_LEN)).unwrap();
        let foreign = codec::seal_with(text(50, 64 << 10), 3, Some(&other));
        assert_eq!(foreign.compression, Compression::ZstdDict);
        let (again, _) = p.append(Lane::Compaction, &foreign).unwrap();
        assert_eq!(again.pack_id, copy.pack_id);
        p.settle(&[copy.clone(), again.clone()]);
        p.sync(&again).unwrap();
        let to = copy.pack_id;
        assert_eq!(p.read_chunk(to, &copy.entry, true).unwrap(), appended[0].1.raw);
        assert_eq!(p.read_chunk(to, &again.entry, true).unwrap(), foreign.raw);
        let sealed = p.seal_lane(Lane::Compaction).unwrap().unwrap();
        assert_eq!(sealed.entries[0].id, *p.dicts.current(Lane::Uploads).unwrap().id());
    }

    /// A byte of the dictionary entry flipped: fsck's verification reports it and every chunk
    /// that needs it; reads fail, with and without verification, and never return other bytes.
    fn damaged_dictionary(encrypt: bool) {
        let dir = tempfile::tempdir().unwrap();
        let p = if encrypt {
            packs(dir.path(), 64 << 20)
        } else {
            let keys = dir.path().join("keys");
            fs::create_dir_all(&keys).unwrap();
            let ring = Keyring::open(&keys, &KeySource { encrypt: false, ..Default::default() }).unwrap();
            Packs::open(&dir.path().join("packs"), 64 << 20, 0, 0, LockWaits::unregistered(), ring).unwrap().0
        };
        let appended = dictionary_pack(&p, 4);
        let pack = appended[0].0.pack_id;
        p.seal_lane(Lane::Uploads).unwrap();
        let path = p.path(pack);
        let mut bytes = fs::read(&path).unwrap();
        bytes[format::HEADER_LEN + ENTRY_HEADER_LEN + 1000] ^= 0x20;
        fs::write(&path, &bytes).unwrap();
        p.readers.forget(pack);
        p.dict_cache.forget(pack);
        let mut problems = Vec::new();
        let (verified, _) = p.verify(pack, &mut |e, why| problems.push((e.compression, why))).unwrap();
        assert!(verified.is_empty(), "no chunk of this pack verifies without its dictionary");
        assert_eq!(problems.len(), 1 + appended.len(), "{problems:?}");
        for (a, _) in &appended {
            for verify in [false, true] {
                let err = p.read_chunk(pack, &a.entry, verify).unwrap_err();
                assert!(matches!(err, Error::Corrupt(_)), "{err}");
            }
        }
    }

    #[test]
    fn a_damaged_dictionary_is_found_and_never_serves_wrong_bytes() {
        damaged_dictionary(true);
        damaged_dictionary(false);
    }

    #[test]
    fn chunks_compressed_before_the_lane_had_a_dictionary_get_it_in_a_pack_that_has_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 64 << 20);
        p.dicts.configure(true, 3);
        // Compressed before the lane has a dictionary, as the batches in flight are.
        let early: Vec<_> = (0..4).map(|seed| text_chunk(&p, seed)).collect();
        assert!(early.iter().all(|c| c.compression == Compression::Zstd));
        let appended: Vec<_> = early.iter().map(|c| append_recorded(&p, c)).collect();
        p.settle(&appended);
        assert!(p.dicts.current(Lane::Uploads).is_some(), "the first two made the dictionary");
        assert_eq!(appended[1].entry.compression, Compression::Zstd);
        assert_eq!(appended[1].pack_id, appended[0].pack_id);
        assert_ne!(appended[2].pack_id, appended[0].pack_id, "the pack without one was closed");
        for (a, c) in appended[2..].iter().zip(&early[2..]) {
            assert_eq!(a.entry.compression, Compression::ZstdDict);
            assert!(a.entry.stored_len < c.stored.len() as u32 + sealed::OVERHEAD);
            p.sync(a).unwrap();
            assert_eq!(p.read_chunk(a.pack_id, &a.entry, true).unwrap(), c.raw);
        }
    }

    #[test]
    fn with_dictionaries_off_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = packs(dir.path(), 64 << 20);
        for seed in 0..4 {
            let c = text_chunk(&p, seed);
            assert_eq!(c.compression, Compression::Zstd);
            p.dicts.observe(Lane::Uploads, &c);
        }
        assert!(p.dicts.current(Lane::Uploads).is_none());
        // Compaction still keeps the dictionary of a chunk it copies, for its next packs.
        let d = crate::dictionary::Dictionary::new(text(7, crate::dictionary::DICT_LEN)).unwrap();
        let copied = codec::seal_with(text(8, 64 << 10), 3, Some(&d));
        p.dicts.observe(Lane::Compaction, &copied);
        assert_eq!(p.dicts.current(Lane::Compaction).map(|c| *c.id()), Some(*d.id()));
    }
}
