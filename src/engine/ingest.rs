//! Streaming ingest: an async byte stream in, a manifest out, every new chunk durable in a pack
//! and in the index.
//!
//! Three stages overlap so that one upload keeps both cores busy:
//! ```text
//! runtime task        cutter thread            rayon workers           writer thread
//! body frames ──────► FastCDC cut ──chunk──►  BLAKE3 + zstd  ──in order──► dedup, append,
//!    (bounded queue)                (bounded queue of results)              sync, index
//! ```
//! Every queue is bounded, so memory is flat whatever the body's length: at most
//! `FRAME_QUEUE` frames, one `max`-sized cut window, and `CHUNKS_IN_FLIGHT` chunks exist at
//! once. The writer keeps one entry per chunk of the manifest (36 bytes per 64 KiB).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use rocksdb::WriteBatch;
use tokio::sync::{mpsc, oneshot};

use super::{unix_now, Engine};
use crate::chunk::{ChunkId, Cutter};
use crate::codec::{self, SealedChunk};
use crate::error::{Error, Result};
use crate::pack::Appended;
use crate::store::keys::{self, AccountId, ChunkOp, ChunkRecord, Manifest};
use crate::store::CF_CHUNKS;

const FRAME_QUEUE: usize = 16;
const CHUNKS_IN_FLIGHT: usize = 32;
/// New chunks are synced and indexed in groups of this many, so that other uploads waiting on
/// one of them do not wait for a whole file, and the pending list stays small.
const INDEX_EVERY: usize = 256;

/// The caller's say over each distinct chunk of an upload, in order, before it is stored:
/// quota charging lives here. Returning a refusal ends the ingest with that refusal.
pub trait Admit: Send + 'static {
    fn admit(&mut self, id: &ChunkId, raw_len: u32) -> Result<()>;
}

/// Admits everything (engine-level callers and tests).
pub struct AdmitAll;

impl Admit for AdmitAll {
    fn admit(&mut self, _: &ChunkId, _: u32) -> Result<()> {
        Ok(())
    }
}

/// The result of an ingest. Its chunks stay pinned (safe from GC) until this is dropped, so
/// commit it first.
pub struct Ingested {
    pub manifest: Manifest,
    pub new_chunks: u64,
    pub new_stored_bytes: u64,
    /// Held for its `Drop`, which unpins.
    _pins: Pins,
}

/// Why a client's chunk list cannot become an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    Missing(Vec<ChunkId>),
    WrongSize { id: ChunkId, size: u32, actual: u32 },
}

/// Pins held by one upload, released on drop whatever way the upload ends.
pub(crate) struct Pins {
    engine: Engine,
    ids: Vec<ChunkId>,
}

impl Pins {
    pub(crate) fn new(engine: Engine) -> Self {
        Pins { engine, ids: Vec::new() }
    }
    pub(crate) fn add(&mut self, id: ChunkId) {
        self.engine.table().pin(id);
        self.ids.push(id);
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        self.engine.table().unpin(&self.ids);
    }
}

impl Engine {
    /// Ingest a body. Chunking, hashing, compression and disk I/O all run on blocking threads;
    /// this future only moves frames. Nothing is referenced yet: the caller commits the
    /// manifest, and an ingest that is dropped or fails leaves only unreferenced chunks, which
    /// GC reclaims.
    pub async fn ingest<S, E>(&self, mut body: S, admit: impl Admit) -> Result<Ingested>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let started = Instant::now();
        let (frame_tx, frame_rx) = mpsc::channel::<Bytes>(FRAME_QUEUE);
        let (chunk_tx, chunk_rx) = sync_channel(CHUNKS_IN_FLIGHT);
        let aborted = Arc::new(AtomicBool::new(false));

        let cutter = self.inner.cutter.clone();
        let level = self.config().zstd_level;
        let cut_aborted = aborted.clone();
        let cut = tokio::task::spawn_blocking(move || cut_stage(frame_rx, chunk_tx, cutter, level, &cut_aborted));
        let engine = self.clone();
        let write_aborted = aborted.clone();
        let write = tokio::task::spawn_blocking(move || Writer::new(engine, admit).run(chunk_rx, &write_aborted));

        let mut body_error = None;
        while let Some(frame) = body.next().await {
            match frame {
                Ok(bytes) => {
                    self.metrics().ingest_bytes.inc_by(bytes.len() as u64);
                    if frame_tx.send(bytes).await.is_err() {
                        break; // the writer stopped early; its result says why
                    }
                }
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            }
        }
        if body_error.is_some() {
            aborted.store(true, Ordering::Release);
        }
        drop(frame_tx);
        let _ = cut.await;
        let result = write.await.map_err(|e| Error::corrupt(format!("ingest writer panicked: {e}")))?;
        if let Some(e) = body_error {
            return Err(Error::Body(e));
        }
        self.metrics().ingest_seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    /// Store one chunk exactly as given (the chunk API: the client chose the cut), if it hashes
    /// to `expected`. Blocking.
    pub fn ingest_chunk(&self, raw: Bytes, expected: &ChunkId, admit: impl Admit) -> Result<Ingested> {
        let sealed = codec::seal(raw, self.config().zstd_level);
        if sealed.id != *expected {
            return Err(Error::HashMismatch { expected: *expected, actual: sealed.id });
        }
        self.metrics().ingest_bytes.inc_by(sealed.raw.len() as u64);
        let mut writer = Writer::new(self.clone(), admit);
        writer.take(sealed)?;
        writer.finish()
    }

    /// Adopt a client's chunk list as an upload: every chunk must be one the account holds
    /// (those it does not are returned as missing), with the length the index has. The chunks
    /// are pinned first, so GC cannot take one between this check and the commit; the
    /// whole-content hash is computed by reading them back, which also verifies them. Blocking.
    pub fn adopt_chunks(
        &self,
        account: &AccountId,
        chunks: Vec<(ChunkId, u32)>,
    ) -> Result<std::result::Result<Ingested, Adoption>> {
        let mut pins = Pins::new(self.clone());
        let mut distinct: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        distinct.sort_unstable();
        distinct.dedup();
        for id in &distinct {
            pins.add(*id);
        }
        let held = self.holds(account, &distinct)?;
        let missing: Vec<ChunkId> = distinct.iter().zip(held).filter(|(_, h)| !h).map(|(id, _)| *id).collect();
        if !missing.is_empty() {
            return Ok(Err(Adoption::Missing(missing)));
        }
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        for (id, len) in &chunks {
            let rec = self.db().chunk(id)?.ok_or(Error::MissingChunk(*id))?;
            if rec.entry.raw_len != *len {
                return Ok(Err(Adoption::WrongSize { id: *id, size: *len, actual: rec.entry.raw_len }));
            }
            hasher.update(&self.packs().read_chunk(rec.pack, &rec.entry, true)?);
            size += u64::from(*len);
        }
        let manifest = Manifest { size, hash: *hasher.finalize().as_bytes(), chunks };
        Ok(Ok(Ingested { manifest, new_chunks: 0, new_stored_bytes: 0, _pins: pins }))
    }

    /// Ingest an in-memory buffer (tests, benches, small records).
    pub async fn ingest_bytes(&self, data: Bytes) -> Result<Ingested> {
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(data)]);
        self.ingest(body, AdmitAll).await
    }
}

fn cut_stage(
    mut frames: mpsc::Receiver<Bytes>,
    out: SyncSender<oneshot::Receiver<SealedChunk>>,
    cutter: Cutter,
    level: i32,
    aborted: &AtomicBool,
) {
    let window = cutter.params().max as usize;
    let mut buf = BytesMut::new();
    loop {
        let frame = frames.blocking_recv();
        let at_end = frame.is_none();
        if at_end && aborted.load(Ordering::Acquire) {
            return; // a broken body must not turn its last partial chunk into data
        }
        if let Some(f) = frame {
            if buf.capacity() - buf.len() < f.len() {
                buf.reserve(f.len().max(4 * window));
            }
            buf.extend_from_slice(&f);
        }
        while let Some(n) = cutter.next_cut(&buf, at_end) {
            let raw = buf.split_to(n).freeze();
            let (tx, rx) = oneshot::channel();
            rayon::spawn(move || {
                let _ = tx.send(codec::seal(raw, level));
            });
            if out.send(rx).is_err() {
                return;
            }
        }
        if at_end {
            return;
        }
    }
}

struct Writer<A> {
    engine: Engine,
    admit: A,
    hasher: blake3::Hasher,
    size: u64,
    chunks: Vec<(ChunkId, u32)>,
    seen: HashSet<ChunkId>,
    pins: Pins,
    /// Appended by us, not yet durable and indexed; we hold their claims.
    pending: Vec<Appended>,
    new_chunks: u64,
    new_stored_bytes: u64,
}

impl<A: Admit> Writer<A> {
    fn new(engine: Engine, admit: A) -> Self {
        Writer {
            pins: Pins::new(engine.clone()),
            engine,
            admit,
            hasher: blake3::Hasher::new(),
            size: 0,
            chunks: Vec::new(),
            seen: HashSet::new(),
            pending: Vec::new(),
            new_chunks: 0,
            new_stored_bytes: 0,
        }
    }

    fn run(mut self, chunks: Receiver<oneshot::Receiver<SealedChunk>>, aborted: &AtomicBool) -> Result<Ingested> {
        for next in chunks {
            let chunk = next.blocking_recv().map_err(|_| Error::corrupt("a compression worker died"))?;
            self.take(chunk)?;
        }
        if aborted.load(Ordering::Acquire) {
            return Err(Error::Body("aborted".into()));
        }
        self.finish()
    }

    fn finish(mut self) -> Result<Ingested> {
        self.flush()?;
        let manifest = Manifest {
            size: self.size,
            hash: *self.hasher.finalize().as_bytes(),
            chunks: std::mem::take(&mut self.chunks),
        };
        Ok(Ingested {
            manifest,
            new_chunks: self.new_chunks,
            new_stored_bytes: self.new_stored_bytes,
            _pins: std::mem::replace(&mut self.pins, Pins::new(self.engine.clone())),
        })
    }

    fn take(&mut self, chunk: SealedChunk) -> Result<()> {
        let raw_len = chunk.raw_len();
        self.hasher.update(&chunk.raw);
        self.size += u64::from(raw_len);
        self.chunks.push((chunk.id, raw_len));
        if !self.seen.insert(chunk.id) {
            return Ok(());
        }
        self.admit.admit(&chunk.id, raw_len)?;
        self.pins.add(chunk.id);
        let engine = self.engine.clone();
        let table = engine.table();
        while !table.try_claim(chunk.id) {
            self.flush()?; // release our own claims before waiting on someone else's
            table.wait_unclaimed(&chunk.id);
        }
        let known = match self.engine.db().chunk(&chunk.id) {
            Ok(found) => found.is_some(),
            Err(e) => {
                table.release([&chunk.id]);
                return Err(e);
            }
        };
        if known {
            table.release([&chunk.id]);
            self.engine.metrics().chunks_dedup.inc();
            return Ok(());
        }
        let appended = match self.engine.packs().append(&chunk) {
            Ok((appended, sealed)) => {
                if let Some(p) = sealed {
                    self.engine.record_sealed(&p)?;
                }
                appended
            }
            Err(e) => {
                table.release([&chunk.id]);
                return Err(e);
            }
        };
        let stored = appended.entry.end() - appended.entry.offset;
        self.new_chunks += 1;
        self.new_stored_bytes += stored;
        self.engine.metrics().chunks_new.inc();
        self.engine.metrics().stored_bytes.inc_by(stored);
        self.pending.push(appended);
        if self.pending.len() >= INDEX_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Make pending chunks durable, index them, and release their claims. The index write is
    /// not synced: nothing references these chunks until the caller's synced commit, which
    /// follows in the same WAL and so makes them durable first.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let engine = self.engine.clone();
        let result = (|| {
            for a in &self.pending {
                engine.packs().sync(a)?;
            }
            let now = unix_now();
            let cf = engine.db().cf(CF_CHUNKS);
            let mut batch = WriteBatch::default();
            for a in &self.pending {
                let rec = ChunkRecord { pack: a.pack_id, entry: a.entry, refs: 0, zero_since: now };
                batch.merge_cf(cf, keys::chunk_key(&a.entry.id), keys::encode_op(&ChunkOp::Insert(rec)));
            }
            engine.db().write_unsynced(batch)
        })();
        engine.table().release(self.pending.iter().map(|a| &a.entry.id));
        engine.packs().settle(&self.pending);
        self.pending.clear();
        result
    }
}

impl<A> Drop for Writer<A> {
    /// An ingest that fails keeps no claims: whatever it appended but did not index is dead
    /// bytes in a pack, and another upload may store those chunks anew.
    fn drop(&mut self) {
        self.engine.table().release(self.pending.iter().map(|a| &a.entry.id));
        self.engine.packs().settle(&self.pending);
    }
}
