//! What a new phone reads: the list of backups, one backup's manifest, one file.

use super::manifest::MAX_ENTRIES;
use super::{BackupError, Backups, RestoredEntry, Result, Summary};
use crate::engine::{object_chunks_via, ChunkList};
use crate::error::Error;
use crate::store::backup_keys as bk;
use crate::store::keys::{AccountId, Namespace, ObjectRecord};
use crate::store::{CF_BACKUPS, CF_OBJECTS};

impl Backups {
    /// The account's backups, newest first; only one device's with `device`. Blocking.
    pub fn list(&self, account: &AccountId, device: Option<&str>) -> Result<Vec<Summary>> {
        let mut all = self.summaries(account)?;
        all.retain(|s| device.is_none_or(|d| s.head.device_id == d));
        all.reverse(); // ids grow with time
        Ok(all)
    }

    /// One backup with every entry, in the order they were posted. Blocking.
    pub fn manifest(&self, account: &AccountId, id: u64) -> Result<(Summary, Vec<RestoredEntry>)> {
        let db = self.engine.db();
        // One snapshot, so that a delete or a retention drop midway cannot tear the answer.
        let snap = db.raw().snapshot();
        let head = snap.get_cf(db.cf(CF_BACKUPS), bk::head_key(account, id))?.ok_or(BackupError::NotFound)?;
        let head = bk::decode_head(&head).ok_or_else(|| Error::corrupt("unreadable backup head"))?;
        let objects = db.cf(CF_OBJECTS);
        let mut restored = Vec::with_capacity((head.files as usize).min(MAX_ENTRIES));
        for e in self.entries(&snap, account, id)? {
            let get = |k: &[u8]| Ok(snap.get_cf(objects, k)?);
            let chunks = object_chunks_via(get, account, Namespace::Backup, &e.name, &e.rec)?;
            restored.push(RestoredEntry { meta: e.meta, size: e.rec.size, chunks });
        }
        Ok((Summary { id, head }, restored))
    }

    /// One file of a backup: its record and chunk list, read together. Blocking.
    pub fn file(&self, account: &AccountId, id: u64, path: &str) -> Result<(ObjectRecord, ChunkList)> {
        let name = bk::object_name(id, path);
        self.engine.get_object_and_chunks(account, Namespace::Backup, &name)?.ok_or(BackupError::NotFound)
    }
}
