//! The XML bodies of CardDAV/CalDAV requests (PROPFIND, PROPPATCH, MKCOL, MKCALENDAR, REPORT):
//! the tree reader with its bomb and depth limits, and every request read from a tree.
//! Nothing may panic.
#![no_main]

use cairn::http::groupware::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(root) = xml::parse(data) else { return };
    let _ = xml::propfind(root.as_ref());
    if let Some(root) = root {
        let _ = xml::set_props(&root);
        let _ = xml::report(&root);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let escaped = xml::escape(s);
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('"'), "escaped text stays text");
    }
});
