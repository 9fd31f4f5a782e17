//! The JSON bodies of API.md's answers, as types. A handler fills one of these and nothing
//! else, so a field's name and type are said once and a misspelt key does not compile; the
//! operators' reports (GC, fsck, stats, plan changes) are typed where they are made and
//! shared with the CLI. Versions are strings, as API.md says: JavaScript clients lose
//! precision on integers past 2^53.

use std::collections::BTreeMap;

use serde::Serialize;

use super::rfc3339_millis;
use crate::store::keys::ObjectRecord;

/// `GET /healthz`, `GET /readyz`.
#[derive(Serialize)]
pub struct Status {
    pub status: &'static str,
}

/// `GET /v1/chunking`: what a client must cut with for its chunks to deduplicate with ours.
#[derive(Serialize)]
pub struct Chunking {
    pub algorithm: &'static str,
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// `POST /v1/codes`.
#[derive(Serialize)]
pub struct CodeSent {
    pub expires_in: u64,
}

/// `POST /v1/accounts`.
#[derive(Serialize)]
pub struct Registered {
    pub account_id: String,
}

/// `POST /v1/sessions`, `POST /v1/password-reset`.
#[derive(Serialize)]
pub struct SessionOut {
    pub token: String,
    pub account_id: String,
    pub device_id: String,
    pub expires_at: String,
}

impl From<crate::identity::NewSession> for SessionOut {
    fn from(s: crate::identity::NewSession) -> Self {
        SessionOut {
            token: s.token,
            account_id: s.account.to_string(),
            device_id: s.device_id.to_string(),
            expires_at: s.expires_at,
        }
    }
}

/// `GET /v1/account/activity`.
#[derive(Serialize)]
pub struct Events<E> {
    pub events: Vec<E>,
}

/// `GET /v1/devices`.
#[derive(Serialize)]
pub struct Devices<D> {
    pub devices: Vec<D>,
}

/// `GET /v1/app-passwords`: newest first, never the secrets.
#[derive(Serialize)]
pub struct AppPasswords {
    pub app_passwords: Vec<crate::identity::AppPassword>,
}

/// `DELETE /v1/account`.
#[derive(Serialize)]
pub struct AccountDeleted {
    pub account_id: String,
    pub deleted: bool,
}

/// `GET /v1/quota`.
#[derive(Serialize)]
pub struct Quota {
    pub plan: String,
    pub limit: u64,
    pub used: u64,
    pub available: u64,
    pub metadata: u64,
    pub services: Services,
}

#[derive(Serialize)]
pub struct Services {
    pub drive: u64,
    pub backups: u64,
    pub sync: u64,
    pub trash: u64,
    pub versions: u64,
}

/// A drive file, in listings and as the answer to a write.
#[derive(Serialize)]
pub struct File<'a> {
    pub path: &'a str,
    /// `"file"`, or `"folder"` for a folder made empty on purpose (WebDAV MKCOL), listed so
    /// that it shows; folders that hold files are seen in their files' paths.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub hash: String,
    pub version: String,
    pub modified: String,
}

impl<'a> File<'a> {
    pub fn folder(path: &'a str, rec: &ObjectRecord) -> Self {
        File { kind: "folder", ..File::new(path, rec) }
    }

    pub fn new(path: &'a str, rec: &ObjectRecord) -> Self {
        File {
            path,
            kind: "file",
            size: rec.size,
            hash: hex::encode(rec.hash),
            version: rec.version.to_string(),
            modified: rfc3339_millis(rec.modified),
        }
    }
}

/// `GET /v1/files`: one page, and the cursor of the next if there is one.
#[derive(Serialize)]
pub struct FileList<'a> {
    pub files: Vec<File<'a>>,
    pub next: Option<String>,
}

/// `POST /v1/chunks/missing`.
#[derive(Serialize)]
pub struct Missing {
    pub missing: Vec<String>,
}

/// `PUT /v1/chunks/{hash}`.
#[derive(Serialize)]
pub struct ChunkStaged {
    pub hash: String,
    pub size: u64,
    pub staged_until: String,
}

/// `GET /v1/sync`.
#[derive(Serialize)]
pub struct SyncSummary {
    pub collections: BTreeMap<String, CollectionSummary>,
}

#[derive(Serialize)]
pub struct CollectionSummary {
    pub count: u64,
    pub bytes: u64,
    pub seq: u64,
}

/// A sync write's outcome: `PUT` shows the id, `DELETE` does not, a batch adds `deleted`.
#[derive(Serialize)]
pub struct RecordWritten<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub version: String,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// `POST /v1/sync/{collection}/batch`.
#[derive(Serialize)]
pub struct Batch<'a> {
    pub records: Vec<RecordWritten<'a>>,
}

/// `POST /v1/backups`.
#[derive(Serialize)]
pub struct BackupCreated {
    pub backup_id: String,
    pub created_at: String,
    pub size: u64,
    pub files: u64,
}

/// `GET /v1/backups`.
#[derive(Serialize)]
pub struct Backups<B> {
    pub backups: Vec<B>,
}

/// `GET /v1/trash`: newest deletion first.
#[derive(Serialize)]
pub struct Trash<'a> {
    pub items: Vec<TrashEntry<'a>>,
    pub next: Option<String>,
}

#[derive(Serialize)]
pub struct TrashEntry<'a> {
    pub id: String,
    #[serde(flatten)]
    pub file: File<'a>,
    pub deleted_at: String,
    /// The signed-in device that deleted it.
    pub device_id: Option<String>,
}

/// `DELETE /v1/trash`.
#[derive(Serialize)]
pub struct Purged {
    pub purged: u64,
}

/// `GET /v1/files/{path}?versions`: the kept old versions, newest first.
#[derive(Serialize)]
pub struct Versions<'a> {
    pub versions: Vec<File<'a>>,
}

/// `POST /admin/clock`.
#[derive(Serialize)]
pub struct ClockNow {
    pub now_ms: u64,
}
