//! The manifest a client posts to commit a backup: parsed and checked before anything is read
//! from the store. Untrusted bytes; fuzzed by `fuzz/fuzz_targets/backup_manifest.rs`.

use std::collections::HashSet;

use serde::Deserialize;

use super::BackupError;
use crate::chunk::ChunkId;
use crate::store::backup_keys::EntryMeta;

/// Longest entry path, in bytes (as for drive paths).
pub const MAX_PATH: usize = 4096;
/// Most entries in one backup: a phone with a million files is an outlier already.
pub const MAX_ENTRIES: usize = 1_000_000;
pub const MAX_DEVICE_ID: usize = 128;
pub const MAX_LABEL: usize = 256;

#[derive(Deserialize)]
struct Body {
    device_id: String,
    #[serde(default)]
    label: String,
    entries: Vec<BodyEntry>,
}

#[derive(Deserialize)]
struct BodyEntry {
    path: String,
    size: u64,
    mode: u32,
    mtime: String,
    chunks: Vec<BodyChunk>,
}

#[derive(Deserialize)]
struct BodyChunk {
    hash: String,
    size: u32,
}

/// A checked manifest: every rule that needs no store lookup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub device_id: String,
    pub label: String,
    pub entries: Vec<PostedEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedEntry {
    pub meta: EntryMeta,
    pub size: u64,
    pub chunks: Vec<(ChunkId, u32)>,
}

impl Posted {
    pub fn size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// Every chunk the backup references, each once.
    pub fn distinct_chunks(&self) -> Vec<(ChunkId, u32)> {
        let mut seen = HashSet::new();
        self.entries.iter().flat_map(|e| &e.chunks).filter(|(id, _)| seen.insert(*id)).copied().collect()
    }
}

/// Parse and check a posted manifest.
pub fn parse(bytes: &[u8]) -> Result<Posted, BackupError> {
    let body: Body = serde_json::from_slice(bytes).map_err(|e| BackupError::BadJson(e.to_string()))?;
    check_text("device_id", &body.device_id, 1, MAX_DEVICE_ID)?;
    check_text("label", &body.label, 0, MAX_LABEL)?;
    if body.entries.len() > MAX_ENTRIES {
        return Err(BackupError::TooManyEntries);
    }
    let mut paths = HashSet::with_capacity(body.entries.len());
    let mut entries = Vec::with_capacity(body.entries.len());
    for e in body.entries {
        let entry = entry(e)?;
        if !paths.insert(entry.meta.path.clone()) {
            return Err(BackupError::DuplicatePath(entry.meta.path));
        }
        entries.push(entry);
    }
    Ok(Posted { device_id: body.device_id, label: body.label, entries })
}

fn entry(e: BodyEntry) -> Result<PostedEntry, BackupError> {
    if e.path.is_empty() || e.path.len() > MAX_PATH || e.path.contains('\0') {
        return Err(BackupError::BadPath(e.path));
    }
    if time::OffsetDateTime::parse(&e.mtime, &time::format_description::well_known::Rfc3339).is_err() {
        return Err(BackupError::BadMtime(e.path));
    }
    let mut chunks = Vec::with_capacity(e.chunks.len());
    let mut sum = 0u64;
    for c in e.chunks {
        let id: ChunkId = c.hash.parse().map_err(|_| BackupError::BadHash(c.hash.clone()))?;
        if c.size == 0 {
            return Err(BackupError::BadChunkSize { id, size: 0, actual: None });
        }
        sum += u64::from(c.size);
        chunks.push((id, c.size));
    }
    if sum != e.size {
        return Err(BackupError::SizeMismatch { path: e.path, size: e.size, sum });
    }
    Ok(PostedEntry { meta: EntryMeta { path: e.path, mode: e.mode, mtime: e.mtime }, size: e.size, chunks })
}

fn check_text(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), BackupError> {
    let chars = s.chars().count();
    if chars < min || chars > max || s.chars().any(char::is_control) {
        return Err(BackupError::BadField { field, min, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hash(n: u8) -> String {
        ChunkId::of(&[n]).to_hex()
    }

    fn body(entries: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"device_id": "pixel", "label": "nightly", "entries": entries})).unwrap()
    }

    fn file(path: &str, size: u64, chunks: &[(u8, u32)]) -> serde_json::Value {
        let chunks: Vec<_> = chunks.iter().map(|(n, s)| json!({"hash": hash(*n), "size": s})).collect();
        json!({"path": path, "size": size, "mode": 33188, "mtime": "2026-11-27T10:00:00+01:00", "chunks": chunks})
    }

    #[test]
    fn a_good_manifest_keeps_order_and_fields() {
        let p = parse(&body(json!([file("/sdcard/b", 3, &[(1, 1), (2, 2)]), file("/sdcard/a", 0, &[])]))).unwrap();
        assert_eq!(p.device_id, "pixel");
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[0].meta.path, "/sdcard/b");
        assert_eq!(p.entries[0].meta.mtime, "2026-11-27T10:00:00+01:00", "kept as posted");
        assert_eq!(p.size(), 3);
        assert_eq!(p.distinct_chunks().len(), 2);
    }

    #[test]
    fn each_broken_rule_has_its_own_error() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{".to_vec(), "bad_json"),
            (body(json!([file("a", 5, &[(1, 2)])])), "size_mismatch"),
            (body(json!([file("a", 1, &[(1, 1)]), file("a", 1, &[(1, 1)])])), "duplicate_path"),
            (body(json!([file("", 0, &[])])), "bad_path"),
            (body(json!([file("a\u{0}b", 0, &[])])), "bad_path"),
            (body(json!([file(&"x".repeat(MAX_PATH + 1), 0, &[])])), "bad_path"),
            (body(json!([file("a", 0, &[(1, 0)])])), "bad_size"),
            (body(json!([{"path": "a", "size": 0, "mode": 1, "mtime": "yesterday", "chunks": []}])), "bad_mtime"),
            (
                body(
                    json!([{"path": "a", "size": 1, "mode": 1, "mtime": "2026-01-01T00:00:00Z", "chunks": [{"hash": "zz", "size": 1}]}]),
                ),
                "bad_hash",
            ),
            (
                body(json!([{"path": "a", "size": 0, "mode": -1, "mtime": "2026-01-01T00:00:00Z", "chunks": []}])),
                "bad_json",
            ),
            (serde_json::to_vec(&json!({"device_id": "", "entries": []})).unwrap(), "bad_field"),
            (serde_json::to_vec(&json!({"device_id": "d\n", "entries": []})).unwrap(), "bad_field"),
        ];
        for (bytes, code) in cases {
            let err = parse(&bytes).expect_err(code);
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn the_label_may_be_left_out() {
        let p = parse(&serde_json::to_vec(&json!({"device_id": "d", "entries": []})).unwrap()).unwrap();
        assert_eq!((p.label.as_str(), p.entries.len()), ("", 0));
    }
}
