//! Streaming reads: a chunk list (or a byte range of it) in, a stream of verified bytes out.
//!
//! One blocking thread per read looks chunks up, reads and checks them, and hands them over a
//! queue of `READ_AHEAD` chunks: the disk stays busy while the client drains, and memory is
//! bounded. A client that goes away closes the queue, which stops the thread.

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Engine;
use crate::chunk::ChunkId;
use crate::error::{Error, Result};

const READ_AHEAD: usize = 4;

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
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let rec = self.db().chunk(id)?.ok_or(Error::MissingChunk(*id))?;
        self.read_piece(id, rec.entry.raw_len)
    }

    /// Stream `range` of the object made of `chunks`. An error (a missing or damaged chunk)
    /// arrives in place of the bytes it would have produced, and ends the stream.
    pub fn read_stream(&self, chunks: Vec<(ChunkId, u32)>, range: ByteRange) -> impl Stream<Item = Result<Bytes>> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut pos = 0u64;
            for (id, len) in chunks {
                let (start, end) = (pos, pos + u64::from(len));
                pos = end;
                if end <= range.start {
                    continue;
                }
                if start >= range.end {
                    break;
                }
                let piece = engine.read_piece(&id, len).map(|raw| {
                    let from = range.start.saturating_sub(start) as usize;
                    let to = (range.end.min(end) - start) as usize;
                    Bytes::from(raw).slice(from..to)
                });
                let failed = piece.is_err();
                if let Ok(b) = &piece {
                    engine.metrics().read_bytes.inc_by(b.len() as u64);
                }
                if tx.blocking_send(piece).is_err() || failed {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }

    fn read_piece(&self, id: &ChunkId, len: u32) -> Result<Vec<u8>> {
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
        use futures::StreamExt;
        let size = chunks.iter().map(|(_, l)| u64::from(*l)).sum();
        let mut out = Vec::with_capacity(size as usize);
        let mut s = std::pin::pin!(self.read_stream(chunks, ByteRange::all(size)));
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }
}
