//! The sealed pack parsers (`cairn::pack::sealed`, format version 2) on arbitrary bytes under a
//! fixed key: nothing may panic, and what opens must lie inside the file and be consistent.
//!
//! The first input byte picks a mode:
//! - `0..=127`: the rest is a pack file as is (the fuzzer cannot forge a tag, so this mostly
//!   exercises the frame, trailer and layout checks in front of the AEAD);
//! - `128..=255`: the rest is a recipe: chunks to build a valid sealed pack from, then a byte
//!   to flip. The undamaged pack must parse back to exactly what it was built from and every
//!   entry must open to its chunk; a flipped byte past the header must fail somewhere.
#![no_main]

use cairn::chunk::ChunkId;
use cairn::codec::Compression;
use cairn::pack::format::{encode_sealed_header, EntryInfo, ENTRY_HEADER_LEN, HEADER_LEN};
use cairn::pack::sealed::{open_entry, parse_frame, parse_pack, parse_trailer, scan_frames, seal_entry, seal_table, TableEntry};
use cairn::pack::KeySet;
use libfuzzer_sys::fuzz_target;

const KEY: u32 = 7;

fn keys() -> KeySet {
    KeySet::single(KEY, [3; 32])
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode < 128 {
        check(rest);
    } else {
        built(rest);
    }
});

fn check(pack: &[u8]) {
    let keys = keys();
    let _ = parse_trailer(pack);
    let _ = parse_frame(pack, 0);
    if let Ok((_, entries)) = parse_pack(pack, &keys) {
        for e in &entries {
            assert!(e.info.end() <= pack.len() as u64);
        }
    }
    let (frames, end) = scan_frames(pack);
    // Where the walk stopped: the end of the header at least (a file shorter than a header has
    // no frame, and recovery refuses it at its header first).
    assert!(end <= (pack.len() as u64).max(HEADER_LEN as u64));
    for f in frames {
        let at = f.offset as usize;
        let mut body = pack[at + ENTRY_HEADER_LEN..f.end() as usize].to_vec();
        if let Ok((info, range)) = open_entry(&keys, &pack[at..], f.offset, &mut body) {
            assert!(range.end <= body.len());
            assert_eq!(info.stored_len, f.sealed_len);
        }
    }
}

/// A valid pack from the recipe's chunks (each: a length byte, then that many bytes), then the
/// flip the recipe's first two bytes name.
fn built(recipe: &[u8]) {
    let keys = keys();
    let Some((flip, mut rest)) = recipe.split_first_chunk::<2>() else { return };
    let header = encode_sealed_header(9, KEY);
    let mut pack = header.to_vec();
    let mut entries: Vec<(TableEntry, Vec<u8>)> = Vec::new();
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).clamp(1, tail.len().max(1));
        if tail.is_empty() {
            break;
        }
        let (chunk, tail) = tail.split_at(n.min(tail.len()));
        rest = tail;
        let id = ChunkId::of(chunk);
        // An odd first length makes the first entry the pack's dictionary (stored raw, as a
        // chunk is; only its tag differs, and the dictionary rule puts it first).
        let compression =
            if entries.is_empty() && n % 2 == 1 { Compression::Dictionary } else { Compression::Raw };
        let sealed = seal_entry(&keys, KEY, &id, chunk.len() as u32, compression, chunk).unwrap();
        let info = EntryInfo {
            id,
            offset: pack.len() as u64,
            raw_len: chunk.len() as u32,
            stored_len: sealed.body.len() as u32,
            compression,
        };
        pack.extend_from_slice(&sealed.header);
        pack.extend_from_slice(&sealed.body);
        entries.push((TableEntry { info, key: KEY }, chunk.to_vec()));
    }
    let records: Vec<TableEntry> = entries.iter().map(|(t, _)| *t).collect();
    let (table, trailer) = seal_table(&keys, &header, pack.len() as u64, &records).unwrap();
    pack.extend_from_slice(&table);
    pack.extend_from_slice(&trailer);
    let (_, parsed) = parse_pack(&pack, &keys).expect("a freshly built pack parses");
    assert_eq!(parsed, records);
    for (t, chunk) in &entries {
        let at = t.info.offset as usize;
        let mut body = pack[at + ENTRY_HEADER_LEN..t.info.end() as usize].to_vec();
        let (info, range) = open_entry(&keys, &pack[at..], t.info.offset, &mut body).unwrap();
        assert_eq!(info, t.info);
        assert_eq!(&body[range], &chunk[..]);
    }
    // One flipped bit past the header: the table or some entry no longer opens as built.
    let at = HEADER_LEN + usize::from(u16::from_le_bytes(*flip)) % (pack.len() - HEADER_LEN);
    pack[at] ^= 1 << (flip[0] % 8);
    let intact = parse_pack(&pack, &keys).is_ok_and(|(_, p)| p == records)
        && entries.iter().all(|(t, chunk)| {
            let a = t.info.offset as usize;
            let mut body = pack[a + ENTRY_HEADER_LEN..t.info.end() as usize].to_vec();
            open_entry(&keys, &pack[a..], t.info.offset, &mut body)
                .is_ok_and(|(info, range)| info == t.info && body[range] == chunk[..])
        });
    assert!(!intact, "a flip at {at} went unnoticed");
    check(&pack);
}
