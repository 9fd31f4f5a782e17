//! The URL space of CardDAV and CalDAV: one principal per signed-in account, its homes, their
//! collections and objects. URLs name no account: every one resolves within the account of
//! the credentials, so another account's objects cannot even be named.
//!
//! `/dav/principal/`, `/dav/contacts/` (the address-book home), `/dav/contacts/{book}/`,
//! `/dav/contacts/{book}/{object}`; `/dav/calendars/...` the same for calendars.

use crate::groupware::Kind;

pub const PRINCIPAL: &str = "/dav/principal/";

pub fn home(kind: Kind) -> &'static str {
    match kind {
        Kind::Contacts => "/dav/contacts/",
        Kind::Calendar => "/dav/calendars/",
    }
}

pub fn collection(kind: Kind, segment: &str) -> String {
    format!("{}{segment}/", home(kind))
}

pub fn object(kind: Kind, segment: &str, name: &str) -> String {
    format!("{}{segment}/{name}", home(kind))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Principal,
    Home(Kind),
    Collection(Kind, String),
    Object(Kind, String, String),
}

/// The target of a request path, percent-decoded. `None`: nothing of ours.
pub fn target(path: &str) -> Option<Target> {
    let path = percent_decode(path)?;
    if path.trim_end_matches('/') == PRINCIPAL.trim_end_matches('/') {
        return Some(Target::Principal);
    }
    let (kind, rest) = [Kind::Contacts, Kind::Calendar]
        .into_iter()
        .find_map(|k| path.strip_prefix(home(k).trim_end_matches('/')).map(|rest| (k, rest)))?;
    let rest = match rest.strip_prefix('/') {
        Some(r) => r,
        None if rest.is_empty() => "",
        None => return None,
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [] | [""] => Some(Target::Home(kind)),
        [seg] | [seg, ""] => Some(Target::Collection(kind, seg.to_string())),
        [seg, name] => Some(Target::Object(kind, seg.to_string(), name.to_string())),
        _ => None,
    }
}

/// An href from a request body: a path, or an absolute URL whose path is taken.
pub fn href_target(href: &str) -> Option<Target> {
    let path = match href.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => href,
    };
    target(path)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target("/dav/principal"), Some(Target::Principal));
        assert_eq!(target("/dav/contacts/"), Some(Target::Home(Kind::Contacts)));
        assert_eq!(target("/dav/calendars"), Some(Target::Home(Kind::Calendar)));
        assert_eq!(target("/dav/calendars/default/"), Some(Target::Collection(Kind::Calendar, "default".into())));
        assert_eq!(
            target("/dav/contacts/work/a%40b.vcf"),
            Some(Target::Object(Kind::Contacts, "work".into(), "a@b.vcf".into()))
        );
        assert_eq!(href_target("https://h:1/dav/contacts/default/x.vcf"), target("/dav/contacts/default/x.vcf"));
        assert_eq!(target("/dav/contactsx/"), None);
        assert_eq!(target("/dav/contacts/a/b/c"), None);
        assert_eq!(target("/dav/contacts/%zz"), None);
    }
}
