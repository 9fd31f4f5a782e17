//! Account deletion: one synced WriteBatch removes everything the account has, so that a crash
//! leaves either the whole account or none of it.

use std::net::IpAddr;

use rocksdb::WriteBatch;

use super::codes::{self, Purpose};
use super::error::{IdentityError, Result};
use super::sessions::Session;
use super::{id_hash_of, Identity, Inner};
use crate::store::identity_keys::{self as ik, AccountRecord};
use crate::store::keys::AccountId;
use crate::store::{CF_ACCOUNTS, CF_EVENTS, CF_IDENTIFIERS};

impl Identity {
    /// `confirm` must be `DELETE` (`400`, checked first so that it does not spend the code),
    /// then the `delete_account` code (`403`). Afterwards the identifier is free for a new
    /// account with a new id, and every token of this one answers `401`.
    pub async fn delete_account(&self, s: &Session, code: String, confirm: Option<&str>, ip: IpAddr) -> Result<()> {
        if confirm != Some("DELETE") {
            return Err(IdentityError::NoConfirmation);
        }
        let account = s.account;
        self.blocking(move |i| {
            let rec = i.account(&account)?.ok_or(IdentityError::NotFound)?;
            let id_hash = id_hash_of(&rec.id_hash.0)?;
            let _held = i.lock(&id_hash);
            i.verify_code(&id_hash, Purpose::DeleteAccount, &code, ip)?;
            // One durable step: the engine releases the account's data and usage and commits
            // the batch together with the identity records added here.
            i.engine.purge_account(&account, |batch| remove_account(i, batch, &account, &rec))?;
            tracing::info!(%account, %ip, "account deleted");
            Ok(())
        })
        .await
    }
}

/// Add to `batch` the removal of the account's identity records. The caller holds the
/// account's lock stripe; `Engine::purge_account` adds the removal of its files, backups,
/// staged chunks, sync records, references and usage, and commits the batch (synced).
pub(super) fn remove_account(
    i: &Inner,
    batch: &mut WriteBatch,
    account: &AccountId,
    rec: &AccountRecord,
) -> Result<()> {
    let db = i.db();
    let id_hash = id_hash_of(&rec.id_hash.0)?;
    batch.delete_cf(db.cf(CF_ACCOUNTS), ik::account_key(account));
    // The index entry goes only if it is still ours (it always is while we hold the stripe).
    if db.get(CF_IDENTIFIERS, &ik::identifier_key(&id_hash))?.and_then(|v| ik::decode_account_id(&v)) == Some(*account)
    {
        batch.delete_cf(db.cf(CF_IDENTIFIERS), ik::identifier_key(&id_hash));
    }
    codes::forget_all(db, batch, &id_hash);
    i.revoke_devices(batch, account, None)?;
    for key in i.event_keys(account)? {
        batch.delete_cf(db.cf(CF_EVENTS), key);
    }
    Ok(())
}
