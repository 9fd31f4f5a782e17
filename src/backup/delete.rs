//! Deleting a backup: by request, or by retention inside a commit.

use rocksdb::WriteBatch;

use super::{BackupError, Backups, Result};
use crate::engine::Books;
use crate::store::backup_keys as bk;
use crate::store::keys::{AccountId, Namespace};
use crate::store::CF_BACKUPS;

impl Backups {
    /// Delete one backup and release its references, durably. Blocking.
    pub fn delete(&self, account: &AccountId, id: u64) -> Result<()> {
        let engine = &self.engine;
        let _books_are_ours = engine.lock_account(account);
        if engine.db().get(CF_BACKUPS, &bk::head_key(account, id))?.is_none() {
            return Err(BackupError::NotFound);
        }
        let mut batch = WriteBatch::default();
        let mut books = Books::open(engine, *account)?;
        self.drop_into(&mut batch, &mut books, account, id)?;
        books.write_into(&mut batch, u64::MAX)?;
        engine.db().commit(batch)?;
        Ok(())
    }

    /// Add the removal of backup `id` (head, entries, their objects) to `batch` and the release
    /// of its references to `books`. Call with the account's lock held.
    pub(super) fn drop_into(
        &self,
        batch: &mut WriteBatch,
        books: &mut Books<'_>,
        account: &AccountId,
        id: u64,
    ) -> Result<()> {
        let db = self.engine.db();
        let snap = db.raw().snapshot();
        for e in self.entries(&snap, account, id)? {
            self.engine.remove_object_into(batch, books, account, Namespace::Backup, &e.name, &e.rec)?;
            batch.delete_cf(db.cf(CF_BACKUPS), e.key);
        }
        batch.delete_cf(db.cf(CF_BACKUPS), bk::head_key(account, id));
        Ok(())
    }
}
