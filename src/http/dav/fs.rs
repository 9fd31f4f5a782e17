//! The drive as `dav-server` sees a file system: one per request, bound to the account, its
//! quota limit and the request's write precondition. Every call is one drive-service call; what
//! the service refuses is kept (`Failure`) so the front can answer it in DAV's words.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsStream, OpenOptions, ReadDirMeta,
};
use futures::FutureExt;
use http::StatusCode;

use super::file::{ReadFile, WriteFile};
use crate::drive::{Drive, DriveError, Entry, PropChange, Transfer};
use crate::engine::{Engine, Precondition};
use crate::error::{Error, Refusal};
use crate::store::identity_keys::DeviceId;
use crate::store::keys::{AccountId, ObjectRecord};
use crate::store::prop_keys::DeadProp;

/// The service's own error behind the last `FsError`, for the front to answer precisely
/// (`FsError` has no 412, and its 507 carries no precondition element).
pub type Failure = Arc<Mutex<Option<DriveError>>>;

#[derive(Clone)]
pub struct DriveFs {
    pub drive: Drive,
    pub engine: Engine,
    pub account: AccountId,
    pub device: DeviceId,
    pub limit: u64,
    /// `If-Match`/`If-None-Match` of this request, checked again at commit under the account's
    /// lock (dav-server checks it before; only the commit's check closes the race).
    pub pre: Precondition,
    pub failure: Failure,
}

/// What `metadata` and listings show of a file or folder.
#[derive(Clone, Debug)]
pub struct Meta {
    pub dir: bool,
    pub len: u64,
    pub modified_ms: i64,
    pub version: Option<u64>,
}

impl Meta {
    pub fn of(entry: &Entry) -> Meta {
        match entry {
            Entry::File(r) => Meta::file(r),
            Entry::Folder(m) => {
                Meta { dir: true, len: 0, modified_ms: m.as_ref().map_or(0, |r| r.modified), version: None }
            }
        }
    }

    pub fn file(r: &ObjectRecord) -> Meta {
        Meta { dir: false, len: r.size, modified_ms: r.modified, version: Some(r.version) }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> Result<SystemTime, FsError> {
        Ok(UNIX_EPOCH + Duration::from_millis(self.modified_ms.max(0) as u64))
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    /// The same tag as `/v1/files` gives (dav-server adds the quotes).
    fn etag(&self) -> Option<String> {
        self.version.map(|v| v.to_string())
    }
}

#[derive(Debug)]
struct DirEntry {
    name: Vec<u8>,
    meta: Meta,
}

impl DavDirEntry for DirEntry {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        futures::future::ready(Ok(Box::new(self.meta.clone()) as Box<dyn DavMetaData>)).boxed()
    }
}

/// A DAV path as a drive path: no leading or trailing slash; the root is `""`.
pub fn drive_path(p: &DavPath) -> Result<String, FsError> {
    let b = p.as_bytes();
    let b = b.strip_prefix(b"/").unwrap_or(b);
    let b = b.strip_suffix(b"/").unwrap_or(b);
    String::from_utf8(b.to_vec()).map_err(|_| FsError::NotFound)
}

impl DriveFs {
    /// Keep the service's error for the front, and say it as dav-server understands it.
    pub fn fail(&self, e: DriveError) -> FsError {
        let fs = match &e {
            DriveError::NotFound | DriveError::NoParent | DriveError::UnderFile => FsError::NotFound,
            DriveError::Exists | DriveError::IsFolder => FsError::Exists,
            DriveError::SamePath | DriveError::Nested | DriveError::TooMany | DriveError::BadPath(_) => {
                FsError::Forbidden
            }
            DriveError::Engine(Error::Refused(Refusal::Quota { .. })) => FsError::InsufficientStorage,
            DriveError::Engine(e) if e.is_disk_full() => FsError::InsufficientStorage,
            DriveError::PropsTooLarge => FsError::InsufficientStorage,
            _ => FsError::GeneralFailure,
        };
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        fs
    }

    async fn stat(&self, path: &DavPath) -> Result<Entry, FsError> {
        let p = drive_path(path)?;
        self.drive.stat(self.account, &p).await.map_err(|e| self.fail(e))?.ok_or(FsError::NotFound)
    }

    async fn transfer(&self, how: Transfer, from: &DavPath, to: &DavPath) -> Result<(), FsError> {
        let (from, to) = (drive_path(from)?, drive_path(to)?);
        self.drive.transfer(self.account, how, &from, &to, true, self.limit).await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn remove(&self, path: &DavPath) -> Result<(), FsError> {
        let p = drive_path(path)?;
        match self.drive.remove(self.account, &p, Some(self.device)).await {
            Ok(_) | Err(DriveError::NotFound) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn open_write(&self, path: &DavPath, oo: OpenOptions) -> Result<Box<dyn DavFile>, FsError> {
        let p = drive_path(path)?;
        if p.is_empty() {
            return Err(FsError::Forbidden);
        }
        match self.drive.stat(self.account, crate::drive::folders::parent(&p)).await.map_err(|e| self.fail(e))? {
            Some(Entry::Folder(_)) => {}
            _ => return Err(FsError::NotFound),
        }
        match self.drive.stat(self.account, &p).await.map_err(|e| self.fail(e))? {
            Some(Entry::Folder(_)) => return Err(FsError::Forbidden),
            Some(Entry::File(_)) if oo.create_new => return Err(FsError::Exists),
            None if !oo.create => return Err(FsError::NotFound),
            _ => {}
        }
        Ok(Box::new(WriteFile::start(self.clone(), p, oo.size)))
    }

    async fn open_read(&self, path: &DavPath) -> Result<Box<dyn DavFile>, FsError> {
        let p = drive_path(path)?;
        let (record, chunks) = self.drive.get(self.account, &p).await.map_err(|e| self.fail(e))?;
        Ok(Box::new(ReadFile::new(self.engine.clone(), record, chunks)))
    }

    async fn patch(&self, path: &DavPath, patch: Vec<(bool, DavProp)>) -> Result<Vec<(StatusCode, DavProp)>, FsError> {
        let p = drive_path(path)?;
        let changes = patch
            .iter()
            .map(|(set, prop)| {
                let (namespace, name) = (prop.namespace.clone().unwrap_or_default(), prop.name.clone());
                match set {
                    true => PropChange::Set(DeadProp { namespace, name, xml: prop.xml.clone() }),
                    false => PropChange::Remove { namespace, name },
                }
            })
            .collect();
        let status = match self.drive.patch_props(self.account, &p, changes, self.limit).await {
            Ok(()) => StatusCode::OK,
            Err(DriveError::PropsTooLarge) | Err(DriveError::Engine(Error::Refused(_))) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            Err(e) => return Err(self.fail(e)),
        };
        Ok(patch.into_iter().map(|(_, p)| (status, DavProp { xml: None, ..p })).collect())
    }

    async fn props(&self, path: &DavPath) -> Result<Vec<DavProp>, FsError> {
        let p = drive_path(path)?;
        let props = self.drive.props(self.account, &p).await.map_err(|e| self.fail(e))?;
        Ok(props
            .into_iter()
            .map(|d| DavProp {
                name: d.name,
                prefix: None,
                namespace: (!d.namespace.is_empty()).then_some(d.namespace),
                xml: d.xml,
            })
            .collect())
    }
}

impl DavFileSystem for DriveFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write {
                self.open_write(path, options).await
            } else {
                self.open_read(path).await
            }
        }
        .boxed()
    }

    fn read_dir<'a>(&'a self, path: &'a DavPath, _meta: ReadDirMeta) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let folder = drive_path(path)?;
            let children = self.drive.children(self.account, &folder).await.map_err(|e| self.fail(e))?;
            let entries: Vec<Result<Box<dyn DavDirEntry>, FsError>> = children
                .into_iter()
                .map(|c| {
                    let name = c.path.rsplit('/').next().unwrap_or_default().as_bytes().to_vec();
                    Ok(Box::new(DirEntry { name, meta: Meta::of(&c.entry) }) as Box<dyn DavDirEntry>)
                })
                .collect();
            Ok(Box::pin(futures::stream::iter(entries)) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move { Ok(Box::new(Meta::of(&self.stat(path).await?)) as Box<dyn DavMetaData>) }.boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let p = drive_path(path)?;
            self.drive.mkdir(self.account, &p, self.limit).await.map_err(|e| self.fail(e))?;
            Ok(())
        }
        .boxed()
    }

    /// The whole folder goes (its files to the trash) in one transaction; dav-server has
    /// removed its files one by one before, and a folder that held only files is gone with
    /// them, which is success too.
    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path).boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path).boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        self.transfer(Transfer::Move, from, to).boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        self.transfer(Transfer::Copy, from, to).boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        futures::future::ready(true).boxed()
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        self.patch(path, patch).boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let mut props = self.props(path).await?;
            if !do_content {
                props.iter_mut().for_each(|p| p.xml = None);
            }
            Ok(props)
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let props = self.props(path).await?;
            props
                .into_iter()
                .find(|p| p.name == prop.name && p.namespace == prop.namespace)
                .and_then(|p| p.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }

    /// RFC 4331: used is the account's whole usage (one quota for everything), the total its
    /// plan's limit.
    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        async move {
            let (engine, account) = (self.engine.clone(), self.account);
            let usage = tokio::task::spawn_blocking(move || engine.usage(&account))
                .await
                .map_err(|_| FsError::GeneralFailure)?
                .map_err(|_| FsError::GeneralFailure)?;
            Ok((usage.used, Some(self.limit.max(usage.used))))
        }
        .boxed()
    }
}
