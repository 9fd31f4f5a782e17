//! Streaming ingest: an async byte stream in, a manifest out, every new chunk durable in a pack
//! and in the index.
//!
//! Three stages overlap so that one upload keeps both cores busy:
//! ```text
//! runtime task        cutter thread            rayon workers           writer thread
//! body frames ──────► FastCDC cut ──batch──►  BLAKE3 + zstd  ──in order──► dedup, append,
//!    (bounded queue)                (bounded queue of results)              sync, index
//! ```
//! Every queue is bounded, so memory is flat whatever the body's length: at most
//! `FRAME_QUEUE` frames, one `max`-sized cut window, and `BATCHES_IN_FLIGHT` batches of about
//! `BATCH_BYTES` exist at once. The writer keeps one entry per chunk of the manifest (36 bytes
//! per 64 KiB).
//!
//! Chunks travel in batches, not one by one: each hand-off between threads is a wake-up (a
//! futex call, often a context switch), and three per 64 KiB chunk cost more CPU on two cores
//! than zstd did on incompressible data (docs/benchmarks.md).
//!
//! The writer is the one serial stage that touches the disk, so it does as little else as it
//! can: the whole-content hash is taken by the cutter, which sees the body in order anyway, and
//! each group of `INDEX_EVERY` new chunks is made durable and indexed on a helper thread while
//! the writer appends the next group (one group in flight at a time, in order). Without that
//! overlap every `fdatasync` stalled the whole pipeline, because the bounded queues hold only a
//! few milliseconds of work.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self as std_mpsc, sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use rocksdb::WriteBatch;
use tokio::sync::{mpsc, oneshot};

use super::Engine;
use crate::chunk::{ChunkId, Cutter};
use crate::codec::{self, SealedChunk};
use crate::error::{Error, Result};
use crate::pack::{Appended, Lane};
use crate::store::keys::{self, AccountId, ChunkOp, ChunkRecord, Manifest};
use crate::store::CF_CHUNKS;

const FRAME_QUEUE: usize = 16;
/// A batch is handed on once it holds this many bytes of chunks (or the input ends).
const BATCH_BYTES: usize = 1 << 20;
/// Batches cut and not yet written: enough to keep every worker busy while the writer writes.
const BATCHES_IN_FLIGHT: usize = 6;
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

/// One piece of a resumable upload, ingested (`Engine::ingest_piece`).
pub struct Piece {
    /// The chunks cut from the old tail and this body; pinned until dropped.
    pub ingested: Ingested,
    /// What is left uncut, to go in front of the next piece.
    pub tail: Bytes,
    /// Bytes of the body that arrived (the old tail not counted).
    pub received: u64,
    /// Why the body ended early, if it did; what arrived before is in the piece.
    pub body_error: Option<String>,
}

/// How the cutter treats the end of its input.
#[derive(Clone, Copy)]
enum Ending {
    /// A whole upload: the end is a cut, a broken body is no content at all.
    Whole,
    /// A piece of a resumable upload: the end is a cut only for the `last` piece arriving
    /// whole; otherwise what is left after the last content-defined cut is the tail.
    Piece { last: bool },
}

/// What one run of the pipeline produced.
struct Run {
    ingested: Ingested,
    hash: blake3::Hash,
    tail: Bytes,
    received: u64,
    body_error: Option<String>,
}

/// Why a client's chunk list cannot become an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    Missing(Vec<ChunkId>),
    WrongSize {
        id: ChunkId,
        size: u32,
        actual: u32,
    },
    /// The listed sizes add up to more than the caller allows (a raw upload of that size would
    /// be refused before its first byte, so a list of references may not ask for it either).
    TooLarge {
        size: u64,
    },
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
    pub async fn ingest<S, E>(&self, body: S, admit: impl Admit) -> Result<Ingested>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let started = Instant::now();
        let run = self.run_ingest(Bytes::new(), body, Ending::Whole, admit).await?;
        let mut ingested = run.ingested;
        ingested.manifest.hash = *run.hash.as_bytes();
        self.metrics().ingest_seconds.observe(started.elapsed().as_secs_f64());
        Ok(ingested)
    }

    /// Ingest one piece of an upload that arrives over several requests (tus): `tail` (the
    /// bytes the previous piece left uncut) and then `body` go through the cutter, so that
    /// chunk boundaries fall where one whole upload would put them. The bytes after the last
    /// content-defined cut come back as the new tail (shorter than the largest chunk), unless
    /// `last` says this piece ends the upload and it arrived whole. A body that breaks keeps
    /// what arrived before the break: that is the point of resuming. The manifest's hash is not
    /// filled in (the caller hashes the whole content when it has it).
    pub async fn ingest_piece<S, E>(&self, tail: Bytes, body: S, last: bool, admit: impl Admit) -> Result<Piece>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let run = self.run_ingest(tail, body, Ending::Piece { last }, admit).await?;
        Ok(Piece { ingested: run.ingested, tail: run.tail, received: run.received, body_error: run.body_error })
    }

    async fn run_ingest<S, E>(&self, tail: Bytes, mut body: S, ending: Ending, admit: impl Admit) -> Result<Run>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (frame_tx, frame_rx) = mpsc::channel::<Bytes>(FRAME_QUEUE);
        let (chunk_tx, chunk_rx) = sync_channel(BATCHES_IN_FLIGHT);
        let aborted = Arc::new(AtomicBool::new(false));

        let cutter = self.inner.cutter.clone();
        let seal = Seal {
            level: self.config().zstd_level,
            keyring: self.keyring().clone(),
            dicts: self.packs().dictionaries(),
        };
        let cut_aborted = aborted.clone();
        let cut =
            tokio::task::spawn_blocking(move || cut_stage(frame_rx, chunk_tx, cutter, seal, &cut_aborted, ending));
        let engine = self.clone();
        let write_aborted = aborted.clone();
        let write =
            tokio::task::spawn_blocking(move || Writer::new(engine, admit).run(chunk_rx, &write_aborted, ending));

        let mut body_error = None;
        let mut received = 0u64;
        let mut open = tail.is_empty() || frame_tx.send(tail).await.is_ok();
        while open {
            match body.next().await {
                None => break,
                Some(Ok(bytes)) => {
                    self.metrics().ingest_bytes.inc_by(bytes.len() as u64);
                    received += bytes.len() as u64;
                    open = frame_tx.send(bytes).await.is_ok(); // closed: the writer stopped early
                }
                Some(Err(e)) => {
                    body_error = Some(e.to_string());
                    break;
                }
            }
        }
        if body_error.is_some() {
            aborted.store(true, Ordering::Release);
        }
        drop(frame_tx);
        let cut = cut.await;
        let result = write.await.map_err(|e| Error::corrupt(format!("ingest writer panicked: {e}")))?;
        if let (Some(e), Ending::Whole) = (&body_error, ending) {
            return Err(Error::Body(e.clone()));
        }
        let ingested = result?;
        // The writer ends well when the chunk queue closes, which a cutter that panicked also
        // does: only a cutter that saw the end of the body vouches for the manifest.
        let (hash, tail) = cut
            .map_err(|e| Error::corrupt(format!("ingest cutter panicked: {e}")))?
            .ok_or_else(|| Error::corrupt("ingest cutter stopped before the end of the body"))?;
        Ok(Run { ingested, hash, tail, received, body_error })
    }

    /// Store one chunk exactly as given (the chunk API: the client chose the cut), if it hashes
    /// to `expected`. Blocking.
    pub fn ingest_chunk(&self, raw: Bytes, expected: &ChunkId, admit: impl Admit) -> Result<Ingested> {
        let dict = self.packs().dictionaries().current(Lane::Uploads);
        let sealed = codec::seal_with(raw, self.config().zstd_level, dict.as_ref());
        if sealed.id != *expected {
            return Err(Error::HashMismatch { expected: *expected, actual: sealed.id });
        }
        self.metrics().ingest_bytes.inc_by(sealed.raw.len() as u64);
        let hash = sealed.id.0; // one chunk: its id is the hash of the whole content
        let mut writer = Writer::new(self.clone(), admit);
        writer.take(sealed)?;
        let mut ingested = writer.finish()?;
        ingested.manifest.hash = hash;
        Ok(ingested)
    }

    /// Adopt a client's chunk list as an upload: every chunk must be one the account holds
    /// (those it does not are returned as missing), with the length the index has, and the
    /// sizes may add up to at most `max_size`. The chunks are pinned first, so GC cannot take
    /// one between this check and the commit. The whole-content hash is computed by reading
    /// them back: each distinct chunk is read and verified once, a repeat of the one before it
    /// (a run of zeros, say) is hashed again from memory, and any other repeat is read without a
    /// second verification. So the work is bounded by `max_size` bytes of hashing, whatever the
    /// list repeats. Blocking.
    pub fn adopt_chunks(
        &self,
        account: &AccountId,
        chunks: Vec<(ChunkId, u32)>,
        max_size: u64,
    ) -> Result<std::result::Result<Ingested, Adoption>> {
        let size: u64 = chunks.iter().map(|(_, len)| u64::from(*len)).sum();
        if size > max_size {
            return Ok(Err(Adoption::TooLarge { size }));
        }
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
        let mut records = HashMap::with_capacity(distinct.len());
        for (id, rec) in distinct.iter().zip(self.db().chunks(&distinct)?) {
            records.insert(*id, (rec.ok_or(Error::MissingChunk(*id))?, false));
        }
        let mut hasher = blake3::Hasher::new();
        let mut last: Option<(ChunkId, Bytes)> = None;
        for (id, len) in &chunks {
            let (rec, verified) = records.get_mut(id).expect("every listed id was looked up");
            if rec.entry.raw_len != *len {
                return Ok(Err(Adoption::WrongSize { id: *id, size: *len, actual: rec.entry.raw_len }));
            }
            if last.as_ref().is_none_or(|(l, _)| l != id) {
                let raw = self.packs().read_chunk(rec.pack, &rec.entry, !*verified)?;
                *verified = true;
                last = Some((*id, raw));
            }
            hasher.update(&last.as_ref().expect("just read").1);
        }
        let manifest = Manifest { size, hash: *hasher.finalize().as_bytes(), chunks };
        Ok(Ok(Ingested { manifest, new_chunks: 0, new_stored_bytes: 0, _pins: pins }))
    }

    /// Ingest an in-memory buffer (tests, benches, small records). It goes in as 1 MiB views
    /// (no copy): as one frame, the cutter would first copy the whole of it into its window
    /// buffer, holding the data twice and starting to cut only once the copy was done.
    pub async fn ingest_bytes(&self, data: Bytes) -> Result<Ingested> {
        const FRAME: usize = 1 << 20;
        let frames = (0..data.len())
            .step_by(FRAME)
            .map(move |at| Ok::<_, std::convert::Infallible>(data.slice(at..data.len().min(at + FRAME))));
        self.ingest(futures::stream::iter(frames), AdmitAll).await
    }
}

/// What a worker does to each chunk: hash and compress it (against the uploads' lane's
/// dictionary, once it has one: `pack::dicts`), then encrypt it under the current data key, so
/// that the writer, the one serial stage, only writes.
#[derive(Clone)]
struct Seal {
    level: i32,
    keyring: Arc<crate::pack::Keyring>,
    dicts: Arc<crate::pack::LaneDicts>,
}

impl Seal {
    /// A chunk that cannot be encrypted here goes on plain; the pack layer seals it (or
    /// reports why it cannot) at append.
    fn run(&self, raw: Bytes) -> SealedChunk {
        let dict = self.dicts.current(Lane::Uploads);
        let chunk = codec::seal_with(raw, self.level, dict.as_ref());
        let keys = self.keyring.keys();
        match crate::pack::encrypt(&keys, chunk.clone()) {
            Ok(sealed) => sealed,
            Err(_) => chunk,
        }
    }
}

/// Chunks cut in order and sealed together by one rayon job.
struct Batch {
    raws: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    fn new() -> Self {
        Batch { raws: Vec::new(), bytes: 0 }
    }

    /// Hand the batch to a rayon worker; the writer gets its sealed chunks, in order, through
    /// `out`. False if the writer has quit.
    fn send(&mut self, seal: &Seal, out: &SyncSender<oneshot::Receiver<Vec<SealedChunk>>>) -> bool {
        if self.raws.is_empty() {
            return true;
        }
        let raws = std::mem::take(&mut self.raws);
        self.bytes = 0;
        let (tx, rx) = oneshot::channel();
        let seal = seal.clone();
        rayon::spawn(move || {
            let _ = tx.send(raws.into_iter().map(|raw| seal.run(raw)).collect());
        });
        out.send(rx).is_ok()
    }
}

/// Cut the body into chunks and hand them in batches to rayon workers to seal. Returns the
/// BLAKE3 of everything it was given and the uncut tail (empty unless `ending` keeps one), or
/// `None` if it stopped before the end (an aborted whole body, a writer that quit).
fn cut_stage(
    mut frames: mpsc::Receiver<Bytes>,
    out: SyncSender<oneshot::Receiver<Vec<SealedChunk>>>,
    cutter: Cutter,
    seal: Seal,
    aborted: &AtomicBool,
    ending: Ending,
) -> Option<(blake3::Hash, Bytes)> {
    let window = cutter.params().max as usize;
    let mut buf = BytesMut::new();
    let mut hasher = blake3::Hasher::new();
    let mut batch = Batch::new();
    loop {
        let frame = frames.blocking_recv();
        let at_end = frame.is_none();
        let broken = at_end && aborted.load(Ordering::Acquire);
        let final_cut = match ending {
            // a broken body must not turn its last partial chunk into data
            Ending::Whole if broken => return None,
            Ending::Whole => at_end,
            Ending::Piece { last } => at_end && last && !broken,
        };
        if let Some(f) = frame {
            hasher.update(&f);
            if buf.capacity() - buf.len() < f.len() {
                buf.reserve(f.len().max(4 * window));
            }
            buf.extend_from_slice(&f);
        }
        while let Some(n) = cutter.next_cut(&buf, final_cut) {
            batch.bytes += n;
            batch.raws.push(buf.split_to(n).freeze());
            if batch.bytes >= BATCH_BYTES && !batch.send(&seal, &out) {
                return None;
            }
        }
        if at_end {
            return batch.send(&seal, &out).then(|| (hasher.finalize(), buf.freeze()));
        }
    }
}

struct Writer<A> {
    engine: Engine,
    admit: A,
    size: u64,
    chunks: Vec<(ChunkId, u32)>,
    seen: HashSet<ChunkId>,
    pins: Pins,
    /// Appended by us, not yet durable and indexed; we hold their claims.
    pending: Vec<Appended>,
    /// The previous group, being made durable and indexed on a helper thread, which releases
    /// its claims when done (or if it fails). Its outcome arrives here.
    flushing: Option<std_mpsc::Receiver<Result<()>>>,
    new_chunks: u64,
    new_stored_bytes: u64,
}

impl<A: Admit> Writer<A> {
    fn new(engine: Engine, admit: A) -> Self {
        Writer {
            pins: Pins::new(engine.clone()),
            engine,
            admit,
            size: 0,
            chunks: Vec::new(),
            seen: HashSet::new(),
            pending: Vec::new(),
            flushing: None,
            new_chunks: 0,
            new_stored_bytes: 0,
        }
    }

    fn run(
        mut self,
        batches: Receiver<oneshot::Receiver<Vec<SealedChunk>>>,
        aborted: &AtomicBool,
        ending: Ending,
    ) -> Result<Ingested> {
        for next in batches {
            let batch = next.blocking_recv().map_err(|_| Error::corrupt("a compression worker died"))?;
            for chunk in batch {
                self.take(chunk)?;
            }
        }
        if matches!(ending, Ending::Whole) && aborted.load(Ordering::Acquire) {
            return Err(Error::Body("aborted".into()));
        }
        self.finish()
    }

    fn finish(mut self) -> Result<Ingested> {
        self.flush()?;
        // `ingest` fills in the whole-content hash, which the cutter computed.
        let manifest = Manifest { size: self.size, hash: [0; 32], chunks: std::mem::take(&mut self.chunks) };
        Ok(Ingested {
            manifest,
            new_chunks: self.new_chunks,
            new_stored_bytes: self.new_stored_bytes,
            _pins: std::mem::replace(&mut self.pins, Pins::new(self.engine.clone())),
        })
    }

    fn take(&mut self, chunk: SealedChunk) -> Result<()> {
        let raw_len = chunk.raw_len();
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
        let (appended, sealed) = match self.engine.packs().append(Lane::Uploads, &chunk) {
            Ok(done) => done,
            Err(e) => {
                table.release([&chunk.id]);
                return Err(e);
            }
        };
        // This chunk may have completed the lane's next dictionary: recorded before any chunk
        // is compressed against it (`engine::dicts`).
        if let Err(e) = self.engine.record_dictionary() {
            tracing::warn!(error = %e, "cannot record a new pack dictionary; the lane makes another");
        }
        let stored = appended.entry.end() - appended.entry.offset;
        self.new_chunks += 1;
        self.new_stored_bytes += stored;
        self.engine.metrics().chunks_new.inc();
        self.engine.metrics().stored_bytes.inc_by(stored);
        self.pending.push(appended);
        // Recorded only once the append is pending, so that a failure here still releases
        // its claim and hold (in `drop`).
        if let Some(p) = sealed {
            self.engine.record_sealed(&p)?;
        }
        if self.pending.len() >= INDEX_EVERY {
            self.flush_begin()?;
        }
        Ok(())
    }

    /// Start making the pending chunks durable and indexed on a helper thread, once the group
    /// before them is done (so groups are indexed in order, and at most one is in flight).
    fn flush_begin(&mut self) -> Result<()> {
        self.flush_wait()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let group = Group { engine: self.engine.clone(), appended: std::mem::take(&mut self.pending) };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                // If the runtime is shutting down the job is dropped unrun: the group releases
                // its claims, the sender goes away, and `flush_wait` reports the failure.
                let (done, outcome) = std_mpsc::sync_channel(1);
                rt.spawn_blocking(move || {
                    let outcome = group.index();
                    drop(group); // release the claims before the writer hears it is done
                    let _ = done.send(outcome);
                });
                self.flushing = Some(outcome);
                Ok(())
            }
            Err(_) => group.index(),
        }
    }

    /// Wait for the group in flight, if any, and return its outcome.
    fn flush_wait(&mut self) -> Result<()> {
        match self.flushing.take() {
            None => Ok(()),
            Some(done) => done.recv().unwrap_or_else(|_| Err(Error::corrupt("the ingest index thread died"))),
        }
    }

    /// Make every chunk appended so far durable and indexed, and release all our claims.
    fn flush(&mut self) -> Result<()> {
        self.flush_begin()?;
        self.flush_wait()
    }
}

/// A group of appended chunks on its way to the index. Whatever happens to it, its claims are
/// released when it is dropped.
struct Group {
    engine: Engine,
    appended: Vec<Appended>,
}

impl Group {
    /// Make the group durable, then index it. The index write is not synced: nothing references
    /// these chunks until the caller's synced commit, which follows in the same WAL and so
    /// makes them durable first.
    fn index(&self) -> Result<()> {
        let engine = &self.engine;
        for a in &self.appended {
            engine.packs().sync(a)?;
        }
        let now = engine.clock().now_secs();
        let cf = engine.db().cf(CF_CHUNKS);
        let mut batch = WriteBatch::default();
        for a in &self.appended {
            let rec = ChunkRecord { pack: a.pack_id, entry: a.entry, refs: 0, zero_since: now };
            batch.merge_cf(cf, keys::chunk_key(&a.entry.id), keys::encode_op(&ChunkOp::Insert(rec)));
        }
        engine.db().write_unsynced(batch)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.engine.table().release(self.appended.iter().map(|a| &a.entry.id));
        self.engine.packs().settle(&self.appended);
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
