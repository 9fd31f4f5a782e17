//! Pack format version 2: every entry and the table sealed with AES-256-GCM under a key derived
//! from a data key and the message's own 24 random bytes, so that a pack file carries no chunk
//! id, no raw length and no content in the clear (docs/pack-format.md is the prose twin of this
//! file; docs/decisions.md says why this cipher and this key derivation).
//!
//! ```text
//! header   24 B   as version 1, version = 2, bytes 12..16 = the table's key id (never 0)
//! entry    48 B frame + sealed bytes:
//!                 magic "CHNE" | 4 zero | key id u32 | sealed_len u32 | nonce [24] | 8 zero
//!                 sealed bytes [sealed_len] = AEAD(inner [40] | stored bytes) | tag [16]
//!                 inner = chunk id [32] | raw_len u32 | compression u8 | 3 zero
//!                 (compression and the dictionary rule as in version 1: `format`)
//!                 associated data: the 48-byte frame
//! table    AEAD(records, 56 B each) | tag [16]
//!                 record = chunk id [32] | entry offset u64 | raw_len u32 | sealed_len u32 |
//!                          compression u8 | 3 zero | key id u32
//!                 associated data: the 24-byte header and the 56-byte trailer
//! trailer  56 B   table offset u64 | entry count u32 | 4 zero | nonce [24] | 8 zero | "CAIRNEND"
//! ```
//! Invariants: an entry opens only whole and unmodified, and only as the chunk it names inside
//! its sealed bytes; a reader compares that id with the one it asked for, so two valid entries
//! swapped (or copied over each other) fail as surely as a flipped byte. The binding is to the
//! chunk, not the position: compaction can copy a sealed entry byte for byte. Every message
//! (entry or table) has 24 random bytes, its "nonce": the AES key that seals it is the keyed
//! BLAKE3 of them under the data key, and the GCM nonce is their last 12. Each AES key seals one
//! message, so GCM's limit of about 2^32 random nonces per key never comes near, and nothing is
//! counted or coordinated. The table is bound to its pack's header, so it names the pack id and
//! its key.
//!
//! Pure like `format`: bytes and keys in, values or a `SealError` out. Fuzzed by `pack_sealed`.

use std::ops::Range;

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::format::{
    check_dictionary_rule, check_lengths, id_at, need, parse_header, u32_at, u64_at, EntryInfo, FormatError,
    PackHeader, END_MAGIC, ENTRY_HEADER_LEN, HEADER_LEN, MAX_CHUNK_LEN, TABLE_RECORD_LEN, TRAILER_LEN,
};
use super::keyring::KeySet;
use crate::chunk::ChunkId;
use crate::codec::{Ciphered, Compression};

pub const ENTRY_MAGIC: [u8; 4] = *b"CHNE";
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// The chunk's id, raw length and compression, sealed in front of its stored bytes.
pub const INNER_LEN: usize = 40;
/// Sealed bytes of an entry beyond its stored (compressed) bytes.
pub const OVERHEAD: u32 = (INNER_LEN + TAG_LEN) as u32;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("sealed under data key {0:08x}, which this server does not have")]
    UnknownKey(u32),
    #[error("fails authentication: tampered with, damaged, or not what it claims to be")]
    Auth,
}

/// A data key. AES-256-GCM through ring (assembly: AES-NI and CLMUL, or VAES, or ARMv8's
/// instructions; constant-time portable code elsewhere).
pub struct DataKey([u8; 32]);

/// Separates our per-message keys from any other use of a data key.
const MESSAGE_KEY_DOMAIN: &[u8] = b"cairn 2026-12 pack message key";

impl DataKey {
    pub fn new(key: [u8; 32]) -> Self {
        DataKey(key)
    }

    fn message_key(&self, nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(MESSAGE_KEY_DOMAIN).update(nonce);
        let key = UnboundKey::new(&AES_256_GCM, h.finalize().as_bytes()).expect("a 32-byte AES-256 key");
        let gcm_nonce: [u8; 12] = nonce[12..].try_into().expect("12 bytes");
        (LessSafeKey::new(key), Nonce::assume_unique_for_key(gcm_nonce))
    }

    /// Encrypt `buf` in place; returns the tag.
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], SealError> {
        let (key, n) = self.message_key(nonce);
        let tag = key.seal_in_place_separate_tag(n, Aad::from(aad), buf).map_err(|_| SealError::Auth)?;
        Ok(tag.as_ref().try_into().expect("16-byte tag"))
    }

    /// Decrypt `buf` (ciphertext, then the tag) in place, if it authenticates.
    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<(), SealError> {
        let (key, n) = self.message_key(nonce);
        key.open_in_place(n, Aad::from(aad), buf).map(drop).map_err(|_| SealError::Auth)
    }
}

/// A sealed entry's frame: what can be known of it without the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub key_id: u32,
    pub sealed_len: u32,
    pub nonce: [u8; NONCE_LEN],
}

impl Frame {
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(ENTRY_HEADER_LEN as u64).saturating_add(u64::from(self.sealed_len))
    }
}

/// One record of a sealed table: the entry, and the key its bytes are sealed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEntry {
    pub info: EntryInfo,
    pub key: u32,
}

pub fn is_sealed_entry(b: &[u8]) -> bool {
    b.get(..4) == Some(&ENTRY_MAGIC[..])
}

pub fn encode_frame(key_id: u32, sealed_len: u32, nonce: &[u8; NONCE_LEN]) -> [u8; ENTRY_HEADER_LEN] {
    let mut b = [0u8; ENTRY_HEADER_LEN];
    b[..4].copy_from_slice(&ENTRY_MAGIC);
    b[8..12].copy_from_slice(&key_id.to_le_bytes());
    b[12..16].copy_from_slice(&sealed_len.to_le_bytes());
    b[16..40].copy_from_slice(nonce);
    b
}

pub fn parse_frame(b: &[u8], offset: u64) -> Result<Frame, FormatError> {
    need(b, ENTRY_HEADER_LEN)?;
    if b[..4] != ENTRY_MAGIC || b[4..8] != [0; 4] || b[40..48] != [0; 8] {
        return Err(FormatError::BadMagic);
    }
    let (key_id, sealed_len) = (u32_at(b, 8), u32_at(b, 12));
    if key_id == 0 {
        return Err(FormatError::BadMagic);
    }
    if sealed_len <= OVERHEAD || sealed_len > MAX_CHUNK_LEN + OVERHEAD {
        return Err(FormatError::Lengths { raw: 0, stored: sealed_len });
    }
    Ok(Frame { offset, key_id, sealed_len, nonce: b[16..40].try_into().expect("24 bytes") })
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Seal a chunk's stored bytes as an entry under `key_id`.
pub fn seal_entry(
    keys: &KeySet,
    key_id: u32,
    id: &ChunkId,
    raw_len: u32,
    compression: Compression,
    stored: &[u8],
) -> Result<Ciphered, SealError> {
    let cipher = keys.cipher(key_id).ok_or(SealError::UnknownKey(key_id))?;
    let nonce = random_nonce();
    let sealed_len = stored.len() as u32 + OVERHEAD;
    let header = encode_frame(key_id, sealed_len, &nonce);
    let mut buf = Vec::with_capacity(sealed_len as usize);
    buf.extend_from_slice(&id.0);
    buf.extend_from_slice(&raw_len.to_le_bytes());
    buf.extend_from_slice(&[compression as u8, 0, 0, 0]);
    buf.extend_from_slice(stored);
    let tag = cipher.seal(&nonce, &header, &mut buf)?;
    buf.extend_from_slice(&tag);
    Ok(Ciphered { key_id, header, body: buf.into() })
}

/// Open a sealed entry in place: `header` is its 48-byte frame, `body` its sealed bytes.
/// Returns the entry (its `stored_len` the sealed length, as the index keeps it) and where in
/// `body` its stored bytes now lie in the clear.
pub fn open_entry(
    keys: &KeySet,
    header: &[u8],
    offset: u64,
    body: &mut [u8],
) -> Result<(EntryInfo, Range<usize>), SealError> {
    let frame = parse_frame(header, offset)?;
    if body.len() != frame.sealed_len as usize {
        return Err(FormatError::Truncated { need: frame.sealed_len as usize, have: body.len() }.into());
    }
    let cipher = keys.cipher(frame.key_id).ok_or(SealError::UnknownKey(frame.key_id))?;
    cipher.open(&frame.nonce, &header[..ENTRY_HEADER_LEN], body)?;
    let text = &body[..body.len() - TAG_LEN];
    let compression = Compression::from_u8(text[36]).ok_or(FormatError::Compression(text[36]))?;
    if text[37..40] != [0; 3] {
        return Err(FormatError::BadMagic.into());
    }
    let (raw_len, stored) = (u32_at(text, 32), frame.sealed_len - OVERHEAD);
    check_lengths(compression, raw_len, stored)?;
    let info = EntryInfo { id: id_at(text, 0), offset, raw_len, stored_len: frame.sealed_len, compression };
    Ok((info, INNER_LEN..INNER_LEN + stored as usize))
}

pub fn encode_records(entries: &[TableEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TABLE_RECORD_LEN);
    for TableEntry { info: e, key } in entries {
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&[e.compression as u8, 0, 0, 0]);
        out.extend_from_slice(&key.to_le_bytes());
    }
    out
}

/// The sealed table of a pack whose header is `header`, to be written at `table_offset`, and
/// the trailer that follows it.
pub fn seal_table(
    keys: &KeySet,
    header: &[u8; HEADER_LEN],
    table_offset: u64,
    entries: &[TableEntry],
) -> Result<(Vec<u8>, [u8; TRAILER_LEN]), SealError> {
    let key_id = parse_header(header)?.table_key.ok_or(FormatError::Version(1))?;
    let cipher = keys.cipher(key_id).ok_or(SealError::UnknownKey(key_id))?;
    let nonce = random_nonce();
    let mut trailer = [0u8; TRAILER_LEN];
    trailer[..8].copy_from_slice(&table_offset.to_le_bytes());
    trailer[8..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    trailer[16..40].copy_from_slice(&nonce);
    trailer[48..56].copy_from_slice(&END_MAGIC);
    let mut table = encode_records(entries);
    let tag = cipher.seal(&nonce, &[&header[..], &trailer[..]].concat(), &mut table)?;
    table.extend_from_slice(&tag);
    Ok((table, trailer))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub table_offset: u64,
    pub count: u32,
    pub nonce: [u8; NONCE_LEN],
}

impl Trailer {
    pub fn table_len(&self) -> Option<usize> {
        (self.count as usize).checked_mul(TABLE_RECORD_LEN)?.checked_add(TAG_LEN)
    }
}

/// The last `TRAILER_LEN` bytes of `b`.
pub fn parse_trailer(b: &[u8]) -> Result<Trailer, FormatError> {
    need(b, TRAILER_LEN)?;
    let b = &b[b.len() - TRAILER_LEN..];
    if b[48..56] != END_MAGIC || b[12..16] != [0; 4] || b[40..48] != [0; 8] {
        return Err(FormatError::BadMagic);
    }
    Ok(Trailer { table_offset: u64_at(b, 0), count: u32_at(b, 8), nonce: b[16..40].try_into().expect("24 bytes") })
}

/// Open a sealed table in place (`table`: its sealed bytes) and check its records: in file
/// order between header and table, without overlap.
pub fn open_table(
    keys: &KeySet,
    header: &[u8],
    trailer: &[u8],
    table: &mut [u8],
) -> Result<Vec<TableEntry>, SealError> {
    let key_id = parse_header(header)?.table_key.ok_or(FormatError::Version(1))?;
    let t = parse_trailer(trailer)?;
    if Some(table.len()) != t.table_len() {
        return Err(FormatError::Layout.into());
    }
    let cipher = keys.cipher(key_id).ok_or(SealError::UnknownKey(key_id))?;
    let aad = [&header[..HEADER_LEN], &trailer[trailer.len() - TRAILER_LEN..]].concat();
    cipher.open(&t.nonce, &aad, table)?;
    let text = &table[..table.len() - TAG_LEN];
    let mut entries = Vec::with_capacity(t.count as usize);
    let mut next_free = HEADER_LEN as u64;
    for rec in text.chunks_exact(TABLE_RECORD_LEN) {
        if rec[49..52] != [0; 3] || u32_at(rec, 52) == 0 {
            return Err(FormatError::BadMagic.into());
        }
        let compression = Compression::from_u8(rec[48]).ok_or(FormatError::Compression(rec[48]))?;
        let info = EntryInfo {
            id: id_at(rec, 0),
            offset: u64_at(rec, 32),
            raw_len: u32_at(rec, 40),
            stored_len: u32_at(rec, 44),
            compression,
        };
        if info.stored_len <= OVERHEAD {
            return Err(FormatError::Lengths { raw: info.raw_len, stored: info.stored_len }.into());
        }
        check_lengths(compression, info.raw_len, info.stored_len - OVERHEAD)?;
        if info.offset < next_free || info.end() > t.table_offset {
            return Err(FormatError::Layout.into());
        }
        check_dictionary_rule(entries.len(), &info, entries.first().map(|f: &TableEntry| f.info.compression))?;
        next_free = info.end();
        entries.push(TableEntry { info, key: u32_at(rec, 52) });
    }
    Ok(entries)
}

/// A whole version 2 pack held in memory: header, trailer, the table opened, and each record
/// checked against the frame it points at. (Entries are opened and verified by the caller.)
/// The fuzz target `pack_sealed` drives this.
pub fn parse_pack(pack: &[u8], keys: &KeySet) -> Result<(PackHeader, Vec<TableEntry>), SealError> {
    let header = parse_header(pack)?;
    if header.table_key.is_none() {
        return Err(FormatError::Version(1).into());
    }
    need(pack, HEADER_LEN + TRAILER_LEN)?;
    let trailer = parse_trailer(pack)?;
    let table_end = (pack.len() - TRAILER_LEN) as u64;
    if trailer.table_offset < HEADER_LEN as u64 || trailer.table_offset > table_end {
        return Err(FormatError::Layout.into());
    }
    let mut table = pack[trailer.table_offset as usize..table_end as usize].to_vec();
    let entries = open_table(keys, &pack[..HEADER_LEN], pack, &mut table)?;
    for (i, e) in entries.iter().enumerate() {
        let found =
            parse_frame(&pack[e.info.offset as usize..], e.info.offset).map_err(|_| FormatError::TableMismatch(i))?;
        if found.key_id != e.key || found.sealed_len != e.info.stored_len {
            return Err(FormatError::TableMismatch(i).into());
        }
    }
    Ok((header, entries))
}

/// Walk the frames of an unsealed version 2 pack until the first that cannot be parsed or does
/// not fit; returns them and where parsing stopped. Nothing is opened here.
pub fn scan_frames(pack: &[u8]) -> (Vec<Frame>, u64) {
    let mut frames = Vec::new();
    let mut at = HEADER_LEN as u64;
    while let Ok(f) = parse_frame(pack.get(at as usize..).unwrap_or(&[]), at) {
        if f.end() > pack.len() as u64 {
            break;
        }
        at = f.end();
        frames.push(f);
    }
    (frames, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::format::encode_sealed_header;

    fn keys() -> KeySet {
        KeySet::single(7, [3; 32])
    }

    /// A sealed pack of `chunks`, stored raw, and its table.
    fn build(chunks: &[&[u8]]) -> (Vec<u8>, Vec<TableEntry>) {
        let keys = keys();
        let header = encode_sealed_header(9, 7);
        let mut pack = header.to_vec();
        let mut entries = Vec::new();
        for c in chunks {
            let id = ChunkId::of(c);
            let sealed = seal_entry(&keys, 7, &id, c.len() as u32, Compression::Raw, c).unwrap();
            let info = EntryInfo {
                id,
                offset: pack.len() as u64,
                raw_len: c.len() as u32,
                stored_len: sealed.body.len() as u32,
                compression: Compression::Raw,
            };
            pack.extend_from_slice(&sealed.header);
            pack.extend_from_slice(&sealed.body);
            entries.push(TableEntry { info, key: 7 });
        }
        let table_offset = pack.len() as u64;
        let (table, trailer) = seal_table(&keys, &header, table_offset, &entries).unwrap();
        pack.extend_from_slice(&table);
        pack.extend_from_slice(&trailer);
        (pack, entries)
    }

    fn open_at(pack: &[u8], e: &TableEntry) -> Result<(EntryInfo, Vec<u8>), SealError> {
        let at = e.info.offset as usize;
        let mut body = pack[at + ENTRY_HEADER_LEN..e.info.end() as usize].to_vec();
        let (info, range) = open_entry(&keys(), &pack[at..at + ENTRY_HEADER_LEN], e.info.offset, &mut body)?;
        Ok((info, body[range].to_vec()))
    }

    #[test]
    fn sealed_pack_round_trips_and_shows_nothing_in_the_clear() {
        let chunks: [&[u8]; 3] = [b"alpha alpha alpha", b"bravo!", b"charlie"];
        let (pack, entries) = build(&chunks);
        let (h, parsed) = parse_pack(&pack, &keys()).unwrap();
        assert_eq!((h.pack_id, h.table_key), (9, Some(7)));
        assert_eq!(parsed, entries);
        for (e, c) in entries.iter().zip(chunks) {
            assert_eq!(open_at(&pack, e).unwrap(), (e.info, c.to_vec()));
            let id = ChunkId::of(c).0;
            assert!(!pack.windows(32).any(|w| w == id), "a chunk id in the clear");
            assert!(!pack.windows(c.len()).any(|w| w == c), "content in the clear");
        }
        let (frames, end) = scan_frames(&pack[..entries[2].info.end() as usize]);
        assert_eq!(frames.len(), 3);
        assert_eq!(end, entries[2].info.end());
    }

    #[test]
    fn any_flipped_byte_fails_authentication() {
        let (pack, entries) = build(&[b"alpha", b"bravo!"]);
        for i in HEADER_LEN..pack.len() {
            let mut bad = pack.clone();
            bad[i] ^= 0x01;
            let whole =
                parse_pack(&bad, &keys()).and_then(|(_, es)| es.iter().try_for_each(|e| open_at(&bad, e).map(drop)));
            let entries_ok = entries.iter().all(|e| open_at(&bad, e).is_ok());
            assert!(whole.is_err() || !entries_ok, "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn swapped_entries_open_as_the_chunk_they_are_not_the_one_asked_for() {
        let (pack, entries) = build(&[b"first!", b"second"]);
        // Swap the two entries (same length) byte for byte.
        let (a, b) = (entries[0].info, entries[1].info);
        let mut swapped = pack.clone();
        let first = pack[a.offset as usize..a.end() as usize].to_vec();
        let second = pack[b.offset as usize..b.end() as usize].to_vec();
        swapped[a.offset as usize..a.end() as usize].copy_from_slice(&second);
        swapped[b.offset as usize..b.end() as usize].copy_from_slice(&first);
        let (found, _) = open_at(&swapped, &entries[0]).unwrap();
        assert_ne!(found.id, a.id, "the reader compares this id with the one it wants");
    }

    #[test]
    fn a_wrong_key_or_an_unknown_one_is_refused() {
        let (pack, entries) = build(&[b"alpha"]);
        let other = KeySet::single(7, [4; 32]);
        assert_eq!(parse_pack(&pack, &other).unwrap_err(), SealError::Auth);
        assert_eq!(parse_pack(&pack, &KeySet::none()).unwrap_err(), SealError::UnknownKey(7));
        let at = entries[0].info.offset as usize;
        let mut body = pack[at + ENTRY_HEADER_LEN..entries[0].info.end() as usize].to_vec();
        assert_eq!(open_entry(&other, &pack[at..], entries[0].info.offset, &mut body).unwrap_err(), SealError::Auth);
    }

    #[test]
    fn truncations_never_panic() {
        let (pack, _) = build(&[b"alpha", b"bravo!"]);
        for n in 0..pack.len() {
            let _ = parse_pack(&pack[..n], &keys());
            let _ = scan_frames(&pack[..n]);
        }
    }
}
