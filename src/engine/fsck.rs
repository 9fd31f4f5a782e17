//! Checking the store against itself, repairing its books, and rebuilding the chunk index
//! from the packs alone.
//!
//! `check` re-reads every pack and verifies every entry, then holds the index, the per-account
//! reference counts, the global counts and usage up against what the manifests and sync
//! records imply, and checks that every backup's head, entries and chunk lists agree. The database is read through one snapshot, taken before the packs are
//! read, so a check of a live server sees one consistent state (packs only gain entries
//! meanwhile, and the collection lock keeps compaction from deleting any). It only reads; each
//! disagreement becomes one line in `problems`. `repair` then rewrites the books from what it
//! recomputed.

use std::collections::{HashMap, HashSet};

use rocksdb::{IteratorMode, Snapshot, WriteBatch};
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::pack::format::EntryInfo;
use crate::store::backup_keys as bk;
use crate::store::keys::{self, AccountId, ChunkRecord, Namespace, Usage};
use crate::store::sync_keys;
use crate::store::{CF_ACCOUNT_CHUNKS, CF_BACKUPS, CF_CHUNKS, CF_OBJECTS, CF_SYNC, CF_USAGE};

/// `POST /admin/fsck`'s answer and `cairn fsck`'s report, either way.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub ok: bool,
    pub packs_checked: u64,
    pub entries_checked: u64,
    pub chunks_indexed: u64,
    pub objects_checked: u64,
    pub problems: Vec<String>,
    /// Records rewritten by `repair`.
    #[serde(default)]
    pub repaired: u64,
    /// Bytes of sealed packs still in plaintext (version 1): what `gc --rekey` has yet to
    /// rewrite. Not a problem: data directories from before encryption start with all of it.
    #[serde(default)]
    pub plaintext_bytes: u64,
    /// Sealed packs by the data key of their table (hex id), for seeing a rotation through.
    #[serde(default)]
    pub packs_by_key: std::collections::BTreeMap<String, u64>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the manifests and records say the books should be.
#[derive(Default)]
struct Truth {
    /// Occurrences of each chunk in each account's manifests.
    held: HashMap<(AccountId, ChunkId), u64>,
    usage: HashMap<AccountId, Usage>,
    /// Files and bytes of each backup as its objects tell it, by (account, backup id).
    backup_objects: Tally,
}

/// Every verified entry of every pack, by (pack, offset).
fn scan_packs(e: &Engine, report: &mut Report) -> Result<HashMap<(u64, u64), EntryInfo>> {
    let mut found = HashMap::new();
    // The open pack, and one being sealed right now, are not sealed yet by design.
    let settled = e.packs().quiet()?;
    for id in e.packs().list()? {
        report.packs_checked += 1;
        if settled.contains(&id) {
            match e.packs().keys_of(id) {
                Ok(keys) => tally_keys(e, id, &keys, report),
                Err(err) => report.problems.push(format!("pack {id}: not sealed, or its table is damaged: {err}")),
            }
        }
        let scanned = e.packs().verify(id, &mut |entry, why| {
            report.problems.push(format!("pack {id} entry at {} (chunk {}): {why}", entry.offset, entry.id));
        });
        match scanned {
            Ok((entries, _)) => {
                report.entries_checked += entries.len() as u64;
                found.extend(entries.into_iter().map(|en| ((id, en.offset), en)));
            }
            Err(err) => report.problems.push(format!("pack {id}: {err}")),
        }
    }
    Ok(found)
}

fn tally_keys(e: &Engine, id: u64, keys: &crate::pack::PackKeys, report: &mut Report) {
    match keys.table {
        Some(key) => *report.packs_by_key.entry(format!("{key:08x}")).or_default() += 1,
        None => report.plaintext_bytes += e.packs().size(id).unwrap_or(0),
    }
}

fn scan_index(
    e: &Engine,
    snap: &Snapshot<'_>,
    entries: &HashMap<(u64, u64), EntryInfo>,
    report: &mut Report,
) -> Result<HashMap<ChunkId, ChunkRecord>> {
    let mut index = HashMap::new();
    for item in snap.iterator_cf(e.db().cf(CF_CHUNKS), IteratorMode::Start) {
        let (k, v) = item?;
        if v.is_empty() {
            continue; // forgotten by GC; RocksDB's compaction drops it
        }
        let Some(id) = keys::chunk_id_from_key(&k) else {
            report.problems.push(format!("index key of {} bytes", k.len()));
            continue;
        };
        let Some(rec) = keys::decode_chunk(id, &v) else {
            report.problems.push(format!("chunk {id}: unreadable index record"));
            continue;
        };
        report.chunks_indexed += 1;
        if entries.get(&(rec.pack, rec.entry.offset)) != Some(&rec.entry) {
            report.problems.push(format!(
                "chunk {id}: index points at pack {} offset {}, where no such verified entry is",
                rec.pack, rec.entry.offset
            ));
        }
        index.insert(id, rec);
    }
    Ok(index)
}

fn object_chunks(e: &Engine, snap: &Snapshot<'_>, key: &[u8], rec: &keys::ObjectRecord) -> Result<Vec<(ChunkId, u32)>> {
    let (account, ns, name) = keys::split_object_key(key).ok_or_else(|| Error::corrupt("unreadable object key"))?;
    let cf = e.db().cf(CF_OBJECTS);
    super::objects::object_chunks_via(|k| Ok(snap.get_cf(cf, k)?), &account, ns, name, rec)
}

fn scan_objects(
    e: &Engine,
    snap: &Snapshot<'_>,
    index: &HashMap<ChunkId, ChunkRecord>,
    truth: &mut Truth,
    report: &mut Report,
) -> Result<()> {
    for item in snap.iterator_cf(e.db().cf(CF_OBJECTS), IteratorMode::Start) {
        let (k, v) = item?;
        if k.get(16) == Some(&0xFF) {
            continue; // a continuation segment, read through its object
        }
        report.objects_checked += 1;
        let name = String::from_utf8_lossy(k.get(17..).unwrap_or_default()).into_owned();
        let Some((account, ns, _)) = keys::split_object_key(&k) else {
            report.problems.push(format!("object key {name:?}: unreadable"));
            continue;
        };
        let Some(rec) = keys::decode_object(&v) else {
            report.problems.push(format!("object {name:?} of {account}: unreadable record"));
            continue;
        };
        let chunks = match object_chunks(e, snap, &k, &rec) {
            Ok(chunks) => chunks,
            Err(err) => {
                report.problems.push(format!("object {name:?} of {account}: {err}"));
                continue;
            }
        };
        let u = truth.usage.entry(account).or_default();
        match ns {
            Namespace::Drive => u.drive += rec.size,
            Namespace::Backup => {
                u.backups += rec.size;
                // The object's name starts with its backup's id (`backup_keys::object_name`).
                let id = k.get(17..25).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
                let t = truth.backup_objects.entry((account, id)).or_default();
                *t = (t.0 + 1, t.1 + rec.size);
            }
            Namespace::Trash => u.trash += rec.size,
            Namespace::Versions => u.versions += rec.size,
            Namespace::Staged | Namespace::Upload | Namespace::Folder | Namespace::Scratch => {}
        }
        for (id, len) in &chunks {
            match index.get(id) {
                None => report.problems.push(format!("object {name:?} of {account}: chunk {id} is not in the index")),
                Some(r) if r.entry.raw_len != *len => report
                    .problems
                    .push(format!("object {name:?}: chunk {id} length {len} but index says {}", r.entry.raw_len)),
                Some(_) => {}
            }
            *truth.held.entry((account, *id)).or_default() += 1;
        }
    }
    Ok(())
}

/// What each account's items cost (`item_cost`), from the items themselves: drive and
/// backup objects by name, sync records (tombstones too) by collection and id, backup heads by
/// device and label. fsck holds the books to it; `migrate` fills it into records older than it.
pub(crate) fn metadata_truth(e: &Engine, snap: &Snapshot<'_>) -> Result<HashMap<AccountId, u64>> {
    let db = e.db();
    let mut out: HashMap<AccountId, u64> = HashMap::new();
    let mut add = |k: &[u8], name_len: usize| {
        if let Some(a) = k.get(..16).and_then(|a| a.try_into().ok()) {
            *out.entry(AccountId(a)).or_default() += super::item_cost(name_len);
        }
    };
    for item in snap.iterator_cf(db.cf(CF_OBJECTS), IteratorMode::Start) {
        let (k, _) = item?;
        if let Some((_, ns, name)) = keys::split_object_key(&k).filter(|_| k.get(16) != Some(&0xFF)) {
            if super::txn::charged(ns) {
                add(&k, name.len());
            }
        }
    }
    for item in snap.iterator_cf(db.cf(CF_SYNC), IteratorMode::Start) {
        let (k, _) = item?;
        if let Some((collection, 0, id)) = sync_keys::split_sync_key(&k) {
            add(&k, crate::store::sync_keys::item_name_len(collection, id));
        }
    }
    for item in snap.iterator_cf(db.cf(CF_BACKUPS), IteratorMode::Start) {
        let (k, v) = item?;
        if let (Some(0), Some(head)) = (k.get(16), bk::decode_head(&v)) {
            add(&k, crate::store::backup_keys::head_name_len(&head));
        }
    }
    // Dead properties cost their stored bytes (`drive::props`).
    for item in snap.iterator_cf(db.cf(crate::store::CF_PROPS), IteratorMode::Start) {
        let (k, v) = item?;
        if let Some(a) = k.get(..16).and_then(|a| a.try_into().ok()) {
            *out.entry(AccountId(a)).or_default() += v.len() as u64;
        }
    }
    Ok(out)
}

/// Files and bytes of one backup, as its head, its entries or its objects tell it.
type Tally = HashMap<(AccountId, u64), (u64, u64)>;

/// Backups: each head's entries all have their chunk lists, and heads, entries and backup
/// objects agree on how many files and bytes each backup has. With entry paths unique per
/// backup, equal counts and every entry finding its object mean no object lacks an entry.
/// The objects' side was tallied by `scan_objects`, in its one pass over `objects`.
fn scan_backups(e: &Engine, snap: &Snapshot<'_>, truth: &mut Truth, report: &mut Report) -> Result<()> {
    let db = e.db();
    let (mut heads, mut entries) = (Tally::new(), Tally::new());
    for item in snap.iterator_cf(db.cf(CF_BACKUPS), IteratorMode::Start) {
        let (k, v) = item?;
        let account = k.get(..16).and_then(|a| a.try_into().ok()).map(AccountId);
        let id = k.get(17..25).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        let (Some(account), Some(id)) = (account, id) else {
            report.problems.push("unreadable backup key".into());
            continue;
        };
        match (k[16], bk::decode_head(&v), bk::decode_entry(&v)) {
            (0, Some(h), _) => {
                heads.insert((account, id), (h.files, h.size));
            }
            (1, _, Some(meta)) => {
                let name = bk::object_name(id, &meta.path);
                let size = match snap.get_cf(db.cf(CF_OBJECTS), keys::object_key(&account, Namespace::Backup, &name))? {
                    Some(v) => keys::decode_object(&v).map_or(0, |r| r.size),
                    None => {
                        report
                            .problems
                            .push(format!("backup {id:016x} of {account}: {:?} has no chunk list", meta.path));
                        0
                    }
                };
                let t = entries.entry((account, id)).or_default();
                *t = (t.0 + 1, t.1 + size);
            }
            _ => report.problems.push(format!("backup {id:016x} of {account}: unreadable record")),
        }
    }
    let objects = &truth.backup_objects;
    let all: HashSet<_> = heads.keys().chain(entries.keys()).chain(objects.keys()).copied().collect();
    for key @ (account, id) in all {
        let h = heads.get(&key).copied();
        let (en, ob) = (entries.get(&key).copied().unwrap_or_default(), objects.get(&key).copied().unwrap_or_default());
        if h != Some(en) || en != ob {
            report.problems.push(format!(
                "backup {id:016x} of {account}: (files, bytes) are {h:?} by its head, {en:?} by its entries, {ob:?} by its objects"
            ));
        }
    }
    Ok(())
}

fn scan_sync(e: &Engine, snap: &Snapshot<'_>, truth: &mut Truth) -> Result<()> {
    for item in snap.iterator_cf(e.db().cf(CF_SYNC), IteratorMode::Start) {
        let (k, v) = item?;
        if let (Some((_, 0, _)), Some(rec)) = (sync_keys::split_sync_key(&k), sync_keys::decode_record(&v)) {
            if !rec.deleted {
                let account = AccountId(k[..16].try_into().expect("16 bytes"));
                truth.usage.entry(account).or_default().sync += rec.payload.len() as u64;
            }
        }
    }
    Ok(())
}

/// Compare the books with the truth; also fills in each account's `used`.
fn check_books(
    e: &Engine,
    snap: &Snapshot<'_>,
    index: &HashMap<ChunkId, ChunkRecord>,
    truth: &mut Truth,
    report: &mut Report,
) -> Result<()> {
    let mut recorded: HashMap<(AccountId, ChunkId), u64> = HashMap::new();
    for item in snap.iterator_cf(e.db().cf(CF_ACCOUNT_CHUNKS), IteratorMode::Start) {
        let (k, v) = item?;
        match (keys::split_account_chunk_key(&k), keys::decode_count(&v)) {
            (Some(key), Some(n)) => {
                recorded.insert(key, n);
            }
            _ => report.problems.push("unreadable account refcount".into()),
        }
    }
    for (key, n) in &truth.held {
        let got = recorded.get(key).copied().unwrap_or(0);
        if got != *n {
            report.problems.push(format!("account {} chunk {}: refcount {got}, manifests say {n}", key.0, key.1));
        }
    }
    for (key, n) in &recorded {
        if !truth.held.contains_key(key) {
            report.problems.push(format!("account {} chunk {}: refcount {n} but no manifest holds it", key.0, key.1));
        }
    }
    let mut holders: HashMap<ChunkId, u64> = HashMap::new();
    for (account, id) in truth.held.keys() {
        *holders.entry(*id).or_default() += 1;
        if let Some(r) = index.get(id) {
            truth.usage.entry(*account).or_default().used += u64::from(r.entry.raw_len);
        }
    }
    for u in truth.usage.values_mut() {
        u.used += u.sync + u.metadata;
    }
    for (id, r) in index {
        let want = holders.get(id).copied().unwrap_or(0);
        if r.refs != want {
            report.problems.push(format!("chunk {id}: global refcount {} but {want} accounts hold it", r.refs));
        }
    }
    let mut seen = HashSet::new();
    for item in snap.iterator_cf(e.db().cf(CF_USAGE), IteratorMode::Start) {
        let (k, v) = item?;
        let (Some(account), Some(u)) = (k.as_ref().try_into().ok().map(AccountId), keys::decode_usage(&v)) else {
            report.problems.push("unreadable usage record".into());
            continue;
        };
        seen.insert(account);
        let want = truth.usage.get(&account).copied().unwrap_or_default();
        if u != want {
            report.problems.push(format!("account {account}: usage {u:?} but its data adds up to {want:?}"));
        }
    }
    for (account, u) in &truth.usage {
        if !seen.contains(account) && *u != Usage::default() {
            report.problems.push(format!("account {account}: holds data but has no usage record"));
        }
    }
    Ok(())
}

fn run(e: &Engine, truth: &mut Truth) -> Result<Report> {
    let _no_compaction = e.inner.gc_lock.lock().expect("gc lock poisoned");
    let snap = e.db().raw().snapshot();
    let mut report = Report::default();
    let entries = scan_packs(e, &mut report)?;
    let index = scan_index(e, &snap, &entries, &mut report)?;
    scan_objects(e, &snap, &index, truth, &mut report)?;
    scan_sync(e, &snap, truth)?;
    scan_backups(e, &snap, truth, &mut report)?;
    for (account, metadata) in metadata_truth(e, &snap)? {
        truth.usage.entry(account).or_default().metadata = metadata;
    }
    check_books(e, &snap, &index, truth, &mut report)?;
    report.ok = report.ok();
    Ok(report)
}

/// Check everything; never writes.
pub fn check(e: &Engine) -> Result<Report> {
    run(e, &mut Truth::default())
}

/// Check, then set every per-account count, global count and usage record to what the
/// manifests and records imply. Damaged packs and index entries are reported, not repaired
/// (`rebuild_index` is the tool for an index). Offline only: run it on a stopped server.
pub fn repair(e: &Engine) -> Result<Report> {
    let mut truth = Truth::default();
    let mut report = run(e, &mut truth)?;
    let db = e.db();
    let mut batch = WriteBatch::default();
    for item in db.raw().iterator_cf(db.cf(CF_ACCOUNT_CHUNKS), IteratorMode::Start) {
        batch.delete_cf(db.cf(CF_ACCOUNT_CHUNKS), item?.0);
    }
    for item in db.raw().iterator_cf(db.cf(CF_USAGE), IteratorMode::Start) {
        batch.delete_cf(db.cf(CF_USAGE), item?.0);
    }
    let mut holders: HashMap<ChunkId, u64> = HashMap::new();
    for ((account, id), n) in &truth.held {
        batch.put_cf(db.cf(CF_ACCOUNT_CHUNKS), keys::account_chunk_key(account, id), keys::encode_count(*n));
        *holders.entry(*id).or_default() += 1;
        report.repaired += 1;
    }
    for (account, u) in &truth.usage {
        batch.put_cf(db.cf(CF_USAGE), account.0, keys::encode_usage(u));
        report.repaired += 1;
    }
    let now = e.clock().now_secs();
    for item in db.raw().iterator_cf(db.cf(CF_CHUNKS), IteratorMode::Start) {
        let (k, v) = item?;
        let Some(id) = keys::chunk_id_from_key(&k) else { continue };
        let Some(mut rec) = keys::decode_chunk(id, &v) else { continue };
        let want = holders.get(&id).copied().unwrap_or(0);
        if rec.refs != want {
            rec.refs = want;
            if want == 0 {
                rec.zero_since = now;
            }
            batch.put_cf(db.cf(CF_CHUNKS), &k, keys::encode_chunk(&rec));
            report.repaired += 1;
        }
    }
    db.commit(batch)?;
    Ok(report)
}

/// Replace the chunk index with one built from the packs alone (first verified copy of each
/// chunk wins), with global refcounts taken from the per-account counts. Offline only.
pub fn rebuild_index(e: &Engine) -> Result<u64> {
    let db = e.db();
    let mut holders: HashMap<ChunkId, u64> = HashMap::new();
    for item in db.raw().iterator_cf(db.cf(CF_ACCOUNT_CHUNKS), IteratorMode::Start) {
        let (k, _) = item?;
        if let Some((_, id)) = keys::split_account_chunk_key(&k) {
            *holders.entry(id).or_default() += 1;
        }
    }
    let mut batch = WriteBatch::default();
    for item in db.raw().iterator_cf(db.cf(CF_CHUNKS), IteratorMode::Start) {
        batch.delete_cf(db.cf(CF_CHUNKS), item?.0);
    }
    db.commit(batch)?;
    let now = e.clock().now_secs();
    let mut seen = HashSet::new();
    for id in e.packs().list()? {
        let (entries, _) = e.packs().verify(id, &mut |entry, why| {
            tracing::warn!(pack = id, offset = entry.offset, %why, "skipping a damaged entry");
        })?;
        let mut batch = WriteBatch::default();
        for en in entries.into_iter().filter(|en| seen.insert(en.id)) {
            let rec =
                ChunkRecord { pack: id, entry: en, refs: holders.get(&en.id).copied().unwrap_or(0), zero_since: now };
            batch.put_cf(db.cf(CF_CHUNKS), keys::chunk_key(&en.id), keys::encode_chunk(&rec));
        }
        db.commit(batch)?;
    }
    Ok(seen.len() as u64)
}
