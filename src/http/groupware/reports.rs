//! The REPORTs on an address book or calendar: multiget, addressbook-query, calendar-query,
//! sync-collection. Anything else is `403 supported-report`.

use axum::http::StatusCode;
use axum::response::Response;

use super::paths::{self, Target};
use super::props::{Multistatus, Resource};
use super::xml::{Report, DAV};
use super::{dav_error, multistatus, parse_token, Cx};
use crate::groupware::event::{self, Range};
use crate::groupware::{text, Collection, GroupwareError, Object};
use crate::sync::MAX_FEED;

pub(super) async fn answer(cx: &Cx<'_>, c: Collection, report: Report) -> Result<Response, Response> {
    let kind = c.kind;
    let mut ms = Multistatus::default();
    let object_path = |name: &str| paths::object(kind, &c.segment, name);
    match report {
        Report::Multiget { props, hrefs } => {
            let c2 = c.clone();
            let found = cx
                .run(kind, move |gw, a| {
                    let mut out = Vec::with_capacity(hrefs.len());
                    for href in hrefs {
                        let object = match paths::href_target(&href) {
                            Some(Target::Object(k, seg, name)) if k == c2.kind && seg == c2.segment => {
                                match gw.object(&a, &c2, &name) {
                                    Ok(o) => Some(o),
                                    Err(GroupwareError::NotFound) => None,
                                    Err(e) => return Err(e),
                                }
                            }
                            _ => None,
                        };
                        out.push((href, object));
                    }
                    Ok(out)
                })
                .await?;
            for (href, object) in found {
                match object {
                    Some(o) => ms.resource(&object_path(&o.name), &Resource::Object(&c, &o), &props),
                    None => ms.status(&href, "404 Not Found"),
                }
            }
            Ok(multistatus(ms.finish(None)))
        }
        Report::CardQuery { props, filter, limit } => {
            let objects = all_objects(cx, &c).await?;
            let mut n = 0;
            for o in &objects {
                let Ok(card) = text::parse(&o.text) else { continue };
                if !filter.test(&card) {
                    continue;
                }
                if limit.is_some_and(|l| n == l) {
                    ms.truncated(&paths::collection(kind, &c.segment));
                    break;
                }
                n += 1;
                ms.resource(&object_path(&o.name), &Resource::Object(&c, o), &props);
            }
            Ok(multistatus(ms.finish(None)))
        }
        Report::CalQuery { props, filter } => {
            let objects = all_objects(cx, &c).await?;
            for o in &objects {
                if let Some(f) = &filter {
                    let Ok(cal) = text::parse(&o.text) else { continue };
                    if !f.test_object(&cal) {
                        continue;
                    }
                }
                ms.resource(&object_path(&o.name), &Resource::Object(&c, o), &props);
            }
            Ok(multistatus(ms.finish(None)))
        }
        Report::SyncCollection { props, token, limit } => {
            let since = parse_token(&token).ok_or_else(|| {
                dav_error(StatusCode::FORBIDDEN, DAV, "valid-sync-token", "", "not a sync token of this server")
            })?;
            let limit = limit.unwrap_or(MAX_FEED).clamp(1, MAX_FEED);
            let c2 = c.clone();
            let changes = cx.run(kind, move |gw, a| gw.changes(&a, &c2, since, limit)).await?;
            for o in &changes.changed {
                ms.resource(&object_path(&o.name), &Resource::Object(&c, o), &props);
            }
            for name in &changes.removed {
                ms.status(&object_path(name), "404 Not Found");
            }
            if changes.more {
                ms.truncated(&paths::collection(kind, &c.segment));
            }
            Ok(multistatus(ms.finish(Some(changes.next))))
        }
        Report::FreeBusy(range) => {
            let objects = all_objects(cx, &c).await?;
            let mut periods = Vec::new();
            for o in &objects {
                if periods.len() >= MAX_BUSY {
                    break;
                }
                if let Ok(cal) = text::parse(&o.text) {
                    periods.extend(event::busy(&cal, &range, MAX_BUSY - periods.len()));
                }
            }
            periods.sort();
            Ok(free_busy(&range, &periods))
        }
        Report::Unsupported((ns, name)) => Err(dav_error(
            StatusCode::FORBIDDEN,
            DAV,
            "supported-report",
            "",
            &format!("REPORT {{{ns}}}{name} is not supported here"),
        )),
    }
}

/// Busy periods one free-busy answer lists, at most.
const MAX_BUSY: usize = 10_000;

/// A VFREEBUSY (RFC 4791 7.10) of the range with the busy periods, in UTC.
fn free_busy(range: &Range, periods: &[(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)]) -> Response {
    use axum::response::IntoResponse;
    let fmt = |t: &chrono::DateTime<chrono::Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    let mut body = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//cairn//CalDAV//EN\r\nBEGIN:VFREEBUSY\r\n");
    if let Some(s) = &range.start {
        body.push_str(&format!("DTSTART:{}\r\n", fmt(s)));
    }
    if let Some(e) = &range.end {
        body.push_str(&format!("DTEND:{}\r\n", fmt(e)));
    }
    for (s, e) in periods {
        body.push_str(&format!("FREEBUSY;FBTYPE=BUSY:{}/{}\r\n", fmt(s), fmt(e)));
    }
    body.push_str("END:VFREEBUSY\r\nEND:VCALENDAR\r\n");
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "text/calendar; charset=utf-8")], body).into_response()
}

async fn all_objects(cx: &Cx<'_>, c: &Collection) -> Result<Vec<Object>, Response> {
    let c = c.clone();
    cx.run(c.kind, move |gw, a| gw.objects(&a, &c)).await
}
