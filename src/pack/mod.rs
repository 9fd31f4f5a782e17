//! Packfiles on local disk: appending, syncing, sealing, reading and crash recovery.
//!
//! Where packs live is this module's business alone; the engine speaks to it in pack ids and
//! entries. (An object-store backend would keep the open pack on local disk and upload it when
//! sealed; reads would become ranged GETs.)

pub mod format;
mod open;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use format::{EntryInfo, FormatError, ENTRY_HEADER_LEN, TRAILER_LEN};
use open::OpenPack;

use crate::chunk::ChunkId;
use crate::codec::{self, SealedChunk};
use crate::error::{Error, Result};

/// A pack that was just sealed: the engine records it in the `packs` column family.
#[derive(Debug, Clone)]
pub struct SealedPack {
    pub id: u64,
    pub size: u64,
    pub entries: Vec<EntryInfo>,
}

/// Proof of an append, and the means to make it durable.
#[derive(Clone)]
pub struct Appended {
    pub pack_id: u64,
    pub entry: EntryInfo,
    file: Arc<File>,
    synced: Arc<AtomicU64>,
}

pub struct Packs {
    dir: PathBuf,
    target_size: u64,
    /// std Mutex, not tokio's: it is only ever taken on blocking threads, for one positioned
    /// write or one seal, and never across an `.await`.
    open: Mutex<Option<OpenPack>>,
    /// Serializes `fdatasync` so that a crowd of committers shares one: whoever gets the lock
    /// second usually finds its bytes already covered.
    sync_lock: Mutex<()>,
    next_id: AtomicU64,
    /// Read handles, opened on first use. Positioned reads need no lock on the file itself.
    readers: Mutex<HashMap<u64, Arc<File>>>,
    /// Entries appended but not yet indexed (or abandoned), per pack. A pack with any is not
    /// "quiet": GC must not judge its liveness from the index, which does not know them yet.
    unindexed: Mutex<HashMap<u64, u64>>,
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
    pub fn open(dir: &Path, target_size: u64, id_floor: u64) -> Result<(Self, Vec<SealedPack>)> {
        fs::create_dir_all(dir)?;
        remove_torn_creations(dir)?;
        let ids = list_ids(dir)?;
        let mut recovered = Vec::new();
        for &id in &ids {
            let path = dir.join(pack_name(id));
            if read_sealed(&path).is_ok() {
                continue;
            }
            // A pack whose very header is unreadable is left alone for fsck to report: refusing
            // to start would make one bad file take every account offline.
            match recover(&path, id) {
                Ok(p) => recovered.push(p),
                Err(e) => tracing::error!(pack = id, error = %e, "cannot recover pack; leaving it for fsck"),
            }
        }
        let next = ids.iter().copied().max().unwrap_or(0).max(id_floor) + 1;
        let packs = Packs {
            dir: dir.to_path_buf(),
            target_size,
            open: Mutex::new(None),
            sync_lock: Mutex::new(()),
            next_id: AtomicU64::new(next),
            readers: Mutex::new(HashMap::new()),
            unindexed: Mutex::new(HashMap::new()),
        };
        Ok((packs, recovered))
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(pack_name(id))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append one chunk, first sealing the open pack if the chunk would take it past the target
    /// size. Returns the sealed pack, if any, for the caller to record.
    pub fn append(&self, chunk: &SealedChunk) -> Result<(Appended, Option<SealedPack>)> {
        let mut slot = self.open.lock().expect("pack lock poisoned");
        let mut full = None;
        if let Some(p) = slot.as_ref() {
            let size = p.sealed_size() + OpenPack::entry_cost(chunk) + format::TABLE_RECORD_LEN as u64;
            if !p.entries.is_empty() && size > self.target_size {
                let p = slot.take().expect("checked");
                // Not quiet while it is being sealed, so GC and fsck leave it alone.
                self.hold(p.id, 1);
                full = Some(p);
            }
        }
        if slot.is_none() {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            *slot = Some(OpenPack::create(&self.path(id), id)?);
        }
        let p = slot.as_mut().expect("just opened");
        let entry = p.append(chunk)?;
        self.hold(p.id, 1);
        let appended = Appended { pack_id: p.id, entry, file: p.file.clone(), synced: p.synced.clone() };
        drop(slot);
        // The full pack is out of the slot, so nobody appends to it: seal it (a table write and
        // an fsync) without holding up other appenders.
        let sealed = full.map(|p| {
            let id = p.id;
            let sealed = seal(p);
            self.hold(id, -1);
            sealed
        });
        Ok((appended, sealed.transpose()?))
    }

    /// Count entries (or a seal) in flight in a pack; see `unindexed`.
    fn hold(&self, pack_id: u64, delta: i64) {
        let mut unindexed = self.unindexed.lock().expect("unindexed poisoned");
        let n = unindexed.entry(pack_id).or_insert(0);
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            unindexed.remove(&pack_id);
        }
    }

    /// The appender is done with these entries: indexed, or abandoned as dead bytes.
    pub fn settle<'a>(&self, done: impl IntoIterator<Item = &'a Appended>) {
        for a in done {
            self.hold(a.pack_id, -1);
        }
    }

    /// Sealed packs with no entry waiting to be indexed. Once quiet, a pack stays quiet: it
    /// takes no more appends.
    pub fn quiet(&self) -> Result<Vec<u64>> {
        let open = self.open_pack_id();
        let ids = self.list()?;
        let unindexed = self.unindexed.lock().expect("unindexed poisoned");
        Ok(ids.into_iter().filter(|id| Some(*id) != open && !unindexed.contains_key(id)).collect())
    }

    /// Make an append durable. Cheap when another caller's sync (or a seal) already covered it.
    pub fn sync(&self, a: &Appended) -> Result<()> {
        let upto = a.entry.end();
        if a.synced.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        let _one_at_a_time = self.sync_lock.lock().expect("sync lock poisoned");
        if a.synced.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        // Everything written before this call is covered, which is at least `upto`, and
        // usually what other appenders wrote meanwhile too.
        let written = {
            let slot = self.open.lock().expect("pack lock poisoned");
            slot.as_ref().filter(|p| p.id == a.pack_id).map_or(upto, |p| p.len)
        };
        a.file.sync_data()?;
        a.synced.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    /// Seal the open pack if it has been idle for `idle` (or at all, with `Duration::ZERO`).
    pub fn seal_if_idle(&self, idle: Duration) -> Result<Option<SealedPack>> {
        let mut slot = self.open.lock().expect("pack lock poisoned");
        let p = match slot.as_ref() {
            Some(p) if p.last_append.elapsed() >= idle => slot.take().expect("checked"),
            _ => return Ok(None),
        };
        self.hold(p.id, 1);
        drop(slot); // appenders open a new pack meanwhile; this one takes no more appends
        let id = p.id;
        let sealed = seal(p);
        self.hold(id, -1);
        sealed.map(Some)
    }

    pub fn open_pack_id(&self) -> Option<u64> {
        self.open.lock().expect("pack lock poisoned").as_ref().map(|p| p.id)
    }

    pub fn list(&self) -> Result<Vec<u64>> {
        Ok(list_ids(&self.dir)?)
    }

    fn reader(&self, pack_id: u64) -> Result<Arc<File>> {
        let mut readers = self.readers.lock().expect("reader lock poisoned");
        if let Some(f) = readers.get(&pack_id) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(self.path(pack_id))?);
        readers.insert(pack_id, f.clone());
        Ok(f)
    }

    /// Read one entry's stored bytes, checking that the entry header says what the index says.
    pub fn read_stored(&self, pack_id: u64, want: &EntryInfo) -> Result<Vec<u8>> {
        let file = self.reader(pack_id)?;
        let mut header = [0u8; ENTRY_HEADER_LEN];
        file.read_exact_at(&mut header, want.offset)?;
        let found = format::parse_entry_header(&header, want.offset)
            .map_err(|e| Error::corrupt(format!("pack {pack_id} at {}: {e}", want.offset)))?;
        if found != *want {
            return Err(Error::corrupt(format!("pack {pack_id} at {}: entry is not {}", want.offset, want.id)));
        }
        let mut stored = vec![0u8; want.stored_len as usize];
        file.read_exact_at(&mut stored, want.data_offset())?;
        Ok(stored)
    }

    /// Read, decompress and verify one chunk. A chunk that does not hash to its id is an error,
    /// never data.
    pub fn read_chunk(&self, pack_id: u64, want: &EntryInfo, verify: bool) -> Result<Vec<u8>> {
        let stored = self.read_stored(pack_id, want)?;
        let raw = codec::unseal(want.compression, stored, want.raw_len as usize)
            .map_err(|e| Error::corrupt(format!("chunk {} in pack {pack_id}: {e}", want.id)))?;
        if verify && ChunkId::of(&raw) != want.id {
            return Err(Error::corrupt(format!("chunk {} in pack {pack_id} fails its hash", want.id)));
        }
        Ok(raw)
    }

    /// Seal the open pack (shutdown). Returns it for recording.
    pub fn seal_now(&self) -> Result<Option<SealedPack>> {
        self.seal_if_idle(Duration::ZERO)
    }

    pub fn remove(&self, pack_id: u64) -> Result<()> {
        self.readers.lock().expect("reader lock poisoned").remove(&pack_id);
        fs::remove_file(self.path(pack_id))?;
        open::sync_parent(&self.path(pack_id))?;
        Ok(())
    }
}

fn seal(p: OpenPack) -> Result<SealedPack> {
    let (id, entries, size) = p.seal()?;
    Ok(SealedPack { id, size, entries })
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

/// The table of a sealed pack, read from its tail without reading the entries.
pub fn read_sealed(path: &Path) -> Result<Vec<EntryInfo>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let bad = |e: FormatError| Error::corrupt(format!("{}: {e}", path.display()));
    if len < (format::HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(bad(FormatError::Truncated { need: format::HEADER_LEN + TRAILER_LEN, have: len as usize }));
    }
    let mut header = [0u8; format::HEADER_LEN];
    file.read_exact_at(&mut header, 0)?;
    format::parse_header(&header).map_err(bad)?;
    let mut tail = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut tail, len - TRAILER_LEN as u64)?;
    let trailer = format::parse_trailer(&tail).map_err(bad)?;
    let table_end = len - TRAILER_LEN as u64;
    if trailer.table_offset > table_end || table_end - trailer.table_offset > (64 << 30) {
        return Err(bad(FormatError::Layout));
    }
    let mut table = vec![0u8; (table_end - trailer.table_offset) as usize];
    file.read_exact_at(&mut table, trailer.table_offset)?;
    format::parse_table(&table, &trailer).map_err(bad)
}

/// Every entry in a pack file whose bytes hash to its id, sealed or not. Used by recovery, by
/// fsck and by index rebuilds; damaged entries are reported through `bad`.
pub fn verified_entries(path: &Path, mut bad: impl FnMut(EntryInfo, String)) -> Result<(Vec<EntryInfo>, u64)> {
    let bytes = fs::read(path)?;
    format::parse_header(&bytes).map_err(|e| Error::corrupt(format!("{}: {e}", path.display())))?;
    let (entries, end) = match format::parse_sealed(&bytes) {
        Ok((_, entries)) => {
            let end = entries.last().map_or(format::HEADER_LEN as u64, |e| e.end());
            (entries, end)
        }
        Err(_) => format::scan_entries(&bytes),
    };
    let mut good = Vec::with_capacity(entries.len());
    for e in entries {
        let stored = bytes[e.data_offset() as usize..e.end() as usize].to_vec();
        match codec::unseal(e.compression, stored, e.raw_len as usize) {
            Ok(raw) if ChunkId::of(&raw) == e.id => good.push(e),
            Ok(_) => bad(e, "content does not hash to its id".into()),
            Err(err) => bad(e, err.to_string()),
        }
    }
    Ok((good, end))
}

/// Bring an unsealed pack back to a sealed one: keep what verifies, drop the torn tail.
/// An entry in the middle that fails verification is left as dead bytes rather than cutting
/// off the good entries after it, which the index may point at.
fn recover(path: &Path, id: u64) -> Result<SealedPack> {
    let (entries, end) = verified_entries(path, |e, why| {
        tracing::warn!(pack = id, offset = e.offset, %why, "dropping a damaged entry while recovering a pack");
    })?;
    tracing::info!(pack = id, entries = entries.len(), "recovered an unsealed pack");
    seal(OpenPack::reopen(path, id, entries, end)?)
}
