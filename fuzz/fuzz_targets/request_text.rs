//! Text that arrives in requests and is parsed by our own code (not serde): drive paths,
//! `Range` and entity-tag headers, listing cursors, sync collection names and record ids,
//! backup ids, identifiers, Basic credentials. Nothing may panic, and what parses must hold to the rules it promises.
#![no_main]

use cairn::drive::{self, RangeAsk};
use cairn::identity::Identifier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some((id, pw)) = cairn::http::dav::parse_basic(s) {
        assert!(!id.is_empty() && !pw.is_empty() && !id.contains(':'));
    }
    if drive::check_path(s).is_ok() {
        assert!(!s.is_empty() && s.len() <= drive::MAX_PATH_BYTES);
        assert!(s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
        assert!(!s.chars().any(char::is_control));
    }
    let size = u64::from(data.first().copied().unwrap_or(0)) * 1000 + data.len() as u64;
    match drive::parse_range(Some(s), size) {
        RangeAsk::Part(r) => assert!(r.start < r.end && r.end <= size, "{r:?} of {size}"),
        RangeAsk::Whole | RangeAsk::Unsatisfiable => {}
    }
    if let Some(v) = drive::parse_etag(s) {
        assert_eq!(drive::parse_etag(&drive::etag(v)), Some(v));
    }
    let _ = drive::tag_list_matches(s, 7);
    if let Some(c) = drive::decode_cursor(s) {
        assert_eq!(drive::encode_cursor(&c), s.to_ascii_lowercase());
    }
    if let Some(id) = cairn::backup::parse_id(s) {
        assert_eq!(cairn::backup::format_id(id), s, "one spelling per backup id");
    }
    if cairn::sync::check_collection(s).is_ok() {
        assert!(s.len() <= 32 && s.as_bytes()[0].is_ascii_lowercase());
    }
    if cairn::sync::check_id(s).is_ok() {
        assert!(!s.is_empty() && s.len() <= 64 && !s.contains('/'));
    }
    if let Ok(id) = Identifier::parse("identifier", s) {
        let again = Identifier::from_stored(&id.stored_form()).expect("a stored form reads back");
        assert_eq!(again.lookup_form(), id.lookup_form());
    }
});
