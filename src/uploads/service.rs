//! The resumable-upload state machine, for any front. Nothing here knows HTTP.
//!
//! Invariants:
//! - An upload's durable state is its `UploadRecord` (`uploads` column family) plus one object
//!   per piece in `Namespace::Upload`; both change in one account transaction (one synced
//!   write), so `offset` is always the pieces' bytes plus the tail's. The offset a request
//!   reports is committed before it is reported.
//! - A piece's new chunks are charged as they land (the same `Charge` reservation as a drive
//!   PUT), then held by the piece's object: counted in `used`, and never freed by GC, until the
//!   upload completes, is terminated or expires.
//! - At most one request works on an upload at a time (`busy`): a second PATCH or DELETE, or
//!   the expiry sweep, finds it busy and backs off; nothing interleaves.
//! - The last byte commits the drive file through `Drive::put_then`, with the rules of a PUT
//!   (path, precondition, version, quota, dedup), and retires the pieces in that same commit.
//!   If the server stops between the last piece's commit and the file's, the next HEAD or PATCH
//!   of the upload finishes it.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rocksdb::{Direction, IteratorMode};

use super::parse::{Checksum, Hasher};
use crate::drive::{check_path, Drive, DriveError, Upload};
use crate::engine::{AccountTxn, Engine, Piece, Precondition};
use crate::error::Error;
use crate::quota::Charge;
use crate::store::keys::{AccountId, Namespace};
use crate::store::upload_keys::{self as uk, UploadId, UploadRecord};
use crate::store::CF_UPLOADS;

/// The limits a hostile or forgetful client meets.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// An upload untouched this long is removed and its chunks released.
    pub expiry_secs: u64,
    /// The largest `Upload-Length` accepted.
    pub max_size: u64,
    /// Unfinished uploads one account may have at once.
    pub per_account: usize,
}

/// What a client asks for when it creates an upload.
pub struct NewUpload {
    pub path: String,
    /// `None`: the client will say it later (`Upload-Defer-Length`).
    pub length: Option<u64>,
    /// The client's metadata as it sent it, to give back.
    pub metadata: String,
    pub pre: Precondition,
}

/// One request's worth of bytes for an upload.
pub struct PatchPiece<S> {
    /// Where the client believes the upload stands.
    pub offset: u64,
    /// The body's length, if the client said it.
    pub declared: Option<u64>,
    /// The upload's total length, for an upload created without one.
    pub set_length: Option<u64>,
    pub checksum: Option<Checksum>,
    pub body: S,
}

/// An upload as a client sees it.
#[derive(Clone, Debug)]
pub struct UploadState {
    pub id: UploadId,
    pub offset: u64,
    pub length: Option<u64>,
    pub expires_ms: i64,
    pub metadata: String,
    /// The drive file's version, once the upload has completed.
    pub done: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Path, precondition, quota, disk and storage failures, as the drive says them.
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error("no such upload")]
    NotFound,
    #[error("another request is working on this upload")]
    Busy,
    #[error("the upload is at offset {offset}, not {asked}")]
    OffsetMismatch { offset: u64, asked: u64 },
    #[error("the body goes past the upload's length of {length} bytes")]
    PastLength { length: u64 },
    #[error("an upload is at most {max} bytes")]
    TooBig { max: u64 },
    #[error("the upload's length is more than the account's remaining quota")]
    OverQuota { used: u64, limit: u64 },
    #[error("an account has at most {max} unfinished uploads")]
    TooMany { max: usize },
    #[error("the body does not match its Upload-Checksum; its bytes were discarded")]
    ChecksumMismatch,
    #[error("{0}")]
    BadLength(&'static str),
}

impl From<Error> for UploadError {
    fn from(e: Error) -> Self {
        UploadError::Drive(DriveError::Engine(e))
    }
}

type Result<T> = std::result::Result<T, UploadError>;

/// Every account's resumable uploads. Cheap to clone.
#[derive(Clone)]
pub struct Uploads {
    engine: Engine,
    drive: Drive,
    settings: Settings,
    busy: Arc<Mutex<HashSet<(AccountId, UploadId)>>>,
}

/// An upload's turn; it ends when this is dropped.
struct Turn {
    busy: Arc<Mutex<HashSet<(AccountId, UploadId)>>>,
    key: (AccountId, UploadId),
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.busy.lock().expect("busy set poisoned").remove(&self.key);
    }
}

/// Bytes of one body as they pass: counted against the room left, and checksummed.
struct Meter {
    received: u64,
    room: Option<u64>,
    over: bool,
    hasher: Option<Hasher>,
}

impl Uploads {
    pub fn new(engine: Engine, drive: Drive, settings: Settings) -> Self {
        Uploads { engine, drive, settings, busy: Arc::default() }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Start an upload. Its length (when given) must fit the size limit and the account's
    /// remaining quota; its path and precondition are checked now and again at the end.
    pub async fn create(&self, account: AccountId, new: NewUpload, limit: u64) -> Result<UploadState> {
        check_path(&new.path).map_err(DriveError::from)?;
        if let Some(n) = new.length {
            self.check_length(account, n, 0, limit).await?;
        }
        let current = self.drive.current(account, &new.path).await?;
        if !new.pre.check(current.as_ref()) {
            return Err(DriveError::PreconditionFailed.into());
        }
        let id = UploadId::random();
        let rec = UploadRecord {
            path: new.path,
            length: new.length,
            offset: 0,
            pieces: 0,
            expires_ms: self.expiry_from_now(),
            pre: new.pre,
            metadata: new.metadata,
            done: None,
            tail: Vec::new(),
        };
        let (this, r) = (self.clone(), rec.clone());
        blocking(move || this.insert(&account, &id, &r)).await??;
        if rec.length == Some(0) {
            return self.complete(account, id, rec, limit).await;
        }
        Ok(state(id, &rec))
    }

    /// Where an upload stands. An upload whose last byte is durable but whose file is not yet
    /// committed (the server stopped between the two) is finished here.
    pub async fn status(&self, account: AccountId, id: UploadId, limit: u64) -> Result<UploadState> {
        let rec = self.read(account, id).await?;
        if rec.done.is_none() && rec.length == Some(rec.offset) {
            if let Ok(_turn) = self.turn(account, id) {
                return self.complete(account, id, rec, limit).await;
            }
        }
        Ok(state(id, &rec))
    }

    /// Append one request's body at `piece.offset`. What arrived is kept even if the body
    /// breaks off (resuming is the point), unless a checksum was sent: then the body counts
    /// only whole and matching.
    pub async fn patch<S, E>(
        &self,
        account: AccountId,
        id: UploadId,
        piece: PatchPiece<S>,
        limit: u64,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let _turn = self.turn(account, id)?;
        let mut rec = self.read(account, id).await?;
        if let Some(n) = piece.set_length {
            self.set_length(account, &mut rec, n, limit).await?;
        }
        if piece.offset != rec.offset {
            return Err(UploadError::OffsetMismatch { offset: rec.offset, asked: piece.offset });
        }
        let room = rec.length.map(|l| l - rec.offset);
        if let (Some(room), Some(d)) = (room, piece.declared) {
            if d > room {
                return Err(UploadError::PastLength { length: rec.length.unwrap_or(0) });
            }
        }
        if rec.done.is_some() || room == Some(0) {
            return self.complete(account, id, rec, limit).await;
        }
        let last = room.is_some() && piece.declared == room;
        let meter = Arc::new(Mutex::new(Meter {
            received: 0,
            room,
            over: false,
            hasher: piece.checksum.as_ref().map(|c| Hasher::new(c.algorithm)),
        }));
        let m = meter.clone();
        let body = piece.body.map(move |frame| {
            let bytes = frame.map_err(|e| e.to_string())?;
            let mut m = m.lock().expect("meter poisoned");
            m.received += bytes.len() as u64;
            if m.room.is_some_and(|r| m.received > r) {
                m.over = true;
                return Err("the body goes past the upload's length".to_string());
            }
            if let Some(h) = &mut m.hasher {
                h.update(&bytes);
            }
            Ok(bytes)
        });
        let charge = Charge::new(self.engine.clone(), self.drive.reservations().clone(), account, limit);
        let tail = Bytes::from(std::mem::take(&mut rec.tail));
        let got = self.engine.ingest_piece(tail, body, last, charge.clone()).await?;
        let meter = std::mem::replace(&mut *meter.lock().expect("meter poisoned"), Meter::empty());
        if meter.over {
            return Err(UploadError::PastLength { length: rec.length.unwrap_or(0) });
        }
        if let (Some(c), Some(h)) = (&piece.checksum, meter.hasher) {
            if let Some(e) = got.body_error {
                return Err(Error::Body(e).into());
            }
            if !h.matches(&c.digest) {
                return Err(UploadError::ChecksumMismatch);
            }
        }
        let body_error = got.body_error.clone();
        let this = self.clone();
        let rec = blocking(move || this.commit_piece(&account, &id, rec, got, limit)).await??;
        drop(charge); // the piece's object holds its chunks now
        if let Some(e) = body_error {
            return Err(Error::Body(e).into());
        }
        if rec.length == Some(rec.offset) {
            return self.complete(account, id, rec, limit).await;
        }
        Ok(state(id, &rec))
    }

    /// End an upload now and release what it holds.
    pub async fn terminate(&self, account: AccountId, id: UploadId) -> Result<()> {
        let _turn = self.turn(account, id)?;
        self.read(account, id).await?;
        let this = self.clone();
        match blocking(move || this.remove(&account, &id)).await?? {
            true => Ok(()),
            false => Err(UploadError::NotFound),
        }
    }

    /// Remove every upload past its expiry that no request is working on. Blocking (the
    /// housekeeping sweep). Returns how many went.
    pub fn expire(&self) -> std::result::Result<u64, Error> {
        let now = self.engine.clock().now_ms() as i64;
        let db = self.engine.db();
        let mut stale = Vec::new();
        for item in db.raw().iterator_cf(db.cf(CF_UPLOADS), IteratorMode::Start) {
            let (k, v) = item?;
            let expired = uk::decode_upload(&v).is_none_or(|r| r.expires_ms < now);
            if let (true, Some(key)) = (expired, uk::split_upload_key(&k)) {
                stale.push(key);
            }
        }
        let mut removed = 0;
        for (account, id) in stale {
            let Ok(_turn) = self.turn(account, id) else { continue };
            match self.remove(&account, &id) {
                Ok(true) => removed += 1,
                Ok(false) | Err(UploadError::Drive(DriveError::Engine(Error::AccountGone))) => {}
                Err(UploadError::Drive(DriveError::Engine(e))) => return Err(e),
                Err(e) => return Err(Error::Internal(e.to_string())),
            }
        }
        self.engine.metrics().uploads_expired.inc_by(removed);
        Ok(removed)
    }

    fn turn(&self, account: AccountId, id: UploadId) -> Result<Turn> {
        let key = (account, id);
        if !self.busy.lock().expect("busy set poisoned").insert(key) {
            return Err(UploadError::Busy);
        }
        Ok(Turn { busy: self.busy.clone(), key })
    }

    fn expiry_from_now(&self) -> i64 {
        self.engine.clock().now_ms() as i64 + (self.settings.expiry_secs as i64).saturating_mul(1000)
    }

    /// A length within the size limit and the remaining quota (less what already arrived).
    async fn check_length(&self, account: AccountId, length: u64, offset: u64, limit: u64) -> Result<()> {
        if length > self.settings.max_size {
            return Err(UploadError::TooBig { max: self.settings.max_size });
        }
        let engine = self.engine.clone();
        let used = blocking(move || engine.usage(&account)).await??.used;
        if length.saturating_sub(offset) > limit.saturating_sub(used) {
            return Err(UploadError::OverQuota { used, limit });
        }
        Ok(())
    }

    async fn set_length(&self, account: AccountId, rec: &mut UploadRecord, n: u64, limit: u64) -> Result<()> {
        match rec.length {
            Some(l) if l == n => Ok(()),
            Some(_) => Err(UploadError::BadLength("the upload's length is already set to another value")),
            None if n < rec.offset => Err(UploadError::BadLength("Upload-Length is less than the bytes received")),
            None => {
                self.check_length(account, n, rec.offset, limit).await?;
                rec.length = Some(n);
                Ok(())
            }
        }
    }

    async fn read(&self, account: AccountId, id: UploadId) -> Result<UploadRecord> {
        let engine = self.engine.clone();
        let v = blocking(move || engine.db().get(CF_UPLOADS, &uk::upload_key(&account, &id))).await??;
        let rec = v
            .map(|v| uk::decode_upload(&v).ok_or_else(|| Error::corrupt("unreadable upload record")))
            .transpose()?
            .ok_or(UploadError::NotFound)?;
        if rec.expires_ms < self.engine.clock().now_ms() as i64 {
            return Err(UploadError::NotFound); // expired, not yet swept
        }
        Ok(rec)
    }

    /// Store a new record, under the account's lock so that the count of its uploads holds.
    fn insert(&self, account: &AccountId, id: &UploadId, rec: &UploadRecord) -> Result<()> {
        let mut txn = self.engine.begin(account)?;
        if self.unfinished(account)? >= self.settings.per_account {
            return Err(UploadError::TooMany { max: self.settings.per_account });
        }
        let cf = self.engine.db().cf(CF_UPLOADS);
        txn.batch().put_cf(cf, uk::upload_key(account, id), uk::encode_upload(rec));
        txn.commit(u64::MAX)?;
        Ok(())
    }

    fn unfinished(&self, account: &AccountId) -> Result<usize> {
        let db = self.engine.db();
        let mut n = 0;
        let it = db.raw().iterator_cf(db.cf(CF_UPLOADS), IteratorMode::From(&account.0, Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(Error::from)?;
            if !k.starts_with(&account.0) {
                break;
            }
            n += usize::from(uk::decode_upload(&v).is_some_and(|r| r.done.is_none()));
        }
        Ok(n)
    }

    /// Make a piece durable: its chunks as the upload's next piece object, the new offset and
    /// tail in the record, one synced write.
    fn commit_piece(
        &self,
        account: &AccountId,
        id: &UploadId,
        mut rec: UploadRecord,
        got: Piece,
        limit: u64,
    ) -> Result<UploadRecord> {
        let mut txn = self.engine.begin(account)?;
        let key = uk::upload_key(account, id);
        if self.engine.db().get(CF_UPLOADS, &key)?.is_none() {
            return Err(UploadError::NotFound);
        }
        rec.offset += got.received;
        rec.tail = got.tail.to_vec();
        if !got.ingested.manifest.chunks.is_empty() {
            txn.put_object(Namespace::Upload, &uk::piece_name(id, rec.pieces), &got.ingested.manifest);
            rec.pieces += 1;
        }
        rec.expires_ms = self.expiry_from_now();
        txn.batch().put_cf(self.engine.db().cf(CF_UPLOADS), key, uk::encode_upload(&rec));
        txn.commit(limit)?;
        drop(got); // unpin only once the references are durable
        Ok(rec)
    }

    /// Commit the drive file from the pieces (or report the one already committed). A file
    /// whose precondition no longer holds ends the upload.
    async fn complete(&self, account: AccountId, id: UploadId, rec: UploadRecord, limit: u64) -> Result<UploadState> {
        if rec.done.is_some() {
            return Ok(state(id, &rec));
        }
        let rec = self.cut_tail(account, id, rec, limit).await?;
        let engine = self.engine.clone();
        let chunks = blocking(move || pieces(&engine, &account, &id)).await??;
        let (engine, mut finished) = (self.engine.clone(), rec.clone());
        let upload = Upload::<futures::stream::Empty<std::result::Result<Bytes, Infallible>>>::Chunks(chunks);
        let put = self
            .drive
            .put_then(account, &rec.path, upload, rec.pre, limit, move |txn, file| {
                retire_pieces(txn, &engine, &id)?;
                finished.done = Some(file.version);
                finished.tail.clear();
                txn.batch().put_cf(
                    engine.db().cf(CF_UPLOADS),
                    uk::upload_key(&account, &id),
                    uk::encode_upload(&finished),
                );
                Ok(())
            })
            .await;
        match put {
            Ok(put) => Ok(UploadState { done: Some(put.record.version), ..state(id, &rec) }),
            Err(DriveError::PreconditionFailed) => {
                let this = self.clone();
                blocking(move || this.remove(&account, &id)).await??;
                Err(DriveError::PreconditionFailed.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Make the tail the upload's last chunk, when the last bytes came in a body whose length
    /// was not declared (so the cutter could not know it was the end).
    async fn cut_tail(
        &self,
        account: AccountId,
        id: UploadId,
        mut rec: UploadRecord,
        limit: u64,
    ) -> Result<UploadRecord> {
        if rec.tail.is_empty() {
            return Ok(rec);
        }
        let charge = Charge::new(self.engine.clone(), self.drive.reservations().clone(), account, limit);
        let tail = Bytes::from(std::mem::take(&mut rec.tail));
        let nothing = futures::stream::empty::<std::result::Result<Bytes, Infallible>>();
        let got = self.engine.ingest_piece(tail, nothing, true, charge.clone()).await?;
        let this = self.clone();
        let rec = blocking(move || this.commit_piece(&account, &id, rec, got, limit)).await??;
        drop(charge);
        Ok(rec)
    }

    /// Delete an upload's record and pieces, releasing its chunks. `false` if there was none.
    fn remove(&self, account: &AccountId, id: &UploadId) -> Result<bool> {
        let mut txn = self.engine.begin(account)?;
        let key = uk::upload_key(account, id);
        if self.engine.db().get(CF_UPLOADS, &key)?.is_none() {
            return Ok(false);
        }
        retire_pieces(&mut txn, &self.engine, id)?;
        txn.batch().delete_cf(self.engine.db().cf(CF_UPLOADS), key);
        txn.commit(u64::MAX)?;
        Ok(true)
    }
}

impl Meter {
    fn empty() -> Self {
        Meter { received: 0, room: None, over: false, hasher: None }
    }
}

fn state(id: UploadId, rec: &UploadRecord) -> UploadState {
    UploadState {
        id,
        offset: rec.offset,
        length: rec.length,
        expires_ms: rec.expires_ms,
        metadata: rec.metadata.clone(),
        done: rec.done,
    }
}

/// The upload's chunks so far, pieces in order. Blocking.
fn pieces(
    engine: &Engine,
    account: &AccountId,
    id: &UploadId,
) -> std::result::Result<Vec<(crate::chunk::ChunkId, u32)>, Error> {
    let mut chunks = Vec::new();
    for item in engine.list_objects(account, Namespace::Upload, &id.0, None, usize::MAX)? {
        chunks.extend(engine.object_chunks(account, Namespace::Upload, &item.name, &item.record)?);
    }
    Ok(chunks)
}

/// Remove the upload's piece objects in `txn`, releasing their references.
fn retire_pieces(txn: &mut AccountTxn, engine: &Engine, id: &UploadId) -> std::result::Result<(), Error> {
    let account = *txn.account();
    for item in engine.list_objects(&account, Namespace::Upload, &id.0, None, usize::MAX)? {
        txn.remove_object(Namespace::Upload, &item.name, &item.record)?;
    }
    Ok(())
}

/// Storage work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::result::Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))
}
