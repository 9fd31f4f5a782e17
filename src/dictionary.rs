//! zstd dictionaries for packs: "raw-content" dictionaries, which are simply earlier bytes of
//! compressible data (no `ZDICT` training), one per pack, stored in the pack as its first entry
//! (`pack::dicts` says which pack gets which; docs/decisions.md says why).
//!
//! Why: each 64 KiB chunk is its own zstd frame, and a frame that starts cold stores text
//! 1.18x what restic's ~1 MiB frames do. Compressing each chunk against 110 KiB of earlier text
//! measured 0.827 of today's stored size on the peers text (0.97x restic), within 1% of a
//! trained dictionary, at today's CPU (docs/benchmarks.md, Issue 13), and a chunk is still
//! decompressed alone, so a 4 KiB range read still reads one entry.
//!
//! Invariants:
//! - A dictionary is named by the BLAKE3 of its bytes (`id`), like a chunk: a dictionary that
//!   does not hash to its id is damage, and is never used (`Dictionary::verified`).
//! - Its bytes never start with zstd's trained-dictionary magic, so zstd always reads them as
//!   raw content, on the compressing side and the reading side alike.
//! - One process compresses at one level: the prepared compression form (`CDict`) is made on
//!   first use at that level.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use zstd::zstd_safe::{CDict, DDict};

use crate::chunk::ChunkId;

/// Bytes in a dictionary. 110 KiB is what was measured (0.827 of today's stored text with
/// 64 KiB chunks); zstd's default window at level 3 reaches back further than a chunk plus
/// this, so all of it is usable.
pub const DICT_LEN: usize = 110 << 10;
/// The longest dictionary a reader accepts: more is damage, and must not make a reader
/// allocate much.
pub const MAX_DICT_LEN: u32 = 1 << 20;
/// zstd treats a dictionary that starts with these bytes as a trained one (entropy tables
/// first); ours are raw content.
const TRAINED_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DictError {
    #[error("a dictionary of {0} bytes: empty, or longer than the limit")]
    Length(usize),
    #[error("dictionary bytes in zstd's trained format, which cairn never writes")]
    Trained,
    #[error("dictionary does not hash to its id")]
    Hash,
    #[error("zstd could not load the dictionary")]
    Zstd,
}

pub struct Dictionary {
    id: ChunkId,
    bytes: Bytes,
    ddict: DDict<'static>,
    /// Made on first compression, at that compression's level.
    cdict: OnceLock<Option<(i32, CDict<'static>)>>,
}

impl fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dictionary").field("id", &self.id).field("len", &self.bytes.len()).finish()
    }
}

impl Dictionary {
    /// A dictionary of `bytes`, named by their hash.
    pub fn new(bytes: Bytes) -> Result<Arc<Self>, DictError> {
        Self::verified(ChunkId::of(&bytes), bytes)
    }

    /// The dictionary `id` names, if `bytes` are it.
    pub fn verified(id: ChunkId, bytes: Bytes) -> Result<Arc<Self>, DictError> {
        if bytes.is_empty() || bytes.len() > MAX_DICT_LEN as usize {
            return Err(DictError::Length(bytes.len()));
        }
        if bytes.starts_with(&TRAINED_MAGIC) {
            return Err(DictError::Trained);
        }
        if ChunkId::of(&bytes) != id {
            return Err(DictError::Hash);
        }
        let ddict = DDict::try_create(&bytes).ok_or(DictError::Zstd)?;
        Ok(Arc::new(Dictionary { id, bytes, ddict, cdict: OnceLock::new() }))
    }

    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub(crate) fn ddict(&self) -> &DDict<'static> {
        &self.ddict
    }

    /// The prepared form for compressing at `level`; `None` if zstd refused it, or if this
    /// dictionary was first used at another level (one process uses one).
    pub(crate) fn cdict(&self, level: i32) -> Option<&CDict<'static>> {
        let made = self.cdict.get_or_init(|| CDict::try_create(&self.bytes, level).map(|c| (level, c)));
        made.as_ref().filter(|(l, _)| *l == level).map(|(_, c)| c)
    }
}

/// Whether two optional dictionaries are the same one (by id).
pub fn same(a: Option<&Arc<Dictionary>>, b: Option<&Arc<Dictionary>>) -> bool {
    a.map(|d| d.id) == b.map(|d| d.id)
}

/// A dictionary just made, with the chunks its bytes came from: GC retires the dictionary (and
/// rewrites every pack that carries it) once any of them has left the index, so that deleting
/// data also deletes the copy of it a dictionary holds.
pub struct Made {
    pub dict: Arc<Dictionary>,
    pub sources: Vec<ChunkId>,
}

/// Gathers the first compressible bytes offered into a dictionary of `DICT_LEN` bytes.
#[derive(Default)]
pub struct Builder {
    buf: Vec<u8>,
    sources: Vec<ChunkId>,
}

impl Builder {
    /// Take the chunk `id`, `raw` (one that compressed); the dictionary, once there are enough
    /// bytes.
    pub fn offer(&mut self, id: ChunkId, raw: &[u8]) -> Option<Made> {
        let want = DICT_LEN - self.buf.len();
        self.buf.extend_from_slice(&raw[..raw.len().min(want)]);
        if !self.sources.contains(&id) {
            self.sources.push(id);
        }
        while self.buf.starts_with(&TRAINED_MAGIC) {
            self.buf.remove(0);
        }
        if self.buf.len() < DICT_LEN {
            return None;
        }
        let sources = std::mem::take(&mut self.sources);
        let dict = Dictionary::new(Bytes::from(std::mem::take(&mut self.buf))).ok()?;
        Some(Made { dict, sources })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dictionary_is_named_by_its_bytes_and_checked() {
        let bytes = Bytes::from("some text ".repeat(100));
        let d = Dictionary::new(bytes.clone()).unwrap();
        assert_eq!(*d.id(), ChunkId::of(&bytes));
        assert_eq!(Dictionary::verified(ChunkId([1; 32]), bytes).unwrap_err(), DictError::Hash);
        let trained = Bytes::from([&TRAINED_MAGIC[..], b"rest"].concat());
        assert_eq!(Dictionary::new(trained).unwrap_err(), DictError::Trained);
        assert_eq!(Dictionary::new(Bytes::new()).unwrap_err(), DictError::Length(0));
    }

    #[test]
    fn the_builder_waits_for_enough_bytes_and_skips_the_magic() {
        let mut b = Builder::default();
        assert!(b.offer(ChunkId([1; 32]), &TRAINED_MAGIC).is_none());
        assert!(b.offer(ChunkId([2; 32]), &vec![b'a'; DICT_LEN / 2]).is_none());
        let Made { dict: d, sources } = b.offer(ChunkId([3; 32]), &vec![b'b'; DICT_LEN]).expect("enough bytes");
        assert_eq!(d.bytes().len(), DICT_LEN);
        // Every chunk that gave bytes is a source, also one whose bytes were skipped.
        assert_eq!(sources, [ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32])]);
        assert!(!d.bytes().starts_with(&TRAINED_MAGIC));
        assert!(d.cdict(3).is_some() && d.cdict(5).is_none());
    }
}
