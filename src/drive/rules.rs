//! The rules of the drive that are not storage: what a path may be, how a byte range and an
//! entity tag are read from request headers, how a listing cursor is spelled. Pure functions,
//! each a parser of untrusted input (fuzzed in `fuzz/`), shared by every front.

use crate::engine::ByteRange;

pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("a path is 1 to 4096 bytes")]
    Length,
    #[error("a path has no empty segments (no leading, trailing or double slash)")]
    EmptySegment,
    #[error("a path has no '.' or '..' segments")]
    DotSegment,
    #[error("a path has no NUL or control characters")]
    Control,
}

/// Check an already percent-decoded path. It is stored exactly as given: no Unicode
/// normalization, so two spellings that look alike are two files, as on the phone.
pub fn check_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(PathError::Length);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No header, or one we do not serve as a range (multiple ranges, other units, bad
    /// syntax): RFC 9110 lets a server answer those with the whole object.
    Whole,
    Part(ByteRange),
    /// 416.
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeAsk::Whole,
        // suffix: the last n bytes
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeAsk::Unsatisfiable,
            Ok(n) => Some((size.saturating_sub(n), size)),
            Err(_) => None,
        },
        (false, true) => a.parse::<u64>().ok().map(|s| (s, size)),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.saturating_add(1).min(size))),
            _ => None,
        },
    };
    match parsed {
        None => RangeAsk::Whole,
        Some((start, _)) if start >= size => RangeAsk::Unsatisfiable,
        Some((start, end)) => RangeAsk::Part(ByteRange { start, end }),
    }
}

/// An entity tag as we send it: the version, quoted.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The version inside an entity tag from `If-Match` or `If-None-Match` (strong or weak form),
/// or `None` if it is not one of ours (so it matches nothing).
/// For `If-Match`, which compares strongly (RFC 9110 13.1.1): a weak tag matches nothing.
pub fn parse_strong_etag(tag: &str) -> Option<u64> {
    let t = tag.trim();
    if t.starts_with("W/") {
        return None;
    }
    parse_etag(t)
}

pub fn parse_etag(tag: &str) -> Option<u64> {
    let t = tag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// Whether an `If-None-Match` or `If-Match` list (`*` or comma-separated tags) names `version`.
pub fn tag_list_matches(list: &str, version: u64) -> bool {
    list.split(',').any(|t| t.trim() == "*" || parse_etag(t) == Some(version))
}

/// Listing cursors are the hex of the last path returned: opaque to clients, exact for us.
pub fn encode_cursor(path: &[u8]) -> String {
    hex::encode(path)
}

pub fn decode_cursor(cursor: &str) -> Option<Vec<u8>> {
    hex::decode(cursor).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in ["a", "a/b.txt", "Фото/2024/ü.jpg", "a b/c", "...", ".hidden"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_path(""), Err(PathError::Length));
        assert_eq!(check_path(&"x".repeat(4097)), Err(PathError::Length));
        assert!(check_path(&"x".repeat(4096)).is_ok());
        for bad in ["/a", "a/", "a//b"] {
            assert_eq!(check_path(bad), Err(PathError::EmptySegment), "{bad}");
        }
        for bad in [".", "..", "a/./b", "a/.."] {
            assert_eq!(check_path(bad), Err(PathError::DotSegment), "{bad}");
        }
        for bad in ["a\0b", "a\nb", "a\u{7f}"] {
            assert_eq!(check_path(bad), Err(PathError::Control), "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        let r = |s, e| RangeAsk::Part(ByteRange { start: s, end: e });
        assert_eq!(parse_range(None, 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), r(0, 5));
        assert_eq!(parse_range(Some("bytes=5-"), 10), r(5, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), r(7, 10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), r(0, 10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), r(8, 10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), RangeAsk::Whole);
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag(&etag(42)), Some(42));
        assert_eq!(parse_etag("W/\"42\""), Some(42));
        assert_eq!(parse_strong_etag("W/\"42\""), None, "If-Match compares strongly");
        assert_eq!(parse_strong_etag(" \"42\""), Some(42));
        assert_eq!(parse_etag("42"), None);
        assert!(tag_list_matches("\"1\", \"42\"", 42));
        assert!(tag_list_matches("*", 7));
        assert!(!tag_list_matches("\"1\"", 42));
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(b"a/b")).unwrap(), b"a/b");
        assert!(decode_cursor("zz").is_none());
    }
}
