//! What the drive keeps of deleted and replaced files: the trash and old versions, and the
//! room they give back when an upload needs it.
//!
//! Invariants:
//! - A file moves between the drive, its versions and the trash in one account transaction,
//!   keeping its record (version, time, chunks): nothing is copied and no reference changes,
//!   so a delete or an overwrite never needs quota it does not have.
//! - Only chunks no live file holds cost anything: the account's references are counted once
//!   per chunk, whatever holds it.
//! - Under quota pressure the trash goes first, oldest deletion first, then old versions, oldest
//!   first; an upload is refused only when neither has anything left to give (`Room`).

use super::rules::check_path;
use super::service::{blocking, Drive, DriveError};
use super::trash::{self, TrashName};
use super::versions::{self, Retention};
use crate::engine::{AccountTxn, ChunkList, Engine, Listed, Put};
use crate::error::Result;
use crate::store::identity_keys::DeviceId;
use crate::store::keys::{AccountId, Manifest, Namespace, ObjectRecord};

type DriveResult<T> = std::result::Result<T, DriveError>;

/// How long deleted files stay and how many old versions a file keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub trash_days: u64,
    pub versions: Retention,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { trash_days: 30, versions: Retention::default() }
    }
}

/// In `txn`, make the live file at `path` (record `old`) an old version, and drop the versions
/// the retention rule no longer keeps.
pub(super) fn keep_as_version(txn: &mut AccountTxn<'_>, path: &str, old: &ObjectRecord, keep: Retention) -> Result<()> {
    let live = (Namespace::Drive, path.as_bytes());
    if keep.max == 0 {
        return txn.remove_object(live.0, live.1, old);
    }
    let kept = txn.list(Namespace::Versions, &versions::prefix(path))?;
    txn.move_object(live, (Namespace::Versions, &versions::name(path, old.version)), old)?;
    let mut all: Vec<(u64, i64)> = kept.iter().map(|l| (l.record.version, l.record.modified)).collect();
    all.push((old.version, old.modified));
    let now = txn.now_ms();
    for doomed in keep.doomed(now, &all) {
        if let Some(l) = kept.iter().find(|l| l.record.version == doomed) {
            txn.remove_object(Namespace::Versions, &l.name, &l.record)?;
        }
    }
    Ok(())
}

/// In `txn`, put the live file at `path` (record `old`) into the trash; its trash id.
pub(super) fn trash(
    txn: &mut AccountTxn<'_>,
    path: &str,
    old: &ObjectRecord,
    device: Option<&DeviceId>,
) -> Result<u64> {
    let id = txn.new_version();
    let name = TrashName::new(id, device, path).encode();
    txn.move_object((Namespace::Drive, path.as_bytes()), (Namespace::Trash, &name), old)?;
    Ok(id)
}

/// The trash item `id`, if the account has it.
pub(super) fn trash_item(engine: &Engine, account: &AccountId, id: u64) -> Result<Option<(TrashName, Listed)>> {
    let found = engine.list_objects(account, Namespace::Trash, &trash::id_prefix(id), None, 1)?;
    Ok(found.into_iter().next().and_then(|l| TrashName::decode(&l.name).map(|n| (n, l))))
}

/// A file's content as a manifest, to write it again under another record.
pub(super) fn manifest_of(engine: &Engine, account: &AccountId, ns: Namespace, l: &Listed) -> Result<Manifest> {
    let chunks = engine.object_chunks(account, ns, &l.name, &l.record)?;
    Ok(Manifest { size: l.record.size, hash: l.record.hash, chunks })
}

/// Purge trash items deleted before `before_ms`, in every account. Blocking.
pub fn expire_trash(engine: &Engine, before_ms: i64) -> Result<u64> {
    let mut purged = 0;
    for account in engine.accounts()? {
        let items = engine.list_objects(&account, Namespace::Trash, b"", None, usize::MAX)?;
        let old: Vec<&Listed> = items
            .iter()
            .filter(|l| TrashName::decode(&l.name).is_none_or(|n| n.deleted_at_ms() <= before_ms))
            .collect();
        if old.is_empty() {
            continue;
        }
        purged += remove_from_trash(engine, &account, old)?;
    }
    Ok(purged)
}

/// Remove `items` from the account's trash in one transaction; how many were still there.
fn remove_from_trash<'a>(
    engine: &Engine,
    account: &AccountId,
    items: impl IntoIterator<Item = &'a Listed>,
) -> Result<u64> {
    let mut txn = engine.begin(account)?;
    let mut n = 0;
    for l in items {
        // Re-read under the lock: a restore may have taken it since the listing.
        if let Some(rec) = txn.object(Namespace::Trash, &l.name)? {
            txn.remove_object(Namespace::Trash, &l.name, &rec)?;
            n += 1;
        }
    }
    txn.commit(u64::MAX)?;
    Ok(n)
}

/// Frees an account's trash and old versions, oldest first, for an upload that needs room.
/// The quota's `Charge` calls it before it refuses a chunk.
pub struct Room {
    pub engine: Engine,
}

impl crate::quota::Reclaim for Room {
    fn reclaim(&self, account: &AccountId, need: u64) -> Result<u64> {
        let e = &self.engine;
        let mut trash = e.list_objects(account, Namespace::Trash, b"", None, usize::MAX)?;
        trash.reverse(); // oldest deletion first
        let mut old_versions = e.list_objects(account, Namespace::Versions, b"", None, usize::MAX)?;
        old_versions.sort_by_key(|l| l.record.version);
        let candidates =
            trash.iter().map(|l| (Namespace::Trash, l)).chain(old_versions.iter().map(|l| (Namespace::Versions, l)));
        let before = e.usage(account)?.used;
        for (ns, l) in candidates {
            let mut txn = e.begin(account)?;
            if let Some(rec) = txn.object(ns, &l.name)? {
                txn.remove_object(ns, &l.name, &rec)?;
            }
            let used = txn.commit(u64::MAX)?.used;
            if before.saturating_sub(used) >= need {
                break;
            }
        }
        let freed = before.saturating_sub(e.usage(account)?.used);
        if freed > 0 {
            tracing::info!(%account, freed, "purged trash and old versions to make room for an upload");
        }
        Ok(freed)
    }
}

/// Purge what an account's trash holds: one item, or all. Blocking.
pub(super) fn purge_trash(engine: &Engine, account: &AccountId, only: Option<u64>) -> Result<u64> {
    let items = match only {
        Some(id) => trash_item(engine, account, id)?.map(|(_, l)| l).into_iter().collect(),
        None => engine.list_objects(account, Namespace::Trash, b"", None, usize::MAX)?,
    };
    remove_from_trash(engine, account, &items)
}

/// A file in the trash, as fronts show it.
#[derive(Clone, Debug)]
pub struct TrashItem {
    pub id: u64,
    pub path: String,
    pub record: ObjectRecord,
    pub deleted_at_ms: i64,
    pub device: Option<DeviceId>,
}

impl TrashItem {
    fn from_listed(l: Listed) -> Option<Self> {
        let n = TrashName::decode(&l.name)?;
        Some(TrashItem {
            id: n.id,
            deleted_at_ms: n.deleted_at_ms(),
            device: n.device(),
            path: n.path,
            record: l.record,
        })
    }
}

impl Drive {
    /// The trash, newest deletion first, after the item `after`, at most `limit`; and whether
    /// there are more.
    pub async fn trash(
        &self,
        account: AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> DriveResult<(Vec<TrashItem>, bool)> {
        let engine = self.engine.clone();
        // Names of older items sort after every name of `after` (ids are inverted): start at
        // the next id down.
        let start = after.map(|id| trash::id_prefix(id.saturating_sub(1)).to_vec());
        let items = blocking(move || engine.list_objects(&account, Namespace::Trash, b"", start.as_deref(), limit + 1))
            .await??;
        let more = items.len() > limit;
        Ok((items.into_iter().take(limit).filter_map(TrashItem::from_listed).collect(), more))
    }

    /// Put trash item `id` back at its path, or at `to`; `Exists` if a file has that path.
    pub async fn restore(
        &self,
        account: AccountId,
        id: u64,
        to: Option<String>,
        limit: u64,
    ) -> DriveResult<(String, ObjectRecord)> {
        if let Some(p) = &to {
            check_path(p)?;
        }
        let engine = self.engine.clone();
        blocking(move || {
            let mut txn = engine.begin(&account)?;
            let (name, listed) = trash_item(&engine, &account, id)?.ok_or(DriveError::NotFound)?;
            let path = to.unwrap_or(name.path);
            if txn.object(Namespace::Drive, path.as_bytes())?.is_some() {
                return Err(DriveError::Exists);
            }
            txn.move_object((Namespace::Trash, &listed.name), (Namespace::Drive, path.as_bytes()), &listed.record)?;
            txn.commit(limit)?;
            Ok((path, listed.record))
        })
        .await?
    }

    /// Purge trash item `id`, or the whole trash (`None`); how many went.
    pub async fn purge(&self, account: AccountId, id: Option<u64>) -> DriveResult<u64> {
        let engine = self.engine.clone();
        let n = blocking(move || purge_trash(&engine, &account, id)).await??;
        if id.is_some() && n == 0 {
            return Err(DriveError::NotFound);
        }
        Ok(n)
    }

    /// The kept old versions of `path`, newest first (the live one is not among them).
    pub async fn versions(&self, account: AccountId, path: &str) -> DriveResult<Vec<ObjectRecord>> {
        check_path(path)?;
        let (engine, prefix) = (self.engine.clone(), versions::prefix(path));
        let listed =
            blocking(move || engine.list_objects(&account, Namespace::Versions, &prefix, None, usize::MAX)).await??;
        Ok(listed.into_iter().rev().map(|l| l.record).collect())
    }

    /// Version `version` of `path`, live or kept, with its chunks.
    pub async fn get_version(
        &self,
        account: AccountId,
        path: &str,
        version: u64,
    ) -> DriveResult<(ObjectRecord, ChunkList)> {
        match self.get(account, path).await {
            Ok(live) if live.0.version == version => return Ok(live),
            Ok(_) | Err(DriveError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let (engine, name) = (self.engine.clone(), versions::name(path, version));
        blocking(move || engine.get_object_and_chunks(&account, Namespace::Versions, &name))
            .await??
            .ok_or(DriveError::NotFound)
    }

    /// Make kept version `version` of `path` live again, as a new version; the live one is kept
    /// as an old version like any overwrite.
    pub async fn restore_version(&self, account: AccountId, path: &str, version: u64, limit: u64) -> DriveResult<Put> {
        check_path(path)?;
        let (engine, path, keep) = (self.engine.clone(), path.to_string(), self.policy.versions);
        blocking(move || {
            let mut txn = engine.begin(&account)?;
            let name = versions::name(&path, version);
            let rec = txn.object(Namespace::Versions, &name)?.ok_or(DriveError::NotFound)?;
            let manifest = manifest_of(&engine, &account, Namespace::Versions, &Listed { name, record: rec })?;
            let old = txn.object(Namespace::Drive, path.as_bytes())?;
            if let Some(o) = &old {
                keep_as_version(&mut txn, &path, o, keep)?;
            }
            let record = txn.put_object(Namespace::Drive, path.as_bytes(), &manifest);
            txn.commit(limit)?;
            Ok(Put { record, replaced: old.is_some() })
        })
        .await?
    }
}
