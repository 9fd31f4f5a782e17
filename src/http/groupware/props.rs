//! The properties of principal, homes, collections and objects, and the multistatus bodies
//! (RFC 4918 13) they are answered in. Written as text with fixed prefixes; a property of a
//! namespace we do not know is answered 404 with its own namespace declared in place.

use super::paths;
use super::xml::{escape, Name, PropRequest, APPLE, CAL, CARD, CS, DAV};
use crate::groupware::{Collection, Kind, Object, MAX_OBJECT};

const PREFIXES: [(&str, &str); 5] = [("d", DAV), ("card", CARD), ("cal", CAL), ("cs", CS), ("ical", APPLE)];

/// What a response describes.
pub enum Resource<'a> {
    Principal,
    Home,
    Collection(&'a Collection),
    /// An object of a collection.
    Object(&'a Collection, &'a Object),
}

/// The properties an allprop (or an empty PROPFIND) answers: the cheap ones, no object text.
const ALLPROP: [(&str, &str); 7] = [
    (DAV, "resourcetype"),
    (DAV, "displayname"),
    (DAV, "getetag"),
    (DAV, "getcontenttype"),
    (DAV, "getcontentlength"),
    (CS, "getctag"),
    (DAV, "sync-token"),
];

pub fn sync_token(seq: u64) -> String {
    format!("urn:cairn:sync:{seq}")
}

fn prefix(ns: &str) -> Option<&'static str> {
    PREFIXES.iter().find(|(_, u)| *u == ns).map(|(p, _)| *p)
}

fn element(ns: &str, name: &str, inner: &str) -> String {
    let p = prefix(ns).expect("our own properties are in known namespaces");
    if inner.is_empty() {
        format!("<{p}:{name}/>")
    } else {
        format!("<{p}:{name}>{inner}</{p}:{name}>")
    }
}

fn href(path: &str) -> String {
    format!("<d:href>{}</d:href>", escape(path))
}

fn privileges() -> String {
    ["read", "write", "write-properties", "write-content", "bind", "unbind", "read-current-user-privilege-set"]
        .iter()
        .map(|p| format!("<d:privilege><d:{p}/></d:privilege>"))
        .collect()
}

fn reports(kind: Kind) -> String {
    let mut names = vec![("d", "sync-collection")];
    match kind {
        Kind::Contacts => names.extend([("card", "addressbook-multiget"), ("card", "addressbook-query")]),
        Kind::Calendar => {
            names.extend([("cal", "calendar-multiget"), ("cal", "calendar-query"), ("cal", "free-busy-query")])
        }
    }
    names
        .iter()
        .map(|(p, n)| format!("<d:supported-report><d:report><{p}:{n}/></d:report></d:supported-report>"))
        .collect()
}

fn default_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Contacts => "Contacts",
        Kind::Calendar => "Calendar",
    }
}

/// The inner XML of one property of `r`, or `None` where `r` has no such property.
fn value(r: &Resource<'_>, (ns, name): (&str, &str)) -> Option<String> {
    let common = match (ns, name) {
        (DAV, "current-user-principal") | (DAV, "principal-URL") | (DAV, "owner") => Some(href(paths::PRINCIPAL)),
        (DAV, "current-user-privilege-set") => Some(privileges()),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    match r {
        Resource::Principal => match (ns, name) {
            (DAV, "resourcetype") => Some("<d:principal/><d:collection/>".into()),
            (DAV, "displayname") => Some("cairn".into()),
            (CARD, "addressbook-home-set") => Some(href(paths::home(Kind::Contacts))),
            (CAL, "calendar-home-set") => Some(href(paths::home(Kind::Calendar))),
            (DAV, "principal-collection-set") => Some(href(paths::PRINCIPAL)),
            _ => None,
        },
        Resource::Home => match (ns, name) {
            (DAV, "resourcetype") => Some("<d:collection/>".into()),
            _ => None,
        },
        Resource::Collection(c) => collection_value(c, (ns, name)),
        Resource::Object(c, o) => match (ns, name) {
            (DAV, "resourcetype") => Some(String::new()),
            (DAV, "getetag") => Some(escape(&crate::drive::etag(o.version))),
            (DAV, "getcontentlength") => Some(o.text.len().to_string()),
            (DAV, "getcontenttype") => Some(content_type(c.kind).into()),
            (CARD, "address-data") if c.kind == Kind::Contacts => Some(escape(&o.text)),
            (CAL, "calendar-data") if c.kind == Kind::Calendar => Some(escape(&o.text)),
            _ => None,
        },
    }
}

fn collection_value(c: &Collection, (ns, name): (&str, &str)) -> Option<String> {
    let e = &c.entry;
    let is_cal = c.kind == Kind::Calendar;
    match (ns, name) {
        (DAV, "resourcetype") => Some(if is_cal { "<d:collection/><cal:calendar/>" } else { "<d:collection/><card:addressbook/>" }.into()),
        (DAV, "displayname") => {
            let fallback = if c.segment == "default" { default_name(c.kind) } else { c.segment.as_str() };
            Some(escape(e.displayname.as_deref().unwrap_or(fallback)))
        }
        (CS, "getctag") => Some(c.seq.to_string()),
        (DAV, "sync-token") => Some(sync_token(c.seq)),
        (DAV, "supported-report-set") => Some(reports(c.kind)),
        (CARD, "addressbook-description") if !is_cal => e.description.as_deref().map(escape),
        (CAL, "calendar-description") if is_cal => e.description.as_deref().map(escape),
        (APPLE, "calendar-color") => e.color.as_deref().map(escape),
        (APPLE, "calendar-order") => e.order.as_deref().map(escape),
        (CARD, "supported-address-data") if !is_cal => Some(
            "<card:address-data-type content-type=\"text/vcard\" version=\"3.0\"/><card:address-data-type content-type=\"text/vcard\" version=\"4.0\"/>".into(),
        ),
        (CARD, "max-resource-size") if !is_cal => Some(MAX_OBJECT.to_string()),
        (CAL, "max-resource-size") if is_cal => Some(MAX_OBJECT.to_string()),
        (CAL, "supported-calendar-component-set") if is_cal => {
            let all = crate::groupware::collections::ALL_COMPONENTS.map(String::from).to_vec();
            Some(e.components.as_ref().unwrap_or(&all).iter().map(|n| format!("<cal:comp name=\"{}\"/>", escape(n))).collect())
        }
        (CAL, "supported-calendar-data") if is_cal => {
            Some("<cal:calendar-data content-type=\"text/calendar\" version=\"2.0\"/>".into())
        }
        _ => None,
    }
}

pub fn content_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Contacts => "text/vcard; charset=utf-8",
        Kind::Calendar => "text/calendar; charset=utf-8",
    }
}

/// A multistatus body under construction.
pub struct Multistatus {
    body: String,
}

impl Default for Multistatus {
    fn default() -> Self {
        let ns: String = PREFIXES.iter().map(|(p, u)| format!(" xmlns:{p}=\"{u}\"")).collect();
        Multistatus { body: format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:multistatus{ns}>") }
    }
}

impl Multistatus {
    /// One `response` with the asked properties of `r` at `path`: found ones in a 200 propstat,
    /// the others in a 404 one.
    pub fn resource(&mut self, path: &str, r: &Resource<'_>, asked: &PropRequest) {
        let mut found = String::new();
        let mut missing = String::new();
        let names: Vec<(String, String)> = match asked {
            PropRequest::All => ALLPROP.iter().map(|(n, l)| (n.to_string(), l.to_string())).collect(),
            PropRequest::Names(n) => n.clone(),
        };
        for (i, (ns, name)) in names.iter().enumerate() {
            match value(r, (ns, name)) {
                Some(v) => found.push_str(&element(ns, name, &v)),
                None if matches!(asked, PropRequest::All) => {}
                None => missing.push_str(&unknown(i, ns, name)),
            }
        }
        self.body.push_str("<d:response>");
        self.body.push_str(&href(path));
        if !found.is_empty() || missing.is_empty() {
            self.propstat(&found, "200 OK");
        }
        if !missing.is_empty() {
            self.propstat(&missing, "404 Not Found");
        }
        self.body.push_str("</d:response>");
    }

    fn propstat(&mut self, props: &str, status: &str) {
        self.body.push_str(&format!(
            "<d:propstat><d:prop>{props}</d:prop><d:status>HTTP/1.1 {status}</d:status></d:propstat>"
        ));
    }

    /// A `response` with only a status (a removed object, a multiget href not found).
    pub fn status(&mut self, path: &str, status: &str) {
        self.body.push_str(&format!("<d:response>{}<d:status>HTTP/1.1 {status}</d:status></d:response>", href(path)));
    }

    /// PROPPATCH's answer: each property with its own status.
    pub fn patched(&mut self, path: &str, results: &[(Name, &str)]) {
        self.body.push_str("<d:response>");
        self.body.push_str(&href(path));
        for (i, ((ns, name), status)) in results.iter().enumerate() {
            self.propstat(&unknown(i, ns, name), status);
        }
        self.body.push_str("</d:response>");
    }

    /// RFC 6578 3.6 / RFC 5323: the answer stopped at a limit; the rest is fetched by the
    /// token that follows.
    pub fn truncated(&mut self, path: &str) {
        self.body.push_str(&format!(
            "<d:response>{}<d:status>HTTP/1.1 507 Insufficient Storage</d:status><d:error><d:number-of-matches-within-limits/></d:error></d:response>",
            href(path)
        ));
    }

    pub fn finish(mut self, token: Option<u64>) -> String {
        if let Some(seq) = token {
            self.body.push_str(&format!("<d:sync-token>{}</d:sync-token>", sync_token(seq)));
        }
        self.body.push_str("</d:multistatus>\n");
        self.body
    }
}

/// An empty element for any property name, its namespace declared in place when not ours.
fn unknown(i: usize, ns: &str, name: &str) -> String {
    let name = if name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)) && !name.is_empty() {
        name
    } else {
        "invalid"
    };
    match prefix(ns) {
        Some(p) => format!("<{p}:{name}/>"),
        None if ns.is_empty() => format!("<{name} xmlns=\"\"/>"),
        None => format!("<x{i}:{name} xmlns:x{i}=\"{}\"/>", escape(ns)),
    }
}
