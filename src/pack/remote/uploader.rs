//! The uploads' queue and the one thread that works it: each sealed pack is put in the bucket,
//! verified there, and then switched (its local copy leaves the pack directory for the disk
//! cache).
//!
//! Invariants:
//! - A pack leaves the pack directory only after the bucket has it whole (size, trailer and
//!   table compared with the local bytes; the bytes themselves checked by the store against
//!   the SHA-256 sent with them), and only while it is quiet (no entry waiting to be indexed),
//!   so that GC never judges from the bucket a pack an upload still writes into the index.
//! - Before a switch, the high-water pack id is on disk (`pack-ids`), so pack ids are never
//!   reused once their only copy is in the bucket, even with the bucket unreachable at start.
//! - A failure keeps the pack queued and local: reads go on from it, and it is tried again
//!   after a pause that doubles up to `retry_max`. New packs do not wait for old failures to
//!   clear: the queue is worked oldest first, one pack at a time, and a failure pauses it all
//!   (the store is down, most likely, for every pack alike).
//! - A pack removed (by GC) while queued is dropped from the queue; while in flight, the
//!   removal waits for the upload to end (one try, bounded by the bucket's timeouts) before it
//!   deletes the object. Deleting first and letting the upload finish after would leave an
//!   object listed for a moment and gone the next: fsck, running right after a GC, read such
//!   a pack's listing and then its 404 (CI, the s3 pass of `plans_downgrades...`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::Shared;
use crate::error::{Error, Result};

#[derive(Default)]
pub(crate) struct Queue {
    /// Sealed packs waiting for their upload, with their sizes.
    pub waiting: BTreeMap<u64, u64>,
    /// The pack being uploaded; `wake` is notified when it ends.
    pub in_flight: Option<u64>,
    pub stop: bool,
}

pub(crate) struct Uploads {
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
    /// Whether the last try reached the store (for the `cairn_object_store_up` gauge).
    pub reachable: AtomicBool,
}

impl Uploads {
    pub fn new() -> Self {
        Uploads { queue: Mutex::new(Queue::default()), wake: Condvar::new(), reachable: AtomicBool::new(true) }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("upload queue poisoned")
    }
}

/// Put a sealed pack in the queue.
pub(crate) fn enqueue(shared: &Shared, id: u64, size: u64) {
    let mut q = shared.uploads.lock();
    q.waiting.insert(id, size);
    shared.metrics.backlog(&q.waiting);
    shared.uploads.wake.notify_all();
}

/// The uploader's loop, until `stop`.
pub(crate) fn run(shared: Arc<Shared>) {
    let mut pause = Duration::ZERO;
    loop {
        let Some(id) = next(&shared, pause) else { return };
        let outcome = upload(&shared, id);
        let mut q = shared.uploads.lock();
        q.in_flight = None;
        shared.uploads.wake.notify_all();
        match outcome {
            Ok(()) => {
                q.waiting.remove(&id);
                pause = Duration::ZERO;
                shared.uploads.reachable.store(true, Ordering::Relaxed);
                shared.metrics.uploaded.inc();
            }
            // Removed (GC) from under us: nothing is left to upload.
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound && !shared.local.path(id).exists() => {
                q.waiting.remove(&id);
            }
            Err(e @ Error::Corrupt(_)) => {
                // Not sealed, or damaged: it stays local for fsck to report and a restart to
                // recover; retrying it would only stall the queue.
                tracing::error!(pack = id, error = %e, "a pack cannot be uploaded; it stays on local disk");
                q.waiting.remove(&id);
            }
            Err(e) => {
                pause = (pause * 2).clamp(Duration::from_millis(250), shared.retry_max);
                tracing::warn!(pack = id, error = %e, retry_in = ?pause, "uploading a pack failed");
                shared.metrics.failures.inc();
                shared.uploads.reachable.store(false, Ordering::Relaxed);
            }
        }
        shared.metrics.backlog(&q.waiting);
        shared.metrics.up.set(i64::from(shared.uploads.reachable.load(Ordering::Relaxed)));
    }
}

/// The next pack to upload, after `pause`; `None` once stopped. A pack that is still held
/// (entries waiting to be indexed) is passed over for now.
fn next(shared: &Shared, pause: Duration) -> Option<u64> {
    let mut q = shared.uploads.lock();
    if !pause.is_zero() {
        q = shared.uploads.wake.wait_timeout_while(q, pause, |q| !q.stop).expect("upload queue poisoned").0;
    }
    loop {
        if q.stop {
            return None;
        }
        let ready = q.waiting.keys().copied().find(|id| !shared.local.held(*id));
        match ready {
            Some(id) => {
                q.in_flight = Some(id);
                return Some(id);
            }
            None if q.waiting.is_empty() => q = shared.uploads.wake.wait(q).expect("upload queue poisoned"),
            // Only held packs: they settle within a commit; look again shortly.
            None => {
                q = shared.uploads.wake.wait_timeout(q, Duration::from_millis(50)).expect("upload queue poisoned").0
            }
        }
    }
}

/// Upload one pack, verify it in the bucket, switch it.
fn upload(shared: &Shared, id: u64) -> Result<()> {
    let path = shared.local.path(id);
    let bytes = Bytes::from(fs::read(&path)?);
    // Sealed and whole, or not sent at all.
    let table = super::super::table_entries_at(
        &path.display().to_string(),
        bytes.len() as u64,
        &|buf, at| copy_at(&bytes, buf, at),
        &shared.local.keyring().keys(),
    )?;
    drop(table);
    // Parts a crash left are billed and invisible: gone before new ones are sent.
    shared.bucket.abort_leftovers()?;
    // A crash after an upload and before its switch leaves the object there already.
    if !verified(shared, id, &bytes)? {
        shared.bucket.put(id, bytes.clone())?;
        if !verified(shared, id, &bytes)? {
            return Err(Error::Io(io::Error::other(format!("pack {id}: the bucket's copy differs after upload"))));
        }
    }
    shared.switch(id, bytes.len() as u64)
}

/// Whether the bucket holds this pack as it is here: the same size, and the same last bytes
/// (trailer and table, up to a block) and first bytes (header).
fn verified(shared: &Shared, id: u64, bytes: &Bytes) -> Result<bool> {
    let len = bytes.len() as u64;
    if shared.bucket.head(id)? != Some(len) {
        return Ok(false);
    }
    let tail = len.saturating_sub(super::cache::BLOCK);
    let head = super::super::format::HEADER_LEN as u64;
    Ok(shared.bucket.read_back(id, tail..len)? == bytes.slice(tail as usize..)
        && shared.bucket.read_back(id, 0..head.min(len))? == bytes.slice(..head.min(len) as usize))
}

fn copy_at(bytes: &[u8], buf: &mut [u8], at: u64) -> io::Result<()> {
    let src = usize::try_from(at)
        .ok()
        .and_then(|at| bytes.get(at..at.checked_add(buf.len())?))
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    buf.copy_from_slice(src);
    Ok(())
}
