//! The RocksDB database: one instance, one column family per kind of record.
//!
//! Invariant: every change that touches more than one key goes through one `WriteBatch`, and
//! every write that acknowledges something to a client is synced (`commit`). Unsynced writes
//! (`write_unsynced`) are only for records that nothing depends on until a later synced write,
//! which, being later in the same WAL, makes them durable too.

pub mod backup_keys;
pub mod identity_keys;
pub mod keys;
pub mod prop_keys;
pub mod sync_keys;
pub mod upload_keys;

use std::path::Path;

use rocksdb::compaction_filter::Decision;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, MergeOperands, Options, WriteBatch, WriteOptions, DB};

use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use keys::ChunkRecord;

pub const CF_CHUNKS: &str = "chunks";
pub const CF_PACKS: &str = "packs";
pub const CF_ACCOUNT_CHUNKS: &str = "account_chunks";
pub const CF_OBJECTS: &str = "objects";
pub const CF_SYNC: &str = "sync";
pub const CF_SYNC_LOG: &str = "sync_log";
pub const CF_ACCOUNTS: &str = "accounts";
pub const CF_IDENTIFIERS: &str = "identifiers";
pub const CF_SESSIONS: &str = "sessions";
pub const CF_CODES: &str = "codes";
pub const CF_EVENTS: &str = "events";
/// Counted failures (logins, codes) that must outlive a restart: one key per failure.
pub const CF_LIMITS: &str = "limits";
pub const CF_USAGE: &str = "usage";
pub const CF_BACKUPS: &str = "backups";
/// Unfinished resumable uploads (tus): account ++ upload id -> `upload_keys::UploadRecord`.
pub const CF_UPLOADS: &str = "uploads";
/// Dead properties of drive paths (WebDAV): account ++ path -> `prop_keys` value.
pub const CF_PROPS: &str = "props";
/// Ids of deleted accounts (ids are never reused): a write that was under way when its account
/// was deleted finds the id here under the account lock and stores nothing.
pub const CF_GONE: &str = "gone_accounts";
/// Store-wide counters, each kept as the largest value ever merged in (`merge_max`).
pub const CF_META: &str = "meta";
/// The highest object version handed out: the floor for versions after a restart, so that
/// they stay unique even if the clock went back meanwhile.
pub const META_LAST_VERSION: &[u8] = b"last_version";
/// Pack dictionaries in use: dictionary id -> `keys::DictRecord` (when it was made, and the
/// chunks its bytes came from). A dictionary without a record is retired: GC rewrites every
/// pack that carries one (`engine::gc`).
pub const CF_DICTS: &str = "dictionaries";

pub const ALL_CFS: [&str; 19] = [
    CF_CHUNKS,
    CF_PACKS,
    CF_ACCOUNT_CHUNKS,
    CF_OBJECTS,
    CF_SYNC,
    CF_SYNC_LOG,
    CF_ACCOUNTS,
    CF_IDENTIFIERS,
    CF_SESSIONS,
    CF_CODES,
    CF_EVENTS,
    CF_USAGE,
    CF_BACKUPS,
    CF_GONE,
    CF_META,
    CF_LIMITS,
    CF_UPLOADS,
    CF_PROPS,
    CF_DICTS,
];

pub struct Db {
    db: DB,
}

/// The `chunks` merge operator: fold `ChunkOp`s into the record in order. An absent record is
/// stored as an empty value (a merge must produce some value); readers treat empty as absent.
fn merge_chunk(key: &[u8], existing: Option<&[u8]>, ops: &MergeOperands) -> Option<Vec<u8>> {
    let id = keys::chunk_id_from_key(key).unwrap_or(ChunkId([0; 32]));
    let mut rec = existing.and_then(|v| keys::decode_chunk(id, v));
    for op in ops {
        if let Some(op) = keys::decode_op(id, op) {
            rec = keys::apply_op(rec, op);
        }
    }
    Some(rec.map(|r| keys::encode_chunk(&r)).unwrap_or_default())
}

/// A forgotten chunk leaves an empty value (see `merge_chunk`). Every reader and the merge
/// operator take an empty value as absent, so compaction may drop it: without this, every
/// chunk ever stored would keep a key forever, and every index scan (GC, stats, fsck) would walk
/// past all of them. Off the bottom level RocksDB turns the removal into a tombstone, so no
/// older value can resurface. A value is dropped by the first compaction after the one that
/// folded its `Forget` in; with a filter set, RocksDB compacts every file at least every 30
/// days, so none lingers longer than that.
fn drop_forgotten(_level: u32, _key: &[u8], value: &[u8]) -> Decision {
    if value.is_empty() {
        Decision::Remove
    } else {
        Decision::Keep
    }
}

/// The largest of the existing value and the operands, each a little-endian u64. Max is
/// associative and commutative, so concurrent committers may merge in any order.
fn merge_max(_key: &[u8], existing: Option<&[u8]>, ops: &MergeOperands) -> Option<Vec<u8>> {
    let max = existing.into_iter().chain(ops).filter_map(decode_u64).max().unwrap_or(0);
    Some(max.to_le_bytes().to_vec())
}

pub fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

/// Operands are never combined ahead of the base value: `Refs` and `Forget` do not commute,
/// and RocksDB simply keeps operands it was not allowed to combine.
fn no_partial_merge(_: &[u8], _: Option<&[u8]>, _: &MergeOperands) -> Option<Vec<u8>> {
    None
}

impl Db {
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut o = Options::default();
            if *name == CF_META {
                o.set_merge_operator_associative("cairn.max.v1", merge_max);
            }
            if *name == CF_CHUNKS {
                o.set_merge_operator("cairn.chunk.v1", merge_chunk, no_partial_merge);
                o.set_compaction_filter("cairn.chunk.drop_forgotten", drop_forgotten);
            }
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Db { db })
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("every column family is created at open")
    }

    pub fn raw(&self) -> &DB {
        &self.db
    }

    /// Apply a batch durably: when this returns, the batch survives power loss.
    pub fn commit(&self, batch: WriteBatch) -> Result<()> {
        let mut o = WriteOptions::default();
        o.set_sync(true);
        self.db.write_opt(batch, &o)?;
        Ok(())
    }

    pub fn write_unsynced(&self, batch: WriteBatch) -> Result<()> {
        self.db.write(batch)?;
        Ok(())
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkRecord>> {
        match self.db.get_pinned_cf(self.cf(CF_CHUNKS), keys::chunk_key(id))? {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => keys::decode_chunk(*id, &v)
                .map(Some)
                .ok_or_else(|| Error::corrupt(format!("index record of chunk {id} is unreadable"))),
        }
    }

    pub fn chunks(&self, ids: &[ChunkId]) -> Result<Vec<Option<ChunkRecord>>> {
        self.chunks_each(ids).into_iter().collect()
    }

    /// `chunk` of each id, in one call to the database, each answer on its own (a download's
    /// read thread looks up about 1 MiB of chunks at a time).
    pub fn chunks_each(&self, ids: &[ChunkId]) -> Vec<Result<Option<ChunkRecord>>> {
        let keys: Vec<[u8; 32]> = ids.iter().map(keys::chunk_key).collect();
        let found = self.db.batched_multi_get_cf(self.cf(CF_CHUNKS), &keys, false);
        ids.iter()
            .zip(found)
            .map(|(id, v)| match v? {
                None => Ok(None),
                Some(v) if v.is_empty() => Ok(None),
                Some(v) => keys::decode_chunk(*id, &v)
                    .map(Some)
                    .ok_or_else(|| Error::corrupt(format!("index record of chunk {id} is unreadable"))),
            })
            .collect()
    }

    pub fn flush(&self) -> Result<()> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name))?;
        }
        self.db.flush_wal(true)?;
        Ok(())
    }
}
