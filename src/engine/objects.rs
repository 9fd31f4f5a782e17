//! Committing, reading, listing and deleting objects (an account's named manifests), with the
//! reference counts and usage that go with them, in one synced batch each.
//!
//! Invariants, for every account A and chunk C (fsck recomputes and checks each):
//! - `account_chunks[A ++ C]` = occurrences of C in A's manifests; absent when zero.
//! - `chunks[C].refs` = number of accounts with a non-zero `account_chunks[_ ++ C]`.
//! - `usage[A].used` = sum of the raw lengths of the distinct chunks A holds (+ sync bytes).
//!
//! All three change in the batch that changes the manifest, through the account's transaction
//! (`txn.rs`: its lock, one synced write), so they cannot drift; the global count is a merge
//! operand, so different accounts never contend for it.

use std::sync::atomic::Ordering;

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{Engine, Ingested};
use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::store::keys::{self, AccountId, ChunkOp, Namespace, ObjectRecord, Usage};
use crate::store::{
    CF_ACCOUNT_CHUNKS, CF_BACKUPS, CF_CHUNKS, CF_GONE, CF_OBJECTS, CF_PROPS, CF_SYNC, CF_SYNC_LOG, CF_UPLOADS, CF_USAGE,
};

/// What must hold of the current object for a write to go ahead (HTTP `If-Match` and
/// `If-None-Match: *`), checked under the account lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    None,
    IfVersion(u64),
    /// `If-Match: *`
    IfExists,
    IfAbsent,
}

#[derive(Debug, thiserror::Error)]
#[error("precondition failed")]
pub struct PreconditionFailed;

impl Precondition {
    pub fn check(self, current: Option<&ObjectRecord>) -> bool {
        self.holds_for(current.map(|o| o.version))
    }

    /// Whether the precondition holds for a thing whose current version is `current` (`None`:
    /// it does not exist). Files and sync records share this.
    pub fn holds_for(self, current: Option<u64>) -> bool {
        match self {
            Precondition::None => true,
            Precondition::IfVersion(v) => current == Some(v),
            Precondition::IfExists => current.is_some(),
            Precondition::IfAbsent => current.is_none(),
        }
    }
}

/// A committed write.
#[derive(Clone, Debug)]
pub struct Put {
    pub record: ObjectRecord,
    /// Whether an earlier version was replaced (HTTP 200 rather than 201).
    pub replaced: bool,
}

/// One object in a listing.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: Vec<u8>,
    pub record: ObjectRecord,
}

impl Engine {
    /// The account's usage, to change it. Call with the account's lock held: a write that
    /// started before its account was deleted ends here with `AccountGone`, rather than
    /// leaving records and references that no account owns.
    pub(crate) fn usage_for_write(&self, account: &AccountId) -> Result<Usage> {
        if self.db().get(CF_GONE, &account.0)?.is_some() {
            return Err(Error::AccountGone);
        }
        self.usage(account)
    }

    pub fn usage(&self, account: &AccountId) -> Result<Usage> {
        match self.db().get(CF_USAGE, &account.0)? {
            None => Ok(Usage::default()),
            Some(v) => keys::decode_usage(&v).ok_or_else(|| Error::corrupt("unreadable usage record")),
        }
    }

    /// A version number never handed out before: wall-clock microseconds, bumped past the
    /// last one so that it grows even if the clock does not, also across restarts (the last
    /// one is kept in the database with every write that uses one).
    pub(crate) fn next_version(&self) -> u64 {
        let now = self.clock().now_micros();
        let mut last = self.inner.last_version.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.inner.last_version.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    pub fn get_object(&self, account: &AccountId, ns: Namespace, name: &[u8]) -> Result<Option<ObjectRecord>> {
        match self.db().get(CF_OBJECTS, &keys::object_key(account, ns, name))? {
            None => Ok(None),
            Some(v) => keys::decode_object(&v).map(Some).ok_or_else(|| Error::corrupt("unreadable object record")),
        }
    }

    /// An object's record and whole chunk list, read through one snapshot: a delete or an
    /// overwrite that lands between the two reads cannot leave the record without its
    /// segments. Blocking.
    pub fn get_object_and_chunks(
        &self,
        account: &AccountId,
        ns: Namespace,
        name: &[u8],
    ) -> Result<Option<(ObjectRecord, ChunkList)>> {
        let snap = self.db().raw().snapshot();
        let cf = self.db().cf(CF_OBJECTS);
        let Some(v) = snap.get_cf(cf, keys::object_key(account, ns, name))? else {
            return Ok(None);
        };
        let rec = keys::decode_object(&v).ok_or_else(|| Error::corrupt("unreadable object record"))?;
        let chunks = object_chunks_via(|k| Ok(snap.get_cf(cf, k)?), account, ns, name, &rec)?;
        Ok(Some((rec, chunks)))
    }

    /// The whole chunk list of an object, continuation segments included.
    pub fn object_chunks(
        &self,
        account: &AccountId,
        ns: Namespace,
        name: &[u8],
        rec: &ObjectRecord,
    ) -> Result<Vec<(ChunkId, u32)>> {
        object_chunks_via(|k| self.db().get(CF_OBJECTS, k), account, ns, name, rec)
    }

    /// Make an ingested upload the object `name`, replacing any previous version, durably.
    /// Chunks the account had staged for this upload are released in the same batch. Blocking.
    /// Returns the new record, or `Ok(Err(PreconditionFailed))` with nothing changed.
    pub fn put_object(
        &self,
        account: &AccountId,
        ns: Namespace,
        name: &[u8],
        ingested: Ingested,
        limit: u64,
        pre: Precondition,
    ) -> Result<std::result::Result<Put, PreconditionFailed>> {
        let mut txn = self.begin(account)?;
        let old = txn.object(ns, name)?;
        if !pre.check(old.as_ref()) {
            return Ok(Err(PreconditionFailed));
        }
        if let Some(o) = &old {
            txn.remove_object(ns, name, o)?;
        }
        let record = txn.put_object(ns, name, &ingested.manifest);
        if ns != Namespace::Staged {
            txn.unstage(&ingested.manifest.chunks)?;
        }
        txn.commit(limit)?;
        drop(ingested); // unpin only once the references are durable
        Ok(Ok(Put { record, replaced: old.is_some() }))
    }

    /// Delete an object and release its references. Blocking. `Ok(Ok(None))` if there was none.
    pub fn delete_object(
        &self,
        account: &AccountId,
        ns: Namespace,
        name: &[u8],
        pre: Precondition,
    ) -> Result<std::result::Result<Option<ObjectRecord>, PreconditionFailed>> {
        let mut txn = self.begin(account)?;
        let Some(old) = txn.object(ns, name)? else {
            return Ok(Ok(None));
        };
        if !pre.check(Some(&old)) {
            return Ok(Err(PreconditionFailed));
        }
        txn.remove_object(ns, name, &old)?;
        txn.commit(u64::MAX)?;
        Ok(Ok(Some(old)))
    }

    /// Objects of one namespace whose names start with `prefix`, in byte order, strictly after
    /// `after`, at most `limit`. Blocking.
    pub fn list_objects(
        &self,
        account: &AccountId,
        ns: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let base = keys::object_prefix(account, ns);
        let mut start = keys::object_key(account, ns, prefix);
        if let Some(a) = after {
            let from = keys::object_key(account, ns, a);
            if from > start {
                start = from;
                start.push(0); // the smallest key strictly after `after`
            }
        }
        let mut out = Vec::new();
        let it = self.db().raw().iterator_cf(self.db().cf(CF_OBJECTS), IteratorMode::From(&start, Direction::Forward));
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(&base) || !k[base.len()..].starts_with(prefix) || out.len() >= limit {
                break;
            }
            let record = keys::decode_object(&v).ok_or_else(|| Error::corrupt("unreadable object record"))?;
            out.push(Listed { name: k[base.len()..].to_vec(), record });
        }
        Ok(out)
    }

    /// Which of `ids` the account holds (in any object, staged chunks included). Blocking.
    pub fn holds(&self, account: &AccountId, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let cf = self.db().cf(CF_ACCOUNT_CHUNKS);
        let keys: Vec<[u8; 48]> = ids.iter().map(|id| keys::account_chunk_key(account, id)).collect();
        self.db().raw().multi_get_cf(keys.iter().map(|k| (cf, k))).into_iter().map(|v| Ok(v?.is_some())).collect()
    }

    /// Remove every object the account has and release every reference it holds, adding the
    /// deletions to `batch`; then let `more` add its own (the account's identity records), and
    /// commit it all as one durable step. Blocking.
    pub fn purge_account<E: From<Error>>(
        &self,
        account: &AccountId,
        more: impl FnOnce(&mut WriteBatch) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let _books_are_ours = self.lock_account(account);
        let db = self.db();
        let mut batch = WriteBatch::default();
        let now = self.clock().now_secs();
        let mut ac_start = account.0.to_vec();
        ac_start.resize(48, 0);
        for item in db.raw().iterator_cf(db.cf(CF_ACCOUNT_CHUNKS), IteratorMode::From(&ac_start, Direction::Forward)) {
            let (k, _) = item.map_err(Error::from)?;
            let Some((owner, id)) = keys::split_account_chunk_key(&k) else { break };
            if owner != *account {
                break;
            }
            batch.delete_cf(db.cf(CF_ACCOUNT_CHUNKS), &k);
            batch.merge_cf(
                db.cf(CF_CHUNKS),
                keys::chunk_key(&id),
                keys::encode_op(&ChunkOp::Refs { delta: -1, at: now }),
            );
        }
        // Every key of the account sorts below the next account id.
        let end = match u128::from_be_bytes(account.0).checked_add(1) {
            Some(next) => next.to_be_bytes().to_vec(),
            None => vec![0xFF; 64],
        };
        batch.delete_range_cf(db.cf(CF_OBJECTS), account.0.to_vec(), end.clone());
        batch.delete_range_cf(db.cf(CF_SYNC), account.0.to_vec(), end.clone());
        batch.delete_range_cf(db.cf(CF_SYNC_LOG), account.0.to_vec(), end.clone());
        batch.delete_range_cf(db.cf(CF_BACKUPS), account.0.to_vec(), end.clone());
        batch.delete_range_cf(db.cf(CF_UPLOADS), account.0.to_vec(), end.clone());
        batch.delete_range_cf(db.cf(CF_PROPS), account.0.to_vec(), end);
        batch.delete_cf(db.cf(CF_USAGE), account.0);
        batch.put_cf(db.cf(CF_GONE), account.0, now.to_le_bytes());
        more(&mut batch)?;
        Ok(db.commit(batch)?)
    }

    /// Every account that holds anything (has a usage record). Blocking.
    pub fn accounts(&self) -> Result<Vec<AccountId>> {
        let mut out = Vec::new();
        for item in self.db().raw().iterator_cf(self.db().cf(CF_USAGE), IteratorMode::Start) {
            let (k, _) = item?;
            out.extend(k.as_ref().try_into().ok().map(AccountId));
        }
        Ok(out)
    }

    /// Drop staged chunks older than `ttl_secs` that no manifest claimed. Blocking.
    pub fn expire_staged(&self, ttl_secs: u64) -> Result<u64> {
        let horizon = self.clock().now_ms() as i64 - (ttl_secs as i64) * 1000;
        let mut expired = 0;
        for account in self.accounts()? {
            for item in self.list_objects(&account, Namespace::Staged, b"", None, usize::MAX)? {
                if item.record.modified <= horizon {
                    let pre = Precondition::IfVersion(item.record.version);
                    if let Ok(Some(_)) = self.delete_object(&account, Namespace::Staged, &item.name, pre)? {
                        expired += 1;
                    }
                }
            }
        }
        Ok(expired)
    }
}

/// An object's whole chunk list, its segments read through `get` (from `objects`: the live
/// database, or a snapshot of it, so that fsck and backup manifests read one consistent view).
pub(crate) fn object_chunks_via(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>>,
    account: &AccountId,
    ns: Namespace,
    name: &[u8],
    rec: &ObjectRecord,
) -> Result<Vec<(ChunkId, u32)>> {
    let mut chunks = rec.head.clone();
    for seg in 0..rec.tail_segments() {
        let v = get(&keys::segment_key(account, ns, name, rec.version, seg))?
            .ok_or_else(|| Error::corrupt("missing chunk-list segment"))?;
        chunks.extend(keys::decode_segment(&v).ok_or_else(|| Error::corrupt("unreadable chunk-list segment"))?);
    }
    if chunks.len() as u64 != rec.chunk_count {
        return Err(Error::corrupt("object chunk list is shorter than its record says"));
    }
    Ok(chunks)
}

/// An object's chunks in order, each with its length.
pub type ChunkList = Vec<(ChunkId, u32)>;
