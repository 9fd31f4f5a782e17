//! `codec::unseal` on arbitrary stored bytes (a pack entry's contents are untrusted): it returns
//! exactly the promised length or an error, never panics, and never allocates past the promise;
//! a zstd context reused after garbage still round-trips good data; with and without a pack's
//! dictionary (tag 2 is decompressed against a fixed raw-content dictionary).
//!
//! Input: tag byte (its low 2 bits the compression tag, bit 5 whether the round trip uses the
//! dictionary, the top 2 bits the level), 3 bytes of promised length (at most 16 MiB, the
//! format's ceiling), then the stored bytes.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cairn::codec::{seal_with, unseal, Compression};
use cairn::dictionary::Dictionary;
use libfuzzer_sys::fuzz_target;

fn dictionary() -> &'static Arc<Dictionary> {
    static DICT: OnceLock<Arc<Dictionary>> = OnceLock::new();
    DICT.get_or_init(|| Dictionary::new(Bytes::from("the pack's dictionary, raw content ".repeat(64))).unwrap())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let compression = Compression::from_u8(data[0] & 3).expect("tags 0 to 3 exist");
    let raw_len = u32::from_le_bytes([data[1], data[2], data[3], 0]) as usize;
    let stored = &data[4..];
    if let Ok(raw) = unseal(compression, stored.to_vec(), raw_len, Some(dictionary())) {
        assert_eq!(raw.len(), raw_len);
    }

    // The same bytes as a chunk: seal, then unseal what was sealed, on the same thread-local
    // contexts the garbage above just went through. The level stays the one the dictionary
    // was first used at (one process, one level).
    if !stored.is_empty() {
        let with_dict = data[0] & 0x20 != 0;
        let level = if with_dict { 3 } else { 1 + i32::from(data[0] >> 6) };
        let sealed = seal_with(Bytes::copy_from_slice(stored), level, with_dict.then(dictionary));
        assert!(sealed.stored.len() <= stored.len());
        let back =
            unseal(sealed.compression, sealed.stored.to_vec(), stored.len(), sealed.dict.as_deref()).expect("round trip");
        assert_eq!(back, stored);
    }
});
