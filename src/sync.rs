//! Synced records: contacts, calendar, notes, bookmarks, messages, call log, settings, photo
//! metadata, and any collection a client names.
//!
//! Every write of an account is committed under the account's lock, which hands out the next
//! `seq`s, and commits record, feed entry, collection summary and usage in one synced batch
//! before releasing the lock. So commits land in `seq` order, and a reader that follows `next`
//! sees every change once, in order. A record's version is the `seq` of its last write:
//! unique, growing, opaque. Writes that arrive while one of the account's commits is in
//! flight are committed together in the next batch, in arrival order (`GroupCommit`).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{Direction, IteratorMode};

use crate::engine::{AccountTxn, Engine, Precondition};
use crate::error::{Error, Refusal};
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
    groups: GroupCommit,
}

/// The same failure for every write of a group (errors do not clone), of the same kind: a
/// full disk stays a full disk (507), corruption stays corruption, the rest is internal.
fn again(e: &SyncError) -> SyncError {
    match e {
        SyncError::Engine(Error::AccountGone) => Error::AccountGone.into(),
        SyncError::Engine(Error::DiskFull { reserve }) => Error::DiskFull { reserve: *reserve }.into(),
        SyncError::Engine(full) if full.is_disk_full() => Error::DiskFull { reserve: 0 }.into(),
        SyncError::Engine(Error::Corrupt(what)) => Error::Corrupt(what.clone()).into(),
        other => Error::Internal(format!("sync group commit: {other}")).into(),
    }
}

/// One call's writes to one collection, as queued for a group commit.
struct Write {
    collection: String,
    ops: Vec<Op>,
    limit: u64,
}

/// What a group has staged so far: the account's next seq, the summaries of the collections
/// it touched, the records it wrote (`None`: known absent), and the writes. Usage is the
/// account transaction's.
struct GroupState {
    seq: u64,
    metas: HashMap<String, CollectionMeta>,
    records: HashMap<(String, String), Option<SyncRecord>>,
    writes: Vec<Staged>,
}

/// A write a group will make: column family, key, and the value (`None`: a delete).
type Staged = (&'static str, Vec<u8>, Option<Vec<u8>>);

impl GroupState {
    fn read(sync: &Sync, account: &AccountId) -> Result<Self> {
        Ok(GroupState {
            seq: sync.last_seq(account)?,
            metas: HashMap::new(),
            records: HashMap::new(),
            writes: Vec::new(),
        })
    }
}

/// Group commit per account. A synced commit costs an fsync (a few ms here); one account's
/// writes are serialized by its lock, so 32 devices of one account wrote only 2.6x what one
/// did (docs/benchmarks.md, issue 5). Writes that arrive while a commit is in flight queue up;
/// when it is done, the first of them leads: it takes the whole queue, commits it as one
/// batch under the account lock, in queue order (so seqs are handed out, and land, in
/// order), and answers everyone. Invariant: an account has at most one leader, and every
/// queued write gets exactly one answer, or the leadership.
#[derive(Clone, Default)]
struct GroupCommit {
    queues: Arc<Mutex<HashMap<AccountId, Queue>>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Write, Sender<Turn>)>,
    leading: bool,
}

enum Turn {
    Done(Result<Vec<View>>),
    Lead,
}

enum Joined<'a> {
    Done(Result<Vec<View>>),
    Lead(Leader<'a>),
}

impl GroupCommit {
    fn queues(&self) -> MutexGuard<'_, HashMap<AccountId, Queue>> {
        self.queues.lock().expect("sync queue lock poisoned")
    }

    /// Queue a write; come back with its answer, or as the leader of the next group.
    fn join(&self, account: AccountId, write: Write) -> Joined<'_> {
        let (tx, rx) = channel();
        {
            let mut queues = self.queues();
            let q = queues.entry(account).or_default();
            q.waiting.push((write, tx));
            if !q.leading {
                q.leading = true;
                return Joined::Lead(Leader { groups: self, account, own: rx });
            }
        }
        match rx.recv() {
            Ok(Turn::Done(result)) => Joined::Done(result),
            Ok(Turn::Lead) => Joined::Lead(Leader { groups: self, account, own: rx }),
            Err(_) => Joined::Done(Err(Error::corrupt("a sync group commit was abandoned").into())),
        }
    }
}

/// The one thread committing an account's queue. Dropping it (also by a panic) passes the
/// leadership to the first write still waiting, or ends it.
struct Leader<'a> {
    groups: &'a GroupCommit,
    account: AccountId,
    own: Receiver<Turn>,
}

impl Leader<'_> {
    /// Everything queued, the leader's own write among it.
    fn take(&mut self) -> Vec<(Write, Sender<Turn>)> {
        self.groups.queues().get_mut(&self.account).map(|q| std::mem::take(&mut q.waiting)).unwrap_or_default()
    }

    /// Answer every write of the group; the leader's own answer comes back through its own
    /// queue entry like anyone's.
    fn answer(self, replies: Vec<Sender<Turn>>, results: Vec<Result<Vec<View>>>) -> Result<Vec<View>> {
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(Turn::Done(result));
        }
        match self.own.try_recv() {
            Ok(Turn::Done(result)) => result,
            _ => Err(Error::corrupt("a sync group lost its leader's write").into()),
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut queues = self.groups.queues();
        let Some(q) = queues.get_mut(&self.account) else { return };
        // A waiter that is gone (its thread panicked) cannot lead: try the next one.
        while !q.waiting.is_empty() {
            if q.waiting[0].1.send(Turn::Lead).is_ok() {
                return;
            }
            q.waiting.remove(0);
        }
        queues.remove(&self.account);
    }
}

impl Sync {
    pub fn new(engine: Engine) -> Self {
        Sync { engine, groups: GroupCommit::default() }
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

    /// One collection's live count and bytes and newest seq (all zero for one never written).
    /// Blocking.
    pub fn collection(&self, account: &AccountId, collection: &str) -> Result<CollectionMeta> {
        self.meta(account, collection)
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
    ///
    /// Writes to one account are committed in groups (see `GroupCommit`): this call joins the
    /// account's queue and either waits for a leader to commit it or leads the next group.
    pub fn apply(&self, account: &AccountId, collection: &str, ops: Vec<Op>, limit: u64) -> Result<Vec<View>> {
        let write = Write { collection: collection.to_string(), ops, limit };
        match self.groups.join(*account, write) {
            Joined::Done(result) => result,
            Joined::Lead(mut lead) => {
                let (writes, replies): (Vec<Write>, Vec<_>) = lead.take().into_iter().unzip();
                let results = self.commit_group(account, writes);
                lead.answer(replies, results)
            }
        }
    }

    /// Commit a group of writes to one account in one synced batch, in order, as if each had
    /// been committed alone: each sees the records, summaries and usage the ones before it
    /// left, and one that fails (a conflict, the quota) leaves nothing while the others land.
    fn commit_group(&self, account: &AccountId, group: Vec<Write>) -> Vec<Result<Vec<View>>> {
        let mut results = Vec::new();
        let begun = self.engine.begin(account).map_err(SyncError::from);
        let (mut txn, mut state) = match begun.and_then(|txn| Ok((txn, GroupState::read(self, account)?))) {
            Ok(both) => both,
            Err(e) => return group.iter().map(|_| Err(again(&e))).collect(),
        };
        let mut landed = Vec::new();
        for (i, w) in group.into_iter().enumerate() {
            match self.stage(account, w, &mut state, &mut txn) {
                Ok(views) => {
                    landed.push(i);
                    results.push(Ok(views));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if landed.is_empty() {
            return results;
        }
        let db = self.engine.db();
        for (cf, key, value) in state.writes.drain(..) {
            match value {
                Some(v) => txn.batch().put_cf(db.cf(cf), key, v),
                None => txn.batch().delete_cf(db.cf(cf), key),
            }
        }
        txn.batch().put_cf(db.cf(CF_SYNC), sk::account_meta_key(account), keys::encode_count(state.seq));
        for (collection, meta) in &state.metas {
            txn.batch().put_cf(
                db.cf(CF_SYNC),
                sk::collection_meta_key(account, collection),
                sk::encode_collection_meta(meta),
            );
        }
        // Each write was judged alone by the quota rule as it was staged (`AccountTxn::refuses`).
        if let Err(e) = txn.commit(u64::MAX) {
            let e = SyncError::from(e);
            for i in landed {
                results[i] = Err(again(&e));
            }
        }
        results
    }

    /// Check one write against the group's state and, if it holds, stage its changes there.
    /// A write that fails changes nothing in `state`.
    fn stage(
        &self,
        account: &AccountId,
        w: Write,
        state: &mut GroupState,
        txn: &mut AccountTxn<'_>,
    ) -> Result<Vec<View>> {
        let Write { collection: name, ops, limit } = w;
        let collection = name.as_str();
        let mut current: HashMap<String, Option<SyncRecord>> = HashMap::new();
        for op in &ops {
            if !current.contains_key(op.id()) {
                let found = match state.records.get(&(name.clone(), op.id().to_string())) {
                    Some(r) => r.clone(),
                    None => self.record(account, collection, op.id())?,
                };
                current.insert(op.id().to_string(), found);
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
        let mut meta = match state.metas.get(collection) {
            Some(m) => *m,
            None => self.meta(account, collection)?,
        };
        let mut seq = state.seq;
        // What this write adds to `used`: payload bytes, and item charges (every record,
        // tombstones too, costs one; it replaces the old one's).
        let (mut payload_delta, mut items): (i64, Vec<(usize, i64)>) = (0, Vec::new());
        let now = self.engine.clock().now_ms() as i64;
        let mut writes = Vec::new();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let old = current.get(op.id()).cloned().flatten();
            let old_live = old.as_ref().filter(|r| !r.deleted);
            let (id, payload, deleted) = match op {
                Op::Put { id, payload, .. } => (id, payload, false),
                Op::Delete { .. } if old_live.is_none() => continue,
                Op::Delete { id, .. } => (id, Vec::new(), true),
            };
            seq += 1;
            let rec = SyncRecord { version: seq, seq, deleted, at: now, payload };
            let name_len = item_name_len(collection, id.as_bytes());
            if let Some(o) = &old {
                writes.push((CF_SYNC_LOG, sk::log_key(account, collection, o.seq), None));
                items.push((name_len, -1));
            }
            items.push((name_len, 1));
            if let Some(o) = old_live {
                meta.count -= 1;
                meta.bytes -= o.payload.len() as u64;
                payload_delta -= o.payload.len() as i64;
            }
            if !deleted {
                meta.count += 1;
                meta.bytes += rec.payload.len() as u64;
                payload_delta += rec.payload.len() as i64;
            }
            meta.seq = seq;
            writes.push((CF_SYNC, sk::record_key(account, collection, &id), Some(sk::encode_record(&rec))));
            writes.push((CF_SYNC_LOG, sk::log_key(account, collection, seq), Some(id.as_bytes().to_vec())));
            out.push(view(&id, &rec));
            current.insert(id, Some(rec));
        }
        let item_delta: i64 = items.iter().map(|(len, sign)| crate::engine::item_cost(*len) as i64 * sign).sum();
        if txn.refuses(payload_delta + item_delta, limit) {
            return Err(Error::Refused(Refusal::Quota { used: txn.used(), limit }).into());
        }
        txn.charge_sync(payload_delta);
        for (len, sign) in items {
            txn.charge_item(len, sign);
        }
        state.seq = seq;
        state.writes.extend(writes);
        for (id, rec) in current {
            state.records.insert((name.clone(), id), rec);
        }
        state.metas.insert(name, meta);
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
            if rec.deleted && rec.at <= older_than_ms {
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

pub use crate::store::sync_keys::item_name_len;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::metrics::Metrics;

    fn put(id: &str, expect: Precondition) -> Vec<Op> {
        vec![Op::Put { id: id.into(), payload: br#"{"n":1}"#.to_vec(), expect }]
    }

    /// Many threads writing to one account at once land in groups; each write is still judged
    /// alone, in order: one create-if-absent of the same id wins, the rest conflict, and every
    /// seq is handed out once.
    #[test]
    fn concurrent_writes_to_one_account_keep_their_own_outcomes_and_unique_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(EngineConfig::new(dir.path()), Arc::new(Metrics::new())).unwrap();
        let sync = Sync::new(engine.clone());
        let account = AccountId([7; 16]);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let sync = sync.clone();
                std::thread::spawn(move || {
                    let mine = sync.apply(&account, "notes", put(&format!("n{i}"), Precondition::None), u64::MAX);
                    let shared = sync.apply(&account, "notes", put("shared", Precondition::IfAbsent), u64::MAX);
                    (mine, shared)
                })
            })
            .collect();
        let mut seqs = Vec::new();
        let mut winners = 0;
        for t in threads {
            let (mine, shared) = t.join().unwrap();
            seqs.extend(mine.unwrap().iter().map(|v| v.seq));
            match shared {
                Ok(v) => {
                    winners += 1;
                    seqs.extend(v.iter().map(|v| v.seq));
                }
                Err(SyncError::Conflicts(ids)) => assert_eq!(ids, vec!["shared".to_string()]),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(winners, 1);
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=17).collect::<Vec<u64>>(), "every seq once, none lost");
        let feed = sync.feed(&account, "notes", 0, 100).unwrap();
        assert_eq!(feed.records.len(), 17);
        assert!(feed.records.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(sync.summary(&account).unwrap()["notes"].count, 17);
        let u = engine.usage(&account).unwrap();
        assert_eq!(u.sync, 17 * 7);
        // Item charges: "notes" with n0..n9, n10..n15 and "shared".
        assert_eq!(u.metadata, 10 * (128 + 7) + 6 * (128 + 8) + (128 + 11));
    }

    /// A write refused by the quota leaves nothing, and the group's other writes still land.
    #[test]
    fn a_refused_write_in_a_group_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(EngineConfig::new(dir.path()), Arc::new(Metrics::new())).unwrap();
        let sync = Sync::new(engine.clone());
        let account = AccountId([8; 16]);
        let mut txn = engine.begin(&account).unwrap();
        let mut state = GroupState::read(&sync, &account).unwrap();
        let ok = Write { collection: "notes".into(), ops: put("a", Precondition::None), limit: u64::MAX };
        let refused = Write { collection: "notes".into(), ops: put("b", Precondition::None), limit: 10 };
        let after = Write { collection: "notes".into(), ops: put("a", Precondition::IfVersion(1)), limit: u64::MAX };
        assert!(sync.stage(&account, ok, &mut state, &mut txn).is_ok());
        assert!(matches!(
            sync.stage(&account, refused, &mut state, &mut txn),
            Err(SyncError::Engine(Error::Refused(_)))
        ));
        let v = sync.stage(&account, after, &mut state, &mut txn).unwrap();
        assert_eq!(v[0].seq, 2, "the refused write took no seq");
        assert_eq!(state.records.len(), 1, "nor left a record");
        drop(state);
        assert_eq!(txn.commit(u64::MAX).unwrap().sync, 7, "nor charged its bytes");
    }
}
