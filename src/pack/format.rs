//! The packfile format, byte by byte (docs/pack-format.md is the prose twin of this file).
//!
//! ```text
//! header   24 B   magic "CAIRNPK\0" | version u32 LE = 1 | flags u32 = 0 | pack id u64 LE
//! entry    48 B + stored bytes, repeated:
//!                 magic "CHNK" | compression u8 | 3 zero bytes | raw_len u32 | stored_len u32 |
//!                 chunk id [32] | stored bytes [stored_len]
//! table    56 B per entry, in file order:
//!                 chunk id [32] | entry offset u64 | raw_len u32 | stored_len u32 |
//!                 compression u8 | 7 zero bytes
//! trailer  56 B   table offset u64 | entry count u32 | 4 zero bytes | BLAKE3 of the table [32] |
//!                 magic "CAIRNEND"
//! ```
//! Compression tags: 0 raw, 1 zstd, 2 zstd against the pack's dictionary, 3 the pack's
//! dictionary itself (stored raw; its "chunk id" is the BLAKE3 of its bytes). A dictionary
//! entry is only ever the first entry, and a tag 2 entry only follows one: so a reader finds a
//! pack's dictionary at offset 24, whatever the index says (`check_dictionary_rule`).
//! An open (unsealed) pack is the header and entries only; sealing appends table and trailer.
//! Every entry names its own chunk, so both the table and the whole index can be rebuilt from
//! the entries; the chunk id doubles as the entry's checksum (BLAKE3 of the raw bytes).
//!
//! Everything here is pure: byte slices in, typed values or a `FormatError` out. It is the one
//! place that parses pack bytes, and the fuzz targets call it directly.

use crate::chunk::ChunkId;
use crate::codec::Compression;

pub const PACK_MAGIC: [u8; 8] = *b"CAIRNPK\0";
pub const END_MAGIC: [u8; 8] = *b"CAIRNEND";
pub const ENTRY_MAGIC: [u8; 4] = *b"CHNK";
pub const VERSION: u32 = 1;
/// Version 2: entries and table sealed (see `pack::sealed`); the header names the table's key.
pub const VERSION_SEALED: u32 = 2;
pub const HEADER_LEN: usize = 24;
pub const ENTRY_HEADER_LEN: usize = 48;
pub const TABLE_RECORD_LEN: usize = 56;
pub const TRAILER_LEN: usize = 56;
/// No chunk is larger than FastCDC's own ceiling; a bigger length is corruption, not data, and
/// refusing it keeps a damaged header from making a reader allocate gigabytes.
pub const MAX_CHUNK_LEN: u32 = 16 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported pack version {0}")]
    Version(u32),
    #[error("unknown compression tag {0}")]
    Compression(u8),
    #[error("implausible lengths: raw {raw}, stored {stored}")]
    Lengths { raw: u32, stored: u32 },
    #[error("table checksum does not match")]
    TableChecksum,
    #[error("table entry {0} does not match the entry it points at")]
    TableMismatch(usize),
    #[error("offsets out of order or out of range")]
    Layout,
    #[error("entry {0}: a dictionary that is not the first entry, or a dictionary's chunk without one")]
    Dictionary(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackHeader {
    pub pack_id: u64,
    /// Version 2: the data key that seals the table. `None`: a version 1 (plaintext) pack.
    pub table_key: Option<u32>,
}

/// Where one chunk sits in a pack and how to read it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub id: ChunkId,
    /// Offset of the entry header; the stored bytes start `ENTRY_HEADER_LEN` later.
    pub offset: u64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub compression: Compression,
}

impl EntryInfo {
    /// Saturating, like `end`: an offset read from damaged bytes may be near `u64::MAX`, and
    /// an entry that would end past it certainly ends past any real file.
    pub fn data_offset(&self) -> u64 {
        self.offset.saturating_add(ENTRY_HEADER_LEN as u64)
    }
    pub fn end(&self) -> u64 {
        self.data_offset().saturating_add(u64::from(self.stored_len))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub table_offset: u64,
    pub count: u32,
    pub table_hash: [u8; 32],
}

pub(crate) fn need(buf: &[u8], n: usize) -> Result<(), FormatError> {
    if buf.len() < n {
        Err(FormatError::Truncated { need: n, have: buf.len() })
    } else {
        Ok(())
    }
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn id_at(b: &[u8], at: usize) -> ChunkId {
    ChunkId(b[at..at + 32].try_into().expect("32 bytes"))
}

pub fn encode_header(pack_id: u64) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[..8].copy_from_slice(&PACK_MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&pack_id.to_le_bytes());
    b
}

/// The header of a version 2 pack: bytes 12..16 name the key of its table.
pub fn encode_sealed_header(pack_id: u64, table_key: u32) -> [u8; HEADER_LEN] {
    let mut b = encode_header(pack_id);
    b[8..12].copy_from_slice(&VERSION_SEALED.to_le_bytes());
    b[12..16].copy_from_slice(&table_key.to_le_bytes());
    b
}

/// Either version's header.
pub fn parse_header(b: &[u8]) -> Result<PackHeader, FormatError> {
    need(b, HEADER_LEN)?;
    if b[..8] != PACK_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let (version, field) = (u32_at(b, 8), u32_at(b, 12));
    let table_key = match (version, field) {
        (VERSION, 0) => None,
        (VERSION_SEALED, key) if key != 0 => Some(key),
        (VERSION | VERSION_SEALED, _) => return Err(FormatError::BadMagic), // flags / key id
        _ => return Err(FormatError::Version(version)),
    };
    Ok(PackHeader { pack_id: u64_at(b, 16), table_key })
}

pub(crate) fn check_lengths(compression: Compression, raw: u32, stored: u32) -> Result<(), FormatError> {
    let plausible = raw > 0
        && raw <= MAX_CHUNK_LEN
        && stored > 0
        && match compression {
            Compression::Raw => stored == raw,
            Compression::Zstd | Compression::ZstdDict => stored < raw,
            Compression::Dictionary => stored == raw && raw <= crate::dictionary::MAX_DICT_LEN,
        };
    if plausible {
        Ok(())
    } else {
        Err(FormatError::Lengths { raw, stored })
    }
}

/// The dictionary rule, for the entry at position `index` of a pack whose first entry is
/// `first`: a dictionary only as the first entry (at `HEADER_LEN`), a tag 2 entry only after
/// one.
pub fn check_dictionary_rule(index: usize, e: &EntryInfo, first: Option<Compression>) -> Result<(), FormatError> {
    let ok = match e.compression {
        Compression::Dictionary => index == 0 && e.offset == HEADER_LEN as u64,
        Compression::ZstdDict => index > 0 && first == Some(Compression::Dictionary),
        Compression::Raw | Compression::Zstd => true,
    };
    if ok {
        Ok(())
    } else {
        Err(FormatError::Dictionary(index))
    }
}

pub fn encode_entry_header(e: &EntryInfo) -> [u8; ENTRY_HEADER_LEN] {
    let mut b = [0u8; ENTRY_HEADER_LEN];
    b[..4].copy_from_slice(&ENTRY_MAGIC);
    b[4] = e.compression as u8;
    b[8..12].copy_from_slice(&e.raw_len.to_le_bytes());
    b[12..16].copy_from_slice(&e.stored_len.to_le_bytes());
    b[16..48].copy_from_slice(&e.id.0);
    b
}

/// Parse the entry header found at `offset` (given so the result can carry it).
pub fn parse_entry_header(b: &[u8], offset: u64) -> Result<EntryInfo, FormatError> {
    need(b, ENTRY_HEADER_LEN)?;
    if b[..4] != ENTRY_MAGIC || b[5..8] != [0; 3] {
        return Err(FormatError::BadMagic);
    }
    let compression = Compression::from_u8(b[4]).ok_or(FormatError::Compression(b[4]))?;
    let (raw_len, stored_len) = (u32_at(b, 8), u32_at(b, 12));
    check_lengths(compression, raw_len, stored_len)?;
    Ok(EntryInfo { id: id_at(b, 16), offset, raw_len, stored_len, compression })
}

pub fn encode_table(entries: &[EntryInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TABLE_RECORD_LEN);
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.push(e.compression as u8);
        out.extend_from_slice(&[0u8; 7]);
    }
    out
}

pub fn encode_trailer(table_offset: u64, table: &[u8]) -> [u8; TRAILER_LEN] {
    let mut b = [0u8; TRAILER_LEN];
    b[..8].copy_from_slice(&table_offset.to_le_bytes());
    b[8..12].copy_from_slice(&((table.len() / TABLE_RECORD_LEN) as u32).to_le_bytes());
    b[16..48].copy_from_slice(blake3::hash(table).as_bytes());
    b[48..56].copy_from_slice(&END_MAGIC);
    b
}

pub fn parse_trailer(b: &[u8]) -> Result<Trailer, FormatError> {
    need(b, TRAILER_LEN)?;
    let b = &b[b.len() - TRAILER_LEN..];
    if b[48..56] != END_MAGIC || b[12..16] != [0; 4] {
        return Err(FormatError::BadMagic);
    }
    Ok(Trailer { table_offset: u64_at(b, 0), count: u32_at(b, 8), table_hash: b[16..48].try_into().expect("32") })
}

/// Parse and check a table against its trailer. Entries must lie in file order between the
/// header and the table, without overlap.
pub fn parse_table(table: &[u8], trailer: &Trailer) -> Result<Vec<EntryInfo>, FormatError> {
    let count = trailer.count as usize;
    if table.len() != count.checked_mul(TABLE_RECORD_LEN).ok_or(FormatError::Layout)? {
        return Err(FormatError::Layout);
    }
    if blake3::hash(table).as_bytes() != &trailer.table_hash {
        return Err(FormatError::TableChecksum);
    }
    let mut entries = Vec::with_capacity(count);
    let mut next_free = HEADER_LEN as u64;
    for rec in table.chunks_exact(TABLE_RECORD_LEN) {
        // Reserved, like the entry header's and the trailer's: zero in version 1, so that a
        // later version can give them a meaning and one table has one encoding.
        if rec[49..] != [0; 7] {
            return Err(FormatError::BadMagic);
        }
        let compression = Compression::from_u8(rec[48]).ok_or(FormatError::Compression(rec[48]))?;
        let e = EntryInfo {
            id: id_at(rec, 0),
            offset: u64_at(rec, 32),
            raw_len: u32_at(rec, 40),
            stored_len: u32_at(rec, 44),
            compression,
        };
        check_lengths(compression, e.raw_len, e.stored_len)?;
        if e.offset < next_free || e.end() > trailer.table_offset {
            return Err(FormatError::Layout);
        }
        check_dictionary_rule(entries.len(), &e, entries.first().map(|f: &EntryInfo| f.compression))?;
        next_free = e.end();
        entries.push(e);
    }
    Ok(entries)
}

/// A whole sealed pack held in memory: header, trailer, table, and each table record checked
/// against the entry header it points at. (Chunk contents are verified by the caller, which
/// knows how to decompress.) The fuzz target `pack_parse` drives this.
pub fn parse_sealed(pack: &[u8]) -> Result<(PackHeader, Vec<EntryInfo>), FormatError> {
    let header = parse_header(pack)?;
    if header.table_key.is_some() {
        return Err(FormatError::Version(VERSION_SEALED)); // `sealed::parse_pack` reads those
    }
    need(pack, HEADER_LEN + TRAILER_LEN)?;
    let trailer = parse_trailer(pack)?;
    let table_end = (pack.len() - TRAILER_LEN) as u64;
    if trailer.table_offset < HEADER_LEN as u64 || trailer.table_offset > table_end {
        return Err(FormatError::Layout);
    }
    let table = &pack[trailer.table_offset as usize..table_end as usize];
    let entries = parse_table(table, &trailer)?;
    for (i, e) in entries.iter().enumerate() {
        let at = e.offset as usize;
        let found = parse_entry_header(&pack[at..], e.offset).map_err(|_| FormatError::TableMismatch(i))?;
        if found != *e {
            return Err(FormatError::TableMismatch(i));
        }
    }
    Ok((header, entries))
}

/// Walk the entries of an open pack's bytes (after the header) until the first one that cannot
/// be parsed or does not fit. Returns the entries and the offset where parsing stopped: the end
/// of the last complete entry. Contents are not verified here. An entry that breaks the
/// dictionary rule stops the walk like a torn one.
pub fn scan_entries(pack: &[u8]) -> (Vec<EntryInfo>, u64) {
    let mut entries: Vec<EntryInfo> = Vec::new();
    let mut at = HEADER_LEN as u64;
    while let Ok(e) = parse_entry_header(pack.get(at as usize..).unwrap_or(&[]), at) {
        if e.end() > pack.len() as u64
            || check_dictionary_rule(entries.len(), &e, entries.first().map(|f| f.compression)).is_err()
        {
            break;
        }
        at = e.end();
        entries.push(e);
    }
    (entries, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(chunks: &[&[u8]]) -> (Vec<u8>, Vec<EntryInfo>) {
        let mut pack = encode_header(9).to_vec();
        let mut entries = Vec::new();
        for c in chunks {
            let e = EntryInfo {
                id: ChunkId::of(c),
                offset: pack.len() as u64,
                raw_len: c.len() as u32,
                stored_len: c.len() as u32,
                compression: Compression::Raw,
            };
            pack.extend_from_slice(&encode_entry_header(&e));
            pack.extend_from_slice(c);
            entries.push(e);
        }
        let table_offset = pack.len() as u64;
        let table = encode_table(&entries);
        pack.extend_from_slice(&table);
        pack.extend_from_slice(&encode_trailer(table_offset, &table));
        (pack, entries)
    }

    #[test]
    fn sealed_round_trip() {
        let (pack, entries) = build(&[b"alpha", b"bravo!", b"c"]);
        let (h, parsed) = parse_sealed(&pack).unwrap();
        assert_eq!(h.pack_id, 9);
        assert_eq!(parsed, entries);
    }

    #[test]
    fn scan_stops_at_a_torn_tail() {
        let (pack, entries) = build(&[b"alpha", b"bravo!"]);
        let cut = entries[1].end() as usize - 2;
        let (found, stop) = scan_entries(&pack[..cut]);
        assert_eq!(found, entries[..1]);
        assert_eq!(stop, entries[0].end());
    }

    #[test]
    fn any_flipped_table_byte_is_caught() {
        let (pack, _) = build(&[b"alpha", b"bravo!"]);
        let table_offset = parse_trailer(&pack).unwrap().table_offset as usize;
        for i in table_offset..pack.len() {
            let mut bad = pack.clone();
            bad[i] ^= 0x40;
            assert!(parse_sealed(&bad).is_err(), "flip at {i} went unnoticed");
        }
    }

    /// Found by the `pack_parse` fuzz target: a table record whose 7 reserved bytes were not
    /// zero parsed (its checksum recomputed), so one table had many encodings.
    #[test]
    fn reserved_table_bytes_must_be_zero() {
        let (mut pack, _) = build(&[b"a", b"b"]);
        let table_offset = parse_trailer(&pack).unwrap().table_offset as usize;
        let table_end = pack.len() - TRAILER_LEN;
        pack[table_offset + TABLE_RECORD_LEN + 50] = 0x51; // second record, reserved byte
        let hash = *blake3::hash(&pack[table_offset..table_end]).as_bytes();
        pack[table_end + 16..table_end + 48].copy_from_slice(&hash);
        assert_eq!(parse_sealed(&pack), Err(FormatError::BadMagic));
    }

    /// Found by the `pack_parse` fuzz target: a table offset near `u64::MAX` (checksum
    /// recomputed) overflowed `EntryInfo::end` in `parse_table`: a panic with overflow checks,
    /// and without them a wrapped end that passed the layout check, so that `parse_sealed`
    /// then sliced the pack out of bounds.
    #[test]
    fn table_offsets_near_the_top_of_u64_are_refused() {
        let (mut pack, _) = build(&[b"a"]);
        let trailer = parse_trailer(&pack).unwrap();
        let (table_offset, table_end) = (trailer.table_offset as usize, pack.len() - TRAILER_LEN);
        pack[table_offset + 32..table_offset + 40].copy_from_slice(&(u64::MAX - 40).to_le_bytes());
        let hash = *blake3::hash(&pack[table_offset..table_end]).as_bytes();
        pack[table_end + 16..table_end + 48].copy_from_slice(&hash);
        let trailer = parse_trailer(&pack).unwrap();
        assert_eq!(parse_table(&pack[table_offset..table_end], &trailer), Err(FormatError::Layout));
        assert_eq!(parse_sealed(&pack), Err(FormatError::Layout));
    }

    #[test]
    fn a_dictionary_is_first_or_nowhere() {
        let dict = EntryInfo {
            id: ChunkId::of(b"dict"),
            offset: HEADER_LEN as u64,
            raw_len: 4,
            stored_len: 4,
            compression: Compression::Dictionary,
        };
        let chunk = EntryInfo { compression: Compression::ZstdDict, offset: 100, raw_len: 9, stored_len: 5, ..dict };
        assert!(check_dictionary_rule(0, &dict, None).is_ok());
        assert!(check_dictionary_rule(1, &chunk, Some(Compression::Dictionary)).is_ok());
        assert_eq!(check_dictionary_rule(1, &dict, Some(Compression::Dictionary)), Err(FormatError::Dictionary(1)));
        assert_eq!(check_dictionary_rule(1, &chunk, Some(Compression::Raw)), Err(FormatError::Dictionary(1)));
        assert_eq!(check_dictionary_rule(0, &chunk, None), Err(FormatError::Dictionary(0)));
        assert!(check_lengths(Compression::Dictionary, 5, 5).is_ok());
        assert!(check_lengths(Compression::Dictionary, 5, 4).is_err());
        assert!(check_lengths(Compression::ZstdDict, 5, 4).is_ok());
    }

    #[test]
    fn truncations_never_panic() {
        let (pack, _) = build(&[b"alpha", b"bravo!"]);
        for n in 0..pack.len() {
            let _ = parse_sealed(&pack[..n]);
            let _ = scan_entries(&pack[..n]);
        }
    }
}
