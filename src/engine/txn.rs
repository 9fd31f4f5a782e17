//! The account transaction: the one way to change an account's books.
//!
//! Every write that touches an account's objects, references or usage (a drive file, a backup,
//! a sync record, a staged chunk) goes through `Engine::begin`, whatever the front:
//! ```text
//! begin(account) ── lock the account, open its usage (refused if the account is gone)
//!   put_object / remove_object / unstage / charge_sync / batch() for the service's own keys
//! commit(limit) ── the one quota rule, refcounts settled, one synced write
//! ```
//! Invariants (objects.rs lists what they protect; fsck recomputes them):
//! - The account's lock is held from `begin` until the transaction is committed or dropped:
//!   the guard is a field, so "call with the lock held" is the type, not a comment.
//! - Nothing reaches the database before `commit`, and `commit` writes once: a transaction that
//!   fails or is dropped changes nothing.
//! - The quota rule is in `commit` alone: a commit may take `used` past `limit` only if it does
//!   not raise `used` (deletes and overwrites with less always work, also over quota).

use std::collections::HashMap;
use std::sync::MutexGuard;

use rocksdb::WriteBatch;

use super::objects::object_chunks_via;
use super::Engine;
use crate::chunk::ChunkId;
use crate::error::{Refusal, Result};
use crate::store::keys::{self, AccountId, ChunkOp, Manifest, Namespace, ObjectRecord, Usage, SEGMENT_CHUNKS};
use crate::store::{CF_ACCOUNT_CHUNKS, CF_CHUNKS, CF_META, CF_OBJECTS, CF_USAGE, META_LAST_VERSION};

pub struct AccountTxn<'e> {
    engine: &'e Engine,
    account: AccountId,
    _lock: MutexGuard<'e, ()>,
    batch: WriteBatch,
    /// Reference changes by chunk: (change in occurrences, raw length).
    refs: HashMap<ChunkId, (i64, u32)>,
    usage: Usage,
    used_before: u64,
}

impl Engine {
    /// Start changing `account`'s books: waits for the account's lock. Blocking. A write that
    /// began before its account was deleted ends here with `AccountGone`, rather than leaving
    /// records and references that no account owns.
    pub fn begin(&self, account: &AccountId) -> Result<AccountTxn<'_>> {
        let lock = self.lock_account(account);
        let usage = self.usage_for_write(account)?;
        Ok(AccountTxn {
            engine: self,
            account: *account,
            _lock: lock,
            batch: WriteBatch::default(),
            refs: HashMap::new(),
            usage,
            used_before: usage.used,
        })
    }
}

impl AccountTxn<'_> {
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// Objects of one namespace whose names start with `prefix`, all of them: stable until
    /// commit, since the lock is ours (what this transaction changed is not in it yet).
    pub fn list(&self, ns: Namespace, prefix: &[u8]) -> Result<Vec<super::Listed>> {
        self.engine.list_objects(&self.account, ns, prefix, None, usize::MAX)
    }

    /// The engine clock's time, in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.engine.clock().now_ms() as i64
    }

    /// A version never handed out before (`Engine::next_version`), kept by the commit.
    pub fn new_version(&mut self) -> u64 {
        let v = self.engine.next_version();
        self.note_version(v);
        v
    }

    /// The current record of an object; stable until commit, since the lock is ours.
    pub fn object(&self, ns: Namespace, name: &[u8]) -> Result<Option<ObjectRecord>> {
        self.engine.get_object(&self.account, ns, name)
    }

    /// Write object `name` from `manifest` (after `remove_object` of any old version: the new
    /// record takes the old one's key), taking references to its chunks.
    pub fn put_object(&mut self, ns: Namespace, name: &[u8], manifest: &Manifest) -> ObjectRecord {
        self.add_refs(&manifest.chunks, 1);
        self.service(ns, manifest.size as i64);
        if charged(ns) {
            self.charge_item(name.len(), 1);
        }
        let engine = self.engine;
        let version = engine.next_version();
        let objects = engine.db().cf(CF_OBJECTS);
        let (head, tail) = manifest.chunks.split_at(manifest.chunks.len().min(SEGMENT_CHUNKS));
        for (seg, part) in tail.chunks(SEGMENT_CHUNKS).enumerate() {
            let key = keys::segment_key(&self.account, ns, name, version, seg as u32);
            self.batch.put_cf(objects, key, keys::encode_segment(part));
        }
        let record = ObjectRecord {
            version,
            modified: engine.clock().now_ms() as i64,
            size: manifest.size,
            hash: manifest.hash,
            chunk_count: manifest.chunks.len() as u64,
            head: head.to_vec(),
        };
        self.batch.put_cf(objects, keys::object_key(&self.account, ns, name), keys::encode_object(&record));
        self.note_version(version);
        record
    }

    /// Remove object `name`, whose current record is `rec`, releasing its references.
    pub fn remove_object(&mut self, ns: Namespace, name: &[u8], rec: &ObjectRecord) -> Result<()> {
        let db = self.engine.db();
        let chunks = object_chunks_via(|k| db.get(CF_OBJECTS, k), &self.account, ns, name, rec)?;
        self.add_refs(&chunks, -1);
        self.service(ns, -(rec.size as i64));
        if charged(ns) {
            self.charge_item(name.len(), -1);
        }
        let objects = db.cf(CF_OBJECTS);
        for seg in 0..rec.tail_segments() {
            self.batch.delete_cf(objects, keys::segment_key(&self.account, ns, name, rec.version, seg));
        }
        self.batch.delete_cf(objects, keys::object_key(&self.account, ns, name));
        Ok(())
    }

    /// Give object `from` (current record `rec`) the name `to`, keeping its version, time and
    /// chunks: a deleted file into the trash, a replaced one into its versions, and back. The
    /// references it holds do not change, so this frees and charges nothing but item costs.
    pub fn move_object(&mut self, from: (Namespace, &[u8]), to: (Namespace, &[u8]), rec: &ObjectRecord) -> Result<()> {
        let db = self.engine.db();
        let chunks = object_chunks_via(|k| db.get(CF_OBJECTS, k), &self.account, from.0, from.1, rec)?;
        self.remove_object(from.0, from.1, rec)?;
        self.add_refs(&chunks, 1);
        self.service(to.0, rec.size as i64);
        if charged(to.0) {
            self.charge_item(to.1.len(), 1);
        }
        let objects = db.cf(CF_OBJECTS);
        for (seg, part) in chunks[rec.head.len()..].chunks(SEGMENT_CHUNKS).enumerate() {
            let key = keys::segment_key(&self.account, to.0, to.1, rec.version, seg as u32);
            self.batch.put_cf(objects, key, keys::encode_segment(part));
        }
        self.batch.put_cf(objects, keys::object_key(&self.account, to.0, to.1), keys::encode_object(rec));
        Ok(())
    }

    /// Release the staged records of `chunks`: the object being committed holds them now.
    pub fn unstage(&mut self, chunks: &[(ChunkId, u32)]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<&(ChunkId, u32)> = chunks.iter().filter(|(id, _)| seen.insert(*id)).collect();
        let cf = self.engine.db().cf(CF_OBJECTS);
        let staged_keys: Vec<Vec<u8>> =
            distinct.iter().map(|(id, _)| keys::object_key(&self.account, Namespace::Staged, &id.0)).collect();
        let found = self.engine.db().raw().multi_get_cf(staged_keys.iter().map(|k| (cf, k)));
        for ((id, len), (key, v)) in distinct.into_iter().zip(staged_keys.iter().zip(found)) {
            if v?.is_some() {
                self.add_refs(&[(*id, *len)], -1);
                self.batch.delete_cf(cf, key);
            }
        }
        Ok(())
    }

    /// Sync payload bytes come and go (records written, replaced, deleted).
    pub fn charge_sync(&mut self, delta: i64) {
        self.usage.sync = self.usage.sync.saturating_add_signed(delta);
        self.usage.used = self.usage.used.saturating_add_signed(delta);
    }

    /// An item named `name_len` bytes comes (`sign` 1) or goes (-1): its metadata charge.
    pub fn charge_item(&mut self, name_len: usize, sign: i64) {
        let cost = item_cost(name_len) as i64 * sign;
        self.usage.metadata = self.usage.metadata.saturating_add_signed(cost);
        self.usage.used = self.usage.used.saturating_add_signed(cost);
    }

    /// Stored bytes that are the account's but no item's own (dead properties) come or go.
    pub fn charge_metadata(&mut self, delta: i64) {
        self.usage.metadata = self.usage.metadata.saturating_add_signed(delta);
        self.usage.used = self.usage.used.saturating_add_signed(delta);
    }

    /// Use a version in this transaction: the store's version floor rises with the commit.
    pub fn note_version(&mut self, version: u64) {
        self.batch.merge_cf(self.engine.db().cf(CF_META), META_LAST_VERSION, version.to_le_bytes());
    }

    /// The batch, for a service's own records (sync records and feed, backup heads), which
    /// commit together with the books.
    pub(crate) fn batch(&mut self) -> &mut WriteBatch {
        &mut self.batch
    }

    /// What the account uses with this transaction's changes so far (chunk references are
    /// counted at commit).
    pub fn used(&self) -> u64 {
        self.usage.used
    }

    /// Whether `delta` more bytes on top of what this transaction holds now would break the
    /// quota rule: for a caller that judges several writes of one transaction one by one (sync's
    /// group commit), then commits them together.
    pub fn refuses(&self, delta: i64, limit: u64) -> bool {
        over_quota(self.usage.used, self.usage.used.saturating_add_signed(delta), limit)
    }

    /// Apply the quota rule and write everything at once, synced. Returns the usage written.
    pub fn commit(mut self, limit: u64) -> Result<Usage> {
        self.settle_refs()?;
        if over_quota(self.used_before, self.usage.used, limit) {
            return Err(Refusal::Quota { used: self.used_before, limit }.into());
        }
        let db = self.engine.db();
        self.batch.put_cf(db.cf(CF_USAGE), self.account.0, keys::encode_usage(&self.usage));
        db.commit(self.batch)?;
        Ok(self.usage)
    }

    fn add_refs(&mut self, chunks: &[(ChunkId, u32)], sign: i64) {
        for (id, len) in chunks {
            self.refs.entry(*id).or_insert((0, *len)).0 += sign;
        }
    }

    fn service(&mut self, ns: Namespace, delta: i64) {
        if !sized(ns) {
            return;
        }
        let field = match ns {
            Namespace::Drive => &mut self.usage.drive,
            Namespace::Backup => &mut self.usage.backups,
            Namespace::Trash => &mut self.usage.trash,
            Namespace::Versions => &mut self.usage.versions,
            Namespace::Staged | Namespace::Upload | Namespace::Folder | Namespace::Scratch => return,
        };
        *field = field.saturating_add_signed(delta);
    }

    /// Turn the gathered reference changes into `account_chunks` writes, the global refcount's
    /// merge operands (only where the account starts or stops holding a chunk) and `used`.
    fn settle_refs(&mut self) -> Result<()> {
        let db = self.engine.db();
        let (ac, chunks) = (db.cf(CF_ACCOUNT_CHUNKS), db.cf(CF_CHUNKS));
        let mut changed: Vec<(ChunkId, i64, u32)> =
            self.refs.drain().filter(|(_, (d, _))| *d != 0).map(|(id, (d, l))| (id, d, l)).collect();
        changed.sort_unstable_by_key(|c| c.0);
        let keys: Vec<[u8; 48]> = changed.iter().map(|(id, _, _)| keys::account_chunk_key(&self.account, id)).collect();
        let current = db.raw().multi_get_cf(keys.iter().map(|k| (ac, k)));
        let now = self.engine.clock().now_secs();
        let mut used = self.usage.used as i64;
        for ((id, delta, len), (key, old)) in changed.iter().zip(keys.iter().zip(current)) {
            let old = match old? {
                Some(v) => {
                    keys::decode_count(&v).ok_or_else(|| crate::error::Error::corrupt("unreadable account refcount"))?
                }
                None => 0,
            };
            let new = (old as i64 + delta).max(0) as u64;
            if new == 0 {
                self.batch.delete_cf(ac, key);
            } else {
                self.batch.put_cf(ac, key, keys::encode_count(new));
            }
            let flip = match (old, new) {
                (0, n) if n > 0 => 1,
                (o, 0) if o > 0 => -1,
                _ => 0,
            };
            if flip != 0 {
                used += flip * i64::from(*len);
                self.batch.merge_cf(
                    chunks,
                    keys::chunk_key(id),
                    keys::encode_op(&ChunkOp::Refs { delta: flip, at: now }),
                );
            }
        }
        self.usage.used = used.max(0) as u64;
        Ok(())
    }
}

/// What one item (a file, a backup entry or head, a sync record or tombstone) costs in the
/// quota besides its content: a fixed charge for its records and keys, plus the length of its
/// name. So an account cannot fill the disk with empty files, chunkless backup entries or
/// tombstones. About what the item's records take in the database (an object record with its
/// key is 100 to 150 bytes before the name).
pub const ITEM_BYTES: u64 = 128;
/// No item costs more than this, however long its name.
pub const MAX_ITEM_COST: u64 = 4096;

pub fn item_cost(name_len: usize) -> u64 {
    (ITEM_BYTES + name_len as u64).min(MAX_ITEM_COST)
}

/// The one quota rule: a change may not take `used` past `limit`, unless it does not raise it
/// (deletes and smaller overwrites always work, also over quota).
fn over_quota(before: u64, after: u64, limit: u64) -> bool {
    after > before && after > limit
}

/// The user's own items: drive files, folders and backup entries. Staged chunks are charged by their
/// bytes alone (and expire); so are the trash and old versions, which cost only chunks live
/// files do not hold; scratch objects belong to tests.
pub(crate) fn charged(ns: Namespace) -> bool {
    matches!(ns, Namespace::Drive | Namespace::Folder | Namespace::Backup)
}

/// Whose size the usage's per-service fields count.
fn sized(ns: Namespace) -> bool {
    matches!(ns, Namespace::Drive | Namespace::Backup | Namespace::Trash | Namespace::Versions)
}
