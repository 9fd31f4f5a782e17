//! The local side of a folder: which files count (ignore rules, temporaries) and what they are
//! now (a scan).
//!
//! Invariants: a relative path is `/`-separated UTF-8, the form the drive's paths take; a name
//! that is not UTF-8 is skipped with a warning rather than mangled. Symbolic links and special
//! files are never followed or sent. The client's own state directory is never part of a scan.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{DriveError, Result};
use crate::transfer::TEMP_PREFIX;

/// The client's directory inside a synced folder (the state database).
pub const STATE_DIR: &str = ".cairn-drive";
/// Ignore rules in gitignore syntax, at the folder's root.
pub const IGNORE_FILE: &str = ".cairnignore";

/// What editors, office suites, browsers and operating systems leave behind while they work.
fn is_temporary(name: &str) -> bool {
    const NAMES: [&str; 4] = [".DS_Store", "Thumbs.db", "desktop.ini", STATE_DIR];
    const PREFIXES: [&str; 4] = [TEMP_PREFIX, "~$", ".~lock.", ".#"];
    const SUFFIXES: [&str; 8] = ["~", ".swp", ".swo", ".swx", ".tmp", ".part", ".crdownload", ".partial"];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p)) || SUFFIXES.iter().any(|s| name.ends_with(s))
}

pub struct Rules {
    gitignore: Gitignore,
}

impl Rules {
    /// The root's `.cairnignore`, if any (a malformed line is reported and skipped).
    pub fn load(root: &Path) -> Rules {
        let mut b = GitignoreBuilder::new(root);
        let file = root.join(IGNORE_FILE);
        if file.exists() {
            if let Some(e) = b.add(&file) {
                eprintln!("warning: {}: {e}", file.display());
            }
        }
        Rules { gitignore: b.build().unwrap_or_else(|_| Gitignore::empty()) }
    }

    /// Whether `rel` (or a folder above it) is ignored or a temporary.
    pub fn ignored(&self, rel: &str, is_dir: bool) -> bool {
        if rel.split('/').any(is_temporary) {
            return true;
        }
        self.gitignore.matched_path_or_any_parents(rel, is_dir).is_ignore()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEntry {
    pub is_dir: bool,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
}

pub fn entry_of(meta: &std::fs::Metadata) -> LocalEntry {
    LocalEntry {
        is_dir: meta.is_dir(),
        size: if meta.is_dir() { 0 } else { meta.len() },
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        mode: meta.permissions().mode() & 0o7777,
    }
}

/// Every file and folder under `root` that the rules let through, by relative path. Names
/// that are not UTF-8 go to `skipped`.
pub fn scan(root: &Path, rules: &Rules, skipped: &mut Vec<String>) -> Result<BTreeMap<String, LocalEntry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let read = std::fs::read_dir(&dir).map_err(DriveError::io(&dir))?;
        for item in read {
            let item = item.map_err(DriveError::io(&dir))?;
            let Some(name) = item.file_name().to_str().map(String::from) else {
                skipped.push(item.path().display().to_string());
                continue;
            };
            let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let meta = match std::fs::symlink_metadata(item.path()) {
                Ok(m) => m,
                // Gone between the listing and the look: it is simply not there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(DriveError::io(item.path())(e)),
            };
            let ft = meta.file_type();
            if !(ft.is_dir() || ft.is_file()) || rules.ignored(&child_rel, ft.is_dir()) {
                continue;
            }
            if ft.is_dir() {
                stack.push((item.path(), child_rel.clone()));
            }
            out.insert(child_rel, entry_of(&meta));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_and_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IGNORE_FILE), "*.log\nbuild/\n!keep.log\n").unwrap();
        let r = Rules::load(dir.path());
        assert!(r.ignored("a.log", false));
        assert!(!r.ignored("keep.log", false));
        assert!(r.ignored("build/x.txt", false));
        assert!(r.ignored("docs/.~lock.report.odt#", false));
        assert!(r.ignored("notes.txt.swp", false));
        assert!(r.ignored(".cairn-drive/state.db", false));
        assert!(!r.ignored("docs/report.odt", false));
    }
}
