//! The bucket, as the pack store sees it: sealed packs by id, put, listed, read by range and
//! deleted, each call blocking (the pack store's callers are blocking threads) and bounded in
//! time.
//!
//! Invariants:
//! - Every request ends within its timeout, retries included (object_store retries 5xx,
//!   throttling and connection errors with backoff, up to `timeout_secs`).
//! - An object that is not there is an `io::ErrorKind::NotFound`, which readers take as "moved
//!   by compaction: look it up again", the same as a missing pack file; every other failure is
//!   `Error::Unavailable` (503 to a client: the same request may succeed later).
//! - A multipart upload is journaled (`pack-uploads/ID.multipart` holds its upload id, synced)
//!   from its creation until it is completed or aborted. Its parts are invisible to listings
//!   and billed, so a crash must not leave them: the next upload aborts every journaled one
//!   first (`abort_leftovers`).

use std::fs;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use prometheus::IntCounter;

use super::settings::StorageConfig;
use crate::error::{Error, Result};

/// Packs above this go up in parts of this size, several at once (S3 wants parts of 5 MiB at
/// least, but the last).
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one pack in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

pub(crate) struct Bucket {
    /// The S3 client itself, not `dyn ObjectStore`: multipart uploads are driven by id
    /// (`MultipartStore`), so that a crash's leftovers can be aborted by the id journaled.
    store: Arc<AmazonS3>,
    /// The multipart journal (see the invariants).
    journal: PathBuf,
    /// `PREFIX/packs`, or `packs`.
    dir: String,
    /// The client's own runtime: the pack store is called from blocking threads, from the
    /// server's runtime and from offline commands that have none.
    rt: Option<tokio::runtime::Runtime>,
    timeout: Duration,
    /// Bytes read from the bucket by ranged reads and whole-object reads.
    pub fetched: IntCounter,
}

fn store_err(e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::Io(io::Error::new(io::ErrorKind::NotFound, e.to_string())),
        e => Error::Unavailable(e.to_string()),
    }
}

impl Bucket {
    pub fn open(cfg: &StorageConfig, journal: PathBuf, fetched: IntCounter) -> Result<Self> {
        fs::create_dir_all(&journal)?;
        let timeout = Duration::from_secs(cfg.timeout_secs);
        // Credentials, and whatever else is unset here, come from the AWS environment variables
        // (and the rest of the AWS chain: web identity, container and instance credentials).
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(cfg.bucket.clone().unwrap_or_default())
            .with_allow_http(cfg.allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(timeout)
                    .with_connect_timeout(timeout.min(Duration::from_secs(5)))
                    .with_allow_http(cfg.allow_http),
            )
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: timeout, ..Default::default() });
        if let Some(endpoint) = &cfg.endpoint {
            b = b.with_endpoint(endpoint);
        }
        if let Some(region) = &cfg.region {
            b = b.with_region(region);
        }
        let store = b.build().map_err(|e| Error::Internal(format!("[storage]: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-bucket")
            .enable_all()
            .build()?;
        let dir = match cfg.prefix() {
            "" => "packs".to_string(),
            p => format!("{p}/packs"),
        };
        Ok(Bucket { store: Arc::new(store), journal, dir, rt: Some(rt), timeout, fetched })
    }

    fn path(&self, id: u64) -> ObjectPath {
        ObjectPath::from(format!("{}/{id:016x}.pack", self.dir))
    }

    /// Run `fut` on the client's runtime and wait for it, at most `limit`.
    fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self.rt.as_ref().expect("runtime lives as long as the bucket");
        rt.spawn(async move {
            let out = match tokio::time::timeout(limit, fut).await {
                Ok(out) => out,
                Err(_) => Err(Error::Unavailable(format!("no answer within {limit:?}"))),
            };
            let _ = tx.send(out);
        });
        rx.recv().map_err(|_| Error::Internal("the object store's runtime stopped".into()))?
    }

    /// Every pack in the bucket with its size, by id.
    pub fn list(&self) -> Result<Vec<(u64, u64)>> {
        let store = self.store.clone();
        let prefix = ObjectPath::from(self.dir.as_str());
        // A listing is one request a thousand packs; give it room for a large bucket.
        self.run(self.timeout * 10, async move {
            let mut found = Vec::new();
            let mut s = store.list(Some(&prefix));
            while let Some(meta) = s.next().await {
                let meta = meta.map_err(store_err)?;
                if let Some(id) = meta.location.filename().and_then(super::super::parse_pack_name) {
                    found.push((id, meta.size));
                }
            }
            found.sort_unstable();
            Ok(found)
        })
    }

    /// A pack's size, or `None` if it is not there.
    pub fn head(&self, id: u64) -> Result<Option<u64>> {
        let (store, path) = (self.store.clone(), self.path(id));
        self.run(self.timeout, async move {
            match store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err(e)),
            }
        })
    }

    /// Bytes of a pack, for a read (counted in `fetched`).
    pub fn get_range(&self, id: u64, range: Range<u64>) -> Result<Bytes> {
        let got = self.read_back(id, range)?;
        self.fetched.inc_by(got.len() as u64);
        Ok(got)
    }

    /// Bytes of a pack, for the uploader's check of what it sent (not a read: not counted).
    pub fn read_back(&self, id: u64, range: Range<u64>) -> Result<Bytes> {
        let (store, path) = (self.store.clone(), self.path(id));
        self.run(self.timeout, async move { store.get_range(&path, range).await.map_err(store_err) })
    }

    /// A whole pack (fsck, index rebuilds, key retirement of a damaged pack).
    pub fn get_all(&self, id: u64) -> Result<Bytes> {
        let (store, path) = (self.store.clone(), self.path(id));
        let got = self.run(self.timeout * 4, async move {
            store.get(&path).await.map_err(store_err)?.bytes().await.map_err(store_err)
        })?;
        self.fetched.inc_by(got.len() as u64);
        Ok(got)
    }

    /// Put a whole pack: one request up to `PART_SIZE`, journaled parts above (aborted on
    /// failure; a crash's are aborted by the next upload).
    pub fn put(&self, id: u64, bytes: Bytes) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(id));
        if bytes.len() <= PART_SIZE {
            return self.run(self.timeout * 2, async move {
                store.put(&path, PutPayload::from(bytes)).await.map_err(store_err)?;
                Ok(())
            });
        }
        let upload = self.run(self.timeout, async move { store.create_multipart(&path).await.map_err(store_err) })?;
        let entry = self.journal.join(format!("{id:016x}.multipart"));
        super::super::open::write_synced(&entry, upload.as_bytes())?;
        let parts = bytes.len().div_ceil(PART_SIZE) as u32;
        let (store, path, up) = (self.store.clone(), self.path(id), upload.clone());
        let sent = self.run(self.timeout * (2 + parts), async move {
            let futs = (0..bytes.len()).step_by(PART_SIZE).enumerate().map(|(i, at)| {
                let part = bytes.slice(at..(at + PART_SIZE).min(bytes.len()));
                let (store, path, up) = (store.clone(), path.clone(), up.clone());
                async move { store.put_part(&path, &up, i, part.into()).await }
            });
            let done: Vec<PartId> = futures::stream::iter(futs)
                .buffered(PARTS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(store_err)?;
            store.complete_multipart(&path, &up, done).await.map_err(store_err)?;
            Ok(())
        });
        if sent.is_err() {
            // Best effort now; what is left stays journaled for the next upload's cleanup.
            let _ = self.abort(id, &upload);
        } else {
            fs::remove_file(&entry)?;
        }
        sent
    }

    /// Abort the multipart uploads a crash (or a failed abort) left journaled. A journal entry
    /// goes only once its upload is known gone.
    pub fn abort_leftovers(&self) -> Result<()> {
        for entry in fs::read_dir(&self.journal)? {
            let entry = entry?.path();
            let Some(id) = entry
                .file_name()
                .and_then(|n| n.to_str()?.strip_suffix(".multipart"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            let upload = fs::read_to_string(&entry)?;
            tracing::info!(pack = id, "aborting a multipart upload a crash left");
            self.abort(id, upload.trim())?;
        }
        Ok(())
    }

    /// Abort one multipart upload (one already gone is no error), then drop its journal entry.
    fn abort(&self, id: u64, upload: &str) -> Result<()> {
        let (store, path, up) = (self.store.clone(), self.path(id), upload.to_string());
        self.run(self.timeout, async move {
            match store.abort_multipart(&path, &up).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_err(e)),
            }
        })?;
        match fs::remove_file(self.journal.join(format!("{id:016x}.multipart"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Delete a pack; deleting one that is not there is no error.
    pub fn delete(&self, id: u64) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(id));
        self.run(self.timeout, async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_err(e)),
            }
        })
    }
}

impl Drop for Bucket {
    /// Without waiting: the last handle may go on a runtime's thread, where a blocking
    /// shutdown would panic, and a request still in flight is safe to abandon.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
