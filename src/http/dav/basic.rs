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

/// Whether dav-server may be given this `If` header (RFC 4918 10.4). Its parser (0.11) reads
/// past the end of a `<...>` or `[...]` token that is never closed and panics; such a header is
/// malformed anyway, so the front answers 400 before it gets there. Scans as that parser does:
/// from an opening bracket to its closing one, quotes toggling, whitespace ending the token (the
/// parser refuses that itself).
pub fn if_header_is_safe(h: &[u8]) -> bool {
    let mut i = 0;
    while i < h.len() {
        let close = match h[i] {
            b'<' => b'>',
            b'[' => b']',
            _ => {
                i += 1;
                continue;
            }
        };
        let mut j = i + 1;
        let mut quote = false;
        loop {
            let Some(&b) = h.get(j) else { return false };
            if !quote && b == close {
                break;
            }
            if b" \t\r\n".contains(&b) {
                return true;
            }
            if b == b'"' {
                quote = !quote;
            }
            j += 1;
        }
        i = j + 1;
    }
    true
}

#[cfg(test)]
mod if_tests {
    use super::*;

    #[test]
    fn unterminated_tokens_are_caught() {
        assert!(if_header_is_safe(b"(<opaquelocktoken:abc> [\"7\"])"));
        assert!(if_header_is_safe(b"<http://h/a> (Not <urn:x>)"));
        assert!(!if_header_is_safe(b"[1WWWWWW"));
        assert!(!if_header_is_safe(b"(<urn:x"));
        assert!(!if_header_is_safe(b"([\"a]\")"));
        assert!(if_header_is_safe(b"(<urn:x y>)"), "whitespace: the parser refuses it without panicking");
    }
}
