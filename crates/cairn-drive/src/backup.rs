//! Device backups: a folder's files and folders, with their modes and mtimes, as one backup
//! manifest; and a restore of one backup into a folder.
//!
//! Invariants: every file is chunked first, then the server is asked once (in batches) which of
//! all those chunks it lacks, and only those are sent: a second backup of a barely changed tree
//! sends about the changed bytes. `mode` is the whole `st_mode` (type and permission bits), so
//! folders, empty ones too, come back as folders. A restore never writes outside its folder.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::{encode_segment, BackupEntry, BackupSummary};
use crate::error::{DriveError, Result};
use crate::local::{self, Rules};
use crate::transfer::{Sent, Transfer};

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

#[derive(Debug, Serialize)]
pub struct BackupDone {
    #[serde(flatten)]
    pub backup: BackupSummary,
    pub sent: Sent,
}

pub async fn backup(t: &Transfer, root: &Path, device: &str, label: &str) -> Result<BackupDone> {
    let rules = Rules::load(root);
    let mut skipped = Vec::new();
    let scanned = local::scan(root, &rules, &mut skipped)?;
    for s in skipped {
        t.report.warn(&format!("{s}: the name is not UTF-8; not backed up"));
    }
    let bytes: u64 = scanned.values().map(|e| e.size).sum();
    t.report.start(scanned.len() as u64, bytes);
    let mut entries = Vec::with_capacity(scanned.len());
    let mut sent = Sent::default();
    for (rel, e) in &scanned {
        let mtime = OffsetDateTime::from_unix_timestamp_nanos(e.mtime_ns as i128)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
        if e.is_dir {
            entries.push(BackupEntry { path: rel.clone(), size: 0, mode: S_IFDIR | e.mode, mtime, chunks: vec![] });
        } else {
            let p = root.join(rel);
            let chunked = t.chunk(&p).await?;
            let s = t.send_missing(&p, &chunked).await?;
            if s.chunks > 0 {
                t.report.action("backup", rel, &format!("{} chunks sent", s.chunks));
            }
            sent.add(s);
            entries.push(BackupEntry {
                path: rel.clone(),
                size: chunked.size,
                mode: S_IFREG | e.mode,
                mtime,
                chunks: chunked.refs(),
            });
        }
        t.report.file_done();
    }
    let backup = t.api.create_backup(device, label, &entries).await?;
    t.report.finish();
    Ok(BackupDone { backup, sent })
}

#[derive(Debug, Default, Serialize)]
pub struct Restored {
    pub files: u64,
    pub folders: u64,
    pub bytes: u64,
}

pub async fn restore(t: &Transfer, id: &str, root: &Path) -> Result<Restored> {
    let manifest = t.api.backup(id).await?;
    std::fs::create_dir_all(root).map_err(DriveError::io(root))?;
    let total: u64 = manifest.entries.iter().map(|e| e.size).sum();
    t.report.start(manifest.entries.len() as u64, total);
    let mut done = Restored::default();
    let mut dirs = Vec::new();
    for e in &manifest.entries {
        let dest = inside(root, &e.path)?;
        let mtime = OffsetDateTime::parse(&e.mtime, &Rfc3339).ok();
        if e.mode & S_IFMT == S_IFDIR {
            std::fs::create_dir_all(&dest).map_err(DriveError::io(&dest))?;
            dirs.push((dest, e.mode, mtime));
            done.folders += 1;
        } else {
            let url_path = format!("/v1/backups/{}/files/{}", encode_segment(id), encode_segment(&e.path));
            let resp = t.api.get_path(&url_path).await?;
            let (_, size) = t.write_stream(resp.bytes_stream(), &dest).await?;
            set_meta(&dest, e.mode, mtime)?;
            t.report.action("restore", &e.path, "");
            done.files += 1;
            done.bytes += size;
        }
        t.report.file_done();
    }
    // Folders last, deepest first: writing their files moved their mtimes.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (d, mode, mtime) in dirs {
        set_meta(&d, mode, mtime)?;
    }
    t.report.finish();
    Ok(done)
}

/// `path` under `root`, refusing anything that would climb out (`..`); a leading `/` (a phone's
/// absolute path) is taken as relative.
fn inside(root: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(DriveError::Usage(format!("the backup holds a path that cannot be restored safely: {path:?}")));
    }
    Ok(root.join(rel))
}

fn set_meta(p: &Path, mode: u32, mtime: Option<OffsetDateTime>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777)).map_err(DriveError::io(p))?;
    if let Some(m) = mtime {
        let f = std::fs::File::open(p).map_err(DriveError::io(p))?;
        f.set_modified(m.into()).map_err(DriveError::io(p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_stays_inside() {
        let root = Path::new("/r");
        assert_eq!(inside(root, "/sdcard/a.jpg").unwrap(), Path::new("/r/sdcard/a.jpg"));
        assert!(inside(root, "a/../../etc/passwd").is_err());
        assert!(inside(root, "/").is_err());
    }
}
