//! `codec::unseal` on arbitrary stored bytes (a pack entry's contents are untrusted): it returns
//! exactly the promised length or an error, never panics, and never allocates past the promise;
//! a zstd context reused after garbage still round-trips good data.
//!
//! Input: compression tag byte, 3 bytes of promised length (at most 16 MiB, the format's
//! ceiling), then the stored bytes.
#![no_main]

use bytes::Bytes;
use cairn::codec::{seal, unseal, Compression};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let compression = if data[0] & 1 == 0 { Compression::Raw } else { Compression::Zstd };
    let raw_len = u32::from_le_bytes([data[1], data[2], data[3], 0]) as usize;
    let stored = &data[4..];
    if let Ok(raw) = unseal(compression, stored.to_vec(), raw_len) {
        assert_eq!(raw.len(), raw_len);
    }

    // The same bytes as a chunk: seal, then unseal what was sealed, on the same thread-local
    // contexts the garbage above just went through.
    if !stored.is_empty() {
        let sealed = seal(Bytes::copy_from_slice(stored), 1 + i32::from(data[0] >> 6));
        assert!(sealed.stored.len() <= stored.len());
        let back = unseal(sealed.compression, sealed.stored.to_vec(), stored.len()).expect("round trip");
        assert_eq!(back, stored);
    }
});
