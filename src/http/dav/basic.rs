//! `Authorization: Basic` (RFC 7617): untrusted text, parsed by our own code (fuzz target
//! `request_text`).

use base64::Engine as _;

/// The identifier and password of a Basic header, if it is one: scheme case-insensitive,
/// base64 of `identifier:password` in UTF-8 (the password may hold colons; the identifier
/// cannot).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, password) = text.split_once(':')?;
    (!id.is_empty() && !password.is_empty()).then(|| (id.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(parse_basic(&format!("Basic {}", enc("a@b.c:pw:x"))), Some(("a@b.c".into(), "pw:x".into())));
        assert_eq!(parse_basic(&format!("basic  {}", enc("a:b"))), Some(("a".into(), "b".into())));
        assert_eq!(parse_basic(&format!("Bearer {}", enc("a:b"))), None);
        assert_eq!(parse_basic(&format!("Basic {}", enc("nocolon"))), None);
        assert_eq!(parse_basic(&format!("Basic {}", enc(":pw"))), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }
}
