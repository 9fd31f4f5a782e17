//! Synced records: contacts, calendar, notes, bookmarks, messages, call log, settings, photo
//! metadata, and any collection a client names.
//!
//! Every write of an account takes the account's lock, hands out the next `seq`, and commits
//! record, feed entry, collection summary and usage in one synced batch before releasing the
//! lock. So commits land in `seq` order, and a reader that follows `next` sees every change
//! once, in order. A record's version is the `seq` of its last write: unique, growing, opaque.

use std::collections::{BTreeMap, HashMap};

use rocksdb::{Direction, IteratorMode};

use crate::engine::{AccountTxn, Engine, Precondition};
use crate::error::Error;
use crate::store::keys::{self, AccountId};
use crate::store::sync_keys::{self as sk, CollectionMeta, SyncRecord};
use crate::store::{CF_SYNC, CF_SYNC_LOG};

pub const MAX_PAYLOAD: usize = 256 * 1024;
pub const MAX_BATCH: usize = 100;
pub const MAX_FEED: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("a collection name matches ^[a-z][a-z0-9_]{{0,31}}$")]
    BadCollection,
    #[error("a record id is 1 to 64 characters of A-Z a-z 0-9 . _ ~ -")]
    BadId,
    #[error("a payload is at most 256 KiB")]
    TooLarge,
    #[error("a batch holds at most 100 items")]
    BatchTooLarge,
    #[error("no such record")]
    NotFound,
    #[error("the record changed: version conflict")]
    Conflict { current: Option<Box<View>> },
    #[error("some records changed: version conflict")]
    Conflicts(Vec<String>),
    #[error("the feed was purged past that point; sync again from zero")]
    ResyncRequired,
    #[error(transparent)]
    Engine(#[from] Error),
}

impl From<rocksdb::Error> for SyncError {
    fn from(e: rocksdb::Error) -> Self {
        SyncError::Engine(e.into())
    }
}

type Result<T> = std::result::Result<T, SyncError>;

pub fn check_collection(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    ok.then_some(()).ok_or(SyncError::BadCollection)
}

pub fn check_id(id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_alphanumeric() || b"._~-".contains(&c));
    ok.then_some(()).ok_or(SyncError::BadId)
}

/// A record as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub id: String,
    pub version: u64,
    pub seq: u64,
    pub deleted: bool,
    /// JSON text; `None` for a tombstone.
    pub payload: Option<String>,
}

fn view(id: &str, r: &SyncRecord) -> View {
    View {
        id: id.to_string(),
        version: r.version,
        seq: r.seq,
        deleted: r.deleted,
        payload: (!r.deleted).then(|| String::from_utf8_lossy(&r.payload).into_owned()),
    }
}

pub enum Op {
    Put { id: String, payload: Vec<u8>, expect: Precondition },
    Delete { id: String, expect: Precondition },
}

impl Op {
    fn id(&self) -> &str {
        match self {
            Op::Put { id, .. } | Op::Delete { id, .. } => id,
        }
    }
}

pub struct Feed {
    pub records: Vec<View>,
    pub next: u64,
    pub more: bool,
}

/// The sync service over the engine's database. Cheap to clone.
#[derive(Clone)]
pub struct Sync {
    engine: Engine,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Sync {
    pub fn new(engine: Engine) -> Self {
        Sync { engine }
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.engine.db().get(CF_SYNC, key)?)
    }

    fn record(&self, account: &AccountId, collection: &str, id: &str) -> Result<Option<SyncRecord>> {
        match self.get_raw(&sk::record_key(account, collection, id))? {
            None => Ok(None),
            Some(v) => sk::decode_record(&v).map(Some).ok_or_else(|| Error::corrupt("unreadable sync record").into()),
        }
    }

    fn meta(&self, account: &AccountId, collection: &str) -> Result<CollectionMeta> {
        match self.get_raw(&sk::collection_meta_key(account, collection))? {
            None => Ok(CollectionMeta::default()),
            Some(v) => {
                sk::decode_collection_meta(&v).ok_or_else(|| Error::corrupt("unreadable collection summary").into())
            }
        }
    }

    fn last_seq(&self, account: &AccountId) -> Result<u64> {
        Ok(self.get_raw(&sk::account_meta_key(account))?.and_then(|v| keys::decode_count(&v)).unwrap_or(0))
    }

    /// A live record (404 for a tombstone). Blocking.
    pub fn get(&self, account: &AccountId, collection: &str, id: &str) -> Result<View> {
        match self.record(account, collection, id)? {
            Some(r) if !r.deleted => Ok(view(id, &r)),
            _ => Err(SyncError::NotFound),
        }
    }

    /// Apply writes to one collection, all or nothing. A delete of a record that does not
    /// exist (or is a tombstone) is a no-op and yields no view unless it had an expectation,
    /// which then fails. Blocking.
    pub fn apply(&self, account: &AccountId, collection: &str, ops: Vec<Op>, limit: u64) -> Result<Vec<View>> {
        let txn = self.engine.begin(account)?;
        let mut current: HashMap<String, Option<SyncRecord>> = HashMap::new();
        for op in &ops {
            if !current.contains_key(op.id()) {
                current.insert(op.id().to_string(), self.record(account, collection, op.id())?);
            }
        }
        let conflicts: Vec<String> = ops
            .iter()
            .filter(|op| {
                // A tombstone counts as absent for preconditions.
                let live = current[op.id()].as_ref().filter(|r| !r.deleted);
                match op {
                    Op::Put { expect, .. } => !expect.holds_for(live.map(|r| r.version)),
                    Op::Delete { expect, .. } => {
                        *expect != Precondition::None && !expect.holds_for(live.map(|r| r.version))
                    }
                }
            })
            .map(|op| op.id().to_string())
            .collect();
        if !conflicts.is_empty() {
            return Err(SyncError::Conflicts(conflicts));
        }
        self.commit(txn, collection, ops, current, limit)
    }

    fn commit(
        &self,
        mut txn: AccountTxn<'_>,
        collection: &str,
        ops: Vec<Op>,
        mut current: HashMap<String, Option<SyncRecord>>,
        limit: u64,
    ) -> Result<Vec<View>> {
        let db = self.engine.db();
        let account = *txn.account();
        let account = &account;
        let (cf, log) = (db.cf(CF_SYNC), db.cf(CF_SYNC_LOG));
        let mut seq = self.last_seq(account)?;
        let mut meta = self.meta(account, collection)?;
        let now = now_ms();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let old = current.get(op.id()).cloned().flatten();
            let old_live = old.as_ref().filter(|r| !r.deleted);
            let (id, payload, deleted) = match op {
                Op::Put { id, payload, .. } => (id, payload, false),
                Op::Delete { id, .. } if old_live.is_none() => {
                    let _ = id;
                    continue;
                }
                Op::Delete { id, .. } => (id, Vec::new(), true),
            };
            seq += 1;
            let rec = SyncRecord { version: seq, seq, deleted, at: now, payload };
            // Every record, tombstones too, costs its item charge; it replaces the old one's.
            if let Some(o) = &old {
                txn.batch().delete_cf(log, sk::log_key(account, collection, o.seq));
                txn.charge_item(item_name_len(collection, id.as_bytes()), -1);
            }
            txn.charge_item(item_name_len(collection, id.as_bytes()), 1);
            if let Some(o) = old_live {
                meta.count -= 1;
                meta.bytes -= o.payload.len() as u64;
                txn.charge_sync(-(o.payload.len() as i64));
            }
            if !deleted {
                meta.count += 1;
                meta.bytes += rec.payload.len() as u64;
                txn.charge_sync(rec.payload.len() as i64);
            }
            meta.seq = seq;
            txn.batch().put_cf(cf, sk::record_key(account, collection, &id), sk::encode_record(&rec));
            txn.batch().put_cf(log, sk::log_key(account, collection, seq), id.as_bytes());
            out.push(view(&id, &rec));
            current.insert(id, Some(rec));
        }
        txn.batch().put_cf(cf, sk::account_meta_key(account), keys::encode_count(seq));
        txn.batch().put_cf(cf, sk::collection_meta_key(account, collection), sk::encode_collection_meta(&meta));
        txn.commit(limit)?;
        Ok(out)
    }

    /// Records of a collection changed after `since`, in seq order, each at its latest
    /// version. Read from one snapshot, so the feed and the records agree. Blocking.
    pub fn feed(&self, account: &AccountId, collection: &str, since: u64, limit: usize) -> Result<Feed> {
        let db = self.engine.db();
        let snap = db.raw().snapshot();
        let meta = match snap.get_cf(db.cf(CF_SYNC), sk::collection_meta_key(account, collection))? {
            None => CollectionMeta::default(),
            Some(v) => sk::decode_collection_meta(&v).ok_or_else(|| Error::corrupt("unreadable collection summary"))?,
        };
        if since > 0 && since < meta.purged_seq {
            return Err(SyncError::ResyncRequired);
        }
        let prefix = sk::log_prefix(account, collection);
        let start = sk::log_key(account, collection, since.saturating_add(1));
        let mut records = Vec::new();
        let mut more = false;
        for item in snap.iterator_cf(db.cf(CF_SYNC_LOG), IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if records.len() == limit {
                more = true;
                break;
            }
            let id = String::from_utf8_lossy(&v).into_owned();
            let raw = snap.get_cf(db.cf(CF_SYNC), sk::record_key(account, collection, &id))?;
            let rec = raw
                .as_deref()
                .and_then(sk::decode_record)
                .ok_or_else(|| Error::corrupt("feed points at a missing record"))?;
            records.push(view(&id, &rec));
        }
        let next = records.last().map_or(since, |r| r.seq);
        Ok(Feed { records, next, more })
    }

    /// Every collection of the account with its live count and bytes and newest seq. Blocking.
    pub fn summary(&self, account: &AccountId) -> Result<BTreeMap<String, CollectionMeta>> {
        let db = self.engine.db();
        let mut out = BTreeMap::new();
        for item in db.raw().iterator_cf(db.cf(CF_SYNC), IteratorMode::From(&account.0, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&account.0) {
                break;
            }
            if let Some((name, 1, _)) = sk::split_sync_key(&k) {
                let meta =
                    sk::decode_collection_meta(&v).ok_or_else(|| Error::corrupt("unreadable collection summary"))?;
                out.insert(name.to_string(), meta);
            }
        }
        Ok(out)
    }

    /// Drop tombstones written before `older_than_ms` (unix ms), remembering in each
    /// collection the highest seq dropped. Blocking.
    pub fn purge_tombstones(&self, older_than_ms: i64) -> Result<u64> {
        let db = self.engine.db();
        let mut doomed: Vec<(AccountId, String, String, u64)> = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_SYNC), IteratorMode::Start) {
            let (k, v) = item?;
            let Some((collection, 0, id)) = sk::split_sync_key(&k) else { continue };
            let Some(rec) = sk::decode_record(&v) else { continue };
            if rec.deleted && rec.at < older_than_ms {
                let account = AccountId(k[..16].try_into().expect("16 bytes"));
                doomed.push((account, collection.to_string(), String::from_utf8_lossy(id).into_owned(), rec.seq));
            }
        }
        let mut purged = 0;
        for (account, collection, id, seq) in doomed {
            let mut txn = match self.engine.begin(&account) {
                Ok(txn) => txn,
                Err(Error::AccountGone) => continue, // its records went with it
                Err(e) => return Err(e.into()),
            };
            match self.record(&account, &collection, &id)? {
                Some(r) if r.deleted && r.seq == seq => {}
                _ => continue, // written again since the scan
            }
            let mut meta = self.meta(&account, &collection)?;
            meta.purged_seq = meta.purged_seq.max(seq);
            txn.batch().delete_cf(db.cf(CF_SYNC), sk::record_key(&account, &collection, &id));
            txn.batch().delete_cf(db.cf(CF_SYNC_LOG), sk::log_key(&account, &collection, seq));
            txn.charge_item(item_name_len(&collection, id.as_bytes()), -1);
            txn.batch().put_cf(
                db.cf(CF_SYNC),
                sk::collection_meta_key(&account, &collection),
                sk::encode_collection_meta(&meta),
            );
            txn.commit(u64::MAX)?;
            purged += 1;
        }
        Ok(purged)
    }
}

/// A sync record's name, for its item charge: collection and id.
pub fn item_name_len(collection: &str, id: &[u8]) -> usize {
    collection.len() + id.len()
}
