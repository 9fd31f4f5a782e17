//! The tus headers that carry client data: `Upload-Metadata` and `Upload-Checksum`, as any
//! client may send them. Nothing may panic; a parsed checksum has the digest length of its
//! algorithm, and parsed metadata re-encodes to a header that parses to the same pairs.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use cairn::uploads::parse::{parse_checksum, parse_metadata, Algorithm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(pairs) = parse_metadata(s) {
        let again: Vec<String> = pairs
            .iter()
            .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k} {}", STANDARD.encode(v)) })
            .collect();
        assert_eq!(parse_metadata(&again.join(",")).as_ref(), Ok(&pairs));
    }
    if let Ok(c) = parse_checksum(s) {
        let want = match c.algorithm {
            Algorithm::Sha1 => 20,
            Algorithm::Blake3 => 32,
        };
        assert_eq!(c.digest.len(), want);
    }
});
