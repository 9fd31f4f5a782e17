//! Device backups: snapshot manifests of one device's files, each file a chunk list.
//!
//! A phone chunks its files, asks which chunks the account lacks (`/v1/chunks/missing`),
//! uploads those (`PUT /v1/chunks/{hash}`, staged), then commits the manifest here. A new phone
//! lists the snapshots and restores files one by one. One file per operation: `commit`
//! (with retention), `restore` (list, manifest, one file), `delete`.
//!
//! Invariants:
//! - A backup is one synced batch: its head, its entries, one object per entry (so references
//!   and usage move exactly as for drive files), the release of the staged chunks it claims,
//!   and the removal of the backups retention drops. Readers see all of it or none.
//! - Every chunk a commit references is pinned before the account's holdings are checked and
//!   stays pinned until the batch is durable, so a concurrent GC cannot free it in between.
//! - Commits of one account run under its lock, so retention and usage see every earlier one.

mod commit;
mod delete;
pub mod manifest;
mod restore;
pub mod retention;

use rocksdb::{Direction, IteratorMode, Snapshot};

use crate::chunk::ChunkId;
use crate::engine::Engine;
use crate::error::Error;
use crate::store::backup_keys::{self as bk, BackupHead, EntryMeta};
use crate::store::keys::{self, AccountId, Namespace, ObjectRecord};
use crate::store::{CF_BACKUPS, CF_OBJECTS};

pub use crate::store::backup_keys::head_name_len;
pub use manifest::Posted;
pub use retention::Retention;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the manifest is not valid: {0}")]
    BadJson(String),
    #[error("{field} must be {min} to {max} characters without control characters")]
    BadField { field: &'static str, min: usize, max: usize },
    #[error("a backup holds at most {} entries", manifest::MAX_ENTRIES)]
    TooManyEntries,
    #[error("entry path {0:?} must be 1 to 4096 bytes of UTF-8 without NUL")]
    BadPath(String),
    #[error("entry {0:?}: mtime must be RFC 3339")]
    BadMtime(String),
    #[error("{0:?} is not a chunk hash")]
    BadHash(String),
    #[error("chunk {id} is {} bytes, not {size}", actual.map_or("1 or more".into(), |a| a.to_string()))]
    BadChunkSize { id: ChunkId, size: u32, actual: Option<u32> },
    #[error("entry {path:?} has size {size} but its chunks add up to {sum}")]
    SizeMismatch { path: String, size: u64, sum: u64 },
    #[error("entry path {0:?} appears more than once")]
    DuplicatePath(String),
    #[error("some chunks must be uploaded first")]
    MissingChunks(Vec<ChunkId>),
    #[error("no such backup")]
    NotFound,
    #[error(transparent)]
    Engine(#[from] Error),
}

impl From<rocksdb::Error> for BackupError {
    fn from(e: rocksdb::Error) -> Self {
        BackupError::Engine(e.into())
    }
}

impl BackupError {
    /// The API's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::BadJson(_) => "bad_json",
            BackupError::BadField { .. } => "bad_field",
            BackupError::TooManyEntries => "too_many_entries",
            BackupError::BadPath(_) => "bad_path",
            BackupError::BadMtime(_) => "bad_mtime",
            BackupError::BadHash(_) => "bad_hash",
            BackupError::BadChunkSize { .. } => "bad_size",
            BackupError::SizeMismatch { .. } => "size_mismatch",
            BackupError::DuplicatePath(_) => "duplicate_path",
            BackupError::MissingChunks(_) => "missing_chunks",
            BackupError::NotFound => "not_found",
            BackupError::Engine(_) => "internal",
        }
    }
}

type Result<T> = std::result::Result<T, BackupError>;

/// A backup as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub id: u64,
    pub head: BackupHead,
}

/// One file of a backup, as its manifest shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredEntry {
    pub meta: EntryMeta,
    pub size: u64,
    pub chunks: Vec<(ChunkId, u32)>,
}

/// Backup ids in URLs and JSON: 16 lower-case hex digits.
pub use crate::store::keys::{format_hex_id as format_id, parse_hex_id as parse_id};

/// The backup service over the engine. Cheap to clone.
#[derive(Clone)]
pub struct Backups {
    engine: Engine,
    retention: Retention,
}

impl Backups {
    pub fn new(engine: Engine, retention: Retention) -> Self {
        Backups { engine, retention }
    }

    /// Every backup of the account, in id order (oldest first).
    fn summaries(&self, account: &AccountId) -> Result<Vec<Summary>> {
        let db = self.engine.db();
        let prefix = bk::head_prefix(account);
        let mut out = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_BACKUPS), IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let id = bk::id_from_head_key(&k).ok_or_else(|| Error::corrupt("unreadable backup key"))?;
            let head = bk::decode_head(&v).ok_or_else(|| Error::corrupt("unreadable backup head"))?;
            out.push(Summary { id, head });
        }
        Ok(out)
    }

    /// A backup's entries in posted order, each with its entry key and object record, read
    /// through `snap`.
    fn entries(&self, snap: &Snapshot<'_>, account: &AccountId, id: u64) -> Result<Vec<StoredEntry>> {
        let db = self.engine.db();
        let (cf, objects) = (db.cf(CF_BACKUPS), db.cf(CF_OBJECTS));
        let prefix = bk::entry_prefix(account, id);
        let mut out = Vec::new();
        for item in snap.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, v) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let meta = bk::decode_entry(&v).ok_or_else(|| Error::corrupt("unreadable backup entry"))?;
            let name = bk::object_name(id, &meta.path);
            let rec = snap
                .get_cf(objects, keys::object_key(account, Namespace::Backup, &name))?
                .and_then(|v| keys::decode_object(&v))
                .ok_or_else(|| Error::corrupt(format!("backup entry {:?} has no readable chunk list", meta.path)))?;
            out.push(StoredEntry { key, meta, name, rec });
        }
        Ok(out)
    }
}

/// One entry as stored: its key in `backups`, what it keeps, and its object.
struct StoredEntry {
    key: Box<[u8]>,
    meta: EntryMeta,
    name: Vec<u8>,
    rec: ObjectRecord,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_nothing_else_parses() {
        for id in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(parse_id(&format_id(id)), Some(id));
        }
        for bad in ["", "0", "0123456789ABCDEF", "+123456789abcdef", "0123456789abcdef0", "g123456789abcdef"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }
}
