//! The drive service: writing, reading, deleting and listing files, with their preconditions
//! and quota, for any front. A front parses its protocol into these calls and turns
//! `DriveError` into its own answers; nothing here knows HTTP.
//!
//! A write goes: path checked, a declared length over the limit refused before any byte is
//! read, the precondition checked before the body is read (and again at commit, under the
//! account's lock), the content ingested (streamed, or adopted from held chunks) with each new
//! chunk charged as it arrives, then one commit through the account's transaction.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use super::history::{self, Policy, Room};
use super::rules::{check_path, PathError};
use super::{folders, props};
use crate::chunk::ChunkId;
use crate::engine::{AccountTxn, Adoption, ChunkList, Engine, Ingested, Listed, Precondition, Put};
use crate::error::{Error, Refusal};
use crate::quota::{Charge, Reservations};
use crate::store::identity_keys::DeviceId;
use crate::store::keys::{AccountId, Namespace, ObjectRecord};

/// The drive of every account. Cheap to clone: an engine handle and the shared reservations.
#[derive(Clone)]
pub struct Drive {
    pub(super) engine: Engine,
    /// Bytes held by uploads in progress, shared with every upload's `Charge` (and the chunk
    /// API's), so that concurrent uploads cannot pass the quota together.
    reservations: Arc<Reservations>,
    /// How long the trash keeps files and how many old versions are kept.
    pub(super) policy: Policy,
    /// Purges trash and old versions when an upload needs their room.
    room: Arc<Room>,
}

/// What a new version of a file is made of.
pub enum Upload<S> {
    /// A body streamed through the pipeline, with the length the client declared, if any.
    Body { stream: S, declared: Option<u64> },
    /// Chunks the account already holds, in order (a client that chunks on its side).
    Chunks(Vec<(ChunkId, u32)>),
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    BadPath(#[from] PathError),
    #[error("no such file")]
    NotFound,
    #[error("a file or folder already has that path")]
    Exists,
    #[error("a folder has that path")]
    IsFolder,
    #[error("a file is where a folder of the path would be")]
    UnderFile,
    #[error("the folder to put it in does not exist")]
    NoParent,
    #[error("the source and destination are the same path")]
    SamePath,
    #[error("a folder cannot be moved or copied into itself or over its own parent")]
    Nested,
    #[error("the folder has more than {} entries", super::folders::MAX_CHILDREN)]
    TooMany,
    #[error("the properties of one path are limited to {} bytes", crate::store::prop_keys::MAX_PROPS_BYTES)]
    PropsTooLarge,
    #[error("the file's current version does not match the request's precondition")]
    PreconditionFailed,
    #[error("some chunks must be uploaded first")]
    MissingChunks(Vec<ChunkId>),
    #[error("chunk {id} is {actual} bytes, not {size}")]
    WrongSize { id: ChunkId, size: u32, actual: u32 },
    /// Quota, disk, body and storage failures, as the engine says them.
    #[error(transparent)]
    Engine(#[from] Error),
}

type Result<T> = std::result::Result<T, DriveError>;

impl Drive {
    pub fn new(engine: Engine, reservations: Arc<Reservations>, policy: Policy) -> Self {
        let room = Arc::new(Room { engine: engine.clone() });
        Drive { engine, reservations, policy, room }
    }

    pub fn reservations(&self) -> &Arc<Reservations> {
        &self.reservations
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The quota side of an upload into this account: chunks are charged as they arrive, and
    /// the trash and old versions give way before a chunk is refused.
    pub fn charge(&self, account: AccountId, limit: u64) -> Charge {
        Charge::reclaiming(self.engine.clone(), self.reservations.clone(), account, limit, self.room.clone())
    }

    /// Write a new version of `path` (201 or 200 to HTTP, by `Put::replaced`).
    pub async fn put<S, E>(
        &self,
        account: AccountId,
        path: &str,
        upload: Upload<S>,
        pre: Precondition,
        limit: u64,
    ) -> Result<Put>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.put_then(account, path, upload, pre, limit, |_, _| Ok(())).await
    }

    /// `put`, with `also` adding its own changes to the commit's transaction, given the new
    /// record: a resumable upload retires its pieces in the batch that makes its file.
    pub async fn put_then<S, E>(
        &self,
        account: AccountId,
        path: &str,
        upload: Upload<S>,
        pre: Precondition,
        limit: u64,
        also: impl FnOnce(&mut AccountTxn, &ObjectRecord) -> std::result::Result<(), Error> + Send + 'static,
    ) -> Result<Put>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        check_path(path)?;
        if let Upload::Body { declared: Some(n), .. } = &upload {
            if *n > limit {
                return Err(self.over_quota(account, limit).await);
            }
        }
        let current = self.object(account, path).await?;
        if !pre.check(current.as_ref()) {
            return Err(DriveError::PreconditionFailed);
        }
        let charge = self.charge(account, limit);
        let ingested = match upload {
            Upload::Body { stream, .. } => self.engine.ingest(stream, charge.clone()).await?,
            Upload::Chunks(chunks) => self.adopt(account, chunks, limit).await?,
        };
        let (engine, path, keep) = (self.engine.clone(), path.to_string(), self.policy.versions);
        let put = blocking(move || -> Result<Put> {
            let mut txn = engine.begin(&account)?;
            let old = txn.object(Namespace::Drive, path.as_bytes())?;
            if !pre.check(old.as_ref()) {
                return Err(DriveError::PreconditionFailed);
            }
            folders::check_file_room(&engine, &account, &path)?;
            if let Some(o) = &old {
                history::keep_as_version(&mut txn, &path, o, keep)?;
            }
            let record = txn.put_object(Namespace::Drive, path.as_bytes(), &ingested.manifest);
            txn.unstage(&ingested.manifest.chunks)?;
            also(&mut txn, &record)?;
            txn.commit(limit)?;
            drop(ingested); // unpin only once the references are durable
            Ok(Put { record, replaced: old.is_some() })
        })
        .await?;
        drop(charge); // the reservation goes once the commit holds the chunks
        put
    }

    /// A file's record and chunk list, read together.
    pub async fn get(&self, account: AccountId, path: &str) -> Result<(ObjectRecord, ChunkList)> {
        check_path(path)?;
        let (engine, name) = (self.engine.clone(), path.as_bytes().to_vec());
        blocking(move || engine.get_object_and_chunks(&account, Namespace::Drive, &name))
            .await??
            .ok_or(DriveError::NotFound)
    }

    /// Move a file to the trash (by `device`, if a signed-in one asks); its record, and its
    /// trash id.
    pub async fn delete(
        &self,
        account: AccountId,
        path: &str,
        pre: Precondition,
        device: Option<DeviceId>,
    ) -> Result<(ObjectRecord, u64)> {
        check_path(path)?;
        let (engine, path) = (self.engine.clone(), path.to_string());
        blocking(move || {
            let mut txn = engine.begin(&account)?;
            let old = txn.object(Namespace::Drive, path.as_bytes())?.ok_or(DriveError::NotFound)?;
            if !pre.check(Some(&old)) {
                return Err(DriveError::PreconditionFailed);
            }
            props::drop_all(&mut txn, &engine, &path)?;
            let id = history::trash(&mut txn, &path, &old, device.as_ref())?;
            txn.commit(u64::MAX)?;
            Ok((old, id))
        })
        .await?
    }

    /// Files and made folders whose paths start with `prefix`, in byte order, after `after`, at
    /// most `limit`; and whether there are more. Each is `(listed, is_folder)`.
    pub async fn list(
        &self,
        account: AccountId,
        prefix: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<(Listed, bool)>, bool)> {
        let (engine, prefix) = (self.engine.clone(), prefix.as_bytes().to_vec());
        let take = limit.saturating_add(1);
        let (files, marks) = blocking(move || -> std::result::Result<_, Error> {
            let files = engine.list_objects(&account, Namespace::Drive, &prefix, after.as_deref(), take)?;
            let marks = engine.list_objects(&account, Namespace::Folder, &prefix, after.as_deref(), take)?;
            Ok((files, marks))
        })
        .await??;
        let mut items: Vec<(Listed, bool)> =
            files.into_iter().map(|l| (l, false)).chain(marks.into_iter().map(|l| (l, true))).collect();
        items.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let more = items.len() > limit;
        items.truncate(limit);
        Ok((items, more))
    }

    /// The current record of `path`, if there is one (a precondition checked ahead of a write).
    pub async fn current(&self, account: AccountId, path: &str) -> Result<Option<ObjectRecord>> {
        check_path(path)?;
        self.object(account, path).await
    }

    async fn object(&self, account: AccountId, path: &str) -> Result<Option<ObjectRecord>> {
        let (engine, name) = (self.engine.clone(), path.as_bytes().to_vec());
        Ok(blocking(move || engine.get_object(&account, Namespace::Drive, &name)).await??)
    }

    async fn adopt(&self, account: AccountId, chunks: Vec<(ChunkId, u32)>, limit: u64) -> Result<Ingested> {
        let engine = self.engine.clone();
        match blocking(move || engine.adopt_chunks(&account, chunks, limit)).await?? {
            Ok(ingested) => Ok(ingested),
            Err(Adoption::Missing(ids)) => Err(DriveError::MissingChunks(ids)),
            Err(Adoption::WrongSize { id, size, actual }) => Err(DriveError::WrongSize { id, size, actual }),
            Err(Adoption::TooLarge { .. }) => Err(self.over_quota(account, limit).await),
        }
    }

    /// The quota refusal of a write that could never fit, with the account's current usage.
    async fn over_quota(&self, account: AccountId, limit: u64) -> DriveError {
        let engine = self.engine.clone();
        match blocking(move || engine.usage(&account)).await {
            Ok(Ok(u)) => Error::Refused(Refusal::Quota { used: u.used, limit }).into(),
            Ok(Err(e)) | Err(e) => e.into(),
        }
    }
}

/// Storage work off the async runtime. A panic there is an internal error, not corruption.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))
}
