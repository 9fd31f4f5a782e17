//! The pack parsers (`cairn::pack::format`) on arbitrary bytes: nothing may panic, and whatever
//! they accept must be self-consistent and re-encode to the very bytes it came from.
//!
//! The first input byte picks a mode:
//! - `0..=127`: the rest is a pack file as is;
//! - `128..=191`: the same, with the table checksum in the trailer recomputed, so that the
//!   fuzzer gets past BLAKE3 to the table and entry checks behind it;
//! - `192..=255`: the rest is a recipe: chunks to build a valid pack from, then damage to do
//!   to it (byte flips, words written over, a truncation, and whether to fix the checksum up
//!   afterwards). The undamaged pack must parse back to exactly the entries it was built from.
#![no_main]

use cairn::chunk::ChunkId;
use cairn::codec::Compression;
use cairn::pack::format::{
    encode_entry_header, encode_header, encode_table, encode_trailer, parse_entry_header, parse_header, parse_sealed,
    parse_table, parse_trailer, scan_entries, EntryInfo, ENTRY_HEADER_LEN, HEADER_LEN, TRAILER_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode {
        0..=127 => check(rest),
        128..=191 => {
            let mut pack = rest.to_vec();
            fix_table_hash(&mut pack);
            check(&pack);
        }
        _ => built(rest),
    }
});

/// Recompute the trailer's table checksum over whatever its table offset points at.
fn fix_table_hash(pack: &mut [u8]) {
    if pack.len() < HEADER_LEN + TRAILER_LEN {
        return;
    }
    let t = pack.len() - TRAILER_LEN;
    let offset = u64::from_le_bytes(pack[t..t + 8].try_into().unwrap());
    if offset < HEADER_LEN as u64 || offset > t as u64 {
        return;
    }
    let hash = *blake3::hash(&pack[offset as usize..t]).as_bytes();
    pack[t + 16..t + 48].copy_from_slice(&hash);
}

fn check(pack: &[u8]) {
    let _ = parse_header(pack);
    let _ = parse_entry_header(pack, 0);
    if let Ok(trailer) = parse_trailer(pack) {
        // The table as `read_sealed` would take it: from the offset to the trailer.
        let t = pack.len() - TRAILER_LEN;
        if let Some(table) = pack.get(trailer.table_offset as usize..t) {
            if let Ok(entries) = parse_table(table, &trailer) {
                assert_eq!(encode_table(&entries), table);
                let mut next = HEADER_LEN as u64;
                for e in &entries {
                    assert!(e.offset >= next && e.end() <= trailer.table_offset, "{e:?} out of place");
                    next = e.end();
                }
            }
        }
    }

    if let Ok((header, entries)) = parse_sealed(pack) {
        let trailer = parse_trailer(pack).expect("parse_sealed accepted the trailer");
        let t = pack.len() - TRAILER_LEN;
        let table = &pack[trailer.table_offset as usize..t];
        assert_eq!(pack[..HEADER_LEN], encode_header(header.pack_id));
        assert_eq!(encode_table(&entries), table);
        assert_eq!(pack[t..], encode_trailer(trailer.table_offset, table));
        let mut next = HEADER_LEN as u64;
        for e in &entries {
            // What `verified_entries` and the readers then index with must lie inside the file.
            assert!(e.offset >= next && e.end() <= trailer.table_offset, "{e:?} out of place");
            let at = e.offset as usize;
            assert_eq!(pack[at..at + ENTRY_HEADER_LEN], encode_entry_header(e));
            assert!(pack.get(e.data_offset() as usize..e.end() as usize).is_some());
            next = e.end();
        }
    }

    let (entries, end) = scan_entries(pack);
    let mut next = HEADER_LEN as u64;
    for e in &entries {
        assert_eq!(e.offset, next, "scanned entries are contiguous");
        assert!(e.end() <= pack.len() as u64);
        let at = e.offset as usize;
        assert_eq!(pack[at..at + ENTRY_HEADER_LEN], encode_entry_header(e));
        next = e.end();
    }
    assert_eq!(end, next, "the scan stops where the last entry ends");
}

/// Little-endian reader that runs dry into zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

fn built(recipe: &[u8]) {
    let mut r = Bytes(recipe);
    let pack_id = u64::from(r.u16());
    let count = r.u8() % 8;
    let mut pack = encode_header(pack_id).to_vec();
    let mut entries: Vec<EntryInfo> = Vec::new();
    for i in 0..count {
        let len = usize::from(r.u8() % 64) + 1;
        // Bit 0: compressed; bit 1: against the pack's dictionary, which the first entry is
        // when its bit 2 says so (the dictionary rule: first, or nowhere).
        let kind = r.u8();
        let zstd = kind & 1 == 1;
        let has_dict = entries.first().is_some_and(|f| f.compression == Compression::Dictionary);
        let compression = match (i, kind & 4 != 0, zstd, kind & 2 != 0 && has_dict) {
            (0, true, _, _) => Compression::Dictionary,
            (_, _, true, true) => Compression::ZstdDict,
            (_, _, true, false) => Compression::Zstd,
            _ => Compression::Raw,
        };
        let body: Vec<u8> = (0..len).map(|_| r.u8()).collect();
        let e = EntryInfo {
            id: ChunkId::of(&body),
            offset: pack.len() as u64,
            // The parser does not decompress; a zstd entry only has to be smaller than it claims.
            raw_len: if compression.is_compressed() { len as u32 + 1 + u32::from(r.u8()) } else { len as u32 },
            stored_len: len as u32,
            compression,
        };
        pack.extend_from_slice(&encode_entry_header(&e));
        pack.extend_from_slice(&body);
        entries.push(e);
    }
    let table_offset = pack.len() as u64;
    let table = encode_table(&entries);
    pack.extend_from_slice(&table);
    pack.extend_from_slice(&encode_trailer(table_offset, &table));

    let (header, parsed) = parse_sealed(&pack).expect("a freshly built pack parses");
    assert_eq!(header.pack_id, pack_id);
    assert_eq!(parsed, entries);
    let unsealed = pack[..table_offset as usize].to_vec();
    assert_eq!(scan_entries(&unsealed), (entries.clone(), table_offset));

    // Damage: byte flips or whole little-endian words written over (lengths and offsets), then
    // maybe a truncation, then maybe a checksum fix-up.
    let damages = r.u8() % 4;
    for _ in 0..damages {
        let at = usize::from(r.u16()) % pack.len();
        let how = r.u8();
        if how & 1 == 0 {
            pack[at] ^= how | 1;
        } else {
            let word = (0..8).fold(0u64, |w, i| w | u64::from(r.u8()) << (8 * i));
            let bytes = word.to_le_bytes();
            let n = if how & 2 == 0 { 4 } else { 8 }.min(pack.len() - at);
            pack[at..at + n].copy_from_slice(&bytes[..n]);
        }
    }
    let cut = usize::from(r.u16());
    if cut % 3 == 0 {
        pack.truncate(cut % (pack.len() + 1));
    }
    if r.u8() & 1 == 1 {
        fix_table_hash(&mut pack);
    }
    check(&pack);
    check(&unsealed);
}
