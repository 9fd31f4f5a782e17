//! The filters of `addressbook-query` (RFC 6352 10.5) and `calendar-query` (RFC 4791 9.7), as
//! the HTTP front reads them from XML, and their test against a parsed object.
//!
//! Text matches use the `i;unicode-casemap` collation for every request (case-insensitive;
//! `i;octet` is honoured as exact), which is what clients ask for in practice.

use super::event::{self, Range};
use super::text::{self, Component};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchType {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextMatch {
    pub text: String,
    pub negate: bool,
    pub match_type: MatchType,
    /// `i;octet`: compare bytes exactly.
    pub exact: bool,
}

impl TextMatch {
    pub fn test(&self, value: &str) -> bool {
        let (v, t) = if self.exact {
            (value.to_string(), self.text.clone())
        } else {
            (value.to_lowercase(), self.text.to_lowercase())
        };
        let hit = match self.match_type {
            MatchType::Equals => v == t,
            MatchType::Contains => v.contains(&t),
            MatchType::StartsWith => v.starts_with(&t),
            MatchType::EndsWith => v.ends_with(&t),
        };
        hit != self.negate
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropFilter {
    pub name: String,
    pub is_not_defined: bool,
    pub time_range: Option<Range>,
    pub text_matches: Vec<TextMatch>,
    /// CardDAV's `test="allof"` among the text matches (default `anyof`).
    pub all_of: bool,
}

impl PropFilter {
    fn test(&self, c: &Component) -> bool {
        let props: Vec<_> = c.props_named(&self.name).collect();
        if self.is_not_defined {
            return props.is_empty();
        }
        props.iter().any(|p| {
            let value = text::unescape(&p.value);
            let mut tests = self.text_matches.iter().map(|m| m.test(&value));
            let text_ok = if self.text_matches.is_empty() {
                true
            } else if self.all_of {
                tests.all(|b| b)
            } else {
                tests.any(|b| b)
            };
            let time_ok = self.time_range.as_ref().is_none_or(|r| {
                event::When::parse(p).is_some_and(|w| {
                    let t = w.utc();
                    r.start.is_none_or(|s| t >= s) && r.end.is_none_or(|e| t < e)
                })
            });
            text_ok && time_ok
        })
    }
}

/// `addressbook-query`'s filter: prop-filters joined by `anyof` (default) or `allof`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CardFilter {
    pub props: Vec<PropFilter>,
    pub all_of: bool,
}

impl CardFilter {
    pub fn test(&self, card: &Component) -> bool {
        if self.props.is_empty() {
            return true;
        }
        let mut results = self.props.iter().map(|p| p.test(card));
        if self.all_of {
            results.all(|b| b)
        } else {
            results.any(|b| b)
        }
    }
}

/// One `comp-filter` of `calendar-query`; the root one names VCALENDAR.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompFilter {
    pub name: String,
    pub is_not_defined: bool,
    pub time_range: Option<Range>,
    pub props: Vec<PropFilter>,
    pub comps: Vec<CompFilter>,
}

impl CompFilter {
    /// Whether the calendar object `cal` passes this (root) filter.
    pub fn test_object(&self, cal: &Component) -> bool {
        let overridden = event::overridden_instances(cal);
        self.test(cal, &overridden)
    }

    fn test(&self, c: &Component, overridden: &[chrono::DateTime<chrono::Utc>]) -> bool {
        if !self.name.eq_ignore_ascii_case(&c.name) {
            return false;
        }
        if let Some(range) = &self.time_range {
            if !event::component_overlaps(c, range, overridden) {
                return false;
            }
        }
        self.props.iter().all(|p| p.test(c))
            && self.comps.iter().all(|f| {
                let children: Vec<&Component> =
                    c.children.iter().filter(|k| f.name.eq_ignore_ascii_case(&k.name)).collect();
                if f.is_not_defined {
                    children.is_empty()
                } else {
                    children.iter().any(|k| f.test(k, overridden))
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(text: &str) -> TextMatch {
        TextMatch { text: text.into(), negate: false, match_type: MatchType::Contains, exact: false }
    }

    #[test]
    fn card_filters() {
        let card = text::parse("BEGIN:VCARD\nVERSION:3.0\nFN:Jane Doe\nEMAIL:jane@example.com\nEND:VCARD\n").unwrap();
        let by = |name: &str, t: &str| PropFilter {
            name: name.into(),
            text_matches: vec![contains(t)],
            ..Default::default()
        };
        assert!(CardFilter { props: vec![by("FN", "jane")], all_of: false }.test(&card));
        assert!(!CardFilter { props: vec![by("FN", "bob")], all_of: false }.test(&card));
        assert!(CardFilter { props: vec![by("FN", "bob"), by("EMAIL", "example")], all_of: false }.test(&card));
        assert!(!CardFilter { props: vec![by("FN", "bob"), by("EMAIL", "example")], all_of: true }.test(&card));
        let missing = PropFilter { name: "TEL".into(), is_not_defined: true, ..Default::default() };
        assert!(CardFilter { props: vec![missing], all_of: false }.test(&card));
    }

    #[test]
    fn calendar_filters() {
        let cal =
            text::parse("BEGIN:VCALENDAR\nBEGIN:VTODO\nUID:t1\nSUMMARY:Buy milk\nEND:VTODO\nEND:VCALENDAR\n").unwrap();
        let todo = CompFilter { name: "VTODO".into(), ..Default::default() };
        let root = |comps| CompFilter { name: "VCALENDAR".into(), comps, ..Default::default() };
        assert!(root(vec![todo.clone()]).test_object(&cal));
        assert!(!root(vec![CompFilter { name: "VEVENT".into(), ..Default::default() }]).test_object(&cal));
        let uid = PropFilter {
            name: "UID".into(),
            text_matches: vec![TextMatch {
                text: "t1".into(),
                negate: false,
                match_type: MatchType::Equals,
                exact: true,
            }],
            ..Default::default()
        };
        assert!(root(vec![CompFilter { props: vec![uid], ..todo }]).test_object(&cal));
    }
}
