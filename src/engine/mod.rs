//! The storage engine: chunks in, chunks out, durably. One cheap `Engine` handle (an `Arc`) is
//! shared by every request; everything it owns is behind it.

mod dicts;
mod gc;
mod ingest;
mod migrate;
mod objects;
mod pace;
mod read;
mod stats;
mod table;
mod txn;

pub mod fsck;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rocksdb::WriteBatch;

pub use gc::{live_share, GcOptions, GcReport};
pub(crate) use ingest::Pins;
pub use ingest::{Admit, AdmitAll, Adoption, Ingested, Piece};
pub(crate) use objects::object_chunks_via;
pub use objects::{ChunkList, Listed, Precondition, PreconditionFailed, Put};
pub use pace::CopyRate;
pub use read::ByteRange;
pub use stats::Stats;
pub use table::ChunkTable;
pub use txn::{item_cost, AccountTxn, ITEM_BYTES, MAX_ITEM_COST};

use crate::chunk::{ChunkingParams, Cutter};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pack::{KeySource, Keyring, PackStore, SealedPack, StorageConfig};
use crate::store::keys::{self, AccountId, PackRecord};
use crate::store::{decode_u64, Db, CF_META, CF_PACKS, META_LAST_VERSION};

/// Everything the engine needs to know, passed in explicitly (see `config` for the file form).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub chunking: ChunkingParams,
    pub zstd_level: i32,
    /// Compress chunks against a per-pack dictionary (`pack::dicts`; docs/decisions.md).
    pub pack_dictionary: bool,
    /// Bytes of compressed chunks stored against one dictionary before the next is made
    /// (`pack::dicts::DEFAULT_SPAN`: what bounds the rewrite when one is retired).
    pub dictionary_span: u64,
    pub pack_target_size: u64,
    pub pack_idle_seal: Duration,
    /// BLAKE3-check every chunk on the hot read path. fsck and GC always check.
    pub verify_reads: bool,
    /// Uploads are refused (507 `insufficient_storage`) while the data directory's file system
    /// has less than this free (see `pack::space`). 0: never refused before the disk is full.
    pub min_free_bytes: u64,
    /// What time it is: the system's, or a test's hand-moved one.
    pub clock: Clock,
    /// Encryption at rest: whether new packs are sealed, and where the master key is.
    pub keys: KeySource,
    /// Where sealed packs live: local disk, or a bucket (`pack::remote`).
    pub storage: StorageConfig,
}

/// Room for the database's flushes and compaction's copies, when the disk is nearly full.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 128 << 20;

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            chunking: ChunkingParams::default(),
            zstd_level: 3,
            pack_dictionary: true,
            dictionary_span: crate::pack::dicts::DEFAULT_SPAN,
            pack_target_size: 64 << 20,
            pack_idle_seal: Duration::from_secs(60),
            verify_reads: true,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            clock: Clock::system(),
            keys: KeySource { encrypt: true, master_key: None, master_key_file: None },
            storage: StorageConfig::default(),
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Stripes of per-account locks. Commits of one account are serialized (its refcounts and
/// usage are read-modify-write); accounts that share a stripe merely wait for each other.
/// A fixed array needs no cleanup, unlike a map of per-account locks.
const ACCOUNT_STRIPES: usize = 256;

struct Inner {
    config: EngineConfig,
    cutter: Cutter,
    db: Db,
    /// Where packs live: local disk (`Packs`) or a bucket (`RemotePacks`), as configured.
    packs: Box<dyn PackStore>,
    /// The data keys, shared with `packs`: ingest's workers seal chunks ahead of the writer.
    keyring: Arc<Keyring>,
    table: ChunkTable,
    metrics: Arc<Metrics>,
    /// std Mutex: held on blocking threads for one read-modify-write and its synced batch.
    account_locks: Vec<Mutex<()>>,
    /// The last object version handed out (see `next_version`).
    last_version: AtomicU64,
    /// One collection at a time. std Mutex: held on a blocking thread for a whole run.
    gc_lock: Mutex<()>,
}

impl Engine {
    /// Open (or create) the store under `config.data_dir`, recovering any pack a crash left
    /// unsealed. Blocking: call before serving, or from a blocking thread.
    pub fn open(config: EngineConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let cutter = Cutter::new(config.chunking).map_err(|e| crate::error::Error::corrupt(e.to_string()))?;
        crate::datadir::make_private(&config.data_dir)?;
        crate::datadir::check_format(&config.data_dir)?;
        let db = Db::open(&config.data_dir.join("db"))?;
        let id_floor = last_pack_id(&db);
        let last_version = db.get(CF_META, META_LAST_VERSION)?.as_deref().and_then(decode_u64).unwrap_or(0);
        let waits = metrics.lock_waits.clone();
        let keyring = Keyring::open(&config.data_dir, &config.keys).map_err(|e| Error::Internal(e.to_string()))?;
        let (packs, recovered) = crate::pack::open_store(
            &config.data_dir.join("packs"),
            &config.storage,
            config.pack_target_size,
            config.min_free_bytes,
            id_floor,
            waits.clone(),
            keyring.clone(),
            &metrics.registry,
        )?;
        packs.dictionaries().configure(config.pack_dictionary, config.zstd_level);
        packs.dictionaries().set_span(config.dictionary_span);
        let inner = Inner {
            config,
            cutter,
            db,
            packs,
            keyring,
            table: ChunkTable::new(waits),
            metrics,
            account_locks: (0..ACCOUNT_STRIPES).map(|_| Mutex::new(())).collect(),
            last_version: AtomicU64::new(last_version),
            gc_lock: Mutex::new(()),
        };
        let engine = Engine { inner: Arc::new(inner) };
        for p in recovered {
            engine.record_sealed(&p)?;
        }
        migrate::usage_metadata(&engine)?;
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.config.clock
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn packs(&self) -> &dyn PackStore {
        self.inner.packs.as_ref()
    }

    pub fn table(&self) -> &ChunkTable {
        &self.inner.table
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn chunking(&self) -> ChunkingParams {
        self.inner.cutter.params()
    }

    /// The account's lock. Only `begin` (and account deletion, which ends the books) takes it:
    /// everything else holds it through an `AccountTxn`.
    fn lock_account(&self, a: &AccountId) -> MutexGuard<'_, ()> {
        let stripe = u16::from_le_bytes([a.0[0], a.0[1]]) as usize % ACCOUNT_STRIPES;
        self.inner.account_locks[stripe].lock().expect("account lock poisoned")
    }

    /// Write the `packs` record of a pack that was just sealed.
    pub(crate) fn record_sealed(&self, p: &SealedPack) -> Result<()> {
        let live = p.entries.iter().map(|e| e.end() - e.offset).sum();
        let rec = PackRecord { size: p.size, entries: p.entries.len() as u32, live_bytes: live };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db().cf(CF_PACKS), keys::pack_key(p.id), keys::encode_pack(&rec));
        self.db().commit(batch)?;
        self.metrics().packs_sealed.inc();
        Ok(())
    }

    /// Seal the open packs that have sat idle; blocking.
    pub fn seal_idle(&self) -> Result<()> {
        let (sealed, outcome) = self.packs().seal_if_idle(self.config().pack_idle_seal);
        self.record_all_sealed(&sealed)?;
        outcome
    }

    /// Seal the open packs and flush the database: the clean-shutdown path. Blocking.
    pub fn close(&self) -> Result<()> {
        let (sealed, outcome) = self.packs().close();
        self.record_all_sealed(&sealed)?;
        outcome?;
        self.db().flush()
    }

    fn record_all_sealed(&self, sealed: &[SealedPack]) -> Result<()> {
        sealed.iter().try_for_each(|p| self.record_sealed(p))
    }

    /// Make a new data key current at once (new packs are sealed under it); older packs move
    /// to it as GC rewrites them (`GcOptions::rekey`). Blocking. Returns the key's id.
    pub fn rotate_key(&self) -> Result<u32> {
        let (id, sealed) = self.packs().rotate_key()?;
        self.record_all_sealed(&sealed)?;
        Ok(id)
    }

    pub(crate) fn keyring(&self) -> &Arc<Keyring> {
        &self.inner.keyring
    }

    /// Seal idle packs once a second until the returned task is aborted.
    pub fn spawn_idle_sealer(&self) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let e = engine.clone();
                match tokio::task::spawn_blocking(move || e.seal_idle()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => tracing::error!(error = %err, "sealing an idle pack failed"),
                    Err(_) => return,
                }
            }
        })
    }
}

fn last_pack_id(db: &Db) -> u64 {
    let mut it = db.raw().raw_iterator_cf(db.cf(CF_PACKS));
    it.seek_to_last();
    it.key().and_then(|k| k.try_into().ok()).map_or(0, u64::from_be_bytes)
}
