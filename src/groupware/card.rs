//! Contacts: a vCard (3.0 or 4.0; 2.1 read too) as a contact record's payload
//! `{"vcard", "fn", "emails", "tels"}` (docs/API.md). The vCard is kept exactly as given;
//! the other fields are read from it on every write, for the web portal and the sync API.

use serde::Serialize;

use super::text::{self, Component};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CardError {
    #[error("not a vCard: {0}")]
    Syntax(#[from] text::TextError),
    #[error("the object is not a VCARD")]
    NotVcard,
    #[error("VERSION is missing or not 2.1, 3.0 or 4.0")]
    Version,
}

/// What a stored contact shows besides the vCard itself.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Contact<'a> {
    pub vcard: &'a str,
    #[serde(rename = "fn")]
    pub full_name: String,
    pub emails: Vec<String>,
    pub tels: Vec<String>,
    /// Not stored: the UID is read from the vCard when needed.
    #[serde(skip)]
    pub uid: Option<String>,
}

/// Check a vCard and read what the payload shows.
pub fn parse(vcard: &str) -> Result<Contact<'_>, CardError> {
    let c = text::parse(vcard)?;
    if c.name != "VCARD" {
        return Err(CardError::NotVcard);
    }
    if !matches!(c.value("VERSION").map(str::trim), Some("2.1" | "3.0" | "4.0")) {
        return Err(CardError::Version);
    }
    let full_name = c.value("FN").map(text::unescape).unwrap_or_else(|| name_from_n(&c));
    let values = |name| c.props_named(name).map(|p| text::unescape(&p.value)).filter(|v| !v.is_empty()).collect();
    let tels: Vec<String> = values("TEL");
    Ok(Contact {
        vcard,
        full_name,
        emails: values("EMAIL"),
        tels: tels.into_iter().map(|t| t.strip_prefix("tel:").map(str::to_string).unwrap_or(t)).collect(),
        uid: c.value("UID").map(|u| u.trim().to_string()).filter(|u| !u.is_empty()),
    })
}

/// `N:Family;Given;Additional;Prefix;Suffix` as "Given Family" when there is no FN (2.1).
fn name_from_n(c: &Component) -> String {
    let Some(n) = c.value("N") else { return String::new() };
    let parts: Vec<String> = n.split(';').map(text::unescape).collect();
    let get = |i: usize| parts.get(i).map(|s| s.trim()).unwrap_or("");
    [get(3), get(1), get(2), get(0), get(4)].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_the_card() {
        let v = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:u1\r\nFN:Jane Doe\r\nEMAIL;TYPE=work:jane@example.com\r\nEMAIL:j@d.org\r\nTEL;VALUE=uri:tel:+1-555-0100\r\nEND:VCARD\r\n";
        let c = parse(v).unwrap();
        assert_eq!(c.full_name, "Jane Doe");
        assert_eq!(c.emails, ["jane@example.com", "j@d.org"]);
        assert_eq!(c.tels, ["+1-555-0100"]);
        assert_eq!(c.uid.as_deref(), Some("u1"));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["vcard"], v);
        assert_eq!(json["fn"], "Jane Doe");
        assert!(json.get("uid").is_none());
    }

    #[test]
    fn old_cards_and_bad_ones() {
        let c = parse("BEGIN:VCARD\nVERSION:2.1\nN:Doe;John;;Dr.;\nEND:VCARD\n").unwrap();
        assert_eq!(c.full_name, "Dr. John Doe");
        assert_eq!(parse("BEGIN:VCARD\nFN:x\nEND:VCARD\n"), Err(CardError::Version));
        assert_eq!(parse("BEGIN:VEVENT\nEND:VEVENT\n"), Err(CardError::NotVcard));
        assert!(matches!(parse("garbage"), Err(CardError::Syntax(_))));
    }
}
