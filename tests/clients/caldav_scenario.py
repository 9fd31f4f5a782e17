"""The Python `caldav` library against a CalDAV server: discovery, a calendar made, events
created, found by time range (a recurring one expanded by the server's filter), updated with
ETags (a stale one refused), deleted. Usage: caldav_scenario.py URL USER PASSWORD. Prints
`OK` and exits 0 when every step held; raises otherwise."""
import sys
from datetime import datetime, timezone

import caldav
from caldav.lib import error

url, user, password = sys.argv[1:4]

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//cairn tests//caldav//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20261201T000000Z
DTSTART:{start}
DTEND:{end}
SUMMARY:{summary}
{extra}END:VEVENT
END:VCALENDAR
"""


def event(uid, start, end, summary, extra=""):
    return EVENT.format(uid=uid, start=start, end=end, summary=summary, extra=extra)


def utc(*a):
    return datetime(*a, tzinfo=timezone.utc)


with caldav.DAVClient(url=url, username=user, password=password) as client:
    principal = client.principal()
    calendars = principal.calendars()
    assert any(str(c.url).rstrip("/").endswith("/default") for c in calendars), calendars

    cal = principal.make_calendar(name="Work", cal_id="work")
    assert "Work" in [c.get_display_name() for c in principal.calendars()]

    cal.save_event(event("one", "20261202T100000Z", "20261202T110000Z", "Stand-up"))
    cal.save_event(event("two", "20261210T100000Z", "20261210T110000Z", "Review"))
    cal.save_event(event("weekly", "20260105T090000Z", "20260105T093000Z", "Weekly", "RRULE:FREQ=WEEKLY;BYDAY=MO\n"))

    def uids(found):
        return sorted(str(o.icalendar_component["uid"]) for o in found)

    first_week = cal.search(start=utc(2026, 12, 1), end=utc(2026, 12, 8), event=True, expand=False)
    assert uids(first_week) == ["one", "weekly"], uids(first_week)
    a_tuesday = cal.search(start=utc(2026, 12, 8), end=utc(2026, 12, 9), event=True, expand=False)
    assert uids(a_tuesday) == [], uids(a_tuesday)

    obj = cal.event_by_uid("one")
    old_etag = obj.props.get("{DAV:}getetag") if hasattr(obj, "props") else None
    comp = obj.icalendar_component
    comp["summary"] = "Stand-up (moved)"
    obj.save()
    again = cal.event_by_uid("one")
    assert str(again.icalendar_component["summary"]) == "Stand-up (moved)"

    # An update that names the ETag it read: the current one lands, a stale one is refused.
    r = client.propfind(str(again.url), props='<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>', depth=0)
    etag = r.raw.split("<d:getetag>")[1].split("</d:getetag>")[0].replace("&quot;", '"')
    body = event("one", "20261202T120000Z", "20261202T130000Z", "Stand-up (later)")
    ok = client.put(str(again.url), body, {"If-Match": etag, "Content-Type": "text/calendar"})
    assert ok.status in (200, 204), ok.status
    stale = client.put(str(again.url), body, {"If-Match": etag, "Content-Type": "text/calendar"})
    assert stale.status == 412, stale.status

    cal.event_by_uid("two").delete()
    try:
        cal.event_by_uid("two")
        raise AssertionError("deleted event still found")
    except error.NotFoundError:
        pass
    left = uids(cal.events())
    assert left == ["one", "weekly"], left
    cal.delete()
    print("OK")
