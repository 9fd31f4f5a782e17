//! Checking the store against itself, and rebuilding the chunk index from the packs alone.
//!
//! `check` re-reads every pack and verifies every entry, then holds the index, the per-account
//! reference counts, the global counts and usage up against what the manifests imply. It only
//! reads; each disagreement becomes one line in `problems`.

use std::collections::{HashMap, HashSet};

use rocksdb::{IteratorMode, WriteBatch};
use serde::Serialize;

use super::{unix_now, Engine};
use crate::chunk::ChunkId;
use crate::error::Result;
use crate::pack::format::EntryInfo;
use crate::pack::{self, format};
use crate::store::keys::{self, AccountId, ChunkRecord};
use crate::store::{CF_ACCOUNT_CHUNKS, CF_CHUNKS, CF_OBJECTS, CF_USAGE};

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub packs_checked: u64,
    pub entries_checked: u64,
    pub chunks_indexed: u64,
    pub objects_checked: u64,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every verified entry of every pack, by (pack, offset).
fn scan_packs(e: &Engine, report: &mut Report) -> Result<HashMap<(u64, u64), EntryInfo>> {
    let mut found = HashMap::new();
    for id in e.packs().list()? {
        let path = e.packs().path(id);
        report.packs_checked += 1;
        if let Ok(bytes) = std::fs::read(&path) {
            match format::parse_header(&bytes) {
                Ok(h) if h.pack_id != id => report.problems.push(format!("pack {id}: header says pack {}", h.pack_id)),
                _ => {}
            }
            if format::parse_sealed(&bytes).is_err() && e.packs().open_pack_id() != Some(id) {
                report.problems.push(format!("pack {id}: not sealed, or its table is damaged"));
            }
        }
        let scanned = pack::verified_entries(&path, |entry, why| {
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

fn scan_index(
    e: &Engine,
    entries: &HashMap<(u64, u64), EntryInfo>,
    report: &mut Report,
) -> Result<HashMap<ChunkId, ChunkRecord>> {
    let mut index = HashMap::new();
    for item in e.db().raw().iterator_cf(e.db().cf(CF_CHUNKS), IteratorMode::Start) {
        let (k, v) = item?;
        if v.is_empty() {
            continue; // forgotten by GC; compaction drops it
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

/// Occurrences of each chunk in each account's manifests, and each account's logical sizes.
type Holdings = HashMap<(AccountId, ChunkId), u64>;

fn scan_objects(e: &Engine, index: &HashMap<ChunkId, ChunkRecord>, report: &mut Report) -> Result<Holdings> {
    let mut held: Holdings = HashMap::new();
    for item in e.db().raw().iterator_cf(e.db().cf(CF_OBJECTS), IteratorMode::Start) {
        let (k, v) = item?;
        report.objects_checked += 1;
        let name = String::from_utf8_lossy(k.get(17..).unwrap_or_default()).into_owned();
        let (Some(account), Some(obj)) =
            (k.get(..16).and_then(|a| a.try_into().ok()).map(AccountId), keys::decode_object(&v))
        else {
            report.problems.push(format!("object {name:?}: unreadable record"));
            continue;
        };
        for (id, len) in &obj.manifest.chunks {
            match index.get(id) {
                None => report.problems.push(format!("object {name:?} of {account}: chunk {id} is not in the index")),
                Some(r) if r.entry.raw_len != *len => report
                    .problems
                    .push(format!("object {name:?}: chunk {id} length {len} but index says {}", r.entry.raw_len)),
                Some(_) => {}
            }
            *held.entry((account, *id)).or_default() += 1;
        }
    }
    Ok(held)
}

fn check_books(e: &Engine, index: &HashMap<ChunkId, ChunkRecord>, held: &Holdings, report: &mut Report) -> Result<()> {
    let mut recorded: Holdings = HashMap::new();
    for item in e.db().raw().iterator_cf(e.db().cf(CF_ACCOUNT_CHUNKS), IteratorMode::Start) {
        let (k, v) = item?;
        match (keys::split_account_chunk_key(&k), keys::decode_count(&v)) {
            (Some(key), Some(n)) => {
                recorded.insert(key, n);
            }
            _ => report.problems.push("unreadable account refcount".into()),
        }
    }
    for (key, n) in held {
        let got = recorded.get(key).copied().unwrap_or(0);
        if got != *n {
            report.problems.push(format!("account {} chunk {}: refcount {got}, manifests say {n}", key.0, key.1));
        }
    }
    for (key, n) in &recorded {
        if !held.contains_key(key) {
            report.problems.push(format!("account {} chunk {}: refcount {n} but no manifest holds it", key.0, key.1));
        }
    }
    let mut holders: HashMap<ChunkId, u64> = HashMap::new();
    let mut used: HashMap<AccountId, u64> = HashMap::new();
    for (account, id) in held.keys() {
        *holders.entry(*id).or_default() += 1;
        if let Some(r) = index.get(id) {
            *used.entry(*account).or_default() += u64::from(r.entry.raw_len);
        }
    }
    for (id, r) in index {
        let want = holders.get(id).copied().unwrap_or(0);
        if r.refs != want {
            report.problems.push(format!("chunk {id}: global refcount {} but {want} accounts hold it", r.refs));
        }
    }
    let mut accounts: HashSet<AccountId> = used.keys().copied().collect();
    for item in e.db().raw().iterator_cf(e.db().cf(CF_USAGE), IteratorMode::Start) {
        let (k, v) = item?;
        let (Some(account), Some(u)) = (k.as_ref().try_into().ok().map(AccountId), keys::decode_usage(&v)) else {
            report.problems.push("unreadable usage record".into());
            continue;
        };
        accounts.remove(&account);
        let want = used.get(&account).copied().unwrap_or(0);
        if u.used < want || u.used - want > u.sync {
            report.problems.push(format!(
                "account {account}: usage {} but its chunks add up to {want} (+{} sync)",
                u.used, u.sync
            ));
        }
    }
    for account in accounts {
        report.problems.push(format!("account {account}: holds chunks but has no usage record"));
    }
    Ok(())
}

/// Check everything; never writes.
pub fn check(e: &Engine) -> Result<Report> {
    let mut report = Report::default();
    let entries = scan_packs(e, &mut report)?;
    let index = scan_index(e, &entries, &mut report)?;
    let held = scan_objects(e, &index, &mut report)?;
    check_books(e, &index, &held, &mut report)?;
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
    let now = unix_now();
    let mut seen = HashSet::new();
    for id in e.packs().list()? {
        let (entries, _) = pack::verified_entries(&e.packs().path(id), |entry, why| {
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
