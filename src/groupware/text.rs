//! The content-line grammar that vCard (RFC 6350, 2426) and iCalendar (RFC 5545) share:
//! folded lines of `NAME;PARAM=VALUE,...:VALUE`, nested in `BEGIN:X` ... `END:X` blocks.
//!
//! Untrusted text (fuzz target `groupware_text`): the input is at most one record (256 KiB),
//! nesting is capped at `MAX_DEPTH`, and nothing here allocates more than a few times the
//! input. Values are kept as written (escapes included); `unescape` reads a TEXT value.

pub const MAX_DEPTH: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prop {
    /// Upper-cased, without any `group.` prefix (vCard).
    pub name: String,
    /// Names upper-cased; values unquoted, as written otherwise.
    pub params: Vec<(String, String)>,
    pub value: String,
}

impl Prop {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Component {
    /// Upper-cased: `VCARD`, `VCALENDAR`, `VEVENT`, ...
    pub name: String,
    pub props: Vec<Prop>,
    pub children: Vec<Component>,
}

impl Component {
    pub fn prop(&self, name: &str) -> Option<&Prop> {
        self.props.iter().find(|p| p.name == name)
    }

    pub fn props_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Prop> + 'a {
        self.props.iter().filter(move |p| p.name == name)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.prop(name).map(|p| p.value.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TextError {
    #[error("line {0}: not a content line (NAME:VALUE)")]
    BadLine(usize),
    #[error("line {0}: END without a matching BEGIN")]
    UnmatchedEnd(usize),
    #[error("components nest deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("a component is not closed with END")]
    Unclosed,
    #[error("exactly one top-level component is expected, and nothing outside it")]
    NotOneComponent,
    #[error("empty")]
    Empty,
}

/// Unfold (a line break followed by a space or tab continues the line) and split into lines;
/// CRLF and bare LF both end a line. Blank lines are dropped.
fn unfold(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        match line.as_bytes().first() {
            Some(b' ' | b'\t') if !out.is_empty() => out.last_mut().expect("not empty").1.push_str(&line[1..]),
            _ if line.trim().is_empty() => {}
            _ => out.push((i + 1, line.to_string())),
        }
    }
    out
}

/// One content line: `[group.]name *(;param) : value`. Parameter values may be quoted (and
/// then hold `:` `;` `,`).
pub fn parse_line(line: &str) -> Option<Prop> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-' || bytes[i] == b'.') {
        i += 1;
    }
    let full_name = &line[..i];
    let name = full_name.rsplit('.').next().unwrap_or(full_name);
    if name.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    while bytes.get(i) == Some(&b';') {
        i += 1;
        let start = i;
        while i < bytes.len() && !b"=;:".contains(&bytes[i]) {
            i += 1;
        }
        let pname = line[start..i].trim().to_ascii_uppercase();
        let mut pvalue = String::new();
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            loop {
                if bytes.get(i) == Some(&b'"') {
                    let close = line[i + 1..].find('"')? + i + 1;
                    pvalue.push_str(&line[i + 1..close]);
                    i = close + 1;
                } else {
                    let start = i;
                    while i < bytes.len() && !b",;:".contains(&bytes[i]) {
                        i += 1;
                    }
                    pvalue.push_str(&line[start..i]);
                }
                if bytes.get(i) == Some(&b',') {
                    pvalue.push(',');
                    i += 1;
                } else {
                    break;
                }
            }
        }
        params.push((pname, pvalue));
    }
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    Some(Prop { name: name.to_ascii_uppercase(), params, value: line[i + 1..].to_string() })
}

/// The single top-level component of `text` with everything nested in it.
pub fn parse(text: &str) -> Result<Component, TextError> {
    let mut stack: Vec<Component> = Vec::new();
    let mut done: Option<Component> = None;
    for (n, line) in unfold(text) {
        let prop = parse_line(&line).ok_or(TextError::BadLine(n))?;
        if done.is_some() {
            return Err(TextError::NotOneComponent);
        }
        match prop.name.as_str() {
            "BEGIN" => {
                if stack.len() == MAX_DEPTH {
                    return Err(TextError::TooDeep);
                }
                let name = prop.value.trim().to_ascii_uppercase();
                if name.is_empty() {
                    return Err(TextError::BadLine(n));
                }
                stack.push(Component { name, ..Default::default() });
            }
            "END" => {
                let c = stack.pop().ok_or(TextError::UnmatchedEnd(n))?;
                if !c.name.eq_ignore_ascii_case(prop.value.trim()) {
                    return Err(TextError::UnmatchedEnd(n));
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(c),
                    None => done = Some(c),
                }
            }
            _ => stack.last_mut().ok_or(TextError::NotOneComponent)?.props.push(prop),
        }
    }
    if !stack.is_empty() {
        return Err(TextError::Unclosed);
    }
    done.ok_or(TextError::Empty)
}

/// A TEXT value as meant: `\n` `\N` a line break, `\\` `\;` `\,` the character.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_lines_params_and_nesting() {
        let text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a\r\nSUMMARY:Long\r\n  title\r\nDTSTART;TZID=\"Europe/Berlin\";X=a,\"b:c\":20261202T100000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let c = parse(text).unwrap();
        assert_eq!(c.name, "VCALENDAR");
        let ev = &c.children[0];
        assert_eq!(ev.value("SUMMARY"), Some("Long title"));
        let dt = ev.prop("DTSTART").unwrap();
        assert_eq!(dt.param("TZID"), Some("Europe/Berlin"));
        assert_eq!(dt.param("X"), Some("a,b:c"));
        assert_eq!(dt.value, "20261202T100000");
    }

    #[test]
    fn groups_and_escapes() {
        let c = parse("BEGIN:VCARD\nitem1.EMAIL;TYPE=work:a@b.c\nFN:Doe\\, Jane\nEND:VCARD\n").unwrap();
        assert_eq!(c.value("EMAIL"), Some("a@b.c"));
        assert_eq!(unescape(c.value("FN").unwrap()), "Doe, Jane");
    }

    #[test]
    fn malformed_inputs_are_refused() {
        assert_eq!(parse(""), Err(TextError::Empty));
        assert_eq!(parse("BEGIN:VCARD\nFN:x\n"), Err(TextError::Unclosed));
        assert_eq!(parse("BEGIN:VCARD\nEND:VEVENT\n"), Err(TextError::UnmatchedEnd(2)));
        assert_eq!(parse("BEGIN:VCARD\nnot a line\nEND:VCARD\n"), Err(TextError::BadLine(2)));
        assert_eq!(parse("BEGIN:A\nEND:A\nBEGIN:A\nEND:A\n"), Err(TextError::NotOneComponent));
        assert_eq!(parse("FN:x\n"), Err(TextError::NotOneComponent));
        assert_eq!(parse(&"BEGIN:A\n".repeat(9)), Err(TextError::TooDeep));
        assert!(parse_line("X;P=\"open:v").is_none());
    }

    proptest::proptest! {
        /// Lines built from the grammar's own pieces, shuffled: the parser never panics, and what
        /// it accepts pairs every BEGIN with an END.
        #[test]
        fn arbitrary_content_lines_never_panic(lines in proptest::collection::vec(
            proptest::sample::select(vec![
                "BEGIN:VCALENDAR", "END:VCALENDAR", "BEGIN:VEVENT", "END:VEVENT", "UID:x",
                "DTSTART;TZID=\"Europe/Berlin\":20260101T100000", "RRULE:FREQ=DAILY;COUNT=3",
                " folded", "X;P=\"a", ":", ";", "EXDATE:20260102T100000Z,bad", "\u{e9}:\u{fc}",
            ]),
            0..24,
        )) {
            let text = lines.join("\r\n");
            if let Ok(c) = parse(&text) {
                proptest::prop_assert_eq!(text.matches("BEGIN:").count(), text.matches("END:").count());
                let _ = crate::groupware::event::parse(&text);
                let range = crate::groupware::event::Range { start: None, end: None };
                for child in &c.children {
                    crate::groupware::event::component_overlaps(child, &range, &[]);
                }
            }
        }
    }
}
