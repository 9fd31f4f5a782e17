//! The one pack being appended to.
//!
//! Invariant: bytes are written with positioned writes at `len`, under the lane's mutex in
//! `Packs`, so entries never interleave. `Durability::synced` only grows, and every byte below
//! it survived an `fdatasync`; the index may point only below it (appenders sync before they
//! index).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::Histogram;

use super::format::{self, EntryInfo, ENTRY_HEADER_LEN, HEADER_LEN, TRAILER_LEN};
use crate::codec::SealedChunk;
use crate::metrics::timed;

pub(crate) struct OpenPack {
    pub id: u64,
    pub durable: Arc<Durability>,
    pub len: u64,
    pub entries: Vec<EntryInfo>,
    pub last_append: Instant,
}

/// What making an append durable needs, shared by the pack and every append into it, so that
/// a sync never takes the lane's lock: a committer waits only on syncs of its own pack.
pub(crate) struct Durability {
    file: File,
    /// End of the bytes written so far, stored after each append's writes have returned.
    written: AtomicU64,
    /// Every byte below this survived an `fdatasync`; `u64::MAX` once the pack is sealed.
    synced: AtomicU64,
    /// Serializes `fdatasync` of this pack so that a crowd of committers shares one: whoever
    /// gets the lock second usually finds its bytes already covered. A std Mutex: it is held
    /// across the blocking sync itself, on blocking threads only.
    sync_lock: Mutex<()>,
    /// Set by the first failed sync of this file. After a failed `fsync` the kernel may have
    /// dropped dirty pages and a later `fsync` can still succeed, so success would be a lie:
    /// from then on every sync of this pack fails, and its entries are never indexed.
    failed: AtomicBool,
}

impl Durability {
    fn new(file: File, len: u64) -> Arc<Self> {
        Arc::new(Durability {
            file,
            written: AtomicU64::new(len),
            synced: AtomicU64::new(len),
            sync_lock: Mutex::new(()),
            failed: AtomicBool::new(false),
        })
    }

    /// Make every byte below `upto` durable. Cheap when another caller's sync, or the seal,
    /// already covered it. The wait for the sync lock goes to `waits`, if given.
    pub fn sync_to(&self, upto: u64, waits: Option<&Histogram>) -> io::Result<()> {
        if self.synced.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        let lock = || self.sync_lock.lock().expect("sync lock poisoned");
        let _one_at_a_time = match waits {
            Some(h) => timed(h, lock),
            None => lock(),
        };
        if self.synced.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        // Everything written before the sync starts is covered: at least `upto`, and usually
        // what other appenders wrote meanwhile too.
        let written = self.written.load(Ordering::Acquire);
        self.checked(self.file.sync_data())?;
        self.synced.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    pub(crate) fn checked(&self, synced: io::Result<()>) -> io::Result<()> {
        if synced.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(synced.err().unwrap_or_else(|| io::Error::other("an earlier sync of this pack failed")));
        }
        Ok(())
    }
}

impl OpenPack {
    /// The header is written and synced under a temporary name and the file renamed into
    /// place, so a pack file under its real name always has a durable header: a crash during
    /// creation leaves only a `.tmp` file, which the next start removes.
    pub fn create(path: &Path, id: u64) -> io::Result<Self> {
        let tmp = path.with_extension("tmp");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all_at(&format::encode_header(id), 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)?;
        Ok(OpenPack {
            id,
            durable: Durability::new(file, HEADER_LEN as u64),
            len: HEADER_LEN as u64,
            entries: Vec::new(),
            last_append: Instant::now(),
        })
    }

    /// Reopen a pack left unsealed by a crash with the entries that survived verification and
    /// the offset where the verified prefix ends.
    pub fn reopen(path: &Path, id: u64, entries: Vec<EntryInfo>, len: u64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()?;
        Ok(OpenPack { id, durable: Durability::new(file, len), len, entries, last_append: Instant::now() })
    }

    pub fn entry_cost(chunk: &SealedChunk) -> u64 {
        (ENTRY_HEADER_LEN + chunk.stored.len()) as u64
    }

    pub fn append(&mut self, chunk: &SealedChunk) -> io::Result<EntryInfo> {
        let e = EntryInfo {
            id: chunk.id,
            offset: self.len,
            raw_len: chunk.raw_len(),
            stored_len: chunk.stored.len() as u32,
            compression: chunk.compression,
        };
        let file = &self.durable.file;
        file.write_all_at(&format::encode_entry_header(&e), e.offset)?;
        file.write_all_at(&chunk.stored, e.data_offset())?;
        self.len = e.end();
        self.durable.written.store(self.len, Ordering::Release);
        self.entries.push(e);
        self.last_append = Instant::now();
        Ok(e)
    }

    /// Size the pack would have once sealed; rotation keeps this under the target.
    pub fn sealed_size(&self) -> u64 {
        self.len + (self.entries.len() * format::TABLE_RECORD_LEN + TRAILER_LEN) as u64
    }

    /// Append table and trailer and make the whole file durable. After this the pack is
    /// immutable.
    pub fn seal(self) -> io::Result<(u64, Vec<EntryInfo>, u64)> {
        let table = format::encode_table(&self.entries);
        let file = &self.durable.file;
        file.write_all_at(&table, self.len)?;
        let trailer = format::encode_trailer(self.len, &table);
        let size = self.len + table.len() as u64;
        file.write_all_at(&trailer, size)?;
        self.durable.checked(file.sync_all())?;
        self.durable.synced.store(u64::MAX, Ordering::Release);
        Ok((self.id, self.entries, size + TRAILER_LEN as u64))
    }
}

/// A new file's name is durable only once its directory is synced.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_one_failed_sync_every_later_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = OpenPack::create(&dir.path().join("1.pack"), 1).unwrap();
        let chunk = crate::codec::seal(bytes::Bytes::from_static(b"some bytes"), 3);
        let e = p.append(&chunk).unwrap();
        p.durable.sync_to(e.end(), None).unwrap();
        let e = p.append(&chunk).unwrap();
        // As if the kernel had reported a writeback error to this sync.
        assert!(p.durable.checked(Err(io::Error::other("EIO"))).is_err());
        assert!(p.durable.sync_to(e.end(), None).is_err(), "a later fsync's success must not count");
        assert!(p.seal().is_err(), "nor may the pack be sealed as if whole");
    }
}
