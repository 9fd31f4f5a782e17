//! Pack dictionaries' records: written when the uploads' lane makes a dictionary, judged by
//! every GC run, deleted when the dictionary is retired.
//!
//! Why: a dictionary is 110 KiB of raw uploaded bytes, copied into every pack made against
//! it and kept as long as any chunk compressed against it. Without this, a person who deleted
//! a file (or the whole account) would leave its first 110 KiB in packs other accounts' chunks
//! keep alive. So a dictionary is retired as soon as one of the chunks it was made from has left
//! the index, and GC rewrites every pack that carries a retired dictionary; once those are
//! rewritten, no copy of the deleted bytes is left.
//!
//! Invariants:
//! - A dictionary is used for new chunks only after its record is durable
//!   (`LaneDicts::record_made` takes the writing as a closure and makes it current after).
//! - A dictionary with no record is retired: that covers records deleted here, packs written
//!   by a build that kept no records, a record lost with a rebuilt database, and a dictionary
//!   a crash left unrecorded. Being wrong that way costs a rewrite, never a deleted byte kept.
//! - Sources are judged only once the record is older than the grace period, as chunks are: a
//!   source may still be on its way into the index (its upload not yet committed).

use std::collections::HashSet;

use rocksdb::{IteratorMode, WriteBatch};

use super::Engine;
use crate::chunk::ChunkId;
use crate::error::Result;
use crate::pack::Lane;
use crate::store::keys::{self, DictRecord};
use crate::store::CF_DICTS;

impl Engine {
    /// Record the dictionary the uploads' lane has just made, if any, and let the lane use it.
    /// Called after every append to that lane; a synced write once per dictionary.
    pub(crate) fn record_dictionary(&self) -> Result<()> {
        self.packs().dictionaries().record_made(|made| {
            let rec = DictRecord { made_secs: self.clock().now_secs(), sources: made.sources.clone() };
            let mut batch = WriteBatch::default();
            batch.put_cf(self.db().cf(CF_DICTS), made.dict.id().0, keys::encode_dict(&rec));
            self.db().commit(batch)
        })
    }

    /// Retire every dictionary made before `horizon` one of whose sources has left the index,
    /// and drop the records no pack or lane needs any more (`carried`: the dictionaries of
    /// quiet packs, `None` to keep them all). Returns the dictionaries still recorded and how
    /// many were retired.
    pub(crate) fn judge_dictionaries(
        &self,
        horizon: u64,
        carried: Option<&HashSet<ChunkId>>,
    ) -> Result<(HashSet<ChunkId>, u64)> {
        let db = self.db();
        let lanes = self.packs().dictionaries();
        let in_use: HashSet<ChunkId> =
            [Lane::Uploads, Lane::Compaction].into_iter().filter_map(|l| lanes.current(l)).map(|d| *d.id()).collect();
        let (mut kept, mut gone, mut unneeded) = (HashSet::new(), HashSet::new(), Vec::new());
        for item in db.raw().iterator_cf(db.cf(CF_DICTS), IteratorMode::Start) {
            let (k, v) = item?;
            let Ok(id) = <[u8; 32]>::try_from(k.as_ref()).map(ChunkId) else {
                unneeded.push(k.to_vec());
                continue;
            };
            match keys::decode_dict(&v) {
                // An unreadable record cannot say its sources are alive.
                None => {
                    gone.insert(id);
                }
                Some(rec) if rec.made_secs > horizon => {
                    kept.insert(id);
                }
                Some(rec) if db.chunks(&rec.sources)?.iter().any(Option::is_none) => {
                    gone.insert(id);
                }
                Some(_) if carried.is_some_and(|c| !c.contains(&id)) && !in_use.contains(&id) => {
                    unneeded.push(id.0.to_vec());
                }
                Some(_) => {
                    kept.insert(id);
                }
            }
        }
        // Out of the lanes first: no pack made from now on carries a retired dictionary
        // (but the uploads' open pack, which GC seals next).
        lanes.retire(&gone);
        let mut batch = WriteBatch::default();
        for k in gone.iter().map(|id| id.0.to_vec()).chain(unneeded) {
            batch.delete_cf(db.cf(CF_DICTS), k);
        }
        db.commit(batch)?;
        for id in &gone {
            tracing::info!(dictionary = %id, "dictionary retired: one of its sources is gone; its packs will be rewritten");
        }
        Ok((kept, gone.len() as u64))
    }
}
