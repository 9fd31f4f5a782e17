//! Packs in an S3-compatible bucket (`[storage] backend = "s3"`): a `PackStore` that keeps
//! open packs on local disk exactly as `Packs` does, and moves each sealed one to the bucket.
//!
//! A pack's life: appended and synced in `packs/` (what an upload is acknowledged on is there,
//! durable, before any byte goes out); sealed; queued; uploaded and verified by `uploader`;
//! switched: the local copy moves to the disk cache (`pack-cache/`) or is deleted. Pack ids
//! and offsets never change, so the index does not move: "where is pack N" is answered here,
//! local directory first, then the bucket.
//!
//! Invariants:
//! - Every pack is in `packs/`, in the bucket, or both (both only between an upload and its
//!   switch); `list` reads the directory before the bucket, so a pack switched meanwhile is
//!   seen in one or the other, never missed.
//! - A pack in the bucket is sealed, verified and quiet; it is judged (GC, fsck, key
//!   retirement) from ranged reads of the bucket, and deleted by `remove` only after the index
//!   has moved off it, as on local disk. An object that no index record names (an upload whose
//!   crash left it before any record, a delete that failed) is a quiet pack without live
//!   entries, which the next GC deletes like any other.
//! - Reads are checked as local ones are (entry headers against the index, seals, chunk
//!   hashes): a truncated or altered object is an error, never data.

mod bucket;
mod cache;
pub mod settings;
mod uploader;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge, Registry};

use super::format::EntryInfo;
use super::store::PackKeys;
use super::{Appended, Lane, PackStore, Packs, SealedPack};
use crate::codec::SealedChunk;
use crate::dictionary::Dictionary;
use crate::error::{Error, Result};
use bucket::Bucket;
use settings::StorageConfig;
use uploader::Uploads;

pub use cache::BLOCK as CACHE_BLOCK;

/// The uploads' backlog and the bucket's traffic, on the server's registry.
pub(crate) struct RemoteMetrics {
    backlog_packs: IntGauge,
    backlog_bytes: IntGauge,
    uploaded: IntCounter,
    failures: IntCounter,
    /// 1 while the last upload try reached the store, 0 after a failed one.
    up: IntGauge,
}

impl RemoteMetrics {
    fn registered(r: &Registry) -> (Self, IntCounter) {
        fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
            // A second store on one registry (tests) keeps its own, unregistered.
            let _ = r.register(Box::new(m.clone()));
            m
        }
        let gauge = |name: &str, help: &str| reg(r, IntGauge::new(name, help).expect("valid metric"));
        let counter = |name: &str, help: &str| reg(r, IntCounter::new(name, help).expect("valid metric"));
        let m = RemoteMetrics {
            backlog_packs: gauge("cairn_pack_upload_backlog_packs", "Sealed packs waiting for their upload"),
            backlog_bytes: gauge("cairn_pack_upload_backlog_bytes", "Bytes of sealed packs waiting for their upload"),
            uploaded: counter("cairn_pack_uploads_total", "Packs uploaded, verified and switched"),
            failures: counter("cairn_pack_upload_failures_total", "Failed tries of a pack's upload"),
            up: gauge("cairn_object_store_up", "Whether the last upload try reached the object store"),
        };
        let fetched = counter("cairn_object_store_read_bytes_total", "Bytes read from the object store");
        (m, fetched)
    }

    pub fn backlog(&self, waiting: &BTreeMap<u64, u64>) {
        self.backlog_packs.set(waiting.len() as i64);
        self.backlog_bytes.set(waiting.values().sum::<u64>() as i64);
    }
}

/// What the uploader thread and the store's callers share.
pub(crate) struct Shared {
    pub local: Packs,
    pub bucket: Bucket,
    pub disk: cache::Disk,
    pub blocks: cache::Blocks,
    pub uploads: Uploads,
    pub metrics: RemoteMetrics,
    pub retry_max: Duration,
    /// Sizes of packs in the bucket, as last listed, asked or uploaded.
    sizes: Mutex<HashMap<u64, u64>>,
    /// Held while a pack leaves the pack directory, and by key retirement, which must find
    /// every pack in one place or the other.
    switching: Mutex<()>,
    /// The highest pack id whose only copy may be in the bucket (see `uploader`).
    high_water: Mutex<u64>,
    high_water_path: PathBuf,
}

impl Shared {
    /// The uploaded, verified pack leaves the pack directory: into the disk cache, or deleted.
    pub fn switch(&self, id: u64, len: u64) -> Result<()> {
        let _one_place = self.switching.lock().expect("switch lock poisoned");
        self.raise_high_water(id)?;
        self.local.forget_reader(id);
        let path = self.local.path(id);
        self.disk.admit(id, &path, len)?;
        super::open::sync_parent(&path)?;
        fs::File::open(self.disk.dir())?.sync_all()?;
        self.sizes.lock().expect("sizes poisoned").insert(id, len);
        Ok(())
    }

    fn raise_high_water(&self, id: u64) -> Result<()> {
        let mut high = self.high_water.lock().expect("high water poisoned");
        if id > *high || !self.high_water_path.exists() {
            let id = id.max(*high);
            self.write_high_water(id)?;
            *high = id;
        }
        Ok(())
    }

    fn write_high_water(&self, id: u64) -> Result<()> {
        Ok(super::open::write_synced(&self.high_water_path, format!("{id}\n").as_bytes())?)
    }

    /// A pack's size in the bucket; `NotFound` if it is not there.
    fn remote_size(&self, id: u64) -> Result<u64> {
        if let Some(n) = self.sizes.lock().expect("sizes poisoned").get(&id) {
            return Ok(*n);
        }
        let n = self
            .bucket
            .head(id)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("pack {id} is not in the bucket")))?;
        self.sizes.lock().expect("sizes poisoned").insert(id, n);
        Ok(n)
    }

    /// Bytes `range` of a pack that is not in the pack directory: from the disk cache, the
    /// memory cache or the bucket.
    fn read_remote(&self, id: u64, start: u64, end: u64) -> Result<Vec<u8>> {
        if let Some(f) = self.disk.open_pack(id) {
            let mut buf = vec![0u8; (end - start) as usize];
            f.read_exact_at(&mut buf, start)?;
            return Ok(buf);
        }
        let size = self.remote_size(id)?;
        self.blocks.read(id, size, start..end, |r| self.bucket.get_range(id, r))
    }

    /// A whole pack that is not in the pack directory.
    fn read_remote_all(&self, id: u64) -> Result<Bytes> {
        match fs::read(self.disk.path(id)) {
            Ok(b) => Ok(b.into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.bucket.get_all(id),
            Err(e) => Err(e.into()),
        }
    }

    fn remote_table(&self, id: u64) -> Result<(super::format::PackHeader, super::Keyed)> {
        let size = self.remote_size(id)?;
        let name = format!("pack {id} in the bucket");
        let read_at = |buf: &mut [u8], at: u64| -> io::Result<()> {
            let got = self.read_remote(id, at, at + buf.len() as u64).map_err(|e| match e {
                Error::Io(e) => e,
                e => io::Error::other(e.to_string()),
            })?;
            buf.copy_from_slice(&got);
            Ok(())
        };
        super::table_entries_at(&name, size, &read_at, &self.local.keyring().keys())
    }

    /// Every pack in the bucket, its size noted.
    fn listed(&self) -> Result<Vec<u64>> {
        let found = self.bucket.list()?;
        let mut sizes = self.sizes.lock().expect("sizes poisoned");
        sizes.extend(found.iter().copied());
        Ok(found.into_iter().map(|(id, _)| id).collect())
    }
}

pub struct RemotePacks {
    shared: Arc<Shared>,
    /// Says when the uploader thread has ended (its sender is dropped).
    uploader_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// How long a clean shutdown waits for the upload in flight; past that it goes without it
/// (the pack stays local and queued for the next start).
const UPLOADER_STOP_WAIT: Duration = Duration::from_secs(10);

impl RemotePacks {
    /// Open the pack directory as `Packs::open` does (recovering what a crash left unsealed),
    /// connect to the bucket, and queue every sealed local pack for upload (those a crash left
    /// before or during their upload). Pack ids continue above `id_floor` and the high-water
    /// mark (or every pack in the bucket, when there is no mark yet: see `uploader`).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: &Path,
        cfg: &StorageConfig,
        target_size: u64,
        min_free: u64,
        id_floor: u64,
        waits: crate::metrics::LockWaits,
        keyring: Arc<super::Keyring>,
        registry: &Registry,
    ) -> Result<(Self, Vec<SealedPack>)> {
        let (metrics, fetched) = RemoteMetrics::registered(registry);
        let base = dir.parent().unwrap_or(Path::new("."));
        let bucket = Bucket::open(cfg, base.join("pack-uploads"), fetched)?;
        let high_water_path = base.join("pack-ids");
        // The high-water mark, once written, covers every pack that ever left this disk. Without
        // it (a new data directory, or one restored without it) the bucket alone can say which
        // ids are taken: it must answer, or ids could be handed out again over packs in it.
        let (high_water, listed) = match fs::read_to_string(&high_water_path) {
            Ok(s) => {
                let n = s
                    .trim()
                    .parse()
                    .map_err(|_| Error::corrupt(format!("{}: not a pack id", high_water_path.display())))?;
                (n, Vec::new())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let found = bucket.list().map_err(|e| {
                    Error::Io(io::Error::other(format!(
                        "{} is missing and the bucket cannot be listed to rebuild it: {e}",
                        high_water_path.display()
                    )))
                })?;
                (found.iter().map(|(id, _)| *id).max().unwrap_or(0), found)
            }
            Err(e) => return Err(e.into()),
        };
        let floor = id_floor.max(high_water);
        let (local, recovered) = Packs::open(dir, target_size, min_free, floor, waits, keyring)?;
        let disk = cache::Disk::open(&base.join("pack-cache"), cfg.disk_cache_size.0)?;
        let shared = Arc::new(Shared {
            local,
            bucket,
            disk,
            blocks: cache::Blocks::new(cfg.cache_size.0),
            uploads: Uploads::new(),
            metrics,
            retry_max: Duration::from_secs(cfg.retry_max_secs),
            sizes: Mutex::new(listed.into_iter().collect()),
            switching: Mutex::new(()),
            high_water: Mutex::new(high_water),
            high_water_path,
        });
        shared.raise_high_water(floor)?;
        for id in shared.local.list()? {
            uploader::enqueue(&shared, id, shared.local.size(id)?);
        }
        shared.metrics.up.set(1);
        let worker = shared.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new().name("cairn-uploader".into()).spawn(move || {
            let _done = done_tx;
            uploader::run(worker)
        })?;
        Ok((RemotePacks { shared, uploader_done: Mutex::new(Some(done_rx)) }, recovered))
    }

    fn queue_all(&self, sealed: &[SealedPack]) {
        for p in sealed {
            uploader::enqueue(&self.shared, p.id, p.size);
        }
    }

    fn stop_uploader(&self) {
        self.shared.uploads.lock().stop = true;
        self.shared.uploads.wake.notify_all();
    }

    /// `local` if the pack is in the pack directory, else `remote`; also `remote` if it left
    /// the directory between the look and the read (its switch: the bucket has it by then).
    fn either<T>(
        &self,
        id: u64,
        local: impl FnOnce(&Packs) -> Result<T>,
        remote: impl FnOnce(&Shared) -> Result<T>,
    ) -> Result<T> {
        let s = &self.shared;
        if s.local.path(id).exists() {
            match local(&s.local) {
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        remote(s)
    }
}

impl Drop for RemotePacks {
    fn drop(&mut self) {
        self.stop_uploader();
    }
}

impl RemotePacks {
    /// The dictionary a read of `e` needs: its pack's, for a tag 2 entry.
    fn dict_for(&self, id: u64, e: &EntryInfo) -> Result<Option<Arc<Dictionary>>> {
        (e.compression == crate::codec::Compression::ZstdDict).then(|| self.dictionary(id)).transpose()
    }
}

impl PackStore for RemotePacks {
    /// As on local disk; when the disk is too full for an upload, the disk cache goes first.
    fn append(&self, lane: Lane, chunk: &SealedChunk) -> Result<(Appended, Option<SealedPack>)> {
        let appended = match self.shared.local.append(lane, chunk) {
            Err(e) if e.is_disk_full() && self.shared.disk.clear()? > 0 => {
                tracing::warn!("the disk is full: emptied the cache of uploaded packs");
                self.shared.local.append(lane, chunk)
            }
            other => other,
        };
        let (a, sealed) = appended?;
        self.queue_all(sealed.as_slice());
        Ok((a, sealed))
    }

    fn sync(&self, a: &Appended) -> Result<()> {
        self.shared.local.sync(a)
    }

    fn settle(&self, done: &[Appended]) {
        self.shared.local.settle(done);
    }

    /// Quiet local packs, and every pack only in the bucket (uploaded packs are quiet).
    fn quiet(&self) -> Result<Vec<u64>> {
        let here: BTreeSet<u64> = self.shared.local.list()?.into_iter().collect();
        let mut quiet: BTreeSet<u64> = self.shared.local.quiet()?.into_iter().collect();
        quiet.extend(self.shared.listed()?.into_iter().filter(|id| !here.contains(id)));
        Ok(quiet.into_iter().collect())
    }

    fn seal_lane(&self, lane: Lane) -> Result<Option<SealedPack>> {
        let sealed = self.shared.local.seal_lane(lane)?;
        self.queue_all(sealed.as_slice());
        Ok(sealed)
    }

    fn seal_if_idle(&self, idle: Duration) -> (Vec<SealedPack>, Result<()>) {
        let (sealed, outcome) = self.shared.local.seal_if_idle(idle);
        self.queue_all(&sealed);
        (sealed, outcome)
    }

    /// Seal what is open and stop the uploader once its current pack is done (what is still
    /// queued stays local, and goes up after the next start).
    fn close(&self) -> (Vec<SealedPack>, Result<()>) {
        let (sealed, outcome) = self.shared.local.close();
        self.stop_uploader();
        if let Some(done) = self.uploader_done.lock().expect("uploader handle poisoned").take() {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(UPLOADER_STOP_WAIT) {
                tracing::warn!("an upload is still in flight at shutdown; its pack goes up after the next start");
            }
        }
        (sealed, outcome)
    }

    /// The pack directory first, then the bucket (see the module's invariants).
    fn list(&self) -> Result<Vec<u64>> {
        let mut all: BTreeSet<u64> = self.shared.local.list()?.into_iter().collect();
        all.extend(self.shared.listed()?);
        Ok(all.into_iter().collect())
    }

    fn size(&self, id: u64) -> Result<u64> {
        self.either(id, |l| l.size(id), |s| s.remote_size(id))
    }

    fn table(&self, id: u64) -> Result<Vec<EntryInfo>> {
        self.either(id, |l| l.table(id), |s| Ok(s.remote_table(id)?.1.into_iter().map(|(e, _)| e).collect()))
    }

    fn verify(&self, id: u64, bad: &mut dyn FnMut(EntryInfo, String)) -> Result<(Vec<EntryInfo>, u64)> {
        let s = &self.shared;
        if s.local.path(id).exists() {
            match s.local.verify(id, &mut *bad) {
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        let bytes = s.read_remote_all(id)?;
        let keys = s.local.keyring().keys();
        let (entries, end) = super::verified_entries_in(&bytes, &format!("pack {id} in the bucket"), &keys, bad)?;
        Ok((super::chunks_only(entries), end))
    }

    fn read_stored(&self, id: u64, want: &EntryInfo) -> Result<Bytes> {
        let mut run = self.read_stored_run(id, std::slice::from_ref(want))?;
        Ok(run.pop().expect("one entry asked, one read"))
    }

    fn read_stored_run(&self, id: u64, run: &[EntryInfo]) -> Result<Vec<Bytes>> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(Vec::new());
        };
        self.either(
            id,
            |l| l.read_stored_run(id, run),
            |s| s.local.open_run(id, run, first.offset, s.read_remote(id, first.offset, last.end())?),
        )
    }

    fn read_chunk(&self, id: u64, want: &EntryInfo, verify: bool) -> Result<Bytes> {
        let stored = self.read_stored(id, want)?;
        let dict = self.dict_for(id, want)?;
        super::unseal_checked(id, want, stored, verify, dict.as_deref())
    }

    /// Out of the queue, out of the bucket, out of both caches and the pack directory. The
    /// object goes first: if that fails the pack stays listed, and the next GC deletes it.
    fn remove(&self, id: u64) -> Result<()> {
        let s = &self.shared;
        {
            let mut q = s.uploads.lock();
            q.waiting.remove(&id);
            s.metrics.backlog(&q.waiting);
            // Its upload, if one runs, ends within the bucket's timeouts; then nothing puts
            // the object back after the delete below.
            while q.in_flight == Some(id) {
                q = s.uploads.wake.wait(q).expect("upload queue poisoned");
            }
        }
        s.bucket.delete(id)?;
        s.sizes.lock().expect("sizes poisoned").remove(&id);
        s.blocks.forget(id);
        s.local.dict_cache().forget(id);
        s.disk.forget(id)?;
        if s.local.path(id).exists() {
            match s.local.remove(id) {
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }

    fn keys_of(&self, id: u64) -> Result<PackKeys> {
        self.either(
            id,
            |l| l.keys_of(id),
            |s| {
                let (header, entries) = s.remote_table(id)?;
                Ok(PackKeys { table: header.table_key, entries: entries.iter().filter_map(|(_, k)| *k).collect() })
            },
        )
    }

    fn stale(&self, id: u64) -> Result<bool> {
        let Some(current) = self.shared.local.keyring().keys().current() else {
            return Ok(false);
        };
        let used = self.keys_of(id)?;
        Ok(used.table != Some(current) || used.entries.iter().any(|k| *k != current))
    }

    fn copy_out(&self, id: u64, e: &EntryInfo) -> Result<SealedChunk> {
        self.either(
            id,
            |l| l.copy_out(id, e),
            |s| s.local.copy_out_of(id, e, s.read_remote(id, e.offset, e.end())?, self.dict_for(id, e)?),
        )
    }

    /// Kept in the local store's cache either way: pack ids are the same wherever the pack is.
    fn dictionary(&self, id: u64) -> Result<Arc<Dictionary>> {
        self.either(
            id,
            |l| l.dictionary(id),
            |s| {
                s.local.dict_cache().get(id, || {
                    let read = |at: u64, len: usize| s.read_remote(id, at, at + len as u64);
                    super::dicts::load(&format!("pack {id} in the bucket"), &read, &s.local.keyring().keys())
                })
            },
        )
    }

    fn dictionaries(&self) -> Arc<super::LaneDicts> {
        self.shared.local.dictionaries()
    }

    fn rotate_key(&self) -> Result<(u32, Vec<SealedPack>)> {
        let (key, sealed) = self.shared.local.rotate_key()?;
        self.queue_all(&sealed);
        Ok((key, sealed))
    }

    /// The keys of the packs only in the bucket are kept along with the local ones; no pack
    /// moves meanwhile. A pack whose table does not open is read whole for its entries' keys;
    /// one that cannot be read at all stops the retirement (no key is dropped blind).
    fn retire_keys(&self) -> Result<Vec<u32>> {
        let s = &self.shared;
        let _nothing_moves = s.switching.lock().expect("switch lock poisoned");
        let here: BTreeSet<u64> = s.local.list()?.into_iter().collect();
        let mut elsewhere = BTreeSet::new();
        for id in s.listed()?.into_iter().filter(|id| !here.contains(id)) {
            match s.remote_table(id) {
                Ok((header, entries)) => {
                    elsewhere.extend(header.table_key.into_iter().chain(entries.iter().filter_map(|e| e.1)))
                }
                Err(_) => elsewhere.extend(super::keys_in_bytes(&s.read_remote_all(id)?, &format!("pack {id}"))?),
            }
        }
        s.local.retire_keys_beside(elsewhere)
    }
}
