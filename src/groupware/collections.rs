//! Address books and calendars as sync collections (docs/decisions.md, "Extra address books
//! and calendars").
//!
//! Each account has a default address book, the sync collection `contacts`, and a default
//! calendar, `calendar`; their URL segment is `default`. One made by MKCOL or MKCALENDAR is the
//! sync collection `contacts_X` or `calendar_X`, X being the URL segment when it is 1 to 23 of
//! `a-z 0-9 _`, else the first 23 hex digits of its BLAKE3 hash: a pure function of the URL,
//! so no lookup is needed to find the records. That it exists, and its properties (display
//! name, colour, description), are one record of the sync collection `groupware`, whose id is
//! the collection's name; the defaults have one only once a client sets a property.

use serde::{Deserialize, Serialize};

use crate::sync::check_id;

pub const REGISTRY: &str = "groupware";
pub const DEFAULT_SEGMENT: &str = "default";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Contacts,
    Calendar,
}

impl Kind {
    /// The default collection, and the prefix of the others.
    pub fn default_collection(self) -> &'static str {
        match self {
            Kind::Contacts => "contacts",
            Kind::Calendar => "calendar",
        }
    }

    /// The payload field that holds the object's text.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Contacts => "vcard",
            Kind::Calendar => "ical",
        }
    }

    fn registry_kind(self) -> &'static str {
        match self {
            Kind::Contacts => "addressbook",
            Kind::Calendar => "calendar",
        }
    }
}

/// The sync collection behind a URL segment, or `None` for a segment that cannot name one.
pub fn sync_name(kind: Kind, segment: &str) -> Option<String> {
    if segment == DEFAULT_SEGMENT {
        return Some(kind.default_collection().to_string());
    }
    check_id(segment).ok()?;
    let plain =
        segment.len() <= 23 && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let suffix = if plain { segment.to_string() } else { blake3::hash(segment.as_bytes()).to_hex()[..23].to_string() };
    Some(format!("{}_{suffix}", kind.default_collection()))
}

/// What the registry keeps of a collection: the properties clients set.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    /// The URL segment.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub displayname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Apple's `calendar-order`: where a client lists it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// The component types a calendar takes (MKCALENDAR's `supported-calendar-component-set`);
    /// `None`: VEVENT, VTODO and VJOURNAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
}

/// What a calendar takes when its maker did not say.
pub const ALL_COMPONENTS: [&str; 3] = ["VEVENT", "VTODO", "VJOURNAL"];

impl Entry {
    /// Whether a calendar object of `kind` (VEVENT, ...) belongs here.
    pub fn takes(&self, kind: &str) -> bool {
        match &self.components {
            Some(set) => set.iter().any(|c| c == kind),
            None => ALL_COMPONENTS.contains(&kind),
        }
    }
}

impl Entry {
    pub fn new(kind: Kind, segment: &str) -> Entry {
        Entry { kind: kind.registry_kind().to_string(), name: segment.to_string(), ..Default::default() }
    }

    pub fn is(&self, kind: Kind) -> bool {
        self.kind == kind.registry_kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(sync_name(Kind::Contacts, "default").unwrap(), "contacts");
        assert_eq!(sync_name(Kind::Calendar, "work").unwrap(), "calendar_work");
        let odd = sync_name(Kind::Calendar, "3F2504E0-4F89-11D3").unwrap();
        assert_eq!(odd.len(), 32);
        assert!(crate::sync::check_collection(&odd).is_ok());
        assert!(crate::sync::check_collection(&sync_name(Kind::Contacts, &"a".repeat(23)).unwrap()).is_ok());
        assert_ne!(sync_name(Kind::Calendar, &"a".repeat(24)).unwrap(), format!("calendar_{}", "a".repeat(24)));
        assert_eq!(sync_name(Kind::Calendar, "a b"), None);
    }
}
