//! Small text helpers of the pages: URL encoding of user-chosen names, human sizes, and what a
//! synced record shows (contacts, calendar events, notes), read from its JSON payload.
//!
//! Escaping for HTML is not here: maud escapes every value spliced into a page.

use serde_json::Value;

/// Percent-encode everything but RFC 3986's unreserved characters (a path segment, a query
/// value, a `filename*`).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A drive path for a URL: each segment encoded, the slashes kept.
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode_component).collect::<Vec<_>>().join("/")
}

/// Bytes as people read them (binary units, one decimal).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// An RFC 3339 UTC time as a person reads it: to the minute, "2026-12-03 08:34 UTC". The
/// stored form carries microseconds, which wrapped over three lines in a phone-width table;
/// pages put the full value in `<time datetime>` beside this. Anything that does not look like
/// one is shown as given.
pub fn short_time(at: &str) -> String {
    let b = at.as_bytes();
    let shaped = b.len() >= 17 && b[4] == b'-' && b[10] == b'T' && b[13] == b':' && at.ends_with('Z');
    if shaped && at.is_char_boundary(16) {
        format!("{} {} UTC", &at[..10], &at[11..16])
    } else {
        at.to_string()
    }
}

/// What one synced record shows in a list: a title and the lines under it.
#[derive(Debug, Default, PartialEq)]
pub struct Shown {
    pub title: String,
    pub lines: Vec<String>,
}

impl Shown {
    /// Whether the record matches a search (case-insensitive, over everything shown).
    pub fn matches(&self, q: &str) -> bool {
        let q = q.trim().to_lowercase();
        q.is_empty()
            || self.title.to_lowercase().contains(&q)
            || self.lines.iter().any(|l| l.to_lowercase().contains(&q))
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// A list field as strings: plain strings, or objects with a `value` (vCard-style).
fn list_field(v: &Value, key: &str) -> Vec<String> {
    let Some(items) = v.get(key).and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| i.as_str().or_else(|| i.get("value").and_then(Value::as_str)))
        .map(str::to_string)
        .collect()
}

/// The fallback title of any record: its payload's `name` or `title`, else its id.
fn fallback_title(payload: &Value, id: &str) -> String {
    str_field(payload, "name").or_else(|| str_field(payload, "title")).unwrap_or(id).to_string()
}

/// A contact: `fn`, `emails`, `tels` (the CardDAV front's payload).
pub fn contact(id: &str, payload: &Value) -> Shown {
    let title = str_field(payload, "fn").map_or_else(|| fallback_title(payload, id), str::to_string);
    let mut lines = list_field(payload, "emails");
    lines.extend(list_field(payload, "tels"));
    Shown { title, lines }
}

/// A calendar event: `summary`, `start`, `end` (the CalDAV front's payload).
pub fn event(id: &str, payload: &Value) -> Shown {
    let title = str_field(payload, "summary").map_or_else(|| fallback_title(payload, id), str::to_string);
    let when = match (str_field(payload, "start"), str_field(payload, "end")) {
        (Some(s), Some(e)) => vec![format!("{s} – {e}")],
        (Some(s), None) => vec![s.to_string()],
        _ => Vec::new(),
    };
    Shown { title, lines: when }
}

/// A note: `{"title", "text"}` (docs/API.md).
pub fn note(id: &str, payload: &Value) -> Shown {
    let title = fallback_title(payload, id);
    let text = payload.get("text").and_then(Value::as_str).unwrap_or("").to_string();
    Shown { title, lines: vec![text] }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_are_encoded_for_urls() {
        assert_eq!(encode_path("a b/ü?#.txt"), "a%20b/%C3%BC%3F%23.txt");
        assert_eq!(encode_component("x/y"), "x%2Fy");
    }

    #[test]
    fn times_read_to_the_minute() {
        assert_eq!(short_time("2026-12-03T08:34:12.369037Z"), "2026-12-03 08:34 UTC");
        assert_eq!(short_time("2026-12-03T08:34:12Z"), "2026-12-03 08:34 UTC");
        assert_eq!(short_time(""), "");
        assert_eq!(short_time("yesterday"), "yesterday");
        assert_eq!(short_time("2026-12-03T08:3é:12.3Z"), "2026-12-03T08:3é:12.3Z");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
    }

    #[test]
    fn records_show_their_fields_or_fall_back() {
        let c = contact(
            "c1",
            &json!({"vcard": "BEGIN:VCARD", "fn": "Ada L", "emails": ["a@x"], "tels": [{"value": "+1"}]}),
        );
        assert_eq!(c, Shown { title: "Ada L".into(), lines: vec!["a@x".into(), "+1".into()] });
        assert_eq!(contact("c2", &json!({"name": "Bob"})).title, "Bob");
        assert_eq!(contact("c3", &json!(42)).title, "c3");
        let e = event("e1", &json!({"summary": "Dentist", "start": "2026-01-01T09:00", "end": "2026-01-01T10:00"}));
        assert_eq!(e.title, "Dentist");
        assert!(e.matches("dent") && e.matches("2026-01") && !e.matches("bob"));
        assert_eq!(note("n1", &json!({"title": "T", "text": "body"})).lines, vec!["body"]);
        assert_eq!(note("n2", &json!({})).title, "n2");
    }
}
