//! Email addresses and phone numbers as the API takes them, normalized so that one person's
//! identifier always hashes to the same lookup key.

use std::fmt;

use super::error::{IdentityError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Email,
    Phone,
}

/// A normalized identifier: an email in lower case, or a phone in E.164.
#[derive(Clone, PartialEq, Eq)]
pub struct Identifier {
    kind: Kind,
    value: String,
}

/// Never printed in logs by accident: the Debug form hides the address.
impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identifier({:?}, ..)", self.kind)
    }
}

impl Identifier {
    /// `field` names the request field in the error, so a client knows which one to fix.
    pub fn parse(field: &'static str, s: &str) -> Result<Self> {
        if s.starts_with('+') {
            Self::phone(field, s)
        } else if s.contains('@') {
            Self::email(field, s)
        } else {
            Err(IdentityError::field(
                field,
                "expected an email address or a phone number in E.164 form (+ and 8 to 15 digits)",
            ))
        }
    }

    pub fn email(field: &'static str, s: &str) -> Result<Self> {
        let bad = |why: &str| IdentityError::field(field, format!("not an email address: {why}"));
        if s.len() > 254 {
            return Err(bad("longer than 254 characters"));
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| bad("no @"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(bad("the part before @ must be 1 to 64 characters"));
        }
        if !local.bytes().all(local_char) || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad("the part before @ has a character or dot that addresses cannot have"));
        }
        check_domain(domain).map_err(bad)?;
        Ok(Identifier { kind: Kind::Email, value: s.to_ascii_lowercase() })
    }

    /// E.164: `+`, a country code that does not start with 0, 8 to 15 digits in all.
    pub fn phone(field: &'static str, s: &str) -> Result<Self> {
        let digits = s.strip_prefix('+').unwrap_or("");
        let ok =
            (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
        if !ok {
            return Err(IdentityError::field(
                field,
                "not a phone number in E.164 form (+ and 8 to 15 digits, no spaces)",
            ));
        }
        Ok(Identifier { kind: Kind::Phone, value: s.to_string() })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The bytes that are hashed and sealed: the kind is part of them, so that no email can
    /// ever collide with a phone.
    pub fn canonical(&self) -> String {
        let tag = match self.kind {
            Kind::Email => "email",
            Kind::Phone => "phone",
        };
        format!("{tag}:{}", self.value)
    }

    /// The inverse of `canonical`, for values this server sealed itself.
    pub fn from_canonical(s: &str) -> Option<Self> {
        let (tag, value) = s.split_once(':')?;
        let kind = match tag {
            "email" => Kind::Email,
            "phone" => Kind::Phone,
            _ => return None,
        };
        Some(Identifier { kind, value: value.to_string() })
    }
}

/// The unquoted local-part characters of RFC 5322 (dot-atom). Quoted local parts and
/// non-ASCII addresses are refused: no phone keyboard produces them for a sign-in.
fn local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    let labels: Vec<&str> = domain.split('.').collect();
    if domain.len() > 253 || labels.len() < 2 {
        return Err("the domain must have at least two labels");
    }
    for label in &labels {
        let valid = (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err("a domain label is empty, too long, or has a character other than letters, digits and -");
        }
    }
    let tld = labels.last().expect("at least two labels");
    if tld.len() < 2 || !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err("the top-level domain must be letters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        Identifier::parse("identifier", s).unwrap().as_str().to_string()
    }

    fn bad(s: &str) -> bool {
        Identifier::parse("identifier", s).is_err()
    }

    #[test]
    fn emails_are_lower_cased() {
        assert_eq!(ok("Ada.Lovelace+cloud@Example.COM"), "ada.lovelace+cloud@example.com");
        assert_eq!(Identifier::parse("i", "a@b.io").unwrap().kind(), Kind::Email);
    }

    #[test]
    fn phones_are_e164() {
        assert_eq!(ok("+4915112345678"), "+4915112345678");
        assert_eq!(ok("+12345678"), "+12345678");
        assert_eq!(ok("+123456789012345"), "+123456789012345");
        for s in
            ["+1234567", "+1234567890123456", "+0123456789", "+49 151 1234567", "+49-1511234567", "4915112345678", "+"]
        {
            assert!(bad(s), "{s}");
        }
    }

    #[test]
    fn malformed_emails_are_refused() {
        for s in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@b.c",
            "a@-b.com",
            "a@b-.com",
            "a..b@c.com",
            ".a@c.com",
            "a b@c.com",
            "a@b..com",
            "ü@x.com",
            "a@exa mple.com",
            "a@b.c0m",
        ] {
            assert!(bad(s), "{s:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(bad(&long_local));
    }

    #[test]
    fn canonical_round_trips_and_keeps_kinds_apart() {
        let e = Identifier::parse("i", "x@y.zz").unwrap();
        let p = Identifier::parse("i", "+4915112345678").unwrap();
        assert_eq!(Identifier::from_canonical(&e.canonical()), Some(e.clone()));
        assert_eq!(Identifier::from_canonical(&p.canonical()), Some(p.clone()));
        assert_ne!(e.canonical(), p.canonical());
        assert!(Identifier::from_canonical("fax:1").is_none());
        assert!(!format!("{e:?}").contains("x@y"));
    }
}
