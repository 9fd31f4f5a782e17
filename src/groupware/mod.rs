//! Contacts and calendars as CardDAV/CalDAV objects over the sync service: the service the DAV
//! front (`http::groupware`) calls. It decides; the front only translates XML.
//!
//! Invariants:
//! - One record, two faces: a DAV object is a live record of a contacts or calendar sync
//!   collection whose JSON payload has a string `vcard` (`ical`); its DAV name is the record
//!   id, its ETag the record's version. Records without that field are not DAV objects: DAV
//!   never lists nor serves them, and reports them as removed in a sync-collection answer.
//! - Every write goes through `Sync::apply`: versions, conflicts and quota are the sync API's.
//! - Within one collection, no two DAV objects share a UID (`no-uid-conflict`): writes over DAV
//!   to one collection are checked and applied under that collection's lock in `UidIndex`.
//!   Writes through `/v1/sync` are not checked (they never were); they are seen as they are.
//! - Text is stored as given; a write whose text does not parse is refused whole.

pub mod card;
pub mod collections;
pub mod event;
pub mod filter;
pub mod text;
mod uids;

use serde_json::Value;

pub use collections::{Entry, Kind};

use crate::engine::Precondition;
use crate::store::keys::AccountId;
use crate::sync::{Op, Sync, SyncError, View, MAX_FEED, MAX_PAYLOAD};

/// The largest object text a client may PUT. Half the record limit: the payload holds the text
/// JSON-escaped (line breaks double) and the fields read from it, and must fit in 256 KiB.
pub const MAX_OBJECT: usize = MAX_PAYLOAD / 2;

#[derive(Debug, thiserror::Error)]
pub enum GroupwareError {
    #[error(transparent)]
    Card(#[from] card::CardError),
    #[error(transparent)]
    Calendar(#[from] event::CalError),
    #[error("another object of this collection, {0}, has the same UID")]
    UidConflict(String),
    #[error("an object is at most 128 KiB, and its record at most 256 KiB")]
    TooLarge,
    #[error("no such collection or object")]
    NotFound,
    #[error("the object changed: precondition failed")]
    PreconditionFailed,
    #[error("a collection of that name exists")]
    Exists,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("this calendar does not take {0} components")]
    UnsupportedComponent(String),
    #[error("the sync token is older than the oldest change kept; sync again from scratch")]
    TokenTooOld,
    #[error(transparent)]
    Sync(SyncError),
}

impl From<SyncError> for GroupwareError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Conflicts(_) | SyncError::Conflict { .. } => GroupwareError::PreconditionFailed,
            SyncError::TooLarge => GroupwareError::TooLarge,
            SyncError::NotFound => GroupwareError::NotFound,
            SyncError::ResyncRequired => GroupwareError::TokenTooOld,
            other => GroupwareError::Sync(other),
        }
    }
}

type Result<T> = std::result::Result<T, GroupwareError>;

/// An address book or calendar.
#[derive(Clone, Debug)]
pub struct Collection {
    pub kind: Kind,
    /// Its URL segment.
    pub segment: String,
    /// The sync collection holding its objects.
    pub sync_name: String,
    pub entry: Entry,
    /// The newest seq of the collection: `getctag` and the sync token.
    pub seq: u64,
}

/// A DAV object: a record with its text.
#[derive(Clone, Debug)]
pub struct Object {
    pub name: String,
    pub version: u64,
    pub text: String,
}

/// What changed in a collection after a sync token.
pub struct Changes {
    pub changed: Vec<Object>,
    /// Names no longer (or never) DAV objects: deleted, or rewritten without the text field.
    pub removed: Vec<String>,
    pub next: u64,
    pub more: bool,
}

/// The text of a DAV object from a record payload, if it is one.
pub fn object_text(kind: Kind, payload: &str) -> Option<String> {
    let v: Value = serde_json::from_str(payload).ok()?;
    v.get(kind.field())?.as_str().map(str::to_string)
}

fn object_of(kind: Kind, v: &View) -> Option<Object> {
    let text = object_text(kind, v.payload.as_deref()?)?;
    Some(Object { name: v.id.clone(), version: v.version, text })
}

/// A checked object, ready to store.
pub struct Checked {
    pub payload: Vec<u8>,
    pub uid: Option<String>,
    /// The component type of a calendar object (`VEVENT`, ...).
    pub component: Option<String>,
}

/// Check an object's text and build its record payload.
pub fn payload_for(kind: Kind, text: &str) -> Result<Checked> {
    if text.len() > MAX_OBJECT {
        return Err(GroupwareError::TooLarge);
    }
    let (payload, uid, component) = match kind {
        Kind::Contacts => {
            let c = card::parse(text)?;
            (serde_json::to_vec(&c), c.uid, None)
        }
        Kind::Calendar => {
            let o = event::parse(text)?;
            (serde_json::to_vec(&o), Some(o.uid), Some(o.kind))
        }
    };
    let payload = payload.map_err(|e| GroupwareError::Sync(crate::error::Error::Internal(e.to_string()).into()))?;
    if payload.len() > MAX_PAYLOAD {
        return Err(GroupwareError::TooLarge);
    }
    Ok(Checked { payload, uid, component })
}

/// The service. Cheap to clone.
#[derive(Clone)]
pub struct Groupware {
    sync: Sync,
    uids: uids::UidIndex,
}

impl Groupware {
    pub fn new(sync: Sync) -> Self {
        Groupware { sync, uids: uids::UidIndex::default() }
    }

    fn registry(&self, account: &AccountId) -> Result<Vec<(String, Entry)>> {
        let mut out = Vec::new();
        let mut since = 0;
        loop {
            let feed = self.sync.feed(account, collections::REGISTRY, since, MAX_FEED)?;
            for v in &feed.records {
                if let Some(e) = v.payload.as_deref().and_then(|p| serde_json::from_str::<Entry>(p).ok()) {
                    out.push((v.id.clone(), e));
                }
            }
            if !feed.more {
                return Ok(out);
            }
            since = feed.next;
        }
    }

    fn registry_entry(&self, account: &AccountId, sync_name: &str) -> Result<Option<Entry>> {
        match self.sync.get(account, collections::REGISTRY, sync_name) {
            Ok(v) => Ok(v.payload.as_deref().and_then(|p| serde_json::from_str(p).ok())),
            Err(SyncError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn described(
        &self,
        account: &AccountId,
        kind: Kind,
        segment: &str,
        sync_name: String,
        entry: Entry,
    ) -> Result<Collection> {
        let seq = self.sync.collection(account, &sync_name)?.seq;
        Ok(Collection { kind, segment: segment.to_string(), sync_name, entry, seq })
    }

    /// The account's collections of `kind`, the default first. Blocking.
    pub fn collections(&self, account: &AccountId, kind: Kind) -> Result<Vec<Collection>> {
        let registry = self.registry(account)?;
        let default = kind.default_collection();
        let default_entry = registry
            .iter()
            .find(|(id, e)| id == default && e.is(kind))
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| Entry::new(kind, collections::DEFAULT_SEGMENT));
        let mut out =
            vec![self.described(account, kind, collections::DEFAULT_SEGMENT, default.to_string(), default_entry)?];
        for (id, e) in registry {
            if e.is(kind) && id != default && collections::sync_name(kind, &e.name).as_deref() == Some(id.as_str()) {
                out.push(self.described(account, kind, &e.name.clone(), id, e)?);
            }
        }
        Ok(out)
    }

    /// One collection by its URL segment. Blocking.
    pub fn collection(&self, account: &AccountId, kind: Kind, segment: &str) -> Result<Collection> {
        let sync_name = collections::sync_name(kind, segment).ok_or(GroupwareError::NotFound)?;
        let entry = self.registry_entry(account, &sync_name)?.filter(|e| e.is(kind));
        let entry = match entry {
            Some(e) => e,
            None if segment == collections::DEFAULT_SEGMENT => Entry::new(kind, segment),
            None => return Err(GroupwareError::NotFound),
        };
        self.described(account, kind, segment, sync_name, entry)
    }

    /// MKCOL / MKCALENDAR. Blocking.
    pub fn create_collection(
        &self,
        account: &AccountId,
        kind: Kind,
        segment: &str,
        entry: Entry,
        limit: u64,
    ) -> Result<()> {
        let sync_name = collections::sync_name(kind, segment)
            .ok_or(GroupwareError::Forbidden("a collection name is 1 to 64 of A-Z a-z 0-9 . _ ~ -"))?;
        if segment == collections::DEFAULT_SEGMENT {
            return Err(GroupwareError::Exists);
        }
        let payload =
            serde_json::to_vec(&Entry { kind: Entry::new(kind, segment).kind, name: segment.to_string(), ..entry })
                .map_err(|e| GroupwareError::Sync(crate::error::Error::Internal(e.to_string()).into()))?;
        let op = Op::Put { id: sync_name, payload, expect: Precondition::IfAbsent };
        match self.sync.apply(account, collections::REGISTRY, vec![op], limit) {
            Err(SyncError::Conflicts(_)) => Err(GroupwareError::Exists),
            other => other.map(drop).map_err(Into::into),
        }
    }

    /// PROPPATCH of the properties the registry keeps. Blocking.
    pub fn update_collection(&self, account: &AccountId, c: &Collection, entry: Entry, limit: u64) -> Result<()> {
        let payload = serde_json::to_vec(&entry)
            .map_err(|e| GroupwareError::Sync(crate::error::Error::Internal(e.to_string()).into()))?;
        let op = Op::Put { id: c.sync_name.clone(), payload, expect: Precondition::None };
        self.sync.apply(account, collections::REGISTRY, vec![op], limit)?;
        Ok(())
    }

    /// DELETE of a collection: its records, then its registry entry. The defaults stay. Blocking.
    pub fn delete_collection(&self, account: &AccountId, c: &Collection) -> Result<()> {
        if c.segment == collections::DEFAULT_SEGMENT {
            return Err(GroupwareError::Forbidden("the default address book and calendar cannot be deleted"));
        }
        loop {
            let feed = self.sync.feed(account, &c.sync_name, 0, MAX_FEED)?;
            let ops: Vec<Op> = feed
                .records
                .iter()
                .filter(|v| !v.deleted)
                .take(crate::sync::MAX_BATCH)
                .map(|v| Op::Delete { id: v.id.clone(), expect: Precondition::None })
                .collect();
            if ops.is_empty() {
                break;
            }
            self.sync.apply(account, &c.sync_name, ops, u64::MAX)?;
        }
        let op = Op::Delete { id: c.sync_name.clone(), expect: Precondition::None };
        self.sync.apply(account, collections::REGISTRY, vec![op], u64::MAX)?;
        Ok(())
    }

    /// Every DAV object of a collection, in seq order. Blocking.
    pub fn objects(&self, account: &AccountId, c: &Collection) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let mut since = 0;
        loop {
            let feed = self.sync.feed(account, &c.sync_name, since, MAX_FEED)?;
            out.extend(feed.records.iter().filter(|v| !v.deleted).filter_map(|v| object_of(c.kind, v)));
            if !feed.more {
                return Ok(out);
            }
            since = feed.next;
        }
    }

    /// One DAV object. Blocking.
    pub fn object(&self, account: &AccountId, c: &Collection, name: &str) -> Result<Object> {
        crate::sync::check_id(name).map_err(|_| GroupwareError::NotFound)?;
        let v = self.sync.get(account, &c.sync_name, name)?;
        object_of(c.kind, &v).ok_or(GroupwareError::NotFound)
    }

    /// PUT of an object: checked, its UID unique in the collection, written under `expect`.
    /// Returns the record and whether it is new. Blocking.
    pub fn put(
        &self,
        account: &AccountId,
        c: &Collection,
        name: &str,
        text: &str,
        expect: Precondition,
        limit: u64,
    ) -> Result<(View, bool)> {
        crate::sync::check_id(name)
            .map_err(|_| GroupwareError::Forbidden("an object name is 1 to 64 of A-Z a-z 0-9 . _ ~ -"))?;
        let Checked { payload, uid, component } = payload_for(c.kind, text)?;
        if let Some(component) = component.filter(|k| !c.entry.takes(k)) {
            return Err(GroupwareError::UnsupportedComponent(component));
        }
        let index = self.uids.of(*account, &c.sync_name);
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        index.refresh(&self.sync, account, c)?;
        if let Some(other) = uid.as_deref().and_then(|u| index.holder(u)).filter(|other| *other != name) {
            return Err(GroupwareError::UidConflict(other.to_string()));
        }
        let existed = match self.sync.get(account, &c.sync_name, name) {
            Ok(_) => true,
            Err(SyncError::NotFound) => false,
            Err(e) => return Err(e.into()),
        };
        let op = Op::Put { id: name.to_string(), payload, expect };
        let view = self.sync.apply(account, &c.sync_name, vec![op], limit)?.pop().ok_or(GroupwareError::NotFound)?;
        Ok((view, !existed))
    }

    /// DELETE of an object (a tombstone, as through the sync API). Blocking.
    pub fn delete(&self, account: &AccountId, c: &Collection, name: &str, expect: Precondition) -> Result<()> {
        self.object(account, c, name)?;
        let op = Op::Delete { id: name.to_string(), expect };
        self.sync.apply(account, &c.sync_name, vec![op], u64::MAX)?;
        Ok(())
    }

    /// The changes after `since` (0: everything there is), at most `limit` records looked at.
    /// Blocking.
    pub fn changes(&self, account: &AccountId, c: &Collection, since: u64, limit: usize) -> Result<Changes> {
        let feed = self.sync.feed(account, &c.sync_name, since, limit.clamp(1, MAX_FEED))?;
        let (mut changed, mut removed) = (Vec::new(), Vec::new());
        for v in &feed.records {
            match object_of(c.kind, v).filter(|_| !v.deleted) {
                Some(o) => changed.push(o),
                None if since > 0 => removed.push(v.id.clone()),
                None => {}
            }
        }
        Ok(Changes { changed, removed, next: feed.next.max(since), more: feed.more })
    }
}
