//! Committing, reading and deleting objects (an account's named manifests), with the
//! reference counts and usage that go with them, in one synced batch each.
//!
//! Invariants, for every account A and chunk C (fsck recomputes and checks each):
//! - `account_chunks[A ++ C]` = occurrences of C in A's manifests; absent when zero.
//! - `chunks[C].refs` = number of accounts with a non-zero `account_chunks[_ ++ C]`.
//! - `usage[A].used` = sum of the raw lengths of the distinct chunks A holds.
//!
//! All three change in the batch that changes the manifest, under A's lock, so they cannot
//! drift; the global count is a merge operand, so different accounts never contend for it.

use std::collections::HashMap;

use rocksdb::WriteBatch;

use super::{unix_now, Engine, Ingested};
use crate::chunk::ChunkId;
use crate::error::{Error, Refusal, Result};
use crate::store::keys::{self, AccountId, ChunkOp, Manifest, Namespace, ObjectRecord, Usage};
use crate::store::{CF_ACCOUNT_CHUNKS, CF_CHUNKS, CF_OBJECTS, CF_USAGE};

/// What must hold of the current object for a write to go ahead (HTTP `If-Match` and
/// `If-None-Match: *`), checked under the account lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    None,
    IfVersion(u64),
    IfAbsent,
}

#[derive(Debug, thiserror::Error)]
#[error("precondition failed")]
pub struct PreconditionFailed;

impl Precondition {
    fn check(self, current: Option<&ObjectRecord>) -> bool {
        match self {
            Precondition::None => true,
            Precondition::IfVersion(v) => current.is_some_and(|o| o.version == v),
            Precondition::IfAbsent => current.is_none(),
        }
    }
}

/// Changes to one account's books, gathered into a batch before it is written.
pub(crate) struct Books<'a> {
    engine: &'a Engine,
    account: AccountId,
    deltas: HashMap<ChunkId, (i64, u32)>,
    usage: Usage,
    used_before: u64,
}

impl<'a> Books<'a> {
    /// Call with the account's lock held.
    pub(crate) fn open(engine: &'a Engine, account: AccountId) -> Result<Self> {
        let usage = engine.usage(&account)?;
        Ok(Books { engine, account, deltas: HashMap::new(), usage, used_before: usage.used })
    }

    pub(crate) fn add(&mut self, chunks: &[(ChunkId, u32)], sign: i64) {
        for (id, len) in chunks {
            self.deltas.entry(*id).or_insert((0, *len)).0 += sign;
        }
    }

    pub(crate) fn service(&mut self, ns: Namespace, delta: i64) {
        let field = match ns {
            Namespace::Drive => &mut self.usage.drive,
            Namespace::Backup => &mut self.usage.backups,
            Namespace::Staged | Namespace::Scratch => return,
        };
        *field = field.saturating_add_signed(delta);
    }

    /// Put the reference and usage changes into `batch`; refuse if they would take `used`
    /// past `limit` (a write that frees space or stays level is always allowed).
    pub(crate) fn write_into(mut self, batch: &mut WriteBatch, limit: u64) -> Result<Usage> {
        let db = self.engine.db();
        let (ac, chunks) = (db.cf(CF_ACCOUNT_CHUNKS), db.cf(CF_CHUNKS));
        let mut changed: Vec<(ChunkId, i64, u32)> =
            self.deltas.drain().filter(|(_, (d, _))| *d != 0).map(|(id, (d, l))| (id, d, l)).collect();
        changed.sort_unstable_by_key(|c| c.0);
        let keys: Vec<[u8; 48]> = changed.iter().map(|(id, _, _)| keys::account_chunk_key(&self.account, id)).collect();
        let current = db.raw().multi_get_cf(keys.iter().map(|k| (ac, k)));
        let now = unix_now();
        let mut used = self.usage.used as i64;
        for ((id, delta, len), (key, old)) in changed.iter().zip(keys.iter().zip(current)) {
            let old = match old? {
                Some(v) => keys::decode_count(&v).ok_or_else(|| Error::corrupt("unreadable account refcount"))?,
                None => 0,
            };
            let new = (old as i64 + delta).max(0) as u64;
            if new == 0 {
                batch.delete_cf(ac, key);
            } else {
                batch.put_cf(ac, key, keys::encode_count(new));
            }
            let flip = match (old, new) {
                (0, n) if n > 0 => 1,
                (o, 0) if o > 0 => -1,
                _ => 0,
            };
            if flip != 0 {
                used += flip * i64::from(*len);
                batch.merge_cf(chunks, keys::chunk_key(id), keys::encode_op(&ChunkOp::Refs { delta: flip, at: now }));
            }
        }
        self.usage.used = used.max(0) as u64;
        if self.usage.used > self.used_before && self.usage.used > limit {
            return Err(Refusal::Quota { used: self.used_before, limit }.into());
        }
        batch.put_cf(db.cf(CF_USAGE), self.account.0, keys::encode_usage(&self.usage));
        Ok(self.usage)
    }
}

impl Engine {
    pub fn usage(&self, account: &AccountId) -> Result<Usage> {
        match self.db().get(CF_USAGE, &account.0)? {
            None => Ok(Usage::default()),
            Some(v) => keys::decode_usage(&v).ok_or_else(|| Error::corrupt("unreadable usage record")),
        }
    }

    pub fn get_object(&self, account: &AccountId, ns: Namespace, name: &[u8]) -> Result<Option<ObjectRecord>> {
        match self.db().get(CF_OBJECTS, &keys::object_key(account, ns, name))? {
            None => Ok(None),
            Some(v) => keys::decode_object(&v).map(Some).ok_or_else(|| Error::corrupt("unreadable object record")),
        }
    }

    /// Make an ingested upload the object `name`, replacing any previous version, durably.
    /// Blocking. Returns the new record, or `Ok(Err(PreconditionFailed))` with nothing changed.
    pub fn put_object(
        &self,
        account: &AccountId,
        ns: Namespace,
        name: &[u8],
        ingested: Ingested,
        limit: u64,
        pre: Precondition,
    ) -> Result<std::result::Result<ObjectRecord, PreconditionFailed>> {
        let _books_are_ours = self.lock_account(account);
        let old = self.get_object(account, ns, name)?;
        if !pre.check(old.as_ref()) {
            return Ok(Err(PreconditionFailed));
        }
        let manifest: Manifest = ingested.manifest.clone();
        let mut books = Books::open(self, *account)?;
        books.add(&manifest.chunks, 1);
        books.service(ns, manifest.size as i64);
        if let Some(o) = &old {
            books.add(&o.manifest.chunks, -1);
            books.service(ns, -(o.manifest.size as i64));
        }
        let mut batch = WriteBatch::default();
        books.write_into(&mut batch, limit)?;
        let record =
            ObjectRecord { version: old.as_ref().map_or(1, |o| o.version + 1), modified: now_millis(), manifest };
        batch.put_cf(self.db().cf(CF_OBJECTS), keys::object_key(account, ns, name), keys::encode_object(&record));
        self.db().commit(batch)?;
        drop(ingested); // unpin only once the references are durable
        Ok(Ok(record))
    }

    /// Delete an object and release its references. Blocking. `Ok(None)` if there was none.
    pub fn delete_object(
        &self,
        account: &AccountId,
        ns: Namespace,
        name: &[u8],
        pre: Precondition,
    ) -> Result<std::result::Result<Option<ObjectRecord>, PreconditionFailed>> {
        let _books_are_ours = self.lock_account(account);
        let Some(old) = self.get_object(account, ns, name)? else {
            return Ok(Ok(None));
        };
        if !pre.check(Some(&old)) {
            return Ok(Err(PreconditionFailed));
        }
        let mut books = Books::open(self, *account)?;
        books.add(&old.manifest.chunks, -1);
        books.service(ns, -(old.manifest.size as i64));
        let mut batch = WriteBatch::default();
        books.write_into(&mut batch, u64::MAX)?;
        batch.delete_cf(self.db().cf(CF_OBJECTS), keys::object_key(account, ns, name));
        self.db().commit(batch)?;
        Ok(Ok(Some(old)))
    }
}

pub(crate) fn now_millis() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}
