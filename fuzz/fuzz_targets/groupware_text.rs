//! vCard and iCalendar as clients PUT them: the content-line parser, the contact and calendar
//! checks, and time-range matching with recurrences expanded. Nothing may panic; what the
//! checks accept must serialize into a payload that reads back to the same text.
#![no_main]

use cairn::groupware::event::{component_overlaps, overridden_instances, Range};
use cairn::groupware::{card, event, object_text, payload_for, text, Kind};
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = card::parse(s);
    let _ = event::parse(s);
    for kind in [Kind::Contacts, Kind::Calendar] {
        if let Ok(checked) = payload_for(kind, s) {
            let payload = std::str::from_utf8(&checked.payload).expect("JSON is UTF-8");
            assert_eq!(object_text(kind, payload).as_deref(), Some(s), "the text is kept as given");
        }
    }
    if let Ok(cal) = text::parse(s) {
        let range = Range {
            start: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            end: Some(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()),
        };
        let over = overridden_instances(&cal);
        for c in &cal.children {
            let _ = component_overlaps(c, &range, &over);
        }
    }
    let _ = event::parse_duration(s);
});
