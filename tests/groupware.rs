//! CardDAV and CalDAV over the real server: discovery, one record with two faces (DAV and
//! `/v1/sync`), queries, sync-collection with paging and a purged token, collections made and
//! removed, and bad input of every kind (each a 4xx that leaves nothing behind).

mod common;

use common::identity::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Dav<'a> {
    s: &'a Server,
    user: String,
    password: String,
}

impl Dav<'_> {
    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> reqwest::Response {
        let mut r = self
            .s
            .client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), self.s.url(path))
            .basic_auth(&self.user, Some(&self.password))
            .body(body.to_string());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }

    async fn text(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str, status: u16) -> String {
        let r = self.req(method, path, headers, body).await;
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        text
    }

    async fn put(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        self.req("PUT", path, headers, body).await
    }
}

async fn dav_user(s: &Server) -> (User, Dav<'_>) {
    let u = signed_in(s).await;
    let r = s.client.post(s.url("/v1/app-passwords")).bearer_auth(&u.token).json(&json!({"name": "dav"})).send();
    let pw = body_of(r.await.unwrap(), 201).await["password"].as_str().unwrap().to_string();
    let dav = Dav { s, user: u.identifier.clone(), password: pw };
    (u, dav)
}

fn vcard(uid: &str, name: &str, email: &str) -> String {
    format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nEMAIL;TYPE=work:{email}\r\nTEL:+1 555 0100\r\nEND:VCARD\r\n")
}

fn vevent(uid: &str, start: &str, end: &str, extra: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:Event {uid}\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n")
}

/// The hrefs of a multistatus body's responses with a 200 propstat or status.
fn hrefs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    for resp in xml.split("<d:response>").skip(1) {
        let href = resp.split("<d:href>").nth(1).unwrap().split("</d:href>").next().unwrap();
        if resp.contains("200 OK") {
            out.push(href.to_string());
        }
    }
    out.sort();
    out
}

fn removed(xml: &str) -> Vec<String> {
    xml.split("<d:response>")
        .skip(1)
        .filter(|r| r.contains("<d:status>HTTP/1.1 404"))
        .map(|r| r.split("<d:href>").nth(1).unwrap().split("</d:href>").next().unwrap().to_string())
        .collect()
}

fn token(xml: &str) -> String {
    xml.split("<d:sync-token>").last().unwrap().split("</d:sync-token>").next().unwrap().to_string()
}

const GETETAG: &str = r#"<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;

#[tokio::test]
async fn discovery_leads_from_well_known_to_the_collections() {
    let s = Server::start();
    let (_, dav) = dav_user(&s).await;
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (wk, home) in [("/.well-known/carddav", "/dav/contacts/"), ("/.well-known/caldav", "/dav/calendars/")] {
        let r = no_follow.request(Method::from_bytes(b"PROPFIND").unwrap(), s.url(wk)).send().await.unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], home);
    }
    let body = r#"<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:prop><d:current-user-principal/><c:calendar-home-set/><a:addressbook-home-set/></d:prop></d:propfind>"#;
    let home = dav.text("PROPFIND", "/dav/contacts/", &[("Depth", "0")], body, 207).await;
    assert!(home.contains("<d:current-user-principal><d:href>/dav/principal/</d:href>"), "{home}");
    let principal = dav.text("PROPFIND", "/dav/principal/", &[("Depth", "0")], body, 207).await;
    assert!(principal.contains("<cal:calendar-home-set><d:href>/dav/calendars/</d:href>"), "{principal}");
    assert!(principal.contains("<card:addressbook-home-set><d:href>/dav/contacts/</d:href>"), "{principal}");
    let listing = dav.text("PROPFIND", "/dav/calendars/", &[("Depth", "1")], "", 207).await;
    assert!(
        listing.contains("<d:href>/dav/calendars/default/</d:href>") && listing.contains("<cal:calendar/>"),
        "{listing}"
    );
    let r = dav.req("OPTIONS", "/dav/calendars/default/", &[], "").await;
    assert!(r.headers()["dav"].to_str().unwrap().contains("calendar-access"));

    let wrong = Dav { s: &s, user: dav.user.clone(), password: "not-it".into() };
    let r = wrong.req("PROPFIND", "/dav/principal/", &[("Depth", "0")], "").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let r = dav.req("PROPFIND", "/dav/calendars/", &[("Depth", "infinity")], "").await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn one_record_has_two_faces_with_shared_versions() {
    let s = Server::start();
    let (u, dav) = dav_user(&s).await;
    let card = vcard("jane-1", "Jane Doe", "jane@example.com");
    let r = dav.put("/dav/contacts/default/jane.vcf", &card, &[("If-None-Match", "*")]).await;
    assert_eq!(r.status(), 201);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();

    // The sync face: the vCard as given, the derived fields, the same version.
    let r = get_as(&s, &u.token, "/v1/sync/contacts/jane.vcf").await;
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    let rec = body_of(r, 200).await;
    assert_eq!(
        rec["payload"],
        json!({"vcard": card, "fn": "Jane Doe", "emails": ["jane@example.com"], "tels": ["+1 555 0100"]})
    );

    // Written through /v1/sync with a vCard: a DAV object; without one: not.
    let bob = vcard("bob-1", "Bob", "bob@example.com");
    let put = |id: &str, payload: Value| {
        s.client
            .put(s.url(&format!("/v1/sync/contacts/{id}")))
            .bearer_auth(&u.token)
            .json(&json!({"payload": payload}))
            .send()
    };
    body_of(put("bob", json!({"vcard": bob})).await.unwrap(), 200).await;
    body_of(put("note", json!({"text": "not a contact"})).await.unwrap(), 200).await;
    let listing = dav.text("PROPFIND", "/dav/contacts/default/", &[("Depth", "1")], GETETAG, 207).await;
    assert_eq!(
        hrefs(&listing),
        ["/dav/contacts/default/bob", "/dav/contacts/default/jane.vcf"],
        "the collection has no ETag"
    );
    let got = dav.req("GET", "/dav/contacts/default/bob", &[], "").await;
    assert_eq!(got.status(), 200);
    assert!(got.headers()["content-type"].to_str().unwrap().starts_with("text/vcard"));
    assert_eq!(got.text().await.unwrap(), bob);
    assert_eq!(dav.req("GET", "/dav/contacts/default/note", &[], "").await.status(), 404);

    // Conflicts are the sync API's: a stale ETag, or If-None-Match on an existing object.
    let edited = vcard("jane-1", "Jane Roe", "jane@example.com");
    let r = dav.put("/dav/contacts/default/jane.vcf", &edited, &[("If-Match", &etag)]).await;
    assert_eq!(r.status(), 204);
    let new_etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, etag);
    assert_eq!(dav.put("/dav/contacts/default/jane.vcf", &card, &[("If-Match", &etag)]).await.status(), 412);
    assert_eq!(dav.put("/dav/contacts/default/jane.vcf", &card, &[("If-None-Match", "*")]).await.status(), 412);
    let r = s.client.put(s.url("/v1/sync/contacts/jane.vcf")).bearer_auth(&u.token).header("If-Match", &etag);
    assert_eq!(r.json(&json!({"payload": {"vcard": card}})).send().await.unwrap().status(), 412);
    let rec = body_of(get_as(&s, &u.token, "/v1/sync/contacts/jane.vcf").await, 200).await;
    assert_eq!(rec["payload"]["fn"], "Jane Roe");

    // DELETE with a stale ETag fails; with the current one it leaves a tombstone in the feed.
    assert_eq!(dav.req("DELETE", "/dav/contacts/default/jane.vcf", &[("If-Match", &etag)], "").await.status(), 412);
    assert_eq!(dav.req("DELETE", "/dav/contacts/default/jane.vcf", &[("If-Match", &new_etag)], "").await.status(), 204);
    let feed = body_of(get_as(&s, &u.token, "/v1/sync/contacts?since=0").await, 200).await;
    let jane = feed["records"].as_array().unwrap().iter().find(|r| r["id"] == "jane.vcf").unwrap().clone();
    assert_eq!(jane["deleted"], true);
    assert_eq!(dav.req("GET", "/dav/contacts/default/jane.vcf", &[], "").await.status(), 404);

    // Calendar objects: the same, with their own derived fields.
    let ev = vevent("ev-1", "20261202T100000Z", "20261202T110000Z", "");
    assert_eq!(dav.put("/dav/calendars/default/ev-1.ics", &ev, &[]).await.status(), 201);
    let rec = body_of(get_as(&s, &u.token, "/v1/sync/calendar/ev-1.ics").await, 200).await;
    assert_eq!(
        rec["payload"],
        json!({"ical": ev, "uid": "ev-1", "summary": "Event ev-1", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T11:00:00Z"})
    );
    s.fsck_ok().await;
}

#[tokio::test]
async fn bad_input_is_refused_whole_and_the_server_stays_up() {
    let s = Server::start();
    let (u, dav) = dav_user(&s).await;
    let bad_card = dav.req("PUT", "/dav/contacts/default/x.vcf", &[], "BEGIN:VCARD\r\nFN:no version\r\n").await;
    assert_eq!(bad_card.status(), 400);
    assert!(bad_card.text().await.unwrap().contains("valid-address-data"));
    let no_uid =
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nDTSTART:20261202T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let bad_cal = dav.req("PUT", "/dav/calendars/default/x.ics", &[], no_uid).await;
    assert_eq!(bad_cal.status(), 400);
    assert!(bad_cal.text().await.unwrap().contains("valid-calendar-data"));
    let a_card_in_a_calendar = dav.req("PUT", "/dav/calendars/default/y.ics", &[], &vcard("c", "C", "c@d.e")).await;
    assert_eq!(a_card_in_a_calendar.status(), 400);
    let not_utf8 = s
        .client
        .put(s.url("/dav/contacts/default/z.vcf"))
        .basic_auth(&dav.user, Some(&dav.password))
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(not_utf8.status(), 400);

    // Over the object limit (128 KiB): 413 with max-resource-size.
    let big =
        format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:big\r\nFN:Big\r\nNOTE:{}\r\nEND:VCARD\r\n", "x".repeat(200 * 1024));
    let r = dav.req("PUT", "/dav/contacts/default/big.vcf", &[], &big).await;
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("max-resource-size"));

    // Two objects with one UID in one collection: no-uid-conflict names the holder.
    assert_eq!(dav.put("/dav/contacts/default/a.vcf", &vcard("same", "A", "a@x.y"), &[]).await.status(), 201);
    let r = dav.put("/dav/contacts/default/b.vcf", &vcard("same", "B", "b@x.y"), &[]).await;
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("no-uid-conflict") && text.contains("a.vcf"), "{text}");
    let ev = vevent("same-ev", "20261202T100000Z", "20261202T110000Z", "");
    assert_eq!(dav.put("/dav/calendars/default/1.ics", &ev, &[]).await.status(), 201);
    assert_eq!(dav.put("/dav/calendars/default/2.ics", &ev, &[]).await.status(), 409);
    assert_eq!(dav.put("/dav/calendars/default/1.ics", &ev, &[]).await.status(), 204, "its own UID is no conflict");

    // REPORTs and XML: unknown, malformed, bombs, too deep, too big.
    let unknown = r#"<x:whatever xmlns:x="urn:example"/>"#;
    let r = dav.req("REPORT", "/dav/calendars/default/", &[], unknown).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("supported-report"));
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><d:propfind xmlns:d="DAV:"><d:prop>&c;</d:prop></d:propfind>"#;
    assert_eq!(dav.req("PROPFIND", "/dav/contacts/default/", &[("Depth", "1")], bomb).await.status(), 400);
    let external = r#"<?xml version="1.0"?><!DOCTYPE d SYSTEM "file:///etc/passwd"><d:propfind xmlns:d="DAV:"/>"#;
    assert_eq!(dav.req("PROPFIND", "/dav/contacts/default/", &[], external).await.status(), 400);
    let deep = "<d:propfind xmlns:d=\"DAV:\">".to_string()
        + &"<d:prop>".repeat(100_000)
        + &"</d:prop>".repeat(100_000)
        + "</d:propfind>";
    assert_eq!(dav.req("PROPFIND", "/dav/contacts/default/", &[], &deep).await.status(), 400);
    let huge = "<d:propfind xmlns:d=\"DAV:\"><d:prop>".to_string()
        + &"<d:getetag/>".repeat(400_000)
        + "</d:prop></d:propfind>";
    // Over 4 MiB: 413, or the connection closed under a client still sending (the server answers
    // before reading the rest, and closes).
    let r = s.client.request(Method::from_bytes(b"PROPFIND").unwrap(), s.url("/dav/contacts/default/"));
    match r.basic_auth(&dav.user, Some(&dav.password)).body(huge).send().await {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    assert_eq!(dav.req("REPORT", "/dav/contacts/default/", &[], "<not xml").await.status(), 400);
    let bad_range = r#"<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"><c:time-range start="yesterday"/></c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"#;
    assert_eq!(dav.req("REPORT", "/dav/calendars/default/", &[], bad_range).await.status(), 400);
    let bad_token = r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>http://elsewhere/1</d:sync-token><d:sync-level>1</d:sync-level><d:prop/></d:sync-collection>"#;
    let r = dav.req("REPORT", "/dav/calendars/default/", &[], bad_token).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("valid-sync-token"));

    // Nothing half-stored: only the two good contacts and one event.
    let feed = body_of(get_as(&s, &u.token, "/v1/sync").await, 200).await;
    assert_eq!(feed["collections"]["contacts"]["count"], 1);
    assert_eq!(feed["collections"]["calendar"]["count"], 1);
    assert_eq!(s.client.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    s.fsck_ok().await;
}

#[tokio::test]
async fn another_accounts_objects_are_not_found() {
    let s = Server::start();
    let (_, alice) = dav_user(&s).await;
    let (_, bob) = dav_user(&s).await;
    let card = vcard("a-1", "Alice", "alice@example.com");
    assert_eq!(alice.put("/dav/contacts/default/a.vcf", &card, &[]).await.status(), 201);
    assert_eq!(alice.text("MKCALENDAR", "/dav/calendars/private/", &[], "", 201).await, "");
    assert_eq!(bob.req("GET", "/dav/contacts/default/a.vcf", &[], "").await.status(), 404);
    assert_eq!(bob.req("DELETE", "/dav/contacts/default/a.vcf", &[], "").await.status(), 404);
    assert_eq!(bob.req("PROPFIND", "/dav/calendars/private/", &[("Depth", "0")], "").await.status(), 404);
    let multiget = r#"<a:addressbook-multiget xmlns:d="DAV:" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/></d:prop><d:href>/dav/contacts/default/a.vcf</d:href></a:addressbook-multiget>"#;
    let r = bob.text("REPORT", "/dav/contacts/default/", &[], multiget, 207).await;
    assert!(r.contains("404 Not Found") && !r.contains("Alice"), "{r}");
    let listing = bob.text("PROPFIND", "/dav/contacts/default/", &[("Depth", "1")], GETETAG, 207).await;
    assert_eq!(hrefs(&listing), Vec::<String>::new());
    assert_eq!(alice.req("GET", "/dav/contacts/default/a.vcf", &[], "").await.status(), 200);
}

#[tokio::test]
async fn queries_match_text_and_time_ranges_with_recurrences_expanded() {
    let s = Server::start();
    let (_, dav) = dav_user(&s).await;
    for (id, name, mail) in
        [("1", "Jane Doe", "jane@example.com"), ("2", "John Smith", "js@example.org"), ("3", "Ann Lee", "ann@lee.net")]
    {
        assert_eq!(
            dav.put(&format!("/dav/contacts/default/{id}.vcf"), &vcard(id, name, mail), &[]).await.status(),
            201
        );
    }
    let query = |filter: &str| {
        format!(
            r#"<a:addressbook-query xmlns:d="DAV:" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><a:address-data/></d:prop>{filter}</a:addressbook-query>"#
        )
    };
    let by_fn = query(
        r#"<a:filter><a:prop-filter name="FN"><a:text-match match-type="contains">doe</a:text-match></a:prop-filter></a:filter>"#,
    );
    let r = dav.text("REPORT", "/dav/contacts/default/", &[("Depth", "1")], &by_fn, 207).await;
    assert_eq!(hrefs(&r), ["/dav/contacts/default/1.vcf"]);
    assert!(r.contains("FN:Jane Doe"), "address-data is returned: {r}");
    let either = query(
        r#"<a:filter test="anyof"><a:prop-filter name="EMAIL"><a:text-match match-type="ends-with">.org</a:text-match></a:prop-filter><a:prop-filter name="FN"><a:text-match match-type="starts-with">ann</a:text-match></a:prop-filter></a:filter>"#,
    );
    let r = dav.text("REPORT", "/dav/contacts/default/", &[("Depth", "1")], &either, 207).await;
    assert_eq!(hrefs(&r), ["/dav/contacts/default/2.vcf", "/dav/contacts/default/3.vcf"]);
    let limited = query(r#"<a:limit><a:nresults>1</a:nresults></a:limit>"#);
    let r = dav.text("REPORT", "/dav/contacts/default/", &[("Depth", "1")], &limited, 207).await;
    assert_eq!(hrefs(&r).len(), 1);
    assert!(r.contains("507") && r.contains("number-of-matches-within-limits"), "{r}");

    let weekly = "RRULE:FREQ=WEEKLY;BYDAY=MO\r\n";
    let events = [
        ("once", vevent("once", "20261202T100000Z", "20261202T110000Z", "")),
        ("weekly", vevent("weekly", "20260105T090000Z", "20260105T100000Z", weekly)),
        ("later", vevent("later", "20270101T100000Z", "20270101T110000Z", "")),
    ];
    for (id, ev) in &events {
        assert_eq!(dav.put(&format!("/dav/calendars/default/{id}.ics"), ev, &[]).await.status(), 201);
    }
    let todo = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VTODO\r\nUID:todo\r\nSUMMARY:Buy milk\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    assert_eq!(dav.put("/dav/calendars/default/todo.ics", todo, &[]).await.status(), 201);
    let range = |comp: &str, start: &str, end: &str| {
        format!(
            r#"<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/></d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="{comp}"><c:time-range start="{start}" end="{end}"/></c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"#
        )
    };
    let week = dav
        .text(
            "REPORT",
            "/dav/calendars/default/",
            &[("Depth", "1")],
            &range("VEVENT", "20261201T000000Z", "20261208T000000Z"),
            207,
        )
        .await;
    assert_eq!(hrefs(&week), ["/dav/calendars/default/once.ics", "/dav/calendars/default/weekly.ics"]);
    let tuesday = dav
        .text(
            "REPORT",
            "/dav/calendars/default/",
            &[("Depth", "1")],
            &range("VEVENT", "20261208T000000Z", "20261209T000000Z"),
            207,
        )
        .await;
    assert_eq!(hrefs(&tuesday), Vec::<String>::new(), "no instance of the Monday event on a Tuesday");
    let next_year = dav
        .text(
            "REPORT",
            "/dav/calendars/default/",
            &[("Depth", "1")],
            &range("VEVENT", "20270101T000000Z", "20270102T000000Z"),
            207,
        )
        .await;
    assert_eq!(hrefs(&next_year), ["/dav/calendars/default/later.ics"]);
    let todos = dav
        .text(
            "REPORT",
            "/dav/calendars/default/",
            &[("Depth", "1")],
            &range("VTODO", "20261201T000000Z", "20261208T000000Z"),
            207,
        )
        .await;
    assert_eq!(hrefs(&todos), ["/dav/calendars/default/todo.ics"], "a VTODO without dates matches any range");
    let free_busy = r#"<c:free-busy-query xmlns:c="urn:ietf:params:xml:ns:caldav"><c:time-range start="20261201T000000Z" end="20261215T000000Z"/></c:free-busy-query>"#;
    let r = dav.req("REPORT", "/dav/calendars/default/", &[("Depth", "1")], free_busy).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/calendar"));
    let fb = r.text().await.unwrap();
    let periods: Vec<&str> = fb.lines().filter_map(|l| l.strip_prefix("FREEBUSY;FBTYPE=BUSY:")).collect();
    assert_eq!(
        periods,
        ["20261202T100000Z/20261202T110000Z", "20261207T090000Z/20261207T100000Z", "20261214T090000Z/20261214T100000Z"],
        "{fb}"
    );
    let multiget = r#"<c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:calendar-data/></d:prop><d:href>/dav/calendars/default/once.ics</d:href><d:href>/dav/calendars/default/missing.ics</d:href></c:calendar-multiget>"#;
    let r = dav.text("REPORT", "/dav/calendars/default/", &[("Depth", "1")], multiget, 207).await;
    assert_eq!(hrefs(&r), ["/dav/calendars/default/once.ics"]);
    assert_eq!(removed(&r), ["/dav/calendars/default/missing.ics"]);
    assert!(r.contains("UID:once"));
}

fn sync_report(token: &str, limit: Option<usize>) -> String {
    let limit = limit.map(|n| format!("<d:limit><d:nresults>{n}</d:nresults></d:limit>")).unwrap_or_default();
    format!(
        r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>{limit}<d:prop><d:getetag/></d:prop></d:sync-collection>"#
    )
}

#[tokio::test]
async fn sync_collection_pages_reports_deletions_and_refuses_purged_tokens() {
    let (s, _tmp) = start_configured("test_clock = true\ntombstone_retention_secs = 3600\nsweep_secs = 1\n");
    let (u, dav) = dav_user(&s).await;
    for i in 0..5 {
        assert_eq!(
            dav.put(&format!("/dav/contacts/default/{i}.vcf"), &vcard(&i.to_string(), "N", "n@x.y"), &[])
                .await
                .status(),
            201
        );
    }
    let all = dav.text("REPORT", "/dav/contacts/default/", &[], &sync_report("", None), 207).await;
    assert_eq!(hrefs(&all).len(), 5);
    let t0 = token(&all);
    let ctag = dav.text("PROPFIND", "/dav/contacts/default/", &[("Depth", "0")], r#"<d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:sync-token/><cs:getctag/></d:prop></d:propfind>"#, 207).await;
    assert!(ctag.contains(&format!("<d:sync-token>{t0}</d:sync-token>")), "{ctag}");

    // Paging: 2 at a time, each page says there is more (507) and hands a token on.
    let mut seen = Vec::new();
    let mut t = String::new();
    for _ in 0..3 {
        let page = dav.text("REPORT", "/dav/contacts/default/", &[], &sync_report(&t, Some(2)), 207).await;
        seen.extend(hrefs(&page));
        t = token(&page);
        if !page.contains("number-of-matches-within-limits") {
            break;
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(t, t0);

    // A change through /v1/sync and a deletion over DAV show up after the token.
    let r = s.client.put(s.url("/v1/sync/contacts/1.vcf")).bearer_auth(&u.token);
    body_of(r.json(&json!({"payload": {"vcard": vcard("1", "Renamed", "n@x.y")}})).send().await.unwrap(), 200).await;
    assert_eq!(dav.req("DELETE", "/dav/contacts/default/2.vcf", &[], "").await.status(), 204);
    let delta = dav.text("REPORT", "/dav/contacts/default/", &[], &sync_report(&t0, None), 207).await;
    assert_eq!(hrefs(&delta), ["/dav/contacts/default/1.vcf"]);
    assert_eq!(removed(&delta), ["/dav/contacts/default/2.vcf"]);

    // Once the tombstone is purged, a token from before it must resync.
    s.advance_clock(3600).await;
    s.wait_for_metric("cairn_swept_total{what=\"tombstones\"}", |n| n >= 1.0).await;
    let r = dav.req("REPORT", "/dav/contacts/default/", &[], &sync_report(&t0, None)).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("valid-sync-token"));
    let fresh = dav.text("REPORT", "/dav/contacts/default/", &[], &sync_report("", None), 207).await;
    assert_eq!(hrefs(&fresh).len(), 4);
}

#[tokio::test]
async fn address_books_and_calendars_are_made_patched_and_removed() {
    let s = Server::start();
    let (u, dav) = dav_user(&s).await;
    let mkcol = r#"<d:mkcol xmlns:d="DAV:" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:set><d:prop><d:resourcetype><d:collection/><a:addressbook/></d:resourcetype><d:displayname>Work</d:displayname></d:prop></d:set></d:mkcol>"#;
    dav.text("MKCOL", "/dav/contacts/work/", &[], mkcol, 201).await;
    assert_eq!(dav.req("MKCOL", "/dav/contacts/work/", &[], mkcol).await.status(), 405, "it exists");
    let wrong_type = mkcol.replace("<a:addressbook/>", "");
    assert_eq!(dav.req("MKCOL", "/dav/contacts/plain/", &[], &wrong_type).await.status(), 403);
    let mkcal = r#"<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop><d:displayname>Team Events</d:displayname></d:prop></d:set></c:mkcalendar>"#;
    dav.text("MKCALENDAR", "/dav/calendars/Team-Events-1/", &[], mkcal, 201).await;
    assert_eq!(dav.req("MKCALENDAR", "/dav/contacts/nope/", &[], "").await.status(), 403);
    let todos_only = r#"<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop><c:supported-calendar-component-set><c:comp name="VTODO"/></c:supported-calendar-component-set></d:prop></d:set></c:mkcalendar>"#;
    dav.text("MKCALENDAR", "/dav/calendars/todos/", &[], todos_only, 201).await;
    let an_event = vevent("not-a-todo", "20261202T100000Z", "20261202T110000Z", "");
    let r = dav.put("/dav/calendars/todos/e.ics", &an_event, &[]).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("supported-calendar-component"));

    let books = dav.text("PROPFIND", "/dav/contacts/", &[("Depth", "1")], "", 207).await;
    assert!(
        books.contains("<d:href>/dav/contacts/work/</d:href>") && books.contains("<d:displayname>Work</d:displayname>"),
        "{books}"
    );
    let patch = r#"<d:propertyupdate xmlns:d="DAV:" xmlns:i="http://apple.com/ns/ical/"><d:set><d:prop><d:displayname>Team</d:displayname><i:calendar-color>#ff0000</i:calendar-color></d:prop></d:set></d:propertyupdate>"#;
    let r = dav.text("PROPPATCH", "/dav/calendars/Team-Events-1/", &[], patch, 207).await;
    assert!(r.contains("200 OK") && !r.contains("403"), "{r}");
    let unknown = r#"<d:propertyupdate xmlns:d="DAV:" xmlns:x="urn:x"><d:set><d:prop><d:displayname>Other</d:displayname><x:thing>1</x:thing></d:prop></d:set></d:propertyupdate>"#;
    let r = dav.text("PROPPATCH", "/dav/calendars/Team-Events-1/", &[], unknown, 207).await;
    assert!(r.contains("403 Forbidden") && r.contains("424 Failed Dependency"), "{r}");
    let cals = dav.text("PROPFIND", "/dav/calendars/", &[("Depth", "1")], "<d:propfind xmlns:d=\"DAV:\" xmlns:i=\"http://apple.com/ns/ical/\"><d:prop><d:displayname/><i:calendar-color/></d:prop></d:propfind>", 207).await;
    assert!(
        cals.contains("<d:displayname>Team</d:displayname>") && cals.contains("#ff0000"),
        "nothing of the refused PROPPATCH landed: {cals}"
    );

    // Objects of an extra collection are records of its own sync collection.
    let ev = vevent("team-1", "20261202T100000Z", "20261202T110000Z", "");
    assert_eq!(dav.put("/dav/calendars/Team-Events-1/t.ics", &ev, &[]).await.status(), 201);
    assert_eq!(dav.put("/dav/calendars/missing/t.ics", &ev, &[]).await.status(), 409);
    let summary = body_of(get_as(&s, &u.token, "/v1/sync").await, 200).await;
    let names: Vec<&String> = summary["collections"].as_object().unwrap().keys().collect();
    let team = names.iter().find(|n| n.starts_with("calendar_")).unwrap().to_string();
    assert_eq!(summary["collections"][&team]["count"], 1, "{summary}");
    assert_eq!(summary["collections"]["calendar"], Value::Null, "the default calendar is untouched");

    assert_eq!(dav.req("DELETE", "/dav/calendars/default/", &[], "").await.status(), 403, "the default stays");
    assert_eq!(dav.req("DELETE", "/dav/calendars/Team-Events-1/", &[], "").await.status(), 204);
    assert_eq!(dav.req("PROPFIND", "/dav/calendars/Team-Events-1/", &[("Depth", "0")], "").await.status(), 404);
    let summary = body_of(get_as(&s, &u.token, "/v1/sync").await, 200).await;
    assert_eq!(summary["collections"][&team]["count"], 0, "{summary}");
}

#[tokio::test]
async fn quota_is_shared_with_the_sync_api() {
    let (s, _tmp) = start_configured("[plans]\nfree = \"20KiB\"\n");
    let (u, dav) = dav_user(&s).await;
    let mut refused = None;
    for i in 0..100 {
        let card = vcard(&format!("q{i}"), &"N".repeat(500), "q@x.y");
        let r = dav.put(&format!("/dav/contacts/default/q{i}.vcf"), &card, &[]).await;
        if r.status() != StatusCode::CREATED {
            refused = Some((i, r.status()));
            break;
        }
    }
    let (i, status) = refused.expect("the plan's limit is reached");
    assert_eq!(status, 507);
    let quota = body_of(get_as(&s, &u.token, "/v1/quota").await, 200).await;
    assert!(quota["used"].as_u64().unwrap() <= 20 * 1024, "{quota}");
    let feed = body_of(get_as(&s, &u.token, "/v1/sync").await, 200).await;
    assert_eq!(feed["collections"]["contacts"]["count"], i);
}
