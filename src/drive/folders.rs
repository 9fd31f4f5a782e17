//! Folders of the drive, and moving and copying files and folders: what WebDAV's MKCOL, COPY,
//! MOVE and DELETE of a collection need, for any front to call.
//!
//! A folder exists if it is the root (`""`), if it has a marker (`Namespace::Folder`, an empty
//! record made by `mkdir`), or if a file or marker lies beneath it. So a file written to `a/b/c`
//! makes `a` and `a/b` exist without records, as the v1 API always did, and a folder made on
//! purpose stays after its last file goes.
//!
//! Invariants:
//! - No path is both a file and a folder: a file is never written where a folder exists or
//!   beneath a file (`check_file_room`), a folder never made where a file is. Checked under the
//!   account's lock, in the transaction that writes.
//! - A folder moves, copies or goes to the trash in one account transaction, with its files,
//!   markers and dead properties: a crash leaves all of it in one place or the other.
//! - A copy shares its chunks: no byte is read or written, and it costs what the dedup rule
//!   charges (nothing for content the account already holds) plus each new item's charge.
//! - A move keeps each file's record (version, time, chunks): an `ETag` a client holds still
//!   matches at the new path.

use std::collections::BTreeMap;

use super::history;
use super::props;
use super::rules::check_path;
use super::service::{blocking, Drive, DriveError};
use crate::engine::{AccountTxn, Engine};
use crate::store::identity_keys::DeviceId;
use crate::store::keys::{AccountId, Manifest, Namespace, ObjectRecord};

type Result<T> = std::result::Result<T, DriveError>;

/// What a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File(ObjectRecord),
    /// A folder, with its marker if it was made on purpose (the marker's time is the folder's).
    Folder(Option<ObjectRecord>),
}

/// One entry of a folder: its full path and what it is.
#[derive(Clone, Debug)]
pub struct Child {
    pub path: String,
    pub entry: Entry,
}

/// Move or copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    Move,
    Copy,
}

/// Most entries one folder listing returns: a PROPFIND of a folder answers them all at once,
/// so its size is bounded (about 500 bytes of XML each).
pub const MAX_CHILDREN: usize = 100_000;

impl Drive {
    /// What `path` is (`""` is the root folder), if anything.
    pub async fn stat(&self, account: AccountId, path: &str) -> Result<Option<Entry>> {
        if !path.is_empty() {
            check_path(path)?;
        }
        let (engine, path) = (self.engine.clone(), path.to_string());
        blocking(move || entry(&engine, &account, &path)).await?
    }

    /// The files and folders directly in `folder`, in byte order of their paths.
    pub async fn children(&self, account: AccountId, folder: &str) -> Result<Vec<Child>> {
        let (engine, folder) = (self.engine.clone(), folder.to_string());
        blocking(move || children(&engine, &account, &folder)).await?
    }

    /// Make an empty folder; its parent must exist (`mkdir` without `-p`).
    pub async fn mkdir(&self, account: AccountId, path: &str, limit: u64) -> Result<ObjectRecord> {
        check_path(path)?;
        let (engine, path) = (self.engine.clone(), path.to_string());
        blocking(move || {
            let mut txn = engine.begin(&account)?;
            if entry(&engine, &account, &path)?.is_some() {
                return Err(DriveError::Exists);
            }
            need_folder(&engine, &account, parent(&path))?;
            let rec = txn.put_object(Namespace::Folder, path.as_bytes(), &empty());
            txn.commit(limit)?;
            Ok(rec)
        })
        .await?
    }

    /// Move or copy the file or folder `from` to `to`, whose parent must exist. An existing
    /// `to` is replaced only if `overwrite`: a file replaced by a file becomes an old version,
    /// anything else replaced goes to the trash. Returns whether something was replaced.
    pub async fn transfer(
        &self,
        account: AccountId,
        how: Transfer,
        from: &str,
        to: &str,
        overwrite: bool,
        limit: u64,
    ) -> Result<bool> {
        check_path(from)?;
        check_path(to)?;
        if from == to {
            return Err(DriveError::SamePath);
        }
        if is_beneath(to, from) || is_beneath(from, to) {
            return Err(DriveError::Nested);
        }
        let (engine, from, to, keep) = (self.engine.clone(), from.to_string(), to.to_string(), self.policy.versions);
        blocking(move || {
            let mut txn = engine.begin(&account)?;
            let src = entry(&engine, &account, &from)?.ok_or(DriveError::NotFound)?;
            need_folder(&engine, &account, parent(&to))?;
            let replaced = match entry(&engine, &account, &to)? {
                None => false,
                Some(_) if !overwrite => return Err(DriveError::Exists),
                Some(Entry::File(old)) if matches!(src, Entry::File(_)) => {
                    props::drop_all(&mut txn, &engine, &to)?;
                    history::keep_as_version(&mut txn, &to, &old, keep)?;
                    true
                }
                Some(dest) => {
                    remove_entry(&mut txn, &engine, &to, &dest, None)?;
                    true
                }
            };
            match src {
                Entry::File(rec) => transfer_file(&mut txn, &engine, how, &from, &to, &rec)?,
                Entry::Folder(marker) => transfer_folder(&mut txn, &engine, how, &from, &to, marker.as_ref())?,
            }
            props::transfer(&mut txn, &engine, how, &from, &to)?;
            txn.commit(limit)?;
            Ok(replaced)
        })
        .await?
    }

    /// Put the file or folder at `path` in the trash (a folder's files each become a trash
    /// item; its markers go); how many files went.
    pub async fn remove(&self, account: AccountId, path: &str, device: Option<DeviceId>) -> Result<u64> {
        check_path(path)?;
        let (engine, path) = (self.engine.clone(), path.to_string());
        blocking(move || {
            let mut txn = engine.begin(&account)?;
            let found = entry(&engine, &account, &path)?.ok_or(DriveError::NotFound)?;
            let n = remove_entry(&mut txn, &engine, &path, &found, device.as_ref())?;
            txn.commit(u64::MAX)?;
            Ok(n)
        })
        .await?
    }
}

/// Refuse a file at `path` where a folder is, or beneath a file.
pub(super) fn check_file_room(engine: &Engine, account: &AccountId, path: &str) -> Result<()> {
    if engine.get_object(account, Namespace::Folder, path.as_bytes())?.is_some() || holds_any(engine, account, path)? {
        return Err(DriveError::IsFolder);
    }
    for (i, _) in path.match_indices('/') {
        if engine.get_object(account, Namespace::Drive, &path.as_bytes()[..i])?.is_some() {
            return Err(DriveError::UnderFile);
        }
    }
    Ok(())
}

fn entry(engine: &Engine, account: &AccountId, path: &str) -> Result<Option<Entry>> {
    if path.is_empty() {
        return Ok(Some(Entry::Folder(None)));
    }
    if let Some(rec) = engine.get_object(account, Namespace::Drive, path.as_bytes())? {
        return Ok(Some(Entry::File(rec)));
    }
    let marker = engine.get_object(account, Namespace::Folder, path.as_bytes())?;
    if marker.is_some() || holds_any(engine, account, path)? {
        return Ok(Some(Entry::Folder(marker)));
    }
    Ok(None)
}

/// `path` must be a folder: missing is `NoParent`, a file `UnderFile`.
fn need_folder(engine: &Engine, account: &AccountId, path: &str) -> Result<()> {
    match entry(engine, account, path)? {
        Some(Entry::Folder(_)) => Ok(()),
        Some(Entry::File(_)) => Err(DriveError::UnderFile),
        None => Err(DriveError::NoParent),
    }
}

/// Whether any file or marker lies beneath the folder `path`.
fn holds_any(engine: &Engine, account: &AccountId, path: &str) -> Result<bool> {
    let base = beneath(path);
    for ns in [Namespace::Drive, Namespace::Folder] {
        if !engine.list_objects(account, ns, &base, None, 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Entries directly in `folder`: each namespace is walked in key order, and a subfolder is
/// skipped past with one seek (its paths all sort below `sub/\xFF`, since paths are UTF-8), so
/// a listing costs its entries, not everything beneath them.
fn children(engine: &Engine, account: &AccountId, folder: &str) -> Result<Vec<Child>> {
    const PAGE: usize = 256;
    let base = beneath(folder);
    let mut found: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    for ns in [Namespace::Drive, Namespace::Folder] {
        let mut after: Option<Vec<u8>> = None;
        'pages: loop {
            let page = engine.list_objects(account, ns, &base, after.as_deref(), PAGE)?;
            let full = page.len() == PAGE;
            for l in page {
                if found.len() > MAX_CHILDREN {
                    return Err(DriveError::TooMany);
                }
                match l.name[base.len()..].iter().position(|&b| b == b'/') {
                    None if ns == Namespace::Drive => {
                        found.insert(l.name.clone(), Entry::File(l.record));
                    }
                    None => {
                        found.insert(l.name.clone(), Entry::Folder(Some(l.record)));
                    }
                    Some(i) => {
                        let sub = l.name[..base.len() + i].to_vec();
                        let mut skip = sub.clone();
                        skip.extend_from_slice(b"/\xFF");
                        found.entry(sub).or_insert(Entry::Folder(None));
                        after = Some(skip);
                        continue 'pages;
                    }
                }
                after = Some(l.name);
            }
            if !full {
                break;
            }
        }
    }
    Ok(found.into_iter().map(|(p, entry)| Child { path: String::from_utf8_lossy(&p).into_owned(), entry }).collect())
}

fn transfer_file(
    txn: &mut AccountTxn<'_>,
    engine: &Engine,
    how: Transfer,
    from: &str,
    to: &str,
    rec: &ObjectRecord,
) -> Result<()> {
    let (src, dst) = ((Namespace::Drive, from.as_bytes()), (Namespace::Drive, to.as_bytes()));
    match how {
        Transfer::Move => txn.move_object(src, dst, rec)?,
        Transfer::Copy => {
            let chunks = engine.object_chunks(txn.account(), Namespace::Drive, from.as_bytes(), rec)?;
            txn.put_object(Namespace::Drive, to.as_bytes(), &Manifest { size: rec.size, hash: rec.hash, chunks });
        }
    }
    Ok(())
}

/// A folder's files and markers, under their new paths; the folder itself gets a marker at
/// `to`, so that it exists there even when empty.
fn transfer_folder(
    txn: &mut AccountTxn<'_>,
    engine: &Engine,
    how: Transfer,
    from: &str,
    to: &str,
    marker: Option<&ObjectRecord>,
) -> Result<()> {
    let account = *txn.account();
    let renamed = |name: &[u8]| -> Result<String> {
        let p = format!("{to}{}", String::from_utf8_lossy(&name[from.len()..]));
        check_path(&p)?;
        Ok(p)
    };
    for l in engine.list_objects(&account, Namespace::Drive, &beneath(from), None, usize::MAX)? {
        let old = String::from_utf8_lossy(&l.name).into_owned();
        transfer_file(txn, engine, how, &old, &renamed(&l.name)?, &l.record)?;
    }
    let mut markers = engine.list_objects(&account, Namespace::Folder, &beneath(from), None, usize::MAX)?;
    if let Some(m) = marker {
        markers.push(crate::engine::Listed { name: from.as_bytes().to_vec(), record: m.clone() });
    }
    for m in &markers {
        if how == Transfer::Move {
            txn.remove_object(Namespace::Folder, &m.name, &m.record)?;
        }
        txn.put_object(Namespace::Folder, renamed(&m.name)?.as_bytes(), &empty());
    }
    if marker.is_none() {
        txn.put_object(Namespace::Folder, to.as_bytes(), &empty());
    }
    Ok(())
}

/// Put what is at `path` in the trash (files) or drop it (markers, properties); how many files.
fn remove_entry(
    txn: &mut AccountTxn<'_>,
    engine: &Engine,
    path: &str,
    found: &Entry,
    device: Option<&DeviceId>,
) -> Result<u64> {
    let account = *txn.account();
    props::drop_all(txn, engine, path)?;
    let marker = match found {
        Entry::File(rec) => {
            history::trash(txn, path, rec, device)?;
            return Ok(1);
        }
        Entry::Folder(marker) => marker,
    };
    let files = engine.list_objects(&account, Namespace::Drive, &beneath(path), None, usize::MAX)?;
    for l in &files {
        history::trash(txn, &String::from_utf8_lossy(&l.name), &l.record, device)?;
    }
    for m in engine.list_objects(&account, Namespace::Folder, &beneath(path), None, usize::MAX)? {
        txn.remove_object(Namespace::Folder, &m.name, &m.record)?;
    }
    if let Some(m) = marker {
        txn.remove_object(Namespace::Folder, path.as_bytes(), m)?;
    }
    Ok(files.len() as u64)
}

/// The key prefix of everything beneath the folder `path`.
pub(super) fn beneath(path: &str) -> Vec<u8> {
    if path.is_empty() {
        Vec::new()
    } else {
        format!("{path}/").into_bytes()
    }
}

fn is_beneath(path: &str, folder: &str) -> bool {
    path.len() > folder.len() && path.starts_with(folder) && path.as_bytes()[folder.len()] == b'/'
}

/// The folder a path is in (`""` for the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// A folder marker's content: nothing.
fn empty() -> Manifest {
    Manifest { size: 0, hash: *blake3::hash(b"").as_bytes(), chunks: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_by_whole_segments() {
        assert!(is_beneath("a/b", "a"));
        assert!(!is_beneath("ab", "a"));
        assert!(!is_beneath("a", "a"));
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
        assert_eq!(beneath(""), b"");
        assert_eq!(beneath("a"), b"a/");
    }
}
