//! Which plan an account is on. The limits themselves belong to the quota (configuration);
//! identity only keeps the name with the account.

use rocksdb::WriteBatch;

use super::error::{IdentityError, Result};
use super::Identity;
use crate::store::identity_keys as ik;
use crate::store::keys::AccountId;
use crate::store::CF_ACCOUNTS;

impl Identity {
    /// The account's plan, or `NotFound` for an account that does not exist (any more).
    pub async fn plan(&self, account: AccountId) -> Result<String> {
        self.blocking(move |i| Ok(i.account(&account)?.ok_or(IdentityError::NotFound)?.plan)).await
    }

    /// Put the account on `plan` (the caller checked that the plan exists).
    pub async fn set_plan(&self, account: AccountId, plan: String) -> Result<()> {
        self.blocking(move |i| {
            let rec = i.account(&account)?.ok_or(IdentityError::NotFound)?;
            let id_hash = super::id_hash_of(&rec.id_hash.0)?;
            let _held = i.lock(&id_hash);
            let mut rec = i.account(&account)?.ok_or(IdentityError::NotFound)?;
            rec.plan = plan;
            let mut batch = WriteBatch::default();
            batch.put_cf(i.db().cf(CF_ACCOUNTS), ik::account_key(&account), ik::encode_account(&rec));
            i.db().commit(batch)?;
            Ok(())
        })
        .await
    }
}
