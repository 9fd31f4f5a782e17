//! What a new phone reads: the list of backups, one backup's manifest, one file's chunk list.

use rocksdb::{Direction, IteratorMode};

use super::{BackupError, Backups, RestoredEntry, Result, Summary};
use crate::engine::object_chunks_via;
use crate::error::Error;
use crate::store::backup_keys as bk;
use crate::store::keys::{self, AccountId, Namespace, ObjectRecord};
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
        let cf = db.cf(CF_BACKUPS);
        let head = snap.get_cf(cf, bk::head_key(account, id))?.ok_or(BackupError::NotFound)?;
        let head = bk::decode_head(&head).ok_or_else(|| Error::corrupt("unreadable backup head"))?;
        let prefix = bk::entry_prefix(account, id);
        let mut entries = Vec::with_capacity(head.files as usize);
        for item in snap.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let meta = bk::decode_entry(&v).ok_or_else(|| Error::corrupt("unreadable backup entry"))?;
            let name = bk::object_name(id, &meta.path);
            let rec = self.entry_record(&snap, account, &name)?;
            let objects = db.cf(CF_OBJECTS);
            let chunks = object_chunks_via(|k| Ok(snap.get_cf(objects, k)?), account, Namespace::Backup, &name, &rec)?;
            entries.push(RestoredEntry { meta, size: rec.size, chunks });
        }
        Ok((Summary { id, head }, entries))
    }

    fn entry_record(&self, snap: &rocksdb::Snapshot<'_>, account: &AccountId, name: &[u8]) -> Result<ObjectRecord> {
        let key = keys::object_key(account, Namespace::Backup, name);
        let v = snap
            .get_cf(self.engine.db().cf(CF_OBJECTS), key)?
            .ok_or_else(|| Error::corrupt("a backup entry has no chunk list"))?;
        Ok(keys::decode_object(&v).ok_or_else(|| Error::corrupt("unreadable object record"))?)
    }

    /// The chunk-list record of one file of a backup, and its object name (to stream it
    /// with). Blocking.
    pub fn file(&self, account: &AccountId, id: u64, path: &str) -> Result<(Vec<u8>, ObjectRecord)> {
        let name = bk::object_name(id, path);
        let rec = self.engine.get_object(account, Namespace::Backup, &name)?.ok_or(BackupError::NotFound)?;
        Ok((name, rec))
    }
}
