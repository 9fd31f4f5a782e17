//! Committing a posted manifest as a new backup, and retention.

use std::collections::HashMap;

use super::{BackupError, Backups, Posted, Result, Summary};
use crate::chunk::ChunkId;
use crate::engine::Pins;
use crate::error::Error;
use crate::store::backup_keys::{self as bk, BackupHead};
use crate::store::keys::{AccountId, Manifest, Namespace};
use crate::store::CF_BACKUPS;

impl Backups {
    /// Commit `posted` as a new backup of its device, dropping what retention no longer keeps,
    /// durably. Blocking.
    pub fn commit(&self, account: &AccountId, posted: Posted, limit: u64) -> Result<Summary> {
        let engine = &self.engine;
        let distinct = posted.distinct_chunks();
        // Pinned before the holdings are looked at, until the batch is durable.
        let mut pins = Pins::new(engine.clone());
        for (id, _) in &distinct {
            pins.add(*id);
        }
        self.check_chunks(account, &posted, &distinct)?;

        let mut txn = engine.begin(account)?;
        let existing = self.summaries(account)?;
        // Above every id the account has, even if the clock went back across a restart: ids
        // order backups for listings and retention, and name their objects.
        let id = engine.next_version().max(existing.last().map_or(0, |s| s.id + 1));
        let same_device = existing.into_iter().filter(|s| s.head.device_id == posted.device_id).map(|s| s.id);
        for old in self.retention.to_drop(same_device.collect()) {
            self.drop_into(&mut txn, old)?;
        }
        let head = BackupHead {
            device_id: posted.device_id.clone(),
            label: posted.label.clone(),
            created_at: engine.clock().now_ms() as i64,
            size: posted.size(),
            files: posted.entries.len() as u64,
        };
        let cf = engine.db().cf(CF_BACKUPS);
        for (index, e) in posted.entries.into_iter().enumerate() {
            // A backup entry's whole-content hash is not computed: that would read every byte
            // back at commit. Each chunk is still verified against its own hash on restore.
            let manifest = Manifest { size: e.size, hash: [0; 32], chunks: e.chunks };
            let name = bk::object_name(id, &e.meta.path);
            txn.put_object(Namespace::Backup, &name, &manifest);
            txn.batch().put_cf(cf, bk::entry_key(account, id, index as u32), bk::encode_entry(&e.meta));
        }
        txn.unstage(&distinct)?;
        txn.batch().put_cf(cf, bk::head_key(account, id), bk::encode_head(&head));
        txn.charge_item(bk::head_name_len(&head), 1);
        txn.note_version(id);
        txn.commit(limit)?;
        drop(pins); // only once the references are durable
        Ok(Summary { id, head })
    }

    /// Every chunk must be one the account holds, with the length the index has; a chunk
    /// listed twice is checked at each place.
    fn check_chunks(&self, account: &AccountId, posted: &Posted, distinct: &[(ChunkId, u32)]) -> Result<()> {
        let ids: Vec<ChunkId> = distinct.iter().map(|(id, _)| *id).collect();
        let held = self.engine.holds(account, &ids)?;
        let missing: Vec<ChunkId> = ids.iter().zip(&held).filter(|(_, h)| !**h).map(|(id, _)| *id).collect();
        if !missing.is_empty() {
            return Err(BackupError::MissingChunks(missing));
        }
        let mut actual = HashMap::with_capacity(ids.len());
        for (id, rec) in ids.iter().zip(self.engine.db().chunks(&ids)?) {
            let rec = rec.ok_or(Error::MissingChunk(*id))?; // held, so indexed: else corrupt
            actual.insert(*id, rec.entry.raw_len);
        }
        for (id, size) in posted.entries.iter().flat_map(|e| &e.chunks) {
            if actual[id] != *size {
                return Err(BackupError::BadChunkSize { id: *id, size: *size, actual: Some(actual[id]) });
            }
        }
        Ok(())
    }
}
