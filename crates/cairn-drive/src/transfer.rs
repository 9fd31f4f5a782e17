//! Moving one file's bytes: chunking it locally (FastCDC, streamed), asking the server which
//! chunks it lacks, sending those in parallel, committing the manifest; and downloading a file
//! into place atomically.
//!
//! Invariants: a file is never held whole in memory: the chunking pass keeps one read window,
//! and the sending pass at most `parallel` chunks, read back by offset and checked against the
//! id the first pass computed (a file changed in between fails instead of sending wrong bytes).
//! Only chunks the server says it lacks are sent, so a re-run after an interruption sends
//! nothing the server already holds. A download lands in a temporary file beside the target
//! and is renamed over it only when complete.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cairn_chunking::{ChunkId, ChunkStream, Cutter};
use futures::{StreamExt, TryStreamExt};

use crate::api::{Api, ChunkRef, Precondition, RemoteFile};
use crate::error::{DriveError, Result};
use crate::report::Reporter;

/// A file as chunked: its chunks in order (id, length, offset) and the BLAKE3 of the whole.
#[derive(Clone, Debug)]
pub struct Chunked {
    pub chunks: Vec<(ChunkId, u32, u64)>,
    pub hash: String,
    pub size: u64,
}

impl Chunked {
    pub fn refs(&self) -> Vec<ChunkRef> {
        self.chunks.iter().map(|(id, len, _)| ChunkRef { hash: id.to_hex(), size: *len as u64 }).collect()
    }
}

/// What a transfer sent over the wire.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Sent {
    pub chunks: u64,
    pub bytes: u64,
}

impl Sent {
    pub fn add(&mut self, o: Sent) {
        self.chunks += o.chunks;
        self.bytes += o.bytes;
    }
}

/// Chunks `path` in one streaming pass (blocking: call from a blocking thread).
pub fn chunk_file(path: &Path, cutter: &Cutter) -> Result<Chunked> {
    let f = File::open(path).map_err(DriveError::io(path))?;
    let mut stream = ChunkStream::new(f, cutter.clone());
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    while let Some(c) = stream.next_chunk().map_err(DriveError::io(path))? {
        whole.update(c.data);
        chunks.push((c.id(), c.data.len() as u32, c.offset));
        size += c.data.len() as u64;
    }
    Ok(Chunked { chunks, hash: whole.finalize().to_hex().to_string(), size })
}

/// BLAKE3 of a whole file, streamed (the server's `hash` of a drive file).
pub fn hash_file(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    let f = File::open(path).map_err(DriveError::io(path))?;
    h.update_reader(f).map_err(DriveError::io(path))?;
    Ok(h.finalize().to_hex().to_string())
}

#[derive(Clone)]
pub struct Transfer {
    pub api: Api,
    pub cutter: Cutter,
    pub parallel: usize,
    pub report: Arc<Reporter>,
}

impl Transfer {
    pub async fn chunk(&self, path: &Path) -> Result<Chunked> {
        let (p, cutter) = (path.to_path_buf(), self.cutter.clone());
        tokio::task::spawn_blocking(move || chunk_file(&p, &cutter)).await.expect("chunking does not panic")
    }

    /// Sends the chunks of `chunked` (read from `path`) that the server lacks.
    pub async fn send_missing(&self, path: &Path, chunked: &Chunked) -> Result<Sent> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<ChunkId> = chunked.chunks.iter().map(|c| c.0).filter(|id| seen.insert(*id)).collect();
        let missing: std::collections::HashSet<ChunkId> = self.api.missing(&unique).await?.into_iter().collect();
        let mut jobs = Vec::new();
        let mut queued = std::collections::HashSet::new();
        for &(id, len, offset) in &chunked.chunks {
            if missing.contains(&id) && queued.insert(id) {
                jobs.push((id, len, offset));
            } else {
                // Held already: as good as sent, for the progress bar.
                self.report.bytes(len as u64);
            }
        }
        let need: u64 = jobs.iter().map(|j| j.1 as u64).sum();
        let file = Arc::new(File::open(path).map_err(DriveError::io(path))?);
        let (chunks, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
        let result = futures::stream::iter(jobs.into_iter().map(Ok::<_, DriveError>))
            .try_for_each_concurrent(self.parallel.max(1), |(id, len, offset)| {
                let (file, path) = (file.clone(), path.to_path_buf());
                let (chunks, bytes) = (&chunks, &bytes);
                async move {
                    let data = read_chunk(file, path, id, len, offset).await?;
                    self.api.put_chunk(id, data).await?;
                    chunks.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(len as u64, Ordering::Relaxed);
                    self.report.bytes(len as u64);
                    Ok(())
                }
            })
            .await;
        let sent = Sent { chunks: chunks.into_inner(), bytes: bytes.into_inner() };
        result.map_err(|e| e.with_need(need - sent.bytes))?;
        Ok(sent)
    }

    /// Chunks `local`, sends what the server lacks and commits it as the drive file `remote`.
    pub async fn upload(&self, local: &Path, remote: &str, pre: &Precondition) -> Result<(RemoteFile, Chunked, Sent)> {
        let chunked = self.chunk(local).await?;
        let sent = self.send_missing(local, &chunked).await?;
        let file =
            self.api.put_manifest(remote, &chunked.refs(), pre).await.map_err(|e| DriveError::from(e).with_need(0))?;
        Ok((file, chunked, sent))
    }

    /// Downloads `remote` to `dest` (replacing it atomically); returns (version, hash, size).
    pub async fn download(&self, remote: &str, dest: &Path) -> Result<(String, String, u64)> {
        let (resp, version) = self.api.get_file(remote).await?;
        let (hash, size) = self.write_stream(resp.bytes_stream(), dest).await?;
        Ok((version, hash, size))
    }

    /// Writes a body stream to `dest` through a temporary file beside it.
    pub async fn write_stream(
        &self,
        body: impl futures::Stream<Item = reqwest::Result<Bytes>>,
        dest: &Path,
    ) -> Result<(String, u64)> {
        let mut body = std::pin::pin!(body);
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(DriveError::io(dir))?;
        let tmp = temp_beside(dest);
        let mut f = File::create(&tmp).map_err(DriveError::io(&tmp))?;
        let mut h = blake3::Hasher::new();
        let mut size = 0u64;
        let outcome: Result<()> = async {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| {
                    DriveError::Api(crate::api::ApiError::Network {
                        url: self.api.base().to_string(),
                        attempts: 1,
                        cause: e.to_string(),
                    })
                })?;
                h.update(&piece);
                size += piece.len() as u64;
                self.report.bytes(piece.len() as u64);
                f.write_all(&piece).map_err(DriveError::io(&tmp))?;
            }
            f.sync_all().map_err(DriveError::io(&tmp))?;
            std::fs::rename(&tmp, dest).map_err(DriveError::io(dest))
        }
        .await;
        if outcome.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        outcome.map(|()| (h.finalize().to_hex().to_string(), size))
    }
}

/// Temporary files of downloads start with this; scans skip them.
pub const TEMP_PREFIX: &str = ".cairn-part-";

fn temp_beside(dest: &Path) -> PathBuf {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

async fn read_chunk(file: Arc<File>, path: PathBuf, id: ChunkId, len: u32, offset: u64) -> Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).map_err(DriveError::io(&path))?;
        if ChunkId::of(&buf) != id {
            return Err(DriveError::FileChanged(path));
        }
        Ok(Bytes::from(buf))
    })
    .await
    .expect("reading does not panic")
}
