#!/usr/bin/env python3
"""Issue 15: a CardDAV/CalDAV client's initial sync of 5 000 contacts and 5 000 events
(PROPFIND Depth 1 for the ETags, then addressbook-/calendar-multiget of every href in batches),
and its incremental sync-collection (plus a multiget of what changed) after 10 changes, against
the same reads over /v1/sync (the feed from 0, then from the last `next`) in the same run.
Times are medians of --rounds; bytes are request plus response bodies. Prints a Markdown table
for docs/benchmarks.md.

    tools/bench-groupware [--contacts N] [--events N] [--rounds R] [--batch B]
"""
import argparse
import base64
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def start(binary, data):
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--admin-token", "bench-admin-token-0123456789"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CAIRN_LOG": "warn"},
    )
    line = proc.stdout.readline().decode()
    base = line.strip().removeprefix("cairn listening on ")
    host, port = base.removeprefix("http://").split(":")
    return proc, host, int(port)


class Client:
    def __init__(self, host, port):
        self.conn = http.client.HTTPConnection(host, port, timeout=300)
        self.bytes = 0

    def req(self, method, path, body=b"", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        self.bytes += len(body) + len(data)
        return r.status, data


def account(c, data):
    ident = "bench@example.com"
    js = {"Content-Type": "application/json"}
    c.req("POST", "/v1/codes", json.dumps({"identifier": ident, "purpose": "register"}), js)
    with open(os.path.join(data, "outbox.jsonl")) as f:
        code = [json.loads(l) for l in f][-1]["code"]
    pw = "correct horse battery"
    c.req("POST", "/v1/accounts", json.dumps({"identifier": ident, "password": pw, "code": code}), js)
    device = {"name": "bench", "model": "x", "os": "y"}
    _, body = c.req("POST", "/v1/sessions", json.dumps({"identifier": ident, "password": pw, "device": device}), js)
    token = json.loads(body)["token"]
    bearer = {"Authorization": f"Bearer {token}", **js}
    _, body = c.req("POST", "/v1/app-passwords", json.dumps({"name": "bench"}), bearer)
    app = json.loads(body)["password"]
    basic = {"Authorization": "Basic " + base64.b64encode(f"{ident}:{app}".encode()).decode()}
    return bearer, basic


def vcard(i, rev=0):
    return (
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:contact-{i}\r\nFN:Person {i} r{rev}\r\nN:{i};Person;;;\r\n"
        f"EMAIL;TYPE=work:person{i}@example.com\r\nTEL;TYPE=cell:+1 555 {i:04d}\r\n"
        f"ORG:Example Corp\r\nNOTE:A contact used to measure an initial sync.\r\nEND:VCARD\r\n"
    )


def vevent(i, rev=0):
    day = 1 + i % 28
    return (
        f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//cairn//bench//EN\r\nBEGIN:VEVENT\r\nUID:event-{i}\r\n"
        f"DTSTAMP:20261201T000000Z\r\nDTSTART:202612{day:02d}T100000Z\r\nDTEND:202612{day:02d}T110000Z\r\n"
        f"SUMMARY:Meeting {i} r{rev}\r\nLOCATION:Room {i % 10}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def load(c, bearer, collection, field, make, n):
    for start in range(0, n, 100):
        put = [{"id": f"{i}.{'vcf' if field == 'vcard' else 'ics'}", "payload": {field: make(i)}} for i in range(start, min(n, start + 100))]
        status, body = c.req("POST", f"/v1/sync/{collection}/batch", json.dumps({"put": put}), bearer)
        assert status == 200, body


PROPFIND = '<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>'
TOKEN = '<d:propfind xmlns:d="DAV:"><d:prop><d:sync-token/></d:prop></d:propfind>'


def multiget(kind, hrefs):
    if kind == "contacts":
        root, data, ns = "a:addressbook-multiget", "a:address-data", "urn:ietf:params:xml:ns:carddav"
    else:
        root, data, ns = "a:calendar-multiget", "a:calendar-data", "urn:ietf:params:xml:ns:caldav"
    body = "".join(f"<d:href>{h}</d:href>" for h in hrefs)
    return f'<{root} xmlns:d="DAV:" xmlns:a="{ns}"><d:prop><d:getetag/><{data}/></d:prop>{body}</{root}>'


def sync_report(token):
    return f'<d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>'


HREF = re.compile(r"<d:href>([^<]+)</d:href>")


def dav_initial(c, basic, kind, batch):
    """PROPFIND for the hrefs and ETags, multiget for the data, the collection's sync token last
    (as vdirsyncer and the caldav library do)."""
    home = "/dav/contacts/default/" if kind == "contacts" else "/dav/calendars/default/"
    status, body = c.req("PROPFIND", home, PROPFIND, {**basic, "Depth": "1"})
    assert status == 207, body[:200]
    hrefs = [h for h in HREF.findall(body.decode()) if h != home]
    got = 0
    for i in range(0, len(hrefs), batch):
        status, body = c.req("REPORT", home, multiget(kind, hrefs[i : i + batch]), {**basic, "Depth": "1"})
        assert status == 207, body[:200]
        got += body.count(b"200 OK")
    status, body = c.req("PROPFIND", home, TOKEN, {**basic, "Depth": "0"})
    token = body.decode().split("<d:sync-token>", 1)[1].split("<")[0]
    return got, token


def dav_incremental(c, basic, kind, token):
    home = "/dav/contacts/default/" if kind == "contacts" else "/dav/calendars/default/"
    status, body = c.req("REPORT", home, sync_report(token), basic)
    assert status == 207, body[:200]
    text = body.decode()
    changed = [h for r in text.split("<d:response>")[1:] if "200 OK" in r for h in HREF.findall(r)[:1]]
    if changed:
        c.req("REPORT", home, multiget(kind, changed), {**basic, "Depth": "1"})
    return len(text.split("<d:response>")) - 1


def json_feed(c, bearer, collection, since):
    n, nxt = 0, since
    while True:
        status, body = c.req("GET", f"/v1/sync/{collection}?since={nxt}&limit=1000", b"", bearer)
        assert status == 200, body[:200]
        feed = json.loads(body)
        n += len(feed["records"])
        nxt = feed["next"]
        if not feed["more"]:
            return n, nxt


def measure(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--contacts", type=int, default=5000)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500, help="hrefs per multiget")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as data:
        proc, host, port = start(a.cairn, data)
        try:
            c = Client(host, port)
            bearer, basic = account(c, data)
            load(c, bearer, "contacts", "vcard", vcard, a.contacts)
            load(c, bearer, "calendar", "ical", vevent, a.events)
            rows = []
            for kind, collection, field, make, n in [("contacts", "contacts", "vcard", vcard, a.contacts), ("calendars", "calendar", "ical", vevent, a.events)]:
                res = {"dav_init": [], "json_init": [], "dav_inc": [], "json_inc": []}
                for r in range(a.rounds):
                    c.bytes = 0
                    t, (got, token) = measure(lambda: dav_initial(c, basic, kind, a.batch))
                    assert got == n, (got, n)
                    res["dav_init"].append((t, c.bytes))
                    c.bytes = 0
                    t, (got, nxt) = measure(lambda: json_feed(c, bearer, collection, 0))
                    res["json_init"].append((t, c.bytes))
                    # 10 changes: 5 edits, 5 deletions, through the JSON API.
                    base = r * 10
                    ext = "vcf" if field == "vcard" else "ics"
                    put = [{"id": f"{base + i}.{ext}", "payload": {field: make(base + i, r + 1)}} for i in range(5)]
                    delete = [{"id": f"{base + 5 + i}.{ext}"} for i in range(5)]
                    c.req("POST", f"/v1/sync/{collection}/batch", json.dumps({"put": put, "delete": delete}), bearer)
                    c.bytes = 0
                    t, seen = measure(lambda: dav_incremental(c, basic, kind, token))
                    assert seen == 10, seen
                    res["dav_inc"].append((t, c.bytes))
                    c.bytes = 0
                    t, (got, _) = measure(lambda: json_feed(c, bearer, collection, nxt))
                    assert got == 10, got
                    res["json_inc"].append((t, c.bytes))
                    # Put the deleted ones back for the next round's initial sync.
                    c.req("POST", f"/v1/sync/{collection}/batch", json.dumps({"put": [{"id": f"{base + 5 + i}.{ext}", "payload": {field: make(base + 5 + i)}} for i in range(5)]}), bearer)
                med = {k: (statistics.median(t for t, _ in v), statistics.median(b for _, b in v)) for k, v in res.items()}
                for phase in ["init", "inc"]:
                    (dt, db), (jt, jb) = med[f"dav_{phase}"], med[f"json_{phase}"]
                    label = "contacts" if kind == "contacts" else "events"
                    what = f"initial sync, {n} {label}" if phase == "init" else f"sync after 10 changes, {label}"
                    rows.append(f"| {what} | {dt * 1000:.1f} ms, {db / 1e3:.1f} kB | {jt * 1000:.1f} ms, {jb / 1e3:.1f} kB | {dt / jt:.2f}x time, {db / jb:.2f}x bytes |")
            print("| | CardDAV/CalDAV | /v1/sync | DAV / JSON |")
            print("|---|---|---|---|")
            print("\n".join(rows))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
