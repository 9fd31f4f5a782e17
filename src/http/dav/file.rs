//! Files as `dav-server` reads and writes them.
//!
//! Writing: a PUT's body is handed over piece by piece (`write_bytes`), then `flush`. The
//! pieces go through a small channel to one `Drive::put` that streams them through the engine
//! like a `/v1/files` upload; `flush` ends the stream and waits for the commit. A body that
//! ends any other way (the client went, a body error, dav-server gave up) ends the stream with
//! an error, so nothing half-written is ever committed.
//!
//! Reading: chunk by chunk from the engine after a seek; dav-server asks for at most
//! `read_buf_size` bytes at a time and takes short reads.

use std::fmt;
use std::io::SeekFrom;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::fs::{DriveFs, Meta};
use crate::chunk::ChunkId;
use crate::drive::{DriveError, Upload};
use crate::engine::{Engine, Put};
use crate::store::keys::ObjectRecord;

/// Body pieces in flight between dav-server and the ingest: a little read-ahead, bounded.
const IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
#[error("the request body ended before it was complete")]
struct Cut;

pub struct WriteFile {
    fs: DriveFs,
    tx: Option<mpsc::Sender<Bytes>>,
    /// Set by `flush` before the sender goes: only then is the end of the stream the end of the
    /// file.
    finished: Arc<AtomicBool>,
    task: Option<JoinHandle<Result<Put, DriveError>>>,
    done: Option<Meta>,
}

impl fmt::Debug for WriteFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteFile").field("done", &self.done).finish()
    }
}

impl WriteFile {
    pub fn start(fs: DriveFs, path: String, declared: Option<u64>) -> Self {
        let (tx, rx) = mpsc::channel::<Bytes>(IN_FLIGHT);
        let finished = Arc::new(AtomicBool::new(false));
        let ended = finished.clone();
        let stream = Box::pin(futures::stream::unfold(Some(rx), move |rx| {
            let ended = ended.clone();
            async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Some(b) => Some((Ok(b), Some(rx))),
                    None if ended.load(Ordering::Acquire) => None,
                    None => Some((Err(Cut), None)),
                }
            }
        }));
        let (drive, account, pre, limit) = (fs.drive.clone(), fs.account, fs.pre, fs.limit);
        let task =
            tokio::spawn(async move { drive.put(account, &path, Upload::Body { stream, declared }, pre, limit).await });
        WriteFile { fs, tx: Some(tx), finished, task: Some(task), done: None }
    }

    /// The put's outcome, once its stream has ended (or it gave up early).
    async fn outcome(&mut self) -> Result<(), FsError> {
        let Some(task) = self.task.take() else {
            return if self.done.is_some() { Ok(()) } else { Err(FsError::GeneralFailure) };
        };
        match task.await {
            Ok(Ok(put)) => {
                self.done = Some(Meta::file(&put.record));
                Ok(())
            }
            Ok(Err(e)) => Err(self.fs.fail(e)),
            Err(_) => Err(FsError::GeneralFailure),
        }
    }
}

impl DavFile for WriteFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m = self.done.clone().map(|m| Box::new(m) as Box<dyn DavMetaData>).ok_or(FsError::GeneralFailure);
        futures::future::ready(m).boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        self.write_bytes(bytes)
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move {
            let Some(tx) = &self.tx else { return Err(FsError::GeneralFailure) };
            if tx.send(buf).await.is_err() {
                // The put stopped reading: it has its answer already (over quota, say).
                self.tx = None;
                self.outcome().await?;
                return Err(FsError::GeneralFailure);
            }
            Ok(())
        }
        .boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        // Only a partial PUT seeks; the drive writes whole files.
        let r = if pos == SeekFrom::Start(0) { Ok(0) } else { Err(FsError::NotImplemented) };
        futures::future::ready(r).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            self.finished.store(true, Ordering::Release);
            self.tx = None;
            self.outcome().await
        }
        .boxed()
    }
}

/// A file being read: its chunks with their offsets, and the chunk last read.
pub struct ReadFile {
    engine: Engine,
    record: ObjectRecord,
    chunks: Vec<(ChunkId, u32)>,
    /// Where each chunk starts in the file.
    starts: Vec<u64>,
    pos: u64,
    cached: Option<(usize, Bytes)>,
}

impl fmt::Debug for ReadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadFile").field("version", &self.record.version).field("pos", &self.pos).finish()
    }
}

impl ReadFile {
    pub fn new(engine: Engine, record: ObjectRecord, chunks: Vec<(ChunkId, u32)>) -> Self {
        let mut at = 0u64;
        let starts = chunks
            .iter()
            .map(|(_, len)| {
                let s = at;
                at += u64::from(*len);
                s
            })
            .collect();
        ReadFile { engine, record, chunks, starts, pos: 0, cached: None }
    }

    async fn read(&mut self, count: usize) -> Result<Bytes, FsError> {
        if self.pos >= self.record.size || count == 0 {
            return Ok(Bytes::new());
        }
        let i = self.starts.partition_point(|&s| s <= self.pos) - 1;
        let chunk = match &self.cached {
            Some((c, b)) if *c == i => b.clone(),
            _ => {
                let (engine, id) = (self.engine.clone(), self.chunks[i].0);
                let b = tokio::task::spawn_blocking(move || engine.read_chunk(&id))
                    .await
                    .map_err(|_| FsError::GeneralFailure)?
                    .map_err(|e| {
                        tracing::error!(error = %e, "a WebDAV read failed");
                        FsError::GeneralFailure
                    })?;
                self.cached = Some((i, b.clone()));
                b
            }
        };
        let off = (self.pos - self.starts[i]) as usize;
        let n = count.min(chunk.len().saturating_sub(off));
        self.pos += n as u64;
        Ok(chunk.slice(off..off + n))
    }
}

impl DavFile for ReadFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        futures::future::ready(Ok(Box::new(Meta::file(&self.record)) as Box<dyn DavMetaData>)).boxed()
    }

    fn write_buf(&mut self, _buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        self.read(count).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let size = self.record.size as i64;
        let to = match pos {
            SeekFrom::Start(n) => Some(n as i64),
            SeekFrom::End(d) => size.checked_add(d),
            SeekFrom::Current(d) => (self.pos as i64).checked_add(d),
        };
        let r = match to {
            Some(n) if n >= 0 => {
                self.pos = n as u64;
                Ok(self.pos)
            }
            _ => Err(FsError::GeneralFailure),
        };
        futures::future::ready(r).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        futures::future::ready(Ok(())).boxed()
    }
}
