//! Two-way reconciliation, as a pure function: from what each side holds now and what both
//! held at the last sync (the state database), the actions that bring them together.
//!
//! Invariants: a deletion is proposed only for a path with a base row (seen in sync); a path one
//! side changed and the other did not takes the change; both changed to different contents is a
//! conflict, where the remote keeps the name and the local content survives as a copy; an edit
//! beats a deletion. A deleted path and a new one with the base's content are a rename, moved on
//! the other side without sending the content.

use std::collections::{BTreeMap, HashMap};

use crate::state::Base;

/// A local file as scanned, with its content hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: String,
}

/// A remote file, by its path relative to the synced remote folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub size: u64,
    pub hash: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the local file; `version` is the remote version it may replace (`None`: the remote
    /// must not exist).
    Upload {
        path: String,
        version: Option<String>,
    },
    Download {
        path: String,
    },
    DeleteRemote {
        path: String,
        version: String,
    },
    DeleteLocal {
        path: String,
    },
    /// A local rename: commit `to` from the chunks the server holds, delete `from`.
    RenameRemote {
        from: String,
        to: String,
        version: String,
    },
    /// A remote rename: rename the local file.
    RenameLocal {
        from: String,
        to: String,
    },
    /// Both sides changed differently: local content to a conflict copy, remote to the name.
    Conflict {
        path: String,
    },
    /// Both sides hold the same content now: remember it.
    Record {
        path: String,
    },
    /// Gone on both sides: forget it.
    Forget {
        path: String,
    },
}

impl Action {
    /// Order of execution: what sends or fetches content first, deletions last, so a rename or
    /// a copy finds its chunks still held when it commits.
    fn rank(&self) -> u8 {
        match self {
            Action::Record { .. } | Action::Forget { .. } => 0,
            Action::RenameRemote { .. } | Action::RenameLocal { .. } => 1,
            Action::Upload { .. } | Action::Download { .. } | Action::Conflict { .. } => 2,
            Action::DeleteRemote { .. } | Action::DeleteLocal { .. } => 3,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    /// As at the last sync.
    Same,
    Changed,
    Added,
    Removed,
    Absent,
}

pub fn reconcile(
    local: &BTreeMap<String, LocalFile>,
    remote: &BTreeMap<String, RemoteFile>,
    base: &BTreeMap<String, Base>,
) -> Vec<Action> {
    let mut paths: Vec<&String> = local.keys().chain(remote.keys()).chain(base.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut actions = Vec::new();
    for path in paths {
        let b = base.get(path);
        let (l, r) = (local.get(path), remote.get(path));
        let ls = match (b, l) {
            (Some(b), Some(l)) if l.hash == b.hash => Side::Same,
            (Some(_), Some(_)) => Side::Changed,
            (None, Some(_)) => Side::Added,
            (Some(_), None) => Side::Removed,
            (None, None) => Side::Absent,
        };
        let rs = match (b, r) {
            (Some(b), Some(r)) if r.version == b.version => Side::Same,
            (Some(_), Some(_)) => Side::Changed,
            (None, Some(_)) => Side::Added,
            (Some(_), None) => Side::Removed,
            (None, None) => Side::Absent,
        };
        let p = path.clone();
        use Side::*;
        let action = match (ls, rs) {
            (Same, Same) | (Absent, Absent) => None,
            (Same, Changed) => {
                // Re-uploaded with the same content: only the version moved.
                if l.map(|l| &l.hash) == r.map(|r| &r.hash) {
                    Some(Action::Record { path: p })
                } else {
                    Some(Action::Download { path: p })
                }
            }
            (Same, Removed) => Some(Action::DeleteLocal { path: p }),
            (Changed, Same) => Some(Action::Upload { path: p, version: b.map(|b| b.version.clone()) }),
            (Changed | Added, Changed | Added) => {
                if l.map(|l| &l.hash) == r.map(|r| &r.hash) {
                    Some(Action::Record { path: p })
                } else {
                    Some(Action::Conflict { path: p })
                }
            }
            (Changed | Added, Removed | Absent) => Some(Action::Upload { path: p, version: None }),
            (Removed, Same) => Some(Action::DeleteRemote { path: p, version: b.unwrap().version.clone() }),
            (Removed | Absent, Changed | Added) => Some(Action::Download { path: p }),
            (Removed, Removed) => Some(Action::Forget { path: p }),
            // The rest cannot be: with a base row neither side is Added or Absent, without one
            // neither is Same, Changed or Removed.
            _ => None,
        };
        actions.extend(action);
    }
    let mut actions = pair_renames(actions, local, remote, base);
    actions.sort_by_key(Action::rank);
    actions
}

/// Turns "deleted here, new there with the same content" into renames.
fn pair_renames(
    actions: Vec<Action>,
    local: &BTreeMap<String, LocalFile>,
    remote: &BTreeMap<String, RemoteFile>,
    base: &BTreeMap<String, Base>,
) -> Vec<Action> {
    // Content hash → deleted paths, one map per direction.
    let mut local_gone: HashMap<&str, Vec<String>> = HashMap::new();
    let mut remote_gone: HashMap<&str, Vec<String>> = HashMap::new();
    for a in &actions {
        match a {
            Action::DeleteRemote { path, .. } => {
                local_gone.entry(base[path].hash.as_str()).or_default().push(path.clone())
            }
            Action::DeleteLocal { path } => remote_gone.entry(base[path].hash.as_str()).or_default().push(path.clone()),
            _ => {}
        }
    }
    let mut renamed = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(actions.len());
    for a in &actions {
        match a {
            Action::Upload { path, version: None } if !base.contains_key(path) => {
                if let Some(from) = local_gone.get_mut(local[path].hash.as_str()).and_then(Vec::pop) {
                    let version = base[&from].version.clone();
                    renamed.insert(from.clone());
                    out.push(Action::RenameRemote { from, to: path.clone(), version });
                    continue;
                }
            }
            Action::Download { path } if !base.contains_key(path) && !local.contains_key(path) => {
                if let Some(from) = remote_gone.get_mut(remote[path].hash.as_str()).and_then(Vec::pop) {
                    renamed.insert(from.clone());
                    out.push(Action::RenameLocal { from, to: path.clone() });
                    continue;
                }
            }
            _ => {}
        }
        out.push(a.clone());
    }
    out.retain(|a| match a {
        Action::DeleteRemote { path, .. } | Action::DeleteLocal { path } => !renamed.contains(path),
        _ => true,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lf(hash: &str) -> LocalFile {
        LocalFile { size: 1, mtime_ns: 1, hash: hash.into() }
    }
    fn rf(hash: &str, v: &str) -> RemoteFile {
        RemoteFile { size: 1, hash: hash.into(), version: v.into() }
    }
    fn bs(hash: &str, v: &str) -> Base {
        Base { size: 1, mtime_ns: 1, hash: hash.into(), version: v.into() }
    }
    fn m<T: Clone>(items: &[(&str, T)]) -> BTreeMap<String, T> {
        items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn each_case() {
        let local =
            m(&[("same", lf("a")), ("ledit", lf("b2")), ("both", lf("c2")), ("new", lf("n")), ("redit", lf("r"))]);
        let remote = m(&[
            ("same", rf("a", "1")),
            ("ledit", rf("b", "2")),
            ("both", rf("c3", "9")),
            ("redit", rf("r2", "8")),
            ("rnew", rf("x", "7")),
            ("ldel", rf("d", "4")),
        ]);
        let base = m(&[
            ("same", bs("a", "1")),
            ("ledit", bs("b", "2")),
            ("both", bs("c", "3")),
            ("redit", bs("r", "5")),
            ("ldel", bs("d", "4")),
            ("rdel", bs("e", "6")),
        ]);
        let mut got = reconcile(&local, &remote, &base);
        got.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(
            got,
            vec![
                Action::Conflict { path: "both".into() },
                Action::DeleteRemote { path: "ldel".into(), version: "4".into() },
                Action::Download { path: "redit".into() },
                Action::Download { path: "rnew".into() },
                Action::Forget { path: "rdel".into() },
                Action::Upload { path: "ledit".into(), version: Some("2".into()) },
                Action::Upload { path: "new".into(), version: None },
            ]
        );
    }

    #[test]
    fn renames_both_ways_and_never_synced_is_never_deleted() {
        let local = m(&[("moved", lf("h")), ("old2", lf("g")), ("unsynced", lf("u"))]);
        let remote = m(&[("old", rf("h", "1")), ("new2", rf("g", "5"))]);
        let base = m(&[("old", bs("h", "1")), ("old2", bs("g", "2"))]);
        let got = reconcile(&local, &remote, &base);
        assert!(got.contains(&Action::RenameRemote { from: "old".into(), to: "moved".into(), version: "1".into() }));
        assert!(got.contains(&Action::RenameLocal { from: "old2".into(), to: "new2".into() }));
        assert!(got.contains(&Action::Upload { path: "unsynced".into(), version: None }));
        assert_eq!(got.len(), 3, "{got:?}");
    }
}
