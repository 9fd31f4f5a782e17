//! Streaming reads: a chunk list (or a byte range of it) in, a stream of verified bytes out.
//!
//! One blocking thread per read looks chunks up, reads and checks them, and hands them over a
//! queue of `READ_AHEAD` chunks: the disk stays busy while the client drains, and memory is
//! bounded. A client that goes away closes the queue, which stops the thread.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Engine;
use crate::chunk::ChunkId;
use crate::codec::Compression;
use crate::error::{Error, Result};

/// Batches queued ahead of the client, each of about `BATCH_BYTES`: 4 MiB at most in memory.
const READ_AHEAD: usize = 4;
/// A read thread looks up and reads about this much at a time, and hands it over as one
/// message.
const BATCH_BYTES: u64 = 1 << 20;

/// Half-open byte range `[start, end)` of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn all(size: u64) -> Self {
        ByteRange { start: 0, end: size }
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

impl Engine {
    /// Read one chunk by id, verified (whatever `verify_reads` says: a lone chunk is cheap).
    /// Blocking.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Bytes> {
        let rec = self.db().chunk(id)?.ok_or(Error::MissingChunk(*id))?;
        self.read_piece(id, rec.entry.raw_len)
    }

    /// Stream `range` of the object made of `chunks`. An error (a missing or damaged chunk)
    /// arrives in place of the bytes it would have produced, and ends the stream.
    pub fn read_stream(&self, chunks: Vec<(ChunkId, u32)>, range: ByteRange) -> impl Stream<Item = Result<Bytes>> {
        let (tx, rx) = mpsc::channel::<Vec<Result<Bytes>>>(READ_AHEAD);
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut pos = 0u64;
            let mut wanted = chunks.into_iter().filter_map(move |(id, len)| {
                let (start, end) = (pos, pos + u64::from(len));
                pos = end;
                (end > range.start && start < range.end).then_some((id, len, start))
            });
            loop {
                let mut batch = Vec::new();
                let mut bytes = 0u64;
                for piece in wanted.by_ref() {
                    bytes += u64::from(piece.1);
                    batch.push(piece);
                    if bytes >= BATCH_BYTES {
                        break;
                    }
                }
                if batch.is_empty() {
                    return;
                }
                let pieces = engine.read_batch(&batch, range);
                let failed = pieces.last().is_some_and(|p| p.is_err());
                let read: u64 = pieces.iter().filter_map(|p| p.as_ref().ok()).map(|b| b.len() as u64).sum();
                engine.metrics().read_bytes.inc_by(read);
                if tx.blocking_send(pieces).is_err() || failed {
                    return;
                }
            }
        });
        ReceiverStream::new(rx).flat_map(futures::stream::iter)
    }

    /// Read a batch of consecutive pieces of an object (`(id, len, offset in the object)`),
    /// cut to `range`. Chunks that lie back to back in one pack (as those of a file ingested in
    /// one go do) are read with one positioned read per run. The answer ends at the first error.
    fn read_batch(&self, batch: &[(ChunkId, u32, u64)], range: ByteRange) -> Vec<Result<Bytes>> {
        let cut = |raw: Bytes, len: u32, start: u64| {
            let from = range.start.saturating_sub(start) as usize;
            let to = (range.end.min(start + u64::from(len)) - start) as usize;
            raw.slice(from..to)
        };
        // Look the batch up, in one call to the index; a lookup that fails ends it after the
        // pieces before it.
        let ids: Vec<ChunkId> = batch.iter().map(|(id, _, _)| *id).collect();
        let looked = self.db().chunks_each(&ids);
        let mut found = Vec::with_capacity(batch.len());
        let mut failed = None;
        for ((id, len, _), rec) in batch.iter().zip(looked) {
            match rec {
                Ok(Some(rec)) if rec.entry.raw_len == *len => found.push(rec),
                Ok(Some(rec)) => {
                    failed = Some(Error::corrupt(format!(
                        "chunk {id}: manifest says {len} bytes, index {}",
                        rec.entry.raw_len
                    )));
                    break;
                }
                Ok(None) => {
                    failed = Some(Error::MissingChunk(*id));
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let verify = self.config().verify_reads;
        let mut out = Vec::with_capacity(batch.len());
        let mut at = 0;
        while at < found.len() {
            let pack = found[at].pack;
            let mut end = at + 1;
            while end < found.len() && found[end].pack == pack && found[end - 1].entry.end() == found[end].entry.offset
            {
                end += 1;
            }
            let run: Vec<_> = found[at..end].iter().map(|r| r.entry).collect();
            // Once per run at most, and cached: a 4 KiB range read of a tag 2 chunk reads its
            // entry, plus its pack's dictionary once per process.
            let dict = if run.iter().any(|e| e.compression == Compression::ZstdDict) {
                match self.packs().dictionary(pack) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            } else {
                None
            };
            match self.packs().read_stored_run(pack, &run) {
                Ok(stored) => {
                    for ((s, e), (_, len, start)) in stored.into_iter().zip(&run).zip(&batch[at..end]) {
                        match crate::pack::unseal_checked(pack, e, s, verify, dict.as_deref()) {
                            Ok(raw) => out.push(Ok(cut(raw, *len, *start))),
                            Err(err) => {
                                out.push(Err(err));
                                return out;
                            }
                        }
                    }
                }
                // Compaction moved a chunk of the run and deleted its pack between our lookup
                // and our read: read the rest one by one, looking each up again.
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    for (id, len, start) in &batch[at..found.len()] {
                        let piece = self.read_piece(id, *len).map(|raw| cut(raw, *len, *start));
                        let bad = piece.is_err();
                        out.push(piece);
                        if bad {
                            return out;
                        }
                    }
                    break;
                }
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
            at = end;
        }
        out.extend(failed.map(Err));
        out
    }

    fn read_piece(&self, id: &ChunkId, len: u32) -> Result<Bytes> {
        let rec = self.db().chunk(id)?.ok_or(Error::MissingChunk(*id))?;
        if rec.entry.raw_len != len {
            return Err(Error::corrupt(format!("chunk {id}: manifest says {len} bytes, index {}", rec.entry.raw_len)));
        }
        match self.packs().read_chunk(rec.pack, &rec.entry, self.config().verify_reads) {
            // Compaction moved the chunk and deleted its old pack between our lookup and our
            // read: look it up again.
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                let moved = self.db().chunk(id)?.ok_or(Error::MissingChunk(*id))?;
                self.packs().read_chunk(moved.pack, &moved.entry, self.config().verify_reads)
            }
            other => other,
        }
    }

    /// Read a whole object into memory (tests and small objects).
    pub async fn read_all(&self, chunks: Vec<(ChunkId, u32)>) -> Result<Vec<u8>> {
        let size = chunks.iter().map(|(_, l)| u64::from(*l)).sum();
        let mut out = Vec::with_capacity(size as usize);
        let mut s = std::pin::pin!(self.read_stream(chunks, ByteRange::all(size)));
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }
}
