//! Dead properties of files and folders (WebDAV PROPPATCH): stored as given, one value per
//! path (`store::prop_keys`), following their path through moves and copies and dropped with it.
//!
//! Invariants: properties exist only on a path that exists, and are written in the account
//! transaction that moves, copies or removes the path; their bytes are charged to the account's
//! metadata (fsck counts them back from the `props` column family).

use rocksdb::{Direction, IteratorMode};

use super::folders::{beneath, Transfer};
use super::service::{blocking, Drive, DriveError};
use crate::engine::{AccountTxn, Engine};
use crate::store::keys::AccountId;
use crate::store::prop_keys::{decode_props, encode_props, props_key, DeadProp, MAX_PROPS_BYTES};
use crate::store::CF_PROPS;

type Result<T> = std::result::Result<T, DriveError>;

/// One change of a PROPPATCH.
#[derive(Clone, Debug)]
pub enum PropChange {
    Set(DeadProp),
    Remove { namespace: String, name: String },
}

impl Drive {
    /// The dead properties of `path` (an existing file or folder).
    pub async fn props(&self, account: AccountId, path: &str) -> Result<Vec<DeadProp>> {
        let engine = self.engine.clone();
        let key = props_key(&account, path.as_bytes());
        let found = blocking(move || engine.db().get(CF_PROPS, &key)).await??;
        match found {
            None => Ok(Vec::new()),
            Some(v) => Ok(decode_props(&v).ok_or_else(|| crate::error::Error::corrupt("unreadable properties"))?),
        }
    }

    /// Set and remove dead properties of `path`, in order, at once (a PROPPATCH is all or
    /// nothing, and a later change to a property wins over an earlier one).
    pub async fn patch_props(
        &self,
        account: AccountId,
        path: &str,
        changes: Vec<PropChange>,
        limit: u64,
    ) -> Result<()> {
        if self.stat(account, path).await?.is_none() {
            return Err(DriveError::NotFound);
        }
        let (engine, key) = (self.engine.clone(), props_key(&account, path.as_bytes()));
        blocking(move || {
            let mut txn = engine.begin(&account)?;
            let old = engine.db().get(CF_PROPS, &key)?;
            let mut props = old.as_deref().and_then(decode_props).unwrap_or_default();
            for change in changes {
                let (namespace, name, set) = match change {
                    PropChange::Set(p) => (p.namespace.clone(), p.name.clone(), Some(p)),
                    PropChange::Remove { namespace, name } => (namespace, name, None),
                };
                props.retain(|p| !(p.namespace == namespace && p.name == name));
                props.extend(set);
            }
            let value = encode_props(&props);
            if value.len() > MAX_PROPS_BYTES {
                return Err(DriveError::PropsTooLarge);
            }
            let old_len = old.map_or(0, |v| v.len()) as i64;
            let cf = engine.db().cf(CF_PROPS);
            if props.is_empty() {
                txn.batch().delete_cf(cf, &key);
                txn.charge_metadata(-old_len);
            } else {
                txn.batch().put_cf(cf, &key, &value);
                txn.charge_metadata(value.len() as i64 - old_len);
            }
            txn.commit(limit)?;
            Ok(())
        })
        .await?
    }
}

/// Every property record at `path` and beneath it: (key, value).
fn under(engine: &Engine, account: &AccountId, path: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let db = engine.db();
    let mut out = Vec::new();
    let exact = props_key(account, path.as_bytes());
    if let Some(v) = db.get(CF_PROPS, &exact)? {
        out.push((exact, v));
    }
    let base = props_key(account, &beneath(path));
    for item in db.raw().iterator_cf(db.cf(CF_PROPS), IteratorMode::From(&base, Direction::Forward)) {
        let (k, v) = item.map_err(crate::error::Error::from)?;
        if !k.starts_with(&base) {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// In `txn`, drop the properties of `path` and of everything beneath it.
pub(super) fn drop_all(txn: &mut AccountTxn<'_>, engine: &Engine, path: &str) -> Result<()> {
    let cf = engine.db().cf(CF_PROPS);
    for (k, v) in under(engine, txn.account(), path)? {
        txn.batch().delete_cf(cf, k);
        txn.charge_metadata(-(v.len() as i64));
    }
    Ok(())
}

/// In `txn`, give the properties of `from` and beneath it to `to` (moved or copied).
pub(super) fn transfer(txn: &mut AccountTxn<'_>, engine: &Engine, how: Transfer, from: &str, to: &str) -> Result<()> {
    let account = *txn.account();
    let cf = engine.db().cf(CF_PROPS);
    let cut = 16 + from.len();
    for (k, v) in under(engine, &account, from)? {
        let mut moved = props_key(&account, to.as_bytes());
        moved.extend_from_slice(&k[cut..]);
        if how == Transfer::Move {
            txn.batch().delete_cf(cf, &k);
        } else {
            txn.charge_metadata(v.len() as i64);
        }
        txn.batch().put_cf(cf, moved, v);
    }
    Ok(())
}
