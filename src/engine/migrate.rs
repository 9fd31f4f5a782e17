//! Records written by earlier versions, brought up to date once at open, before anything else
//! writes.

use rocksdb::{IteratorMode, WriteBatch};

use super::{fsck, Engine};
use crate::error::{Error, Result};
use crate::store::keys::{self, AccountId};
use crate::store::CF_USAGE;

/// Usage records from before items were charged (`Usage::metadata`) get their accounts' item
/// charges, from the items themselves; `used` grows by as much. Returns how many were updated.
pub(super) fn usage_metadata(e: &Engine) -> Result<usize> {
    let db = e.db();
    let mut old = Vec::new();
    for item in db.raw().iterator_cf(db.cf(CF_USAGE), IteratorMode::Start) {
        let (k, v) = item?;
        if keys::usage_lacks_metadata(&v) {
            let account = k.as_ref().try_into().map(AccountId).map_err(|_| Error::corrupt("unreadable usage key"))?;
            old.push((account, keys::decode_usage(&v).ok_or_else(|| Error::corrupt("unreadable usage record"))?));
        }
    }
    if old.is_empty() {
        return Ok(0);
    }
    let truth = fsck::metadata_truth(e, &db.raw().snapshot())?;
    let mut batch = WriteBatch::default();
    for (account, mut usage) in &mut old {
        usage.metadata = truth.get(account).copied().unwrap_or(0);
        usage.used += usage.metadata;
        batch.put_cf(db.cf(CF_USAGE), account.0, keys::encode_usage(&usage));
    }
    db.commit(batch)?;
    tracing::info!(accounts = old.len(), "usage records now count item charges");
    Ok(old.len())
}
