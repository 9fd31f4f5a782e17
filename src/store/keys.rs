//! Key and value encodings of every column family, in one place.
//!
//! Values start with a format byte so that a later layout can be told apart from this one.
//! Decoders take untrusted bytes (a damaged database is untrusted) and return `None` or an
//! error, never panic; the fuzz target `index_values` drives each of them.

use crate::chunk::ChunkId;
use crate::codec::Compression;
use crate::pack::format::EntryInfo;

/// A 128-bit random id shown as 32 lowercase hex digits (accounts, devices). One spelling per
/// id: uppercase is refused, so ids compare as strings too.
macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            pub fn random() -> Self {
                $name(rand::random())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                let mut out = [0u8; 16];
                if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(());
                }
                hex::decode_to_slice(s, &mut out).map_err(|_| ())?;
                Ok($name(out))
            }
        }
    };
}
pub(crate) use hex_id;

hex_id!(
    /// An account's id, chosen by the server at sign-up.
    AccountId
);

/// Reads the little-endian fields of a stored value; every decoder of `store` shares it.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn id(&mut self) -> Option<ChunkId> {
        Some(ChunkId(self.take(32)?.try_into().ok()?))
    }
    /// A u32 length, then that many bytes.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn done(&self) -> bool {
        self.0.is_empty()
    }
}

// ---- chunks: chunk id -> where it is, how many accounts hold it --------------------------------

/// One indexed chunk. `refs` counts the accounts that hold it (not the manifests): it changes
/// only when an account's own count moves between zero and non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRecord {
    pub pack: u64,
    pub entry: EntryInfo,
    pub refs: u64,
    /// Unix seconds when `refs` last became zero (or the chunk was first stored): GC's clock.
    pub zero_since: u64,
}

const CHUNK_V1: u8 = 1;
const CHUNK_RECORD_LEN: usize = 1 + 8 + 8 + 4 + 4 + 1 + 8 + 8;

pub fn encode_chunk(r: &ChunkRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(CHUNK_RECORD_LEN);
    b.push(CHUNK_V1);
    b.extend_from_slice(&r.pack.to_le_bytes());
    b.extend_from_slice(&r.entry.offset.to_le_bytes());
    b.extend_from_slice(&r.entry.raw_len.to_le_bytes());
    b.extend_from_slice(&r.entry.stored_len.to_le_bytes());
    b.push(r.entry.compression as u8);
    b.extend_from_slice(&r.refs.to_le_bytes());
    b.extend_from_slice(&r.zero_since.to_le_bytes());
    b
}

/// `None` for bytes that are not a chunk record. The key supplies the id.
pub fn decode_chunk(id: ChunkId, v: &[u8]) -> Option<ChunkRecord> {
    let mut r = Reader(v);
    if r.u8()? != CHUNK_V1 {
        return None;
    }
    let pack = r.u64()?;
    let offset = r.u64()?;
    let raw_len = r.u32()?;
    let stored_len = r.u32()?;
    let compression = Compression::from_u8(r.u8()?)?;
    let refs = r.u64()?;
    let zero_since = r.u64()?;
    r.done().then_some(ChunkRecord {
        pack,
        entry: EntryInfo { id, offset, raw_len, stored_len, compression },
        refs,
        zero_since,
    })
}

/// Merge operands of the `chunks` column family. Every change to a chunk record after its
/// first write is one of these, so that accounts, GC and compaction never read-modify-write
/// the same key and can never lose each other's updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOp {
    /// First store. Ignored if a record already exists (the first location wins).
    Insert(ChunkRecord),
    /// An account started (+1) or stopped (-1) holding the chunk, at unix time `at`.
    Refs { delta: i64, at: u64 },
    /// Compaction copied the chunk; applies only if it is still where compaction found it.
    /// `stored_len`: the copy's, when it differs (a plaintext entry rewritten sealed); `None`
    /// in operands written before encryption, which copied entries unchanged. `compression`:
    /// the copy's, when it differs (a chunk compressed again for the new pack's dictionary
    /// that no longer shrank); `None` in operands written before dictionaries.
    Move {
        from_pack: u64,
        from_offset: u64,
        to_pack: u64,
        to_offset: u64,
        stored_len: Option<u32>,
        compression: Option<Compression>,
    },
    /// GC: drop the record if it is still unreferenced and has been since `before` or earlier.
    Forget { before: u64 },
}

pub fn encode_op(op: &ChunkOp) -> Vec<u8> {
    let mut b = Vec::with_capacity(CHUNK_RECORD_LEN + 1);
    match op {
        ChunkOp::Insert(r) => {
            b.push(1);
            b.extend_from_slice(&encode_chunk(r));
        }
        ChunkOp::Refs { delta, at } => {
            b.push(2);
            b.extend_from_slice(&delta.to_le_bytes());
            b.extend_from_slice(&at.to_le_bytes());
        }
        ChunkOp::Move { from_pack, from_offset, to_pack, to_offset, stored_len, compression } => {
            b.push(match (stored_len, compression) {
                (_, Some(_)) => 6,
                (Some(_), None) => 5,
                (None, None) => 3,
            });
            for v in [from_pack, from_offset, to_pack, to_offset] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            if let Some(c) = compression {
                // Op 6 always carries both. A move that changes the compression without saying
                // the length would read back as length 0: a caller's bug (it was one: a
                // re-compressed copy of the same length made the chunk unreadable).
                debug_assert!(stored_len.is_some(), "a move that changes compression must give the length");
                b.extend_from_slice(&stored_len.unwrap_or(0).to_le_bytes());
                b.push(*c as u8);
            } else if let Some(len) = stored_len {
                b.extend_from_slice(&len.to_le_bytes());
            }
        }
        ChunkOp::Forget { before } => {
            b.push(4);
            b.extend_from_slice(&before.to_le_bytes());
        }
    }
    b
}

pub fn decode_op(id: ChunkId, v: &[u8]) -> Option<ChunkOp> {
    let mut r = Reader(v);
    let op = match r.u8()? {
        1 => return decode_chunk(id, r.take(CHUNK_RECORD_LEN)?).filter(|_| r.done()).map(ChunkOp::Insert),
        2 => ChunkOp::Refs { delta: r.i64()?, at: r.u64()? },
        // A move grew fields over time: 3 has none beyond the places, 5 adds the stored
        // length (a re-sealed copy), 6 also the compression (a copy re-compressed).
        tag @ (3 | 5 | 6) => ChunkOp::Move {
            from_pack: r.u64()?,
            from_offset: r.u64()?,
            to_pack: r.u64()?,
            to_offset: r.u64()?,
            stored_len: if tag >= 5 { Some(r.u32()?) } else { None },
            compression: if tag == 6 { Some(Compression::from_u8(r.u8()?)?) } else { None },
        },
        4 => ChunkOp::Forget { before: r.u64()? },
        _ => return None,
    };
    r.done().then_some(op)
}

/// Fold operands into a record. Total: an operand that cannot apply (a reference to a chunk
/// that is gone, a move of a chunk that moved again) is dropped, and fsck reports the drift
/// it leaves. An absent record is `None`; the merge operator stores that as an empty value.
pub fn apply_op(rec: Option<ChunkRecord>, op: ChunkOp) -> Option<ChunkRecord> {
    match (rec, op) {
        (None, ChunkOp::Insert(new)) => Some(new),
        (Some(r), ChunkOp::Insert(_)) => Some(r),
        (Some(mut r), ChunkOp::Refs { delta, at }) => {
            let refs = r.refs.saturating_add_signed(delta);
            if refs == 0 && r.refs != 0 {
                r.zero_since = at;
            }
            r.refs = refs;
            Some(r)
        }
        (Some(mut r), ChunkOp::Move { from_pack, from_offset, to_pack, to_offset, stored_len, compression }) => {
            if r.pack == from_pack && r.entry.offset == from_offset {
                r.pack = to_pack;
                r.entry.offset = to_offset;
                r.entry.stored_len = stored_len.unwrap_or(r.entry.stored_len);
                r.entry.compression = compression.unwrap_or(r.entry.compression);
            }
            Some(r)
        }
        (Some(r), ChunkOp::Forget { before }) => (r.refs != 0 || r.zero_since > before).then_some(r),
        (None, _) => None,
    }
}

pub fn chunk_key(id: &ChunkId) -> [u8; 32] {
    id.0
}

pub fn chunk_id_from_key(k: &[u8]) -> Option<ChunkId> {
    Some(ChunkId(k.try_into().ok()?))
}

// ---- packs: pack id -> size and liveness ---------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PackRecord {
    pub size: u64,
    pub entries: u32,
    /// Stored bytes (entry headers included) of entries that the index points at.
    pub live_bytes: u64,
}

const PACK_V1: u8 = 1;

pub fn pack_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn encode_pack(p: &PackRecord) -> Vec<u8> {
    let mut b = vec![PACK_V1];
    b.extend_from_slice(&p.size.to_le_bytes());
    b.extend_from_slice(&p.entries.to_le_bytes());
    b.extend_from_slice(&p.live_bytes.to_le_bytes());
    b
}

pub fn decode_pack(v: &[u8]) -> Option<PackRecord> {
    let mut r = Reader(v);
    if r.u8()? != PACK_V1 {
        return None;
    }
    let p = PackRecord { size: r.u64()?, entries: r.u32()?, live_bytes: r.u64()? };
    r.done().then_some(p)
}

// ---- dictionaries: dictionary id -> when it was made, and the chunks it was made from ---------

const DICT_V1: u8 = 1;
/// More sources than a 110 KiB dictionary can have (one byte from each is the least a chunk
/// gives): more is damage, and must not make a decoder allocate much.
const MAX_DICT_SOURCES: u32 = 1 << 17;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DictRecord {
    /// Seconds since the epoch: GC judges a dictionary's sources only once it is older than
    /// the grace period, as it does chunks (a source may still be on its way into the index).
    pub made_secs: u64,
    pub sources: Vec<ChunkId>,
}

pub fn encode_dict(d: &DictRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(13 + 32 * d.sources.len());
    b.push(DICT_V1);
    b.extend_from_slice(&d.made_secs.to_le_bytes());
    b.extend_from_slice(&(d.sources.len() as u32).to_le_bytes());
    for id in &d.sources {
        b.extend_from_slice(&id.0);
    }
    b
}

pub fn decode_dict(v: &[u8]) -> Option<DictRecord> {
    let mut r = Reader(v);
    if r.u8()? != DICT_V1 {
        return None;
    }
    let made_secs = r.u64()?;
    let n = r.u32()?;
    if n > MAX_DICT_SOURCES || r.0.len() != n as usize * 32 {
        return None;
    }
    let sources = (0..n).map(|_| r.take(32).and_then(|b| b.try_into().ok()).map(ChunkId)).collect::<Option<_>>()?;
    r.done().then_some(DictRecord { made_secs, sources })
}

// ---- account_chunks: account ++ chunk -> references within the account ------------------------

pub fn account_chunk_key(a: &AccountId, id: &ChunkId) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(&a.0);
    k[16..].copy_from_slice(&id.0);
    k
}

pub fn split_account_chunk_key(k: &[u8]) -> Option<(AccountId, ChunkId)> {
    if k.len() != 48 {
        return None;
    }
    Some((AccountId(k[..16].try_into().ok()?), ChunkId(k[16..].try_into().ok()?)))
}

pub fn encode_count(n: u64) -> [u8; 8] {
    n.to_le_bytes()
}

pub fn decode_count(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

// ---- usage: account -> bytes charged -------------------------------------------------------------

/// `used` is what the quota charges: distinct chunks, sync payloads and `metadata` (what the
/// account's items cost, `quota::item_cost`); the per-service figures are logical sizes for the
/// user's display and may add up to more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    pub used: u64,
    pub drive: u64,
    pub backups: u64,
    pub sync: u64,
    pub metadata: u64,
    /// Sizes of the files in the trash and of kept old versions (what the quota's `services`
    /// shows; what they cost is only the chunks live files do not also hold, inside `used`).
    pub trash: u64,
    pub versions: u64,
}

/// Version 1 had no `metadata`: read as zero, and filled in once at start (`engine::migrate`).
const USAGE_V1: u8 = 1;
/// Version 2 had no `trash` and `versions`: read as zero, which they were (there were none).
const USAGE_V2: u8 = 2;
const USAGE_V3: u8 = 3;

pub fn encode_usage(u: &Usage) -> Vec<u8> {
    let mut b = vec![USAGE_V3];
    for v in [u.used, u.drive, u.backups, u.sync, u.metadata, u.trash, u.versions] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

pub fn decode_usage(v: &[u8]) -> Option<Usage> {
    let mut r = Reader(v);
    let version = r.u8()?;
    if !(USAGE_V1..=USAGE_V3).contains(&version) {
        return None;
    }
    let mut u = Usage { used: r.u64()?, drive: r.u64()?, backups: r.u64()?, sync: r.u64()?, ..Usage::default() };
    if version >= USAGE_V2 {
        u.metadata = r.u64()?;
    }
    if version >= USAGE_V3 {
        u.trash = r.u64()?;
        u.versions = r.u64()?;
    }
    r.done().then_some(u)
}

/// Whether a usage record predates `metadata`.
pub fn usage_lacks_metadata(v: &[u8]) -> bool {
    v.first() == Some(&USAGE_V1)
}

/// Ids that are store versions (backups, trash items) as URLs and JSON show them: 16 lower-case
/// hex digits.
pub fn format_hex_id(id: u64) -> String {
    format!("{id:016x}")
}

/// `None` for anything `format_hex_id` does not produce: such an id cannot exist.
pub fn parse_hex_id(s: &str) -> Option<u64> {
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

// ---- objects: account ++ namespace ++ name -> manifest -------------------------------------------

/// Which service an object belongs to; part of the key, so each service lists its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Namespace {
    Drive = 1,
    Backup = 2,
    /// Chunks uploaded one by one through the chunk API, waiting for a manifest.
    Staged = 3,
    /// Deleted drive files, kept for a while (`drive::trash` names them).
    Trash = 4,
    /// Replaced versions of drive files (`drive::versions` names them).
    Versions = 5,
    /// The chunks of an unfinished resumable upload, one object per piece received
    /// (`upload_keys::piece_name`): held, so charged and safe from GC, until the upload ends.
    Upload = 6,
    /// Folders made on purpose (WebDAV's MKCOL), each an empty record, so that an empty folder
    /// exists (`drive::folders`). A folder that holds files exists without one.
    Folder = 7,
    /// Engine-level objects of tests and benches.
    Scratch = 9,
}

impl Namespace {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Namespace::Drive),
            2 => Some(Namespace::Backup),
            3 => Some(Namespace::Staged),
            4 => Some(Namespace::Trash),
            5 => Some(Namespace::Versions),
            6 => Some(Namespace::Upload),
            7 => Some(Namespace::Folder),
            9 => Some(Namespace::Scratch),
            _ => None,
        }
    }
}

/// Split an `objects` key into account, namespace and name; `None` for segment keys and
/// garbage.
pub fn split_object_key(k: &[u8]) -> Option<(AccountId, Namespace, &[u8])> {
    let account = AccountId(k.get(..16)?.try_into().ok()?);
    let ns = Namespace::from_u8(*k.get(16)?)?;
    Some((account, ns, &k[17..]))
}

pub fn object_key(a: &AccountId, ns: Namespace, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + name.len());
    k.extend_from_slice(&a.0);
    k.push(ns as u8);
    k.extend_from_slice(name);
    k
}

pub fn object_prefix(a: &AccountId, ns: Namespace) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..16].copy_from_slice(&a.0);
    k[16] = ns as u8;
    k
}

/// An object's content as an upload produces it: size and hash of the whole, chunks in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub size: u64,
    pub hash: [u8; 32],
    pub chunks: Vec<(ChunkId, u32)>,
}

/// Chunks per stored segment of a chunk list: 16 384 × 36 B ≈ 576 KiB per value, so that a
/// 50 GiB file (≈ 800 000 chunks) is 50 values of modest size rather than one of 29 MiB.
pub const SEGMENT_CHUNKS: usize = 16 * 1024;

/// A stored object. The first `SEGMENT_CHUNKS` chunks live in the record itself (most files
/// have far fewer); the rest in continuation segments under `segment_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Unique across the whole store and never reused, so an `ETag` of a deleted and
    /// recreated file cannot match the old one.
    pub version: u64,
    /// Unix milliseconds of the last write.
    pub modified: i64,
    pub size: u64,
    pub hash: [u8; 32],
    pub chunk_count: u64,
    pub head: Vec<(ChunkId, u32)>,
}

impl ObjectRecord {
    pub fn tail_segments(&self) -> u32 {
        (self.chunk_count.saturating_sub(self.head.len() as u64)).div_ceil(SEGMENT_CHUNKS as u64) as u32
    }
}

const OBJECT_V1: u8 = 1;
/// More chunks than this is not a plausible object (2^32 chunks of 256 KiB is 1 PiB); keeps a
/// damaged count from meaning anything.
const MAX_CHUNKS: u64 = 1 << 32;

fn put_chunks(b: &mut Vec<u8>, chunks: &[(ChunkId, u32)]) {
    b.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for (id, len) in chunks {
        b.extend_from_slice(&id.0);
        b.extend_from_slice(&len.to_le_bytes());
    }
}

fn get_chunks(r: &mut Reader<'_>) -> Option<Vec<(ChunkId, u32)>> {
    let n = r.u32()? as usize;
    if n > SEGMENT_CHUNKS || r.0.len() != n * 36 {
        return None;
    }
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.id()?;
        let len = r.u32()?;
        if len == 0 {
            return None;
        }
        chunks.push((id, len));
    }
    Some(chunks)
}

pub fn encode_object(o: &ObjectRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + 8 + 8 + 8 + 32 + 8 + 4 + o.head.len() * 36);
    b.push(OBJECT_V1);
    b.extend_from_slice(&o.version.to_le_bytes());
    b.extend_from_slice(&o.modified.to_le_bytes());
    b.extend_from_slice(&o.size.to_le_bytes());
    b.extend_from_slice(&o.hash);
    b.extend_from_slice(&o.chunk_count.to_le_bytes());
    put_chunks(&mut b, &o.head);
    b
}

pub fn decode_object(v: &[u8]) -> Option<ObjectRecord> {
    let mut r = Reader(v);
    if r.u8()? != OBJECT_V1 {
        return None;
    }
    let version = r.u64()?;
    let modified = r.i64()?;
    let size = r.u64()?;
    let hash: [u8; 32] = r.take(32)?.try_into().ok()?;
    let chunk_count = r.u64()?;
    let head = get_chunks(&mut r)?;
    if chunk_count > MAX_CHUNKS || head.len() as u64 != chunk_count.min(SEGMENT_CHUNKS as u64) {
        return None;
    }
    let head_total: u64 = head.iter().map(|(_, l)| u64::from(*l)).sum();
    let consistent = if chunk_count == head.len() as u64 { head_total == size } else { head_total < size };
    consistent.then_some(ObjectRecord { version, modified, size, hash, chunk_count, head })
}

/// Continuation segment `seg` (from 0) of an object version's chunk list. The key sorts
/// after every namespace of the account (0xFF), so listings never meet it.
pub fn segment_key(a: &AccountId, ns: Namespace, name: &[u8], version: u64, seg: u32) -> [u8; 45] {
    let mut h = blake3::Hasher::new();
    h.update(&[ns as u8]);
    h.update(name);
    let mut k = [0u8; 45];
    k[..16].copy_from_slice(&a.0);
    k[16] = 0xFF;
    k[17..33].copy_from_slice(&h.finalize().as_bytes()[..16]);
    k[33..41].copy_from_slice(&version.to_be_bytes());
    k[41..45].copy_from_slice(&seg.to_be_bytes());
    k
}

pub fn encode_segment(chunks: &[(ChunkId, u32)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + 4 + chunks.len() * 36);
    b.push(OBJECT_V1);
    put_chunks(&mut b, chunks);
    b
}

pub fn decode_segment(v: &[u8]) -> Option<Vec<(ChunkId, u32)>> {
    let mut r = Reader(v);
    if r.u8()? != OBJECT_V1 {
        return None;
    }
    get_chunks(&mut r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(refs: u64) -> ChunkRecord {
        ChunkRecord {
            pack: 3,
            entry: EntryInfo {
                id: ChunkId([7; 32]),
                offset: 24,
                raw_len: 100,
                stored_len: 60,
                compression: Compression::Zstd,
            },
            refs,
            zero_since: 5,
        }
    }

    #[test]
    fn records_round_trip() {
        let r = rec(2);
        assert_eq!(decode_chunk(r.entry.id, &encode_chunk(&r)), Some(r));
        for op in [
            ChunkOp::Insert(r),
            ChunkOp::Refs { delta: -1, at: 9 },
            ChunkOp::Move {
                from_pack: 1,
                from_offset: 2,
                to_pack: 3,
                to_offset: 4,
                stored_len: None,
                compression: None,
            },
            ChunkOp::Move {
                from_pack: 1,
                from_offset: 2,
                to_pack: 3,
                to_offset: 4,
                stored_len: Some(99),
                compression: None,
            },
            ChunkOp::Move {
                from_pack: 1,
                from_offset: 2,
                to_pack: 3,
                to_offset: 4,
                stored_len: Some(98),
                compression: Some(Compression::Raw),
            },
            ChunkOp::Forget { before: 77 },
        ] {
            assert_eq!(decode_op(r.entry.id, &encode_op(&op)), Some(op));
        }
        let u = Usage { used: 1, drive: 2, backups: 3, sync: 4, metadata: 5, trash: 6, versions: 7 };
        assert_eq!(decode_usage(&encode_usage(&u)), Some(u));
        // A record from before the trash and versions reads with none of either.
        let mut v2 = vec![USAGE_V2];
        [1u64, 2, 3, 4, 5].iter().for_each(|n| v2.extend_from_slice(&n.to_le_bytes()));
        assert_eq!(decode_usage(&v2), Some(Usage { trash: 0, versions: 0, ..u }));
        // A record from before item charges reads with none, and says so.
        let mut v1 = vec![USAGE_V1];
        [1u64, 2, 3, 4].iter().for_each(|n| v1.extend_from_slice(&n.to_le_bytes()));
        assert!(usage_lacks_metadata(&v1) && !usage_lacks_metadata(&encode_usage(&u)));
        assert_eq!(decode_usage(&v1), Some(Usage { metadata: 0, trash: 0, versions: 0, ..u }));
        let p = PackRecord { size: 10, entries: 2, live_bytes: 8 };
        assert_eq!(decode_pack(&encode_pack(&p)), Some(p));
        let chunks = vec![(ChunkId([2; 32]), 10), (ChunkId([3; 32]), 20)];
        let o = ObjectRecord {
            version: 4,
            modified: 1_700_000_000_000,
            size: 30,
            hash: [1; 32],
            chunk_count: 2,
            head: chunks.clone(),
        };
        assert_eq!(decode_object(&encode_object(&o)), Some(o));
        assert_eq!(decode_segment(&encode_segment(&chunks)), Some(chunks));
    }

    #[test]
    fn refs_track_zero_since_and_forget_respects_it() {
        let r = apply_op(Some(rec(1)), ChunkOp::Refs { delta: -1, at: 50 }).unwrap();
        assert_eq!((r.refs, r.zero_since), (0, 50));
        assert!(apply_op(Some(r), ChunkOp::Forget { before: 49 }).is_some());
        assert!(apply_op(Some(r), ChunkOp::Forget { before: 50 }).is_none());
        let held = apply_op(Some(r), ChunkOp::Refs { delta: 1, at: 60 }).unwrap();
        assert!(apply_op(Some(held), ChunkOp::Forget { before: 1000 }).is_some());
    }

    #[test]
    fn moves_apply_only_from_where_they_were_planned() {
        let r = rec(1);
        let moved = apply_op(
            Some(r),
            ChunkOp::Move {
                from_pack: 3,
                from_offset: 24,
                to_pack: 8,
                to_offset: 24,
                stored_len: None,
                compression: None,
            },
        )
        .unwrap();
        assert_eq!(moved.pack, 8);
        let stale = apply_op(
            Some(moved),
            ChunkOp::Move {
                from_pack: 3,
                from_offset: 24,
                to_pack: 9,
                to_offset: 1,
                stored_len: None,
                compression: None,
            },
        )
        .unwrap();
        assert_eq!(stale.pack, 8);
    }

    #[test]
    fn truncated_values_decode_to_none() {
        let bytes = encode_chunk(&rec(1));
        for n in 0..bytes.len() {
            assert!(decode_chunk(ChunkId([0; 32]), &bytes[..n]).is_none());
        }
    }
}
