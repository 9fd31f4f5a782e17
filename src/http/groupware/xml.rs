//! Request bodies of CardDAV/CalDAV (PROPFIND, PROPPATCH, MKCOL, MKCALENDAR, REPORT): untrusted
//! XML read into a small owned tree, then into the requests the front serves. Fuzz target
//! `groupware_xml`.
//!
//! XML bombs: the body is bounded by the caller (`MAX_XML_BODY`); a DOCTYPE is refused before
//! parsing, so no entity is ever declared, let alone expanded; nesting is capped at
//! `MAX_DEPTH` and elements at `MAX_ELEMENTS`, and the tree is built without recursion.

use chrono::{NaiveDateTime, TimeZone, Utc};

use crate::groupware::event::Range;
use crate::groupware::filter::{CardFilter, CompFilter, MatchType, PropFilter, TextMatch};

pub const DAV: &str = "DAV:";
pub const CARD: &str = "urn:ietf:params:xml:ns:carddav";
pub const CAL: &str = "urn:ietf:params:xml:ns:caldav";
pub const CS: &str = "http://calendarserver.org/ns/";
pub const APPLE: &str = "http://apple.com/ns/ical/";

pub const MAX_XML_BODY: usize = 4 << 20;
const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 200_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("the body is not well-formed XML: {0}")]
    Syntax(String),
    #[error("a DOCTYPE is not accepted in a request body")]
    Doctype,
    #[error("the XML nests deeper than 32 or holds more than 200000 elements")]
    TooBig,
    #[error("{0}")]
    Invalid(&'static str),
}

/// A property or element name: namespace URI and local name.
pub type Name = (String, String);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
    pub text: String,
}

impl Node {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn key(&self) -> Name {
        (self.ns.clone(), self.name.clone())
    }
}

/// Parse a request body. An empty body is `None` (PROPFIND's allprop).
pub fn parse(body: &[u8]) -> Result<Option<Node>, XmlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if body.windows(2).any(|w| w == b"<!") && contains_ci(body, b"<!doctype") {
        return Err(XmlError::Doctype);
    }
    let mut config =
        xml::reader::ParserConfig::new().trim_whitespace(true).cdata_to_characters(true).ignore_comments(true);
    config.max_entity_expansion_length = 0;
    config.max_entity_expansion_depth = 0;
    let reader = config.create_reader(body);
    let mut stack: Vec<Node> = Vec::new();
    let mut count = 0;
    for event in reader {
        use xml::reader::XmlEvent as E;
        match event.map_err(|e| XmlError::Syntax(e.msg().to_string()))? {
            E::StartElement { name, attributes, .. } => {
                count += 1;
                if stack.len() == MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(XmlError::TooBig);
                }
                stack.push(Node {
                    ns: name.namespace.unwrap_or_default(),
                    name: name.local_name,
                    attrs: attributes.into_iter().map(|a| (a.name.local_name, a.value)).collect(),
                    ..Default::default()
                });
            }
            E::EndElement { .. } => {
                let done = stack.pop().ok_or_else(|| XmlError::Syntax("unbalanced".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(Some(done)),
                }
            }
            E::Characters(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t);
                }
            }
            E::Doctype { .. } => return Err(XmlError::Doctype),
            _ => {}
        }
    }
    Err(XmlError::Syntax("no root element".into()))
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Which properties a PROPFIND or REPORT asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropRequest {
    All,
    Names(Vec<Name>),
}

fn prop_request(parent: &Node) -> PropRequest {
    match parent.child(DAV, "prop") {
        Some(p) => PropRequest::Names(p.children.iter().map(Node::key).collect()),
        None => PropRequest::All,
    }
}

pub fn propfind(root: Option<&Node>) -> Result<PropRequest, XmlError> {
    match root {
        None => Ok(PropRequest::All),
        Some(r) if r.is(DAV, "propfind") => Ok(prop_request(r)),
        Some(_) => Err(XmlError::Invalid("a PROPFIND body is a DAV:propfind")),
    }
}

/// The properties a PROPPATCH, MKCOL or MKCALENDAR sets (`None` value: removed).
pub fn set_props(root: &Node) -> Vec<(Name, Option<Node>)> {
    let mut out = Vec::new();
    for action in &root.children {
        let remove = action.is(DAV, "remove");
        if !(remove || action.is(DAV, "set")) {
            continue;
        }
        for prop in action.children.iter().filter(|p| p.is(DAV, "prop")) {
            for p in &prop.children {
                out.push((p.key(), (!remove).then(|| p.clone())));
            }
        }
    }
    out
}

pub enum Report {
    Multiget {
        props: PropRequest,
        hrefs: Vec<String>,
    },
    CardQuery {
        props: PropRequest,
        filter: CardFilter,
        limit: Option<usize>,
    },
    CalQuery {
        props: PropRequest,
        filter: Option<CompFilter>,
    },
    SyncCollection {
        props: PropRequest,
        token: String,
        limit: Option<usize>,
    },
    /// `free-busy-query` with its time range.
    FreeBusy(Range),
    /// A REPORT this server does not do, by its element name.
    Unsupported(Name),
}

pub fn report(root: &Node) -> Result<Report, XmlError> {
    let props = prop_request(root);
    let hrefs = || root.children.iter().filter(|c| c.is(DAV, "href")).map(|c| c.text.trim().to_string()).collect();
    Ok(match (root.ns.as_str(), root.name.as_str()) {
        (CARD, "addressbook-multiget") | (CAL, "calendar-multiget") => Report::Multiget { props, hrefs: hrefs() },
        (CARD, "addressbook-query") => {
            let limit = nresults(root.child(CARD, "limit"))?;
            let filter = match root.child(CARD, "filter") {
                Some(f) => card_filter(f)?,
                None => CardFilter::default(),
            };
            Report::CardQuery { props, filter, limit }
        }
        (CAL, "calendar-query") => {
            let filter = match root.child(CAL, "filter").and_then(|f| f.child(CAL, "comp-filter")) {
                Some(f) => Some(comp_filter(f)?),
                None => None,
            };
            Report::CalQuery { props, filter }
        }
        (CAL, "free-busy-query") => {
            let range = root.child(CAL, "time-range").ok_or(XmlError::Invalid("free-busy-query holds a time-range"))?;
            Report::FreeBusy(time_range(range)?)
        }
        (DAV, "sync-collection") => {
            let token = root.child(DAV, "sync-token").map(|t| t.text.trim().to_string()).unwrap_or_default();
            if root.child(DAV, "sync-level").is_some_and(|l| !matches!(l.text.trim(), "1" | "infinite")) {
                return Err(XmlError::Invalid("sync-level is 1"));
            }
            Report::SyncCollection { props, token, limit: nresults(root.child(DAV, "limit"))? }
        }
        _ => Report::Unsupported(root.key()),
    })
}

fn nresults(limit: Option<&Node>) -> Result<Option<usize>, XmlError> {
    let Some(limit) = limit else { return Ok(None) };
    let n = limit.children.iter().find(|c| c.name == "nresults").ok_or(XmlError::Invalid("limit holds nresults"))?;
    n.text.trim().parse().map(Some).map_err(|_| XmlError::Invalid("nresults is a number"))
}

fn all_of(n: &Node) -> bool {
    n.attr("test") == Some("allof")
}

fn card_filter(f: &Node) -> Result<CardFilter, XmlError> {
    let props = f
        .children
        .iter()
        .filter(|c| c.is(CARD, "prop-filter"))
        .map(|p| prop_filter(p, CARD))
        .collect::<Result<_, _>>()?;
    Ok(CardFilter { props, all_of: all_of(f) })
}

fn prop_filter(p: &Node, ns: &str) -> Result<PropFilter, XmlError> {
    let name = p.attr("name").ok_or(XmlError::Invalid("a prop-filter has a name"))?.to_ascii_uppercase();
    let text_matches =
        p.children.iter().filter(|c| c.is(ns, "text-match")).map(text_match).collect::<Result<_, _>>()?;
    Ok(PropFilter {
        name,
        is_not_defined: p.child(ns, "is-not-defined").is_some(),
        time_range: p.child(ns, "time-range").map(time_range).transpose()?,
        text_matches,
        all_of: all_of(p),
    })
}

fn text_match(t: &Node) -> Result<TextMatch, XmlError> {
    let match_type = match t.attr("match-type").unwrap_or("contains") {
        "equals" => MatchType::Equals,
        "contains" => MatchType::Contains,
        "starts-with" => MatchType::StartsWith,
        "ends-with" => MatchType::EndsWith,
        _ => return Err(XmlError::Invalid("match-type is equals, contains, starts-with or ends-with")),
    };
    Ok(TextMatch {
        text: t.text.clone(),
        negate: t.attr("negate-condition") == Some("yes"),
        match_type,
        exact: t.attr("collation") == Some("i;octet"),
    })
}

fn comp_filter(f: &Node) -> Result<CompFilter, XmlError> {
    let name = f.attr("name").ok_or(XmlError::Invalid("a comp-filter has a name"))?.to_ascii_uppercase();
    Ok(CompFilter {
        name,
        is_not_defined: f.child(CAL, "is-not-defined").is_some(),
        time_range: f.child(CAL, "time-range").map(time_range).transpose()?,
        props: f
            .children
            .iter()
            .filter(|c| c.is(CAL, "prop-filter"))
            .map(|p| prop_filter(p, CAL))
            .collect::<Result<_, _>>()?,
        comps: f.children.iter().filter(|c| c.is(CAL, "comp-filter")).map(comp_filter).collect::<Result<_, _>>()?,
    })
}

/// `start` and `end`, DATE-TIMEs in UTC (RFC 4791 9.9); at least one.
fn time_range(t: &Node) -> Result<Range, XmlError> {
    let at = |name| -> Result<_, XmlError> {
        t.attr(name)
            .map(|v| {
                NaiveDateTime::parse_from_str(v.trim(), "%Y%m%dT%H%M%SZ")
                    .map(|n| Utc.from_utc_datetime(&n))
                    .map_err(|_| XmlError::Invalid("a time-range bound is a UTC DATE-TIME (20261202T000000Z)"))
            })
            .transpose()
    };
    let range = Range { start: at("start")?, end: at("end")? };
    if range.start.is_none() && range.end.is_none() {
        return Err(XmlError::Invalid("a time-range has a start or an end"));
    }
    Ok(range)
}

/// Escape text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => {} // not allowed in XML 1.0
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_reports() {
        let body = br#"<?xml version="1.0"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
    <C:time-range start="20261201T000000Z" end="20261208T000000Z"/>
  </C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>"#;
        let root = parse(body).unwrap().unwrap();
        let Report::CalQuery { props, filter } = report(&root).unwrap() else { panic!() };
        assert_eq!(
            props,
            PropRequest::Names(vec![(DAV.into(), "getetag".into()), (CAL.into(), "calendar-data".into())])
        );
        let f = filter.unwrap();
        assert_eq!(f.name, "VCALENDAR");
        assert!(f.comps[0].time_range.unwrap().start.is_some());
    }

    #[test]
    fn bombs_and_junk_are_refused() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><D:propfind xmlns:D="DAV:">&lol2;</D:propfind>"#;
        assert_eq!(parse(bomb), Err(XmlError::Doctype));
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooBig));
        assert!(matches!(parse(b"<a><b></a>"), Err(XmlError::Syntax(_))));
        assert!(matches!(parse(b"<a>&undefined;</a>"), Err(XmlError::Syntax(_))));
        assert_eq!(parse(b"  \n").unwrap(), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b>&\"\r\n\u{1}"), "a&lt;b&gt;&amp;&quot;&#13;\n");
    }
}
