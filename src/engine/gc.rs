//! Garbage collection and pack compaction, online or offline.
//!
//! 1. Forget: chunks unreferenced for longer than the grace period leave the index. Each batch
//!    is first doomed in the chunk table, which skips pinned or claimed chunks and makes uploads
//!    that want to pin a doomed one wait; an upload must pin a chunk before it looks it up, so
//!    no upload can be about to reference a chunk that is forgotten. `Forget` itself applies
//!    only if the chunk is still unreferenced, so a reference committed meanwhile wins.
//! 2. Liveness: one scan of the index gives each pack's live bytes exactly; `packs` records are
//!    rewritten from it.
//! 3. Compaction: a sealed pack whose live share is below the threshold has its live chunks
//!    copied into compaction's own open pack (`Lane::Compaction`), made durable, and its index entries moved in one synced batch
//!    (`Move` operands, which apply only if the chunk is still where it was found); then the
//!    old pack is deleted. A crash at any step leaves every chunk readable from one of the two
//!    packs; a pack left with no live entries is deleted by the next run.
//!
//! A run first seals the uploads' open pack, so that everything written before it is eligible,
//! and ends by sealing its own.
//!
//! Only one collection runs at a time (`Engine::gc` takes a lock for the whole run). The one
//! lock that uploads also take is the chunk table's, held for the map operations of a few dozen
//! ids at a time (`table::STEP`), never across the database write (only an upload carrying a
//! chunk being forgotten waits for that write). Copies go to a pack of their own, with its own
//! lock and sync lock, created by GC itself (never the uploads' spare), so no upload waits on
//! a copy's append or `fdatasync`, nor writes copies out in its own. They share the disk, though: copies are synced every `COPY_SYNC_BYTES` so
//! that no single flush of copies sits long in the device queue ahead of an upload's.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::pace::{CopyRate, Pacer};
use super::Engine;
use crate::chunk::ChunkId;
use crate::codec::{self, Compression};
use crate::error::Result;
use crate::pack::format::EntryInfo;
use crate::pack::{stored_cost, Appended, Lane};
use crate::store::keys::{self, ChunkOp, PackRecord};
use crate::store::{CF_CHUNKS, CF_PACKS};

const FORGET_BATCH: usize = 1024;
/// Compaction syncs its copies at least this often (see `copy_group`).
const COPY_SYNC_BYTES: u64 = 4 << 20;

/// What an operator asks of one run.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    pub grace_secs: u64,
    /// Rewrite sealed packs whose live share is below this (0 to 1; 1.0 reclaims every dead
    /// byte, 0 never compacts).
    pub compact_below: f64,
    /// Ceiling on compaction's copies (`None`: as fast as the disk goes, e.g. offline).
    pub copy_rate: Option<CopyRate>,
    /// Also rewrite every pack that is plaintext or sealed under a key other than the current
    /// one, whatever its live share, then retire the keys no pack uses any more.
    pub rekey: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { grace_secs: 3600, compact_below: 0.5, copy_rate: None, rekey: false }
    }
}

/// What a collection did: `POST /admin/gc`'s answer and `cairn gc`'s report, either way.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    pub chunks_freed: u64,
    /// Pack bytes given back to the disk: deleted packs less the bytes copied out of them.
    pub bytes_freed: u64,
    pub packs_rewritten: u64,
    pub packs_deleted: u64,
    /// Of `packs_rewritten`, those rewritten for their keys' sake (`rekey`).
    #[serde(default)]
    pub packs_rekeyed: u64,
    /// Data keys retired because no pack used them any more.
    #[serde(default)]
    pub keys_retired: u64,
    /// Pack dictionaries retired because data they were made from is gone; every pack that
    /// carries one is rewritten without it (`engine::dicts`).
    #[serde(default)]
    pub dictionaries_retired: u64,
}

/// Share of a pack's entry bytes that are live. A pack's header, table and trailer are not
/// entry bytes, so a pack with nothing dead has share 1.0 and is never rewritten.
pub fn live_share(rec: &PackRecord) -> f64 {
    let data = rec.size.saturating_sub(crate::pack::overhead(rec.entries));
    if data == 0 {
        return 0.0;
    }
    rec.live_bytes as f64 / data as f64
}

/// What phase 2 finds.
struct Liveness {
    /// Every quiet pack with its record.
    records: Vec<(u64, PackRecord)>,
    /// The live entries of each pack.
    live: HashMap<u64, Vec<EntryInfo>>,
    /// The dictionary each quiet pack carries, if it carries one.
    dicts: HashMap<u64, ChunkId>,
}

impl Engine {
    /// One full collection. Blocking; safe while the server serves.
    pub fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        let _one_at_a_time = self.inner.gc_lock.lock().expect("gc lock poisoned");
        let started = Instant::now();
        let horizon = self.clock().now_secs().saturating_sub(opts.grace_secs);
        let mut report = GcReport { chunks_freed: self.forget_garbage(horizon)?, ..Default::default() };
        let (recorded, retired) = self.judge_dictionaries(horizon, None)?;
        report.dictionaries_retired = retired;
        // Seal the uploads' open pack, so that everything written before this run can be
        // compacted (and so that it takes no more chunks against a dictionary just retired).
        if let Some(p) = self.packs().seal_lane(Lane::Uploads)? {
            self.record_sealed(&p)?;
        }
        let compacted = self.compact(opts, &recorded, horizon, &mut report);
        // Seal our own pack whatever happened, so the next run can judge it; a compaction
        // error is the one to report.
        let sealed = self.packs().seal_lane(Lane::Compaction);
        compacted?;
        if let Some(p) = sealed? {
            self.record_sealed(&p)?;
        }
        if opts.rekey {
            report.keys_retired = self.packs().retire_keys()?.len() as u64;
        }
        tracing::info!(?report, secs = started.elapsed().as_secs_f64(), "gc finished");
        self.record_gc(&report, started.elapsed());
        Ok(report)
    }

    /// Every run counts, whoever started it (the schedule, an operator, the offline command).
    fn record_gc(&self, r: &GcReport, took: std::time::Duration) {
        let m = self.metrics();
        m.gc_runs.inc();
        m.gc_chunks_freed.inc_by(r.chunks_freed);
        m.gc_bytes_reclaimed.inc_by(r.bytes_freed);
        m.gc_packs_rewritten.inc_by(r.packs_rewritten);
        m.gc_seconds.observe(took.as_secs_f64());
    }

    /// Phases 2 and 3. `recorded`: the dictionaries not retired; a pack carrying another is
    /// rewritten whatever its live share, its chunks compressed again without it.
    fn compact(&self, opts: GcOptions, recorded: &HashSet<ChunkId>, horizon: u64, report: &mut GcReport) -> Result<()> {
        let mut pace = Pacer::new(opts.copy_rate);
        // Quiet packs are taken before the index is scanned: a pack an upload is still
        // indexing into must not look empty to us.
        let quiet = self.packs().quiet()?;
        let liveness = self.pack_liveness(&quiet)?;
        for (pack, rec) in &liveness.records {
            let entries = liveness.live.get(pack).map(Vec::as_slice).unwrap_or_default();
            let sparse = entries.is_empty() || live_share(rec) < opts.compact_below;
            let retired = liveness.dicts.get(pack).is_some_and(|d| !recorded.contains(d));
            let stale = !sparse && !retired && opts.rekey && self.packs().stale(*pack)?;
            if sparse || stale || retired {
                let copied = self.rewrite_pack(*pack, entries, retired, &mut pace)?;
                if !entries.is_empty() {
                    report.packs_rewritten += 1;
                }
                report.packs_rekeyed += u64::from(stale);
                report.packs_deleted += 1;
                report.bytes_freed += rec.size.saturating_sub(copied);
            }
        }
        // Records of dictionaries no quiet pack carried and no lane uses are dropped (a
        // dictionary made but never used, or whose packs were all rewritten).
        let carried: HashSet<ChunkId> = liveness.dicts.values().copied().collect();
        let (_, retired) = self.judge_dictionaries(horizon, Some(&carried))?;
        report.dictionaries_retired += retired;
        Ok(())
    }

    /// Phase 1. Returns how many chunks left the index.
    fn forget_garbage(&self, horizon: u64) -> Result<u64> {
        let db = self.db();
        let mut candidates = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_CHUNKS), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(id) = keys::chunk_id_from_key(&k) else {
                continue;
            };
            if let Some(rec) = keys::decode_chunk(id, &v) {
                if rec.refs == 0 && rec.zero_since <= horizon {
                    candidates.push(id);
                }
            }
        }
        let mut freed = 0;
        for batch_ids in candidates.chunks(FORGET_BATCH) {
            // Doom, write, spare: the table's lock is held for map operations only, never
            // across the write, which can queue behind uploads' synced commits.
            let forgotten = self.table().doom(batch_ids);
            let mut batch = WriteBatch::default();
            for id in &forgotten {
                let op = ChunkOp::Forget { before: horizon };
                batch.merge_cf(db.cf(CF_CHUNKS), keys::chunk_key(id), keys::encode_op(&op));
            }
            let written = db.write_unsynced(batch);
            self.table().spare(&forgotten);
            written?;
            freed += db.chunks(&forgotten)?.iter().filter(|r| r.is_none()).count() as u64;
        }
        db.raw().flush_wal(true)?;
        Ok(freed)
    }

    /// Phase 2: every quiet pack with its exact live bytes, and the live entries of each.
    fn pack_liveness(&self, quiet: &[u64]) -> Result<Liveness> {
        let db = self.db();
        let mut live: HashMap<u64, Vec<EntryInfo>> = HashMap::new();
        for item in db.raw().iterator_cf(db.cf(CF_CHUNKS), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(id) = keys::chunk_id_from_key(&k) else {
                continue;
            };
            if let Some(rec) = keys::decode_chunk(id, &v) {
                live.entry(rec.pack).or_default().push(rec.entry);
            }
        }
        let (mut records, mut dicts) = (Vec::new(), HashMap::new());
        let mut batch = WriteBatch::default();
        // Records of packs that are gone (deleted by a run that crashed before its last step).
        // Records are read before the directory, so a pack sealed meanwhile is on disk by then;
        // only GC deletes recorded packs, and only one GC runs.
        let mut recorded = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_PACKS), IteratorMode::Start) {
            let (k, _) = item?;
            recorded.extend(<[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes));
        }
        let on_disk = self.packs().list()?;
        for id in recorded.into_iter().filter(|id| !on_disk.contains(id)) {
            batch.delete_cf(db.cf(CF_PACKS), keys::pack_key(id));
        }
        for &pack in quiet {
            let table = match self.packs().table(pack) {
                Ok(table) => table,
                Err(e) => {
                    tracing::warn!(pack, error = %e, "gc skips a pack it cannot read; fsck reports it");
                    continue;
                }
            };
            let entries = table.len() as u32;
            let size = self.packs().size(pack)?;
            // A pack's dictionary counts as live while any chunk is: it is overhead of the
            // live chunks, not garbage. Counted dead, a small pack with a 110 KiB dictionary
            // would look sparse and be rewritten by every run, into another small pack.
            let dict_entry = table.first().filter(|e| e.compression == Compression::Dictionary);
            if let Some(d) = dict_entry {
                dicts.insert(pack, d.id);
            }
            let dict = dict_entry.map_or(0, stored_cost);
            let live_bytes = live
                .get(&pack)
                .filter(|es| !es.is_empty())
                .map_or(0, |es| es.iter().map(stored_cost).sum::<u64>() + dict);
            let rec = PackRecord { size, entries, live_bytes };
            batch.put_cf(db.cf(CF_PACKS), keys::pack_key(pack), keys::encode_pack(&rec));
            records.push((pack, rec));
        }
        db.commit(batch)?;
        Ok(Liveness { records, live, dicts })
    }

    /// Phase 3 for one pack: copy `entries` out, move their index entries, delete the pack.
    /// `undict`: the pack's dictionary is retired, so copies are not compressed against it.
    /// Returns the stored bytes written into the new pack.
    fn rewrite_pack(&self, pack: u64, entries: &[EntryInfo], undict: bool, pace: &mut Pacer) -> Result<u64> {
        let mut copied = 0;
        for group in entries.chunks(FORGET_BATCH) {
            let mut appended = Vec::with_capacity(group.len());
            let result = self.copy_group(pack, group, undict, &mut appended, pace);
            // Indexed or abandoned as dead bytes, these copies no longer keep their pack from
            // being quiet; on every path, also when a read, an append or a sync failed.
            self.packs().settle(&appended);
            copied += result?;
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.db().cf(CF_PACKS), keys::pack_key(pack));
        self.db().commit(batch)?;
        self.packs().remove(pack)?;
        Ok(copied)
    }

    /// Copy one group of live entries into compaction's open pack, make the copies durable,
    /// then move their index entries in one synced batch. Every append is pushed onto
    /// `appended`.
    ///
    /// The copies are synced every `COPY_SYNC_BYTES`, not once per group (up to 1024 chunks of
    /// up to 256 KiB): one flush of hundreds of MiB would sit in the disk's queue ahead of the
    /// uploads' small fsyncs.
    fn copy_group(
        &self,
        pack: u64,
        group: &[EntryInfo],
        undict: bool,
        appended: &mut Vec<Appended>,
        pace: &mut Pacer,
    ) -> Result<u64> {
        let mut batch = WriteBatch::default();
        let (mut copied, mut unsynced) = (0, 0);
        for e in group {
            // Copy the stored form as it is, after checking it; the store seals it anew if it
            // is not under the current key, and compresses it again if it was compressed
            // against another dictionary than the new pack's (`pack::dicts`).
            let mut chunk = self.packs().copy_out(pack, e)?;
            if undict && chunk.dict.is_some() {
                // Compressed afresh (against compaction's dictionary, if its pack has one).
                chunk = codec::seal(chunk.raw.clone(), self.config().zstd_level);
            }
            let (a, sealed_pack) = self.packs().append(Lane::Compaction, &chunk)?;
            appended.push(a.clone());
            if let Some(p) = sealed_pack {
                self.record_sealed(&p)?;
            }
            let len = a.entry.end() - a.entry.offset;
            copied += len;
            pace.copied(len);
            unsynced += len;
            if unsynced >= COPY_SYNC_BYTES {
                self.packs().sync(&a)?;
                unsynced = 0;
            }
            let op = ChunkOp::Move {
                from_pack: pack,
                from_offset: e.offset,
                to_pack: a.pack_id,
                to_offset: a.entry.offset,
                // A new form always carries its length, also when it happens to be the old one
                // (operand 6 has no "unchanged" length).
                stored_len: (a.entry.stored_len != e.stored_len || a.entry.compression != e.compression)
                    .then_some(a.entry.stored_len),
                compression: (a.entry.compression != e.compression).then_some(a.entry.compression),
            };
            batch.merge_cf(self.db().cf(CF_CHUNKS), keys::chunk_key(&e.id), keys::encode_op(&op));
        }
        // Copies durable before the index points at them: every one, since a group may span
        // two packs (cheap for all but the last: a seal or an earlier sync covered them).
        for a in appended.iter() {
            self.packs().sync(a)?;
        }
        self.db().commit(batch)?;
        Ok(copied)
    }
}
