//! The one pack being appended to.
//!
//! Invariant: bytes are written with positioned writes at `len`, under the `Packs` mutex, so
//! entries never interleave. `synced` only grows, and every byte below it survived an
//! `fdatasync`; the index may point only below it (the ingest writer syncs before indexing).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::format::{self, EntryInfo, ENTRY_HEADER_LEN, HEADER_LEN, TRAILER_LEN};
use crate::codec::SealedChunk;

pub(crate) struct OpenPack {
    pub id: u64,
    pub file: Arc<File>,
    pub len: u64,
    pub entries: Vec<EntryInfo>,
    pub synced: Arc<AtomicU64>,
    pub last_append: Instant,
}

impl OpenPack {
    /// The header is written and synced under a temporary name and the file renamed into
    /// place, so a pack file under its real name always has a durable header: a crash during
    /// creation leaves only a `.tmp` file, which the next start removes.
    pub fn create(path: &Path, id: u64) -> io::Result<Self> {
        let tmp = path.with_extension("tmp");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
        file.write_all_at(&format::encode_header(id), 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)?;
        Ok(OpenPack {
            id,
            file: Arc::new(file),
            len: HEADER_LEN as u64,
            entries: Vec::new(),
            synced: Arc::new(AtomicU64::new(HEADER_LEN as u64)),
            last_append: Instant::now(),
        })
    }

    /// Reopen a pack left unsealed by a crash with the entries that survived verification and
    /// the offset where the verified prefix ends.
    pub fn reopen(path: &Path, id: u64, entries: Vec<EntryInfo>, len: u64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()?;
        Ok(OpenPack {
            id,
            file: Arc::new(file),
            len,
            entries,
            synced: Arc::new(AtomicU64::new(len)),
            last_append: Instant::now(),
        })
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
        self.file.write_all_at(&format::encode_entry_header(&e), e.offset)?;
        self.file.write_all_at(&chunk.stored, e.data_offset())?;
        self.len = e.end();
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
        self.file.write_all_at(&table, self.len)?;
        let trailer = format::encode_trailer(self.len, &table);
        let size = self.len + table.len() as u64;
        self.file.write_all_at(&trailer, size)?;
        self.file.sync_all()?;
        self.synced.store(u64::MAX, Ordering::Release);
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
