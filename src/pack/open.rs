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
use super::keyring::KeySet;
use super::sealed::{self, SealError, TableEntry};
use crate::codec::SealedChunk;
use crate::dictionary::Dictionary;
use crate::metrics::timed;

pub(crate) struct OpenPack {
    pub id: u64,
    pub durable: Arc<Durability>,
    pub len: u64,
    pub entries: Vec<EntryInfo>,
    /// Version 2: the key sealing the table, and each entry's key (parallel to `entries`).
    /// Invariant: a version 2 pack holds sealed entries only, a version 1 pack plain ones.
    pub table_key: Option<u32>,
    pub entry_keys: Vec<u32>,
    pub last_append: Instant,
    /// The dictionary written as this pack's first entry (`pack::dicts`); `None` for a pack
    /// without one, and for a pack reopened by recovery (which only seals it).
    pub dict: Option<Arc<Dictionary>>,
}

/// Write an entry's header and bytes back to back at `offset`, in one `pwritev` when the kernel
/// takes it all (the usual case): one system call per entry instead of two, on the writer's
/// serial path.
fn write_entry_at(file: &File, header: &[u8], body: &[u8], offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let iov = [
        libc::iovec { iov_base: header.as_ptr() as *mut libc::c_void, iov_len: header.len() },
        libc::iovec { iov_base: body.as_ptr() as *mut libc::c_void, iov_len: body.len() },
    ];
    let at = libc::off_t::try_from(offset).map_err(|_| io::Error::other("pack offset out of range"))?;
    // SAFETY: both iovecs point into live slices borrowed for the whole call, with their true
    // lengths; the kernel only reads through them.
    let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), 2, at) };
    let n = match usize::try_from(n) {
        Ok(n) => n,
        Err(_) => {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        }
    };
    // A short write (or an interruption) finishes with plain positioned writes.
    if n < header.len() {
        file.write_all_at(&header[n..], offset + n as u64)?;
        file.write_all_at(body, offset + header.len() as u64)
    } else if n < header.len() + body.len() {
        file.write_all_at(&body[n - header.len()..], offset + n as u64)
    } else {
        Ok(())
    }
}

/// Why a seal failed: the disk, or the table's key went missing (retired under us: a bug).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealFailed {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Key(#[from] SealError),
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
    pub fn create(path: &Path, id: u64, table_key: Option<u32>) -> io::Result<Self> {
        let tmp = path.with_extension("tmp");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        let header = match table_key {
            Some(key) => format::encode_sealed_header(id, key),
            None => format::encode_header(id),
        };
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)?;
        Ok(OpenPack {
            id,
            durable: Durability::new(file, HEADER_LEN as u64),
            len: HEADER_LEN as u64,
            entries: Vec::new(),
            table_key,
            entry_keys: Vec::new(),
            last_append: Instant::now(),
            dict: None,
        })
    }

    /// Reopen a pack left unsealed by a crash with the entries that survived verification and
    /// the offset where the verified prefix ends.
    pub fn reopen(
        path: &Path,
        id: u64,
        table_key: Option<u32>,
        entries: Vec<(EntryInfo, Option<u32>)>,
        len: u64,
    ) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()?;
        let entry_keys = entries.iter().filter_map(|(_, k)| *k).collect();
        let entries = entries.into_iter().map(|(e, _)| e).collect();
        Ok(OpenPack {
            id,
            durable: Durability::new(file, len),
            len,
            entries,
            table_key,
            entry_keys,
            last_append: Instant::now(),
            dict: None,
        })
    }

    pub fn entry_cost(chunk: &SealedChunk) -> u64 {
        (ENTRY_HEADER_LEN + chunk.body_len()) as u64
    }

    /// Append a chunk: sealed (`chunk.cipher`) into a version 2 pack, plain into a version 1
    /// pack; the caller (`Packs::append`) makes sure it is the right kind.
    pub fn append(&mut self, chunk: &SealedChunk) -> io::Result<EntryInfo> {
        let sealed = chunk.cipher.as_ref().filter(|_| self.table_key.is_some());
        let e = EntryInfo {
            id: chunk.id,
            offset: self.len,
            raw_len: chunk.raw_len(),
            stored_len: sealed.map_or(chunk.stored.len(), |c| c.body.len()) as u32,
            compression: chunk.compression,
        };
        if self.table_key.is_some() != sealed.is_some() {
            return Err(io::Error::other("a plain entry for a sealed pack, or a sealed one for a plain pack"));
        }
        let file = &self.durable.file;
        match sealed {
            Some(c) => {
                write_entry_at(file, &c.header, &c.body, e.offset)?;
                self.entry_keys.push(c.key_id);
            }
            None => write_entry_at(file, &format::encode_entry_header(&e), &chunk.stored, e.offset)?,
        }
        self.len = e.end();
        self.durable.written.store(self.len, Ordering::Release);
        self.entries.push(e);
        self.last_append = Instant::now();
        Ok(e)
    }

    /// Every key this pack's table and entries use.
    pub fn keys_used(&self) -> impl Iterator<Item = u32> + '_ {
        self.table_key.into_iter().chain(self.entry_keys.iter().copied())
    }

    /// Size the pack would have once sealed; rotation keeps this under the target.
    pub fn sealed_size(&self) -> u64 {
        let tag = if self.table_key.is_some() { sealed::TAG_LEN } else { 0 };
        self.len + (self.entries.len() * format::TABLE_RECORD_LEN + tag + TRAILER_LEN) as u64
    }

    /// Append table and trailer and make the whole file durable. After this the pack is
    /// immutable.
    pub fn seal(self, keys: &KeySet) -> Result<(u64, Vec<EntryInfo>, u64), SealFailed> {
        let (table, trailer) = match self.table_key {
            Some(key) => {
                let records: Vec<TableEntry> = self
                    .entries
                    .iter()
                    .zip(&self.entry_keys)
                    .map(|(info, key)| TableEntry { info: *info, key: *key })
                    .collect();
                sealed::seal_table(keys, &format::encode_sealed_header(self.id, key), self.len, &records)?
            }
            None => {
                let table = format::encode_table(&self.entries);
                let trailer = format::encode_trailer(self.len, &table);
                (table, trailer)
            }
        };
        let file = &self.durable.file;
        file.write_all_at(&table, self.len)?;
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

/// Replace a small file whole and durably: written and synced under a temporary name, renamed
/// over, the directory synced. A crash leaves the old contents or the new, never a mix.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let f = File::create(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_one_failed_sync_every_later_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = OpenPack::create(&dir.path().join("1.pack"), 1, None).unwrap();
        let chunk = crate::codec::seal(bytes::Bytes::from_static(b"some bytes"), 3);
        let e = p.append(&chunk).unwrap();
        p.durable.sync_to(e.end(), None).unwrap();
        let e = p.append(&chunk).unwrap();
        // As if the kernel had reported a writeback error to this sync.
        assert!(p.durable.checked(Err(io::Error::other("EIO"))).is_err());
        assert!(p.durable.sync_to(e.end(), None).is_err(), "a later fsync's success must not count");
        assert!(p.seal(&KeySet::none()).is_err(), "nor may the pack be sealed as if whole");
    }
}
