//! Deleting a backup: by request, or by retention inside a commit.

use super::{BackupError, Backups, Result};
use crate::engine::AccountTxn;
use crate::store::backup_keys as bk;
use crate::store::keys::{AccountId, Namespace};
use crate::store::CF_BACKUPS;

impl Backups {
    /// Delete one backup and release its references, durably. Blocking.
    pub fn delete(&self, account: &AccountId, id: u64) -> Result<()> {
        let engine = &self.engine;
        let mut txn = engine.begin(account)?;
        if engine.db().get(CF_BACKUPS, &bk::head_key(account, id))?.is_none() {
            return Err(BackupError::NotFound);
        }
        self.drop_into(&mut txn, id)?;
        txn.commit(u64::MAX)?;
        Ok(())
    }

    /// Add the removal of backup `id` (head, entries, their objects) and the release of its
    /// references to the account's transaction.
    pub(super) fn drop_into(&self, txn: &mut AccountTxn<'_>, id: u64) -> Result<()> {
        let db = self.engine.db();
        let account = *txn.account();
        let snap = db.raw().snapshot();
        for e in self.entries(&snap, &account, id)? {
            txn.remove_object(Namespace::Backup, &e.name, &e.rec)?;
            txn.batch().delete_cf(db.cf(CF_BACKUPS), e.key);
        }
        // A head that cannot be read still goes (else neither this delete nor retention could
        // ever drop the backup); its item charge stays in the books until `fsck --repair`.
        match db.get(CF_BACKUPS, &bk::head_key(&account, id))?.and_then(|v| bk::decode_head(&v)) {
            Some(head) => txn.charge_item(super::head_name_len(&head), -1),
            None => tracing::error!(%account, backup = id, "unreadable backup head; fsck --repair settles its charge"),
        }
        txn.batch().delete_cf(db.cf(CF_BACKUPS), bk::head_key(&account, id));
        Ok(())
    }
}
