//! Metadata snapshots: a consistent copy of what nothing else can rebuild (accounts, sessions,
//! manifests, sync records: the database), with the keys that make it readable and the list of
//! packs it points into, taken while the server keeps accepting uploads; and the offline
//! restore that makes a data directory of it again.
//!
//! A snapshot directory holds:
//! - `db/`: a RocksDB checkpoint, a point-in-time copy (hard links where the file system
//!   allows). Every write acknowledged before the snapshot began is in it: acknowledged means
//!   committed with a synced batch, and a checkpoint includes every committed batch.
//! - `identity.key` (if the key lives in the data directory): the database seals identifiers
//!   (emails, phone numbers) under it; without it no account can sign in.
//! - `datakeys`: the data keys that seal pack contents, each wrapped by the master key.
//!   Harmless alone, and needed: a rotation after the snapshot is not in an older copy.
//! - `snapshot.json`: the manifest, with every pack the database refers to and how many of its
//!   bytes it needs.
//!
//! The master key is deliberately *not* in it: snapshots travel with the pack backups, and a
//! copy that held the master key next to the packs would undo encryption at rest for whoever
//! gets the backup. It never changes, so the operator keeps it once, apart (a secrets
//! manager); `restore-snapshot --master-key-file` puts it back.
//!
//! Packs are not copied here: sealed packs never change, so the operator's file backup copies
//! them (after the snapshot, so that every pack it names exists). Restore refuses a pack set
//! that lacks one the manifest names, or holds it shorter than the manifest needs.
//!
//! Invariant: the key files in a snapshot are those in force when its checkpoint was taken: the
//! data keys file is read before and after the checkpoint, and the snapshot is retaken if a
//! rotation changed it in between.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::IteratorMode;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::engine::{fsck, Engine};
use crate::metrics::Metrics;
use crate::pack::keyring::{DATA_KEYS_FILE, MASTER_KEY_FILE};
use crate::store::keys::{self, PackRecord};
use crate::store::{Db, CF_CHUNKS, CF_PACKS};

pub const MANIFEST_FILE: &str = "snapshot.json";
pub const DB_DIR: &str = "db";
use crate::identity::IDENTITY_KEY_FILE;
/// The manifest's own format.
const FORMAT: u32 = 1;
/// Tries at a snapshot whose data keys changed while it was taken.
const TRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot directory must be an absolute path: {0}")]
    NotAbsolute(PathBuf),
    #[error("{0} already exists; a snapshot goes into a new directory")]
    Exists(PathBuf),
    #[error("the parent of {0} does not exist")]
    NoParent(PathBuf),
    #[error("{0} is not a snapshot (no {MANIFEST_FILE}) or its manifest is unreadable: {1}")]
    NotASnapshot(PathBuf, String),
    #[error("{0} is not empty; restore into a new data directory")]
    TargetNotEmpty(PathBuf),
    #[error("packs the snapshot refers to are missing or short in {dir}: {list}")]
    MissingPacks { dir: PathBuf, list: String },
    #[error("the data keys changed during every try; retry when no key rotation is running")]
    KeysKeptChanging,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] crate::error::Error),
    #[error("database checkpoint: {0}")]
    Checkpoint(#[from] rocksdb::Error),
}

type Result<T> = std::result::Result<T, SnapshotError>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_path_buf(), source }
}

/// One pack the snapshot's database refers to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackRef {
    pub id: u64,
    /// The file name in a packs directory.
    pub file: String,
    /// Its size if it was sealed (sealed packs never change); `None` if it was still open.
    pub sealed_size: Option<u64>,
    /// The bytes the index needs: the end of the last entry it points at.
    pub needed_bytes: u64,
}

/// `snapshot.json`, also the answer of `POST /admin/snapshot`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The server's clock when the checkpoint was taken (unix seconds).
    pub taken_at: u64,
    /// Where it was written, on the server's host.
    pub dir: PathBuf,
    /// Key files copied beside the database (`identity.key`, `datakeys`).
    pub key_files: Vec<String>,
    /// Never true: see the module's doc.
    pub master_key_included: bool,
    pub packs: Vec<PackRef>,
    pub chunks: u64,
}

/// Take a snapshot into `to`, a new directory (its parent must exist) on the server's host.
/// Blocking: call from a blocking thread. Uploads go on meanwhile.
pub fn take(engine: &Engine, to: &Path) -> Result<Manifest> {
    if !to.is_absolute() {
        return Err(SnapshotError::NotAbsolute(to.into()));
    }
    if to.symlink_metadata().is_ok() {
        return Err(SnapshotError::Exists(to.into()));
    }
    if !to.parent().is_some_and(Path::is_dir) {
        return Err(SnapshotError::NoParent(to.into()));
    }
    let data_dir = engine.config().data_dir.clone();
    for _ in 0..TRIES {
        let keys_before = read_optional(&data_dir.join(DATA_KEYS_FILE))?;
        fs::create_dir(to).map_err(io_at(to))?;
        // A failed try leaves nothing behind: the next may use the same name.
        match take_into(engine, &data_dir, to, keys_before) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => tracing::warn!("the data keys changed while the snapshot was taken; taking it again"),
            Err(e) => {
                let _ = fs::remove_dir_all(to);
                return Err(e);
            }
        }
        fs::remove_dir_all(to).map_err(io_at(to))?;
    }
    Err(SnapshotError::KeysKeptChanging)
}

/// One try into the new directory `to`; `None` if the data keys changed meanwhile.
fn take_into(engine: &Engine, data_dir: &Path, to: &Path, keys_before: Option<Vec<u8>>) -> Result<Option<Manifest>> {
    let taken_at = engine.clock().now_secs();
    rocksdb::checkpoint::Checkpoint::new(engine.db().raw())?.create_checkpoint(to.join(DB_DIR))?;
    let keys_after = read_optional(&data_dir.join(DATA_KEYS_FILE))?;
    if keys_before != keys_after {
        return Ok(None);
    }
    let mut key_files = Vec::new();
    if let Some(bytes) = keys_after {
        write_private(&to.join(DATA_KEYS_FILE), &bytes)?;
        key_files.push(DATA_KEYS_FILE.to_string());
    }
    if let Some(bytes) = read_optional(&data_dir.join(IDENTITY_KEY_FILE))? {
        write_private(&to.join(IDENTITY_KEY_FILE), &bytes)?;
        key_files.push(IDENTITY_KEY_FILE.to_string());
    }
    let (packs, chunks) = referenced_packs(&to.join(DB_DIR))?;
    let manifest =
        Manifest { format: FORMAT, taken_at, dir: to.into(), key_files, master_key_included: false, packs, chunks };
    let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    write_private(&to.join(MANIFEST_FILE), &text)?;
    sync_dir(to)?;
    Ok(Some(manifest))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Write a file readable by its owner only, and make it durable.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_at(path))?;
    f.write_all(bytes).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

/// Every pack a database's index or pack records name, with what it needs of each. Read from
/// the checkpoint itself, so that it describes exactly the copied database.
fn referenced_packs(db_dir: &Path) -> Result<(Vec<PackRef>, u64)> {
    let db = Db::open(db_dir)?;
    let mut packs: BTreeMap<u64, PackRef> = BTreeMap::new();
    fn entry(packs: &mut BTreeMap<u64, PackRef>, id: u64) -> &mut PackRef {
        packs.entry(id).or_insert_with(|| PackRef { id, file: pack_file(id), sealed_size: None, needed_bytes: 0 })
    }
    for item in db.raw().iterator_cf(db.cf(CF_PACKS), IteratorMode::Start) {
        let (k, v) = item.map_err(SnapshotError::Checkpoint)?;
        let (Ok(id), Some(rec)) = (<[u8; 8]>::try_from(&*k).map(u64::from_be_bytes), keys::decode_pack(&v)) else {
            continue;
        };
        entry(&mut packs, id).sealed_size = Some(rec.size);
    }
    let mut chunks = 0;
    for item in db.raw().iterator_cf(db.cf(CF_CHUNKS), IteratorMode::Start) {
        let (k, v) = item.map_err(SnapshotError::Checkpoint)?;
        let Some(rec) = keys::chunk_id_from_key(&k).and_then(|id| keys::decode_chunk(id, &v)) else {
            continue; // forgotten (empty) or unreadable: fsck's business, not a pack to keep
        };
        chunks += 1;
        let p = entry(&mut packs, rec.pack);
        p.needed_bytes = p.needed_bytes.max(rec.entry.end());
    }
    Ok((packs.into_values().collect(), chunks))
}

fn pack_file(id: u64) -> String {
    format!("{id:016x}.pack")
}

/// What `restore` did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub packs_copied: usize,
    pub fsck: fsck::Report,
}

/// Make `config.data_dir` (new, or an empty directory) a data directory again from a snapshot
/// and a directory of pack files, then check it. Offline: no server may run on either.
pub fn restore(
    config: &Config,
    snapshot: &Path,
    packs_from: &Path,
    master_key_file: Option<&Path>,
) -> Result<Restored> {
    let manifest_path = snapshot.join(MANIFEST_FILE);
    let manifest: Manifest = fs::read(&manifest_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| SnapshotError::NotASnapshot(snapshot.into(), e))?;
    let target = &config.data_dir;
    if fs::read_dir(target).is_ok_and(|mut d| d.next().is_some()) {
        return Err(SnapshotError::TargetNotEmpty(target.clone()));
    }
    check_packs(&manifest, packs_from)?;
    let existed = target.exists();
    restore_into(config, snapshot, packs_from, master_key_file, &manifest).inspect_err(|_| {
        // Leave the target as it was found (absent or empty), so that a retry can start over.
        if existed {
            if let Ok(entries) = fs::read_dir(target) {
                for e in entries.flatten() {
                    let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
                }
            }
        } else {
            let _ = fs::remove_dir_all(target);
        }
    })
}

fn restore_into(
    config: &Config,
    snapshot: &Path,
    packs_from: &Path,
    master_key_file: Option<&Path>,
    manifest: &Manifest,
) -> Result<Restored> {
    let target = &config.data_dir;
    crate::datadir::make_private(target).map_err(io_at(target))?;
    copy_tree(&snapshot.join(DB_DIR), &target.join("db"))?;
    for name in &manifest.key_files {
        copy_file(&snapshot.join(name), &target.join(name))?;
    }
    if let Some(master) = master_key_file {
        copy_file(master, &target.join(MASTER_KEY_FILE))?;
    }
    let packs_dir = target.join("packs");
    fs::create_dir_all(&packs_dir).map_err(io_at(&packs_dir))?;
    for p in &manifest.packs {
        copy_file(&packs_from.join(&p.file), &packs_dir.join(&p.file))?;
    }
    // Opening recovers the packs that were still open (their torn tails, if any, cut off).
    let engine = Engine::open(config.engine(), Arc::new(Metrics::new()))?;
    record_packs(&engine)?;
    let report = fsck::check(&engine)?;
    engine.close()?;
    Ok(Restored { data_dir: target.clone(), packs_copied: manifest.packs.len(), fsck: report })
}

fn check_packs(manifest: &Manifest, dir: &Path) -> Result<()> {
    let mut bad = Vec::new();
    for p in &manifest.packs {
        match fs::metadata(dir.join(&p.file)) {
            Ok(m) if p.sealed_size.is_some_and(|s| m.len() != s) => {
                bad.push(format!("{} is {} bytes, sealed at {}", p.file, m.len(), p.sealed_size.unwrap_or(0)))
            }
            Ok(m) if m.len() < p.needed_bytes => {
                bad.push(format!("{} is {} bytes, needs {}", p.file, m.len(), p.needed_bytes))
            }
            Ok(_) => {}
            Err(_) => bad.push(format!("{} missing", p.file)),
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let more = bad.len().saturating_sub(10);
    bad.truncate(10);
    let mut list = bad.join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    Err(SnapshotError::MissingPacks { dir: dir.into(), list })
}

/// Give every pack a record that says what the restored index uses of it: packs sealed after
/// the snapshot have none, and packs recovered at open were recorded as wholly live.
fn record_packs(engine: &Engine) -> Result<()> {
    let db = engine.db();
    let mut batch = rocksdb::WriteBatch::default();
    for id in engine.packs().list()? {
        let entries = engine.packs().table(id)?;
        let mut live = 0;
        for e in &entries {
            if db.chunk(&e.id)?.is_some_and(|r| r.pack == id && r.entry.offset == e.offset) {
                live += e.end() - e.offset;
            }
        }
        let rec = PackRecord { size: engine.packs().size(id)?, entries: entries.len() as u32, live_bytes: live };
        batch.put_cf(db.cf(CF_PACKS), keys::pack_key(id), keys::encode_pack(&rec));
    }
    db.commit(batch)?;
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = fs::File::open(from).map_err(io_at(from))?;
    let mut dst = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).map_err(io_at(to))?;
    io::copy(&mut src, &mut dst).map_err(io_at(to))?;
    dst.sync_all().map_err(io_at(to))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(io_at(to))?;
    for entry in fs::read_dir(from).map_err(io_at(from))? {
        let entry = entry.map_err(io_at(from))?;
        let path = entry.path();
        if entry.file_type().map_err(io_at(&path))?.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()))?;
        } else {
            copy_file(&path, &to.join(entry.file_name()))?;
        }
    }
    sync_dir(to)
}
