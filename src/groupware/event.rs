//! Calendar objects: an iCalendar object (one VEVENT, VTODO or VJOURNAL with its overridden
//! instances, and VTIMEZONEs) as a calendar record's payload
//! `{"ical", "uid", "summary", "start", "end"}` (docs/API.md); and when its instances fall,
//! for `time-range` (RFC 4791 9.9), recurring ones expanded with the `rrule` crate.
//!
//! Times: DATE-TIME in UTC or with an IANA `TZID` are exact; a floating time, or a TZID that
//! names no IANA zone (Outlook's "W. Europe Standard Time"), is read as UTC. A recurrence the
//! `rrule` crate cannot expand counts as matching every range: a client may get one object
//! too many, never miss one.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use serde::Serialize;

use super::text::{self, Component, Prop};

/// Occurrences looked at per recurring component and query, at most (then it matches).
const MAX_OCCURRENCES: usize = 20_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalError {
    #[error("not iCalendar: {0}")]
    Syntax(#[from] text::TextError),
    #[error("the object is not a VCALENDAR")]
    NotVcalendar,
    #[error("a calendar object holds VEVENT, VTODO or VJOURNAL components, all of one type")]
    Components,
    #[error("every component of a calendar object has the same UID, and one is required")]
    Uid,
    #[error("{0} is not a DATE or DATE-TIME")]
    BadTime(&'static str),
}

/// What a stored calendar object shows besides the iCalendar text itself.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CalendarObject<'a> {
    pub ical: &'a str,
    pub uid: String,
    pub summary: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    /// `VEVENT`, `VTODO` or `VJOURNAL`: which calendars may hold it.
    #[serde(skip)]
    pub kind: String,
}

/// A DATE or DATE-TIME as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Date(NaiveDate),
    Floating(NaiveDateTime),
    Utc(NaiveDateTime),
    Zoned(NaiveDateTime, chrono_tz::Tz),
}

impl When {
    pub fn parse(p: &Prop) -> Option<When> {
        let v = p.value.trim();
        if v.len() == 8 {
            return NaiveDate::parse_from_str(v, "%Y%m%d").ok().map(When::Date);
        }
        let (local, utc) = match v.strip_suffix('Z') {
            Some(l) => (l, true),
            None => (v, false),
        };
        let t = NaiveDateTime::parse_from_str(local, "%Y%m%dT%H%M%S").ok()?;
        if utc {
            return Some(When::Utc(t));
        }
        Some(match p.param("TZID").and_then(zone) {
            Some(tz) => When::Zoned(t, tz),
            None => When::Floating(t),
        })
    }

    pub fn utc(self) -> DateTime<Utc> {
        match self {
            When::Date(d) => Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)),
            When::Floating(t) | When::Utc(t) => Utc.from_utc_datetime(&t),
            When::Zoned(t, tz) => match tz.from_local_datetime(&t).earliest() {
                Some(z) => z.with_timezone(&Utc),
                None => Utc.from_utc_datetime(&t), // a local time skipped by a DST jump
            },
        }
    }

    /// As the payload shows it: a date, RFC 3339 with `Z` or the zone's offset, or a floating
    /// local time without an offset.
    pub fn display(self) -> String {
        match self {
            When::Date(d) => d.format("%Y-%m-%d").to_string(),
            When::Utc(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            When::Floating(t) => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
            When::Zoned(t, tz) => match tz.from_local_datetime(&t).earliest() {
                Some(z) => z.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                None => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
            },
        }
    }

    fn plus(self, d: TimeDelta) -> When {
        match self {
            When::Date(x) => When::Date(x.checked_add_signed(d).unwrap_or(x)),
            When::Floating(x) => When::Floating(x.checked_add_signed(d).unwrap_or(x)),
            When::Utc(x) => When::Utc(x.checked_add_signed(d).unwrap_or(x)),
            When::Zoned(x, tz) => When::Zoned(x.checked_add_signed(d).unwrap_or(x), tz),
        }
    }

    /// The same instant in the `rrule` crate's terms.
    fn rrule(self) -> Option<DateTime<rrule::Tz>> {
        match self {
            When::Zoned(t, tz) => rrule::Tz::Tz(tz).from_local_datetime(&t).earliest(),
            other => Some(other.utc().with_timezone(&rrule::Tz::UTC)),
        }
    }
}

/// An IANA zone from a TZID, also when a client prefixes it (`/mozilla.org/.../Europe/Berlin`).
fn zone(tzid: &str) -> Option<chrono_tz::Tz> {
    let tzid = tzid.trim().trim_start_matches('/');
    let mut rest = tzid;
    loop {
        if let Ok(tz) = rest.parse::<chrono_tz::Tz>() {
            return Some(tz);
        }
        rest = rest.split_once('/')?.1;
    }
}

/// `[+-]P[nW][nD][T[nH][nM][nS]]` (RFC 5545 3.3.6).
pub fn parse_duration(v: &str) -> Option<TimeDelta> {
    let v = v.trim();
    let (neg, v) = match v.as_bytes().first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    let mut rest = v.strip_prefix('P')?;
    let (mut secs, mut in_time, mut any) = (0i64, false, false);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('T') {
            in_time = true;
            rest = r;
            continue;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: i64 = rest[..digits].parse().ok()?;
        let unit = match (rest.as_bytes().get(digits)?, in_time) {
            (b'W', false) => 7 * 86_400,
            (b'D', false) => 86_400,
            (b'H', true) => 3_600,
            (b'M', true) => 60,
            (b'S', true) => 1,
            _ => return None,
        };
        secs = secs.checked_add(n.checked_mul(unit)?)?;
        any = true;
        rest = &rest[digits + 1..];
    }
    let d = TimeDelta::try_seconds(secs)?;
    any.then_some(if neg { -d } else { d })
}

fn time_of(c: &Component, name: &'static str) -> Result<Option<When>, CalError> {
    match c.prop(name) {
        None => Ok(None),
        Some(p) => When::parse(p).map(Some).ok_or(CalError::BadTime(name)),
    }
}

/// Check a calendar object (RFC 4791 4.1) and read what the payload shows.
pub fn parse(ical: &str) -> Result<CalendarObject<'_>, CalError> {
    let cal = text::parse(ical)?;
    check(&cal)?;
    let items: Vec<&Component> = cal.children.iter().filter(|c| c.name != "VTIMEZONE").collect();
    let master = items.iter().find(|c| c.prop("RECURRENCE-ID").is_none()).unwrap_or(&items[0]);
    let start = time_of(master, "DTSTART")?;
    let end = match (time_of(master, "DTEND")?, time_of(master, "DUE")?) {
        (Some(e), _) | (None, Some(e)) => Some(e),
        (None, None) => match (start, master.value("DURATION").and_then(parse_duration)) {
            (Some(s), Some(d)) => Some(s.plus(d)),
            (Some(s @ When::Date(_)), None) if master.name == "VEVENT" => Some(s.plus(TimeDelta::days(1))),
            _ => None,
        },
    };
    Ok(CalendarObject {
        ical,
        uid: master.value("UID").unwrap_or_default().trim().to_string(),
        summary: master.value("SUMMARY").map(text::unescape),
        start: start.map(When::display),
        end: end.map(When::display),
        kind: master.name.clone(),
    })
}

fn check(cal: &Component) -> Result<(), CalError> {
    if cal.name != "VCALENDAR" {
        return Err(CalError::NotVcalendar);
    }
    let items: Vec<&Component> = cal.children.iter().filter(|c| c.name != "VTIMEZONE").collect();
    let Some(first) = items.first() else { return Err(CalError::Components) };
    if !matches!(first.name.as_str(), "VEVENT" | "VTODO" | "VJOURNAL") || items.iter().any(|c| c.name != first.name) {
        return Err(CalError::Components);
    }
    let uid = first.value("UID").map(str::trim).filter(|u| !u.is_empty()).ok_or(CalError::Uid)?;
    if items.iter().any(|c| c.value("UID").map(str::trim) != Some(uid)) {
        return Err(CalError::Uid);
    }
    for c in &items {
        for name in ["DTSTART", "DTEND", "DUE", "RECURRENCE-ID"] {
            time_of(c, name)?;
        }
    }
    Ok(())
}

/// A half-open UTC interval of a query; an open end is unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl Range {
    /// RFC 4791 9.9: an instance `[s, e)` overlaps; one of no length overlaps where it is.
    fn overlaps(&self, s: DateTime<Utc>, e: DateTime<Utc>) -> bool {
        let before_end = self.end.is_none_or(|re| s < re);
        let after_start = self.start.is_none_or(|rs| if e > s { e > rs } else { s >= rs });
        before_end && after_start
    }
}

/// Whether any instance of component `c` (a VEVENT, VTODO, VJOURNAL, or a VALARM-less other)
/// overlaps `range`. `overridden`: the RECURRENCE-IDs of the object's other components, which
/// replace those instances of this one.
pub fn component_overlaps(c: &Component, range: &Range, overridden: &[DateTime<Utc>]) -> bool {
    instances(c, range, overridden, 1).is_none_or(|found| !found.is_empty())
}

/// The instances `[start, end)` of `c` that overlap `range`, at most `want`, in order; `None`
/// where they cannot be known (a rule the crate cannot expand, more than `MAX_OCCURRENCES`
/// looked at) and for a component without times (a VTODO without dates).
pub fn instances(
    c: &Component,
    range: &Range,
    overridden: &[DateTime<Utc>],
    want: usize,
) -> Option<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let start = time_of(c, "DTSTART").ok().flatten();
    let end = time_of(c, "DTEND").ok().flatten().or_else(|| time_of(c, "DUE").ok().flatten());
    let start = start.or(if c.name == "VTODO" { end } else { None })?;
    let length = match end {
        Some(e) => e.utc() - start.utc(),
        None => match c.value("DURATION").and_then(parse_duration) {
            Some(d) => d,
            None if matches!(start, When::Date(_)) && c.name == "VEVENT" => TimeDelta::days(1),
            None => TimeDelta::zero(),
        },
    }
    .max(TimeDelta::zero());
    let recurring = c.prop("RRULE").is_some() || c.prop("RDATE").is_some();
    if !recurring || c.prop("RECURRENCE-ID").is_some() {
        let (s, e) = (start.utc(), start.utc() + length);
        return Some(if range.overlaps(s, e) { vec![(s, e)] } else { Vec::new() });
    }
    expand(c, start, length, range, overridden, want)
}

fn expand(
    c: &Component,
    start: When,
    length: TimeDelta,
    range: &Range,
    overridden: &[DateTime<Utc>],
    want: usize,
) -> Option<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let dt_start = start.rrule()?;
    let mut set = match c.prop("RRULE") {
        Some(p) => p.value.parse::<rrule::RRule<rrule::Unvalidated>>().ok()?.build(dt_start).ok()?,
        None => rrule::RRuleSet::new(dt_start),
    };
    let dates = |name: &str| -> Option<Vec<DateTime<rrule::Tz>>> {
        let mut out = Vec::new();
        for p in c.props_named(name) {
            for v in p.value.split(',') {
                let one = Prop { value: v.to_string(), ..p.clone() };
                out.push(When::parse(&one)?.rrule()?);
            }
        }
        Some(out)
    };
    for d in dates("RDATE")? {
        set = set.rdate(d);
    }
    for d in dates("EXDATE")? {
        set = set.exdate(d);
    }
    if let Some(rs) = range.start {
        // Only instances that can still reach the range; a day of slack for zone offsets.
        set = set.after((rs - length - TimeDelta::days(1)).with_timezone(&rrule::Tz::UTC));
    }
    let mut found = Vec::new();
    for (n, occurrence) in (&set).into_iter().enumerate() {
        if n == MAX_OCCURRENCES {
            return None;
        }
        let s = occurrence.with_timezone(&Utc);
        if range.end.is_some_and(|re| s >= re) || found.len() == want {
            break;
        }
        if !overridden.contains(&s) && range.overlaps(s, s + length) {
            found.push((s, s + length));
        }
    }
    Some(found)
}

/// The busy time of a calendar object within `range` (RFC 4791 7.10): its VEVENTs' instances,
/// except transparent and cancelled ones, at most `want`.
pub fn busy(cal: &Component, range: &Range, want: usize) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let overridden = overridden_instances(cal);
    let mut out = Vec::new();
    for c in cal.children.iter().filter(|c| c.name == "VEVENT") {
        let transparent = c.value("TRANSP").is_some_and(|t| t.trim().eq_ignore_ascii_case("TRANSPARENT"));
        let cancelled = c.value("STATUS").is_some_and(|t| t.trim().eq_ignore_ascii_case("CANCELLED"));
        if transparent || cancelled {
            continue;
        }
        let mine: Vec<DateTime<Utc>> = if c.prop("RECURRENCE-ID").is_some() { Vec::new() } else { overridden.clone() };
        out.extend(instances(c, range, &mine, want.saturating_sub(out.len())).unwrap_or_default());
    }
    out
}

/// The RECURRENCE-IDs of an object's components, in UTC.
pub fn overridden_instances(cal: &Component) -> Vec<DateTime<Utc>> {
    cal.children.iter().filter_map(|c| c.prop("RECURRENCE-ID")).filter_map(When::parse).map(When::utc).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(body: &str) -> String {
        format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t\r\n{body}END:VCALENDAR\r\n")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hits(ical: &str, from: &str, to: &str) -> bool {
        let c = text::parse(ical).unwrap();
        let range = Range { start: Some(utc(from)), end: Some(utc(to)) };
        let over = overridden_instances(&c);
        c.children.iter().filter(|x| x.name == "VEVENT").any(|x| component_overlaps(x, &range, &over))
    }

    #[test]
    fn payload_fields() {
        let ical = cal("BEGIN:VEVENT\r\nUID:e1\r\nSUMMARY:Stand-up\\, daily\r\nDTSTART;TZID=Europe/Berlin:20261202T100000\r\nDURATION:PT30M\r\nEND:VEVENT\r\n");
        let o = parse(&ical).unwrap();
        assert_eq!(o.uid, "e1");
        assert_eq!(o.summary.as_deref(), Some("Stand-up, daily"));
        assert_eq!(o.start.as_deref(), Some("2026-12-02T10:00:00+01:00"));
        assert_eq!(o.end.as_deref(), Some("2026-12-02T10:30:00+01:00"));
        let all_day = cal("BEGIN:VEVENT\r\nUID:d\r\nDTSTART;VALUE=DATE:20261224\r\nEND:VEVENT\r\n");
        let day = parse(&all_day).unwrap();
        assert_eq!((day.start.as_deref(), day.end.as_deref()), (Some("2026-12-24"), Some("2026-12-25")));
    }

    #[test]
    fn bad_objects() {
        assert_eq!(parse(&cal("")), Err(CalError::Components));
        assert_eq!(parse(&cal("BEGIN:VEVENT\r\nDTSTART:20261202T100000Z\r\nEND:VEVENT\r\n")), Err(CalError::Uid));
        let two = "BEGIN:VEVENT\r\nUID:a\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b\r\nEND:VEVENT\r\n";
        assert_eq!(parse(&cal(two)), Err(CalError::Uid));
        let mixed = "BEGIN:VEVENT\r\nUID:a\r\nEND:VEVENT\r\nBEGIN:VTODO\r\nUID:a\r\nEND:VTODO\r\n";
        assert_eq!(parse(&cal(mixed)), Err(CalError::Components));
        let bad_time = "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:tomorrow\r\nEND:VEVENT\r\n";
        assert_eq!(parse(&cal(bad_time)), Err(CalError::BadTime("DTSTART")));
        assert_eq!(parse("BEGIN:VCARD\r\nEND:VCARD\r\n"), Err(CalError::NotVcalendar));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT1H30M"), Some(TimeDelta::minutes(90)));
        assert_eq!(parse_duration("-P1W"), Some(TimeDelta::days(-7)));
        assert_eq!(parse_duration("P1DT1S"), Some(TimeDelta::seconds(86_401)));
        assert_eq!(parse_duration("P"), None);
        assert_eq!(parse_duration("PT1D"), None);
        assert_eq!(parse_duration("P99999999999999999999D"), None);
    }

    #[test]
    fn single_and_recurring_instances_against_ranges() {
        let one = cal("BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20261202T100000Z\r\nDTEND:20261202T110000Z\r\nEND:VEVENT\r\n");
        assert!(hits(&one, "2026-12-02T10:30:00Z", "2026-12-02T12:00:00Z"));
        assert!(!hits(&one, "2026-12-02T11:00:00Z", "2026-12-02T12:00:00Z"), "half-open");
        let weekly = cal("BEGIN:VEVENT\r\nUID:w\r\nDTSTART;TZID=Europe/Berlin:20260105T090000\r\nDURATION:PT1H\r\nRRULE:FREQ=WEEKLY;BYDAY=MO\r\nEXDATE;TZID=Europe/Berlin:20261207T090000\r\nEND:VEVENT\r\n");
        assert!(hits(&weekly, "2026-11-30T08:00:00Z", "2026-11-30T08:30:00Z"), "a Monday in winter: 09:00 CET");
        assert!(!hits(&weekly, "2026-12-01T00:00:00Z", "2026-12-06T00:00:00Z"), "no Monday in the range");
        assert!(!hits(&weekly, "2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"), "excluded");
        assert!(hits(&weekly, "2026-07-06T07:00:00Z", "2026-07-06T07:30:00Z"), "summer: 09:00 CEST");
        let moved = format!(
            "{}BEGIN:VEVENT\r\nUID:w\r\nRECURRENCE-ID;TZID=Europe/Berlin:20261214T090000\r\nDTSTART:20261215T120000Z\r\nDTEND:20261215T130000Z\r\nEND:VEVENT\r\n",
            "BEGIN:VEVENT\r\nUID:w\r\nDTSTART;TZID=Europe/Berlin:20260105T090000\r\nDURATION:PT1H\r\nRRULE:FREQ=WEEKLY;BYDAY=MO\r\nEND:VEVENT\r\n"
        );
        let moved = cal(&moved);
        assert!(!hits(&moved, "2026-12-14T00:00:00Z", "2026-12-15T00:00:00Z"), "the Monday was moved");
        assert!(hits(&moved, "2026-12-15T00:00:00Z", "2026-12-16T00:00:00Z"), "to Tuesday");
        let count =
            cal("BEGIN:VEVENT\r\nUID:c\r\nDTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=DAILY;COUNT=3\r\nEND:VEVENT\r\n");
        assert!(hits(&count, "2026-01-03T12:00:00Z", "2026-01-03T13:00:00Z"));
        assert!(!hits(&count, "2026-01-04T12:00:00Z", "2026-01-05T13:00:00Z"));
    }

    #[test]
    fn busy_time_lists_instances_in_the_range() {
        let weekly = cal(
            "BEGIN:VEVENT\r\nUID:w\r\nDTSTART:20261207T090000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\n",
        );
        let c = text::parse(&weekly).unwrap();
        let range = Range { start: Some(utc("2026-12-01T00:00:00Z")), end: Some(utc("2026-12-22T00:00:00Z")) };
        let b = busy(&c, &range, 10);
        assert_eq!(
            b,
            vec![
                (utc("2026-12-07T09:00:00Z"), utc("2026-12-07T10:00:00Z")),
                (utc("2026-12-14T09:00:00Z"), utc("2026-12-14T10:00:00Z")),
                (utc("2026-12-21T09:00:00Z"), utc("2026-12-21T10:00:00Z")),
            ]
        );
        assert_eq!(busy(&c, &range, 2).len(), 2);
        let free = cal("BEGIN:VEVENT\r\nUID:f\r\nDTSTART:20261207T090000Z\r\nDURATION:PT1H\r\nTRANSP:TRANSPARENT\r\nEND:VEVENT\r\n");
        assert!(busy(&text::parse(&free).unwrap(), &range, 10).is_empty());
    }
}
