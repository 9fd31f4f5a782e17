//! Two-way folder sync: one pass scans both sides, plans with [`crate::plan`], and carries the
//! plan out action by action; `--watch` repeats passes on filesystem events and on a timer.
//!
//! Invariants: every remote write carries a precondition (`If-Match` the version last seen, or
//! `If-None-Match: *`), so a remote change this pass has not seen is never overwritten: the
//! write fails with 412, the action is deferred, and the next pass sees the change. A local file
//! is replaced or deleted only if it still looks as it did when scanned. The state row of a path
//! is written right after its action succeeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::api::{ApiError, Precondition};
use crate::error::{DriveError, Result};
use crate::local::{self, LocalEntry, Rules};
use crate::plan::{self, Action};
use crate::state::{Base, State};
use crate::transfer::{hash_file, Sent, Transfer};

/// What one sync did.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub uploaded: u64,
    pub downloaded: u64,
    pub deleted_remote: u64,
    pub deleted_local: u64,
    pub renamed_remote: u64,
    pub renamed_local: u64,
    pub conflicts: u64,
    /// Actions left for the next pass because a side changed under them.
    pub deferred: u64,
    pub sent: Sent,
    /// The actions a dry run would take.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

impl Summary {
    fn add(&mut self, o: Summary) {
        self.uploaded += o.uploaded;
        self.downloaded += o.downloaded;
        self.deleted_remote += o.deleted_remote;
        self.deleted_local += o.deleted_local;
        self.renamed_remote += o.renamed_remote;
        self.renamed_local += o.renamed_local;
        self.conflicts += o.conflicts;
        self.deferred = o.deferred;
        self.sent.add(o.sent);
        self.pending = o.pending;
    }

    pub fn line(&self) -> String {
        format!(
            "up {} down {} deleted {}+{} renamed {}+{} conflicts {} ({} chunks, {} sent)",
            self.uploaded,
            self.downloaded,
            self.deleted_remote,
            self.deleted_local,
            self.renamed_remote,
            self.renamed_local,
            self.conflicts,
            self.sent.chunks,
            crate::report::size(self.sent.bytes),
        )
    }
}

pub struct Folder<'a> {
    pub root: PathBuf,
    /// The remote folder, without slashes at either end; empty for the whole drive.
    pub remote: String,
    pub device: String,
    pub state: State,
    pub t: &'a Transfer,
}

impl Folder<'_> {
    fn remote_path(&self, rel: &str) -> String {
        if self.remote.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.remote)
        }
    }

    fn local_path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Passes until nothing is deferred (at most three: a busy remote must not hold us forever).
    pub async fn sync(&self, dry_run: bool) -> Result<Summary> {
        let mut total = Summary::default();
        for _ in 0..3 {
            let s = self.pass(dry_run).await?;
            let again = s.deferred > 0 && !dry_run;
            total.add(s);
            if !again {
                break;
            }
        }
        Ok(total)
    }

    /// One scan, plan and execution.
    pub async fn pass(&self, dry_run: bool) -> Result<Summary> {
        let report = &self.t.report;
        let rules = Rules::load(&self.root);
        let mut skipped = Vec::new();
        let scanned = local::scan(&self.root, &rules, &mut skipped)?;
        for s in skipped {
            report.warn(&format!("{s}: the name is not UTF-8; not synced"));
        }
        let base: BTreeMap<String, Base> =
            self.state.all()?.into_iter().filter(|(p, _)| !rules.ignored(p, false)).collect();
        let mut local = BTreeMap::new();
        for (rel, e) in scanned.iter().filter(|(_, e)| !e.is_dir) {
            let hash = match base.get(rel) {
                Some(b) if b.size == e.size && b.mtime_ns == e.mtime_ns => b.hash.clone(),
                _ => {
                    let p = self.local_path(rel);
                    let h = match tokio::task::spawn_blocking(move || hash_file(&p))
                        .await
                        .expect("hashing does not panic")
                    {
                        Ok(h) => h,
                        // Removed since the scan: the next pass sees it gone.
                        Err(DriveError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    // Touched but not changed: remember the new mtime, so it is not hashed again.
                    if let Some(b) = base.get(rel).filter(|b| b.hash == h) {
                        let mtime_ns = settled(e.mtime_ns);
                        self.state
                            .put(rel, &Base { size: e.size, mtime_ns, hash: h.clone(), version: b.version.clone() })?;
                    }
                    h
                }
            };
            local.insert(rel.clone(), plan::LocalFile { size: e.size, mtime_ns: e.mtime_ns, hash });
        }
        let prefix = if self.remote.is_empty() { String::new() } else { format!("{}/", self.remote) };
        let mut remote = BTreeMap::new();
        for f in self.t.api.list(&prefix).await? {
            let Some(rel) = f.path.strip_prefix(&prefix) else { continue };
            if rules.ignored(rel, false) {
                continue;
            }
            remote.insert(rel.to_string(), plan::RemoteFile { size: f.size, hash: f.hash, version: f.version });
        }
        let actions = plan::reconcile(&local, &remote, &base);
        let mut summary = Summary::default();
        if dry_run {
            summary.pending = actions.iter().map(|a| format!("{a:?}")).collect();
            return Ok(summary);
        }
        let bytes: u64 = actions
            .iter()
            .map(|a| match a {
                Action::Upload { path, .. } => local[path].size,
                Action::Download { path } => remote[path].size,
                Action::Conflict { path } => local[path].size + remote[path].size,
                _ => 0,
            })
            .sum();
        report.start(actions.len() as u64, bytes);
        let ctx = Pass { scanned: &scanned, local: &local, remote: &remote };
        for a in &actions {
            match self.act(a, &ctx, &mut summary).await {
                Ok(()) => {}
                Err(DriveError::Api(ApiError::Precondition)) | Err(DriveError::FileChanged(_)) => {
                    report.warn(&format!("{}: changed while syncing; taken up again next pass", target(a)));
                    summary.deferred += 1;
                }
                Err(e) => {
                    report.finish();
                    return Err(e);
                }
            }
            report.file_done();
        }
        report.finish();
        Ok(summary)
    }

    async fn act(&self, a: &Action, c: &Pass<'_>, s: &mut Summary) -> Result<()> {
        let report = &self.t.report;
        match a {
            Action::Record { path } => {
                let (l, r) = (&c.local[path], &c.remote[path]);
                let mtime_ns = settled(l.mtime_ns);
                self.state
                    .put(path, &Base { size: l.size, mtime_ns, hash: l.hash.clone(), version: r.version.clone() })?;
            }
            Action::Forget { path } => self.state.remove(path)?,
            Action::Upload { path, version } => {
                let pre = version.clone().map_or(Precondition::IfAbsent, Precondition::IfMatch);
                let sent = self.upload(path, &pre, &c.scanned[path]).await?;
                report.action("upload", path, &format!("{} chunks sent", sent.chunks));
                s.uploaded += 1;
                s.sent.add(sent);
            }
            Action::Download { path } => {
                self.download(path, c.scanned.get(path)).await?;
                report.action("download", path, "");
                s.downloaded += 1;
            }
            Action::DeleteRemote { path, version } => {
                match self.t.api.delete_file(&self.remote_path(path), &Precondition::IfMatch(version.clone())).await {
                    Ok(()) | Err(ApiError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                self.state.remove(path)?;
                report.action("delete", &self.remote_path(path), "on the server");
                s.deleted_remote += 1;
            }
            Action::DeleteLocal { path } => {
                let p = self.local_path(path);
                self.unchanged(path, c.scanned.get(path))?;
                if let Err(e) = std::fs::remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(DriveError::io(&p)(e));
                    }
                }
                self.remove_empty_parents(&p);
                self.state.remove(path)?;
                report.action("delete", path, "locally");
                s.deleted_local += 1;
            }
            Action::RenameRemote { from, to, version } => {
                let sent = self.upload(to, &Precondition::IfAbsent, &c.scanned[to]).await?;
                s.sent.add(sent);
                let deleted =
                    self.t.api.delete_file(&self.remote_path(from), &Precondition::IfMatch(version.clone())).await;
                // Forgotten either way: a remote edit of `from` (412) comes back as a new file.
                self.state.remove(from)?;
                match deleted {
                    Ok(()) | Err(ApiError::NotFound) | Err(ApiError::Precondition) => {}
                    Err(e) => return Err(e.into()),
                }
                report.action(
                    "rename",
                    &format!("{from} -> {to}"),
                    &format!("on the server, {} chunks sent", sent.chunks),
                );
                s.renamed_remote += 1;
            }
            Action::RenameLocal { from, to } => {
                let (src, dst) = (self.local_path(from), self.local_path(to));
                self.unchanged(from, c.scanned.get(from))?;
                if dst.exists() {
                    return Err(DriveError::FileChanged(dst));
                }
                if let Some(dir) = dst.parent() {
                    std::fs::create_dir_all(dir).map_err(DriveError::io(dir))?;
                }
                std::fs::rename(&src, &dst).map_err(DriveError::io(&src))?;
                self.remove_empty_parents(&src);
                let meta = std::fs::metadata(&dst).map_err(DriveError::io(&dst))?;
                let e = local::entry_of(&meta);
                let r = &c.remote[to];
                let mtime_ns = settled(e.mtime_ns);
                self.state
                    .put(to, &Base { size: e.size, mtime_ns, hash: r.hash.clone(), version: r.version.clone() })?;
                self.state.remove(from)?;
                report.action("rename", &format!("{from} -> {to}"), "locally");
                s.renamed_local += 1;
            }
            Action::Conflict { path } => {
                let src = self.local_path(path);
                self.unchanged(path, c.scanned.get(path))?;
                let copy = conflict_name(path, &self.device, |rel| self.local_path(rel).exists());
                let dst = self.local_path(&copy);
                std::fs::rename(&src, &dst).map_err(DriveError::io(&src))?;
                self.download(path, None).await?;
                let meta = std::fs::metadata(&dst).map_err(DriveError::io(&dst))?;
                let sent = self.upload(&copy, &Precondition::IfAbsent, &local::entry_of(&meta)).await?;
                s.sent.add(sent);
                report.action("conflict", path, &format!("local version kept as {copy}"));
                s.conflicts += 1;
            }
        }
        Ok(())
    }

    /// Uploads `rel` and records it; `scanned` is how it looked when its hash was taken.
    async fn upload(&self, rel: &str, pre: &Precondition, scanned: &LocalEntry) -> Result<Sent> {
        let p = self.local_path(rel);
        let (file, chunked, sent) = self.t.upload(&p, &self.remote_path(rel), pre).await?;
        let now = std::fs::metadata(&p).map(|m| local::entry_of(&m)).ok();
        // Changed while being sent: keep the sent content's hash but no mtime, so the next
        // pass hashes the file again and sends the newer content.
        let mtime_ns =
            if now.as_ref() == Some(scanned) && chunked.size == scanned.size { settled(scanned.mtime_ns) } else { 0 };
        self.state.put(rel, &Base { size: chunked.size, mtime_ns, hash: chunked.hash, version: file.version })?;
        Ok(sent)
    }

    /// Downloads `rel` over the local file, provided it still looks as scanned (or is absent).
    async fn download(&self, rel: &str, scanned: Option<&LocalEntry>) -> Result<()> {
        self.unchanged(rel, scanned)?;
        let p = self.local_path(rel);
        let (version, hash, size) = self.t.download(&self.remote_path(rel), &p).await?;
        let meta = std::fs::metadata(&p).map_err(DriveError::io(&p))?;
        self.state.put(rel, &Base { size, mtime_ns: settled(local::entry_of(&meta).mtime_ns), hash, version })
    }

    /// Fails with `FileChanged` unless `rel` still looks as scanned (`None`: not there).
    fn unchanged(&self, rel: &str, scanned: Option<&LocalEntry>) -> Result<()> {
        let p = self.local_path(rel);
        let now = std::fs::symlink_metadata(&p).ok().map(|m| local::entry_of(&m));
        let same = match (now, scanned) {
            (None, None) => true,
            (Some(n), Some(s)) => n.size == s.size && n.mtime_ns == s.mtime_ns,
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(DriveError::FileChanged(p))
        }
    }

    /// Removes folders a deletion left empty, up to the root.
    fn remove_empty_parents(&self, file: &Path) {
        let mut dir = file.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Runs passes forever: after filesystem events under the folder (gathered for a moment,
    /// so a save that writes several times is one pass) or every `interval` for remote changes.
    /// A pass that loses the network is reported and the watch goes on; other errors end it.
    pub async fn watch(&self, interval: Duration, mut after_pass: impl FnMut(Summary)) -> Result<()> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let root = self.root.clone();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            // Our own state database and download temporaries are no reason for a pass.
            let ours = |p: &PathBuf| {
                p.strip_prefix(&root).ok().and_then(|r| r.to_str()).is_some_and(|r| {
                    r.split('/').any(|seg| seg == local::STATE_DIR || seg.starts_with(crate::transfer::TEMP_PREFIX))
                })
            };
            if ev.paths.is_empty() || !ev.paths.iter().all(ours) {
                let _ = tx.send(());
            }
        })
        .map_err(|e| DriveError::Usage(format!("cannot watch {}: {e}", self.root.display())))?;
        watcher
            .watch(&self.root, notify::RecursiveMode::Recursive)
            .map_err(|e| DriveError::Usage(format!("cannot watch {}: {e}", self.root.display())))?;
        loop {
            match self.sync(false).await {
                Ok(s) => after_pass(s),
                // A network outage outlasting the retries: keep watching, try again later.
                Err(DriveError::Api(e @ ApiError::Network { .. })) => self.t.report.warn(&e.to_string()),
                Err(e) => return Err(e),
            }
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// An mtime to trust later, or 0 ("hash it again next time") for one so recent that another
/// write within the filesystem's timestamp granularity could still share it (git's "racy" files).
fn settled(mtime_ns: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    if now - mtime_ns > 2_000_000_000 {
        mtime_ns
    } else {
        0
    }
}

/// The scan and listings one pass works from.
struct Pass<'a> {
    scanned: &'a BTreeMap<String, LocalEntry>,
    local: &'a BTreeMap<String, plan::LocalFile>,
    remote: &'a BTreeMap<String, plan::RemoteFile>,
}

fn target(a: &Action) -> String {
    match a {
        Action::Upload { path, .. }
        | Action::Download { path }
        | Action::DeleteRemote { path, .. }
        | Action::DeleteLocal { path }
        | Action::Conflict { path }
        | Action::Record { path }
        | Action::Forget { path } => path.clone(),
        Action::RenameRemote { from, to, .. } | Action::RenameLocal { from, to } => format!("{from} -> {to}"),
    }
}

/// `dir/NAME (conflicted copy DEVICE DATE).EXT`, numbered if that name is taken.
pub fn conflict_name(rel: &str, device: &str, taken: impl Fn(&str) -> bool) -> String {
    let (dir, name) = rel.rsplit_once('/').map_or(("", rel), |(d, n)| (d, n));
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let date = time::OffsetDateTime::now_utc().date();
    let device: String = device.chars().filter(|c| *c != '/' && !c.is_control()).collect();
    let mut n = 1;
    loop {
        let tag = if n == 1 { String::new() } else { format!(" {n}") };
        let file = format!("{stem} (conflicted copy {device} {date}{tag}){ext}");
        let candidate = if dir.is_empty() { file } else { format!("{dir}/{file}") };
        if !taken(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names() {
        let date = time::OffsetDateTime::now_utc().date();
        assert_eq!(
            conflict_name("a/report.txt", "laptop", |_| false),
            format!("a/report (conflicted copy laptop {date}).txt")
        );
        assert_eq!(conflict_name(".bashrc", "pc", |_| false), format!(".bashrc (conflicted copy pc {date})"));
        let first = conflict_name("x.tar.gz", "pc", |_| false);
        assert_eq!(conflict_name("x.tar.gz", "pc", |c| c == first), format!("x.tar (conflicted copy pc {date} 2).gz"));
    }
}
