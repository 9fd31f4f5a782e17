//! The sync state database: for each path, what local and remote agreed on at the last sync
//! (size, mtime, content hash, remote version). SQLite, in the folder's `.cairn-drive/state.db`.
//!
//! Invariants: a row exists only for a path that was in sync on both sides when it was written,
//! so "deleted" can only ever be said of a file this folder has seen synced; a path with no row
//! is never deleted on either side. Each row is written right after its own action succeeds,
//! so an interrupted sync loses at most the action in flight. The folder is bound to one server,
//! account and remote folder; another is refused rather than mixed in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{DriveError, Result};
use crate::local::STATE_DIR;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: String,
    pub version: String,
}

pub struct State {
    conn: Connection,
    path: PathBuf,
}

impl State {
    pub fn open(root: &Path) -> Result<State> {
        let dir = root.join(STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(DriveError::io(&dir))?;
        let path = dir.join("state.db");
        let err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| DriveError::State { path: p, source }
        };
        let conn = Connection::open(&path).map_err(err(&path))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS files (
                 path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                 hash TEXT NOT NULL, version TEXT NOT NULL);",
        )
        .map_err(err(&path))?;
        Ok(State { conn, path })
    }

    fn err(&self) -> impl FnOnce(rusqlite::Error) -> DriveError + '_ {
        move |source| DriveError::State { path: self.path.clone(), source }
    }

    /// Binds the folder to `server`, `account` and `remote` on first use; refuses another later.
    pub fn bind(&self, server: &str, account: &str, remote: &str) -> Result<()> {
        for (key, want) in [("server", server), ("account", account), ("remote", remote)] {
            let have: Option<String> = self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(self.err())?;
            match have {
                None => {
                    self.conn.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", [key, want]).map_err(self.err())?;
                }
                Some(h) if h == want => {}
                Some(h) => {
                    return Err(DriveError::Usage(format!(
                        "this folder syncs with {key} {h:?}, not {want:?}; sync another folder, or remove its {STATE_DIR} directory to start over"
                    )))
                }
            }
        }
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(self.err())
    }

    pub fn all(&self) -> Result<BTreeMap<String, Base>> {
        let mut stmt =
            self.conn.prepare("SELECT path, size, mtime_ns, hash, version FROM files").map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Base { size: r.get::<_, i64>(1)? as u64, mtime_ns: r.get(2)?, hash: r.get(3)?, version: r.get(4)? },
                ))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    pub fn put(&self, path: &str, b: &Base) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, hash, version) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![path, b.size as i64, b.mtime_ns, b.hash, b.version],
            )
            .map_err(self.err())
            .map(drop)
    }

    pub fn remove(&self, path: &str) -> Result<()> {
        self.conn.execute("DELETE FROM files WHERE path = ?1", [path]).map_err(self.err()).map(drop)
    }
}
