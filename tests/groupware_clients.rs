//! Contacts and calendars with the third-party clients people use, against the real server
//! with an app password: the Python `caldav` library (tests/clients/caldav_scenario.py),
//! `vdirsyncer` syncing local folders both ways, and `caldav-server-tester`'s report. All are
//! installed by `tools/setup` from PyPI.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::identity::*;
use common::*;
use serde_json::{json, Value};

async fn app_password(s: &Server, u: &User) -> String {
    let r = s.client.post(s.url("/v1/app-passwords")).bearer_auth(&u.token).json(&json!({"name": "client"})).send();
    body_of(r.await.unwrap(), 201).await["password"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_caldav_library_creates_queries_updates_and_deletes() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let pw = app_password(&s, &u).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/caldav_scenario.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(s.url("/dav/calendars/"))
        .arg(&u.identifier)
        .arg(&pw)
        .output()
        .expect("python3 runs (tools/setup installs caldav)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.trim() == "OK", "{stdout}\n{stderr}");
    s.fsck_ok().await;
}

fn vdirsyncer(config: &Path, args: &[&str]) -> String {
    let mut child = Command::new("vdirsyncer")
        .args(args)
        .env("VDIRSYNCER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vdirsyncer runs (tools/setup installs it)");
    // `discover` asks whether to create the local collections.
    child.stdin.take().unwrap().write_all(&b"y\n".repeat(8)).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "vdirsyncer {args:?}: {text}");
    text
}

fn vcard(uid: &str, name: &str) -> String {
    format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nEMAIL:{uid}@example.com\r\nEND:VCARD\r\n")
}

fn vevent(uid: &str, summary: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20261202T100000Z\r\nDTEND:20261202T110000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
}

/// The local file holding `uid`, if any.
fn local_file(dir: &Path, uid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).unwrap().contains(&format!("UID:{uid}")))
}

/// The live record of `collection` whose DAV text holds `uid`: its id and payload.
async fn record_with(s: &Server, u: &User, collection: &str, uid: &str) -> Option<(String, Value)> {
    let feed = body_of(get_as(s, &u.token, &format!("/v1/sync/{collection}?since=0")).await, 200).await;
    feed["records"].as_array().unwrap().iter().find_map(|r| {
        let text = r["payload"]["vcard"].as_str().or(r["payload"]["ical"].as_str())?;
        (r["deleted"] == false && text.contains(&format!("UID:{uid}")))
            .then(|| (r["id"].as_str().unwrap().to_string(), r["payload"].clone()))
    })
}

#[tokio::test]
async fn vdirsyncer_syncs_contacts_and_events_both_ways() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let pw = app_password(&s, &u).await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut config = format!("[general]\nstatus_path = \"{}/status/\"\n", root.display());
    for (pair, local_type, remote_type, ext) in
        [("contacts", "filesystem", "carddav", ".vcf"), ("calendars", "filesystem", "caldav", ".ics")]
    {
        config.push_str(&format!(
            "[pair {pair}]\na = \"{pair}_local\"\nb = \"{pair}_remote\"\ncollections = [\"from b\"]\n\
             [storage {pair}_local]\ntype = \"{local_type}\"\npath = \"{}/{pair}/\"\nfileext = \"{ext}\"\n\
             [storage {pair}_remote]\ntype = \"{remote_type}\"\nurl = \"{}\"\nusername = \"{}\"\npassword = \"{pw}\"\n",
            root.display(),
            s.url("/"),
            u.identifier
        ));
    }
    let cfg = root.join("config");
    std::fs::write(&cfg, config).unwrap();
    let discovered = vdirsyncer(&cfg, &["discover"]);
    assert!(discovered.contains("\"default\""), "discovery through /.well-known finds the defaults: {discovered}");
    let (contacts, calendars) = (root.join("contacts/default"), root.join("calendars/default"));

    // One new item on each side, of each kind.
    std::fs::write(contacts.join("local-1.vcf"), vcard("local-1", "Local One")).unwrap();
    std::fs::write(calendars.join("local-ev.ics"), vevent("local-ev", "Local event")).unwrap();
    let put = s.client.put(s.url("/v1/sync/contacts/remote-1")).bearer_auth(&u.token);
    body_of(put.json(&json!({"payload": {"vcard": vcard("remote-1", "Remote One")}})).send().await.unwrap(), 200).await;
    let dav_put = s.client.put(s.url("/dav/calendars/default/remote-ev.ics")).basic_auth(&u.identifier, Some(&pw));
    assert_eq!(dav_put.body(vevent("remote-ev", "Remote event")).send().await.unwrap().status(), 201);
    vdirsyncer(&cfg, &["sync"]);
    let (local_id, payload) = record_with(&s, &u, "contacts", "local-1").await.expect("uploaded");
    assert_eq!(payload["fn"], "Local One");
    assert!(record_with(&s, &u, "calendar", "local-ev").await.is_some());
    let remote_card = local_file(&contacts, "remote-1").expect("downloaded");
    assert!(local_file(&calendars, "remote-ev").is_some());

    // An edit on each side.
    std::fs::write(&remote_card, vcard("remote-1", "Remote One, edited locally")).unwrap();
    let put = s.client.put(s.url(&format!("/v1/sync/contacts/{local_id}"))).bearer_auth(&u.token);
    body_of(
        put.json(&json!({"payload": {"vcard": vcard("local-1", "Local One, edited remotely")}})).send().await.unwrap(),
        200,
    )
    .await;
    vdirsyncer(&cfg, &["sync"]);
    let (_, payload) = record_with(&s, &u, "contacts", "remote-1").await.unwrap();
    assert_eq!(payload["fn"], "Remote One, edited locally");
    let local = std::fs::read_to_string(local_file(&contacts, "local-1").unwrap()).unwrap();
    assert!(local.contains("FN:Local One, edited remotely"), "{local}");

    // A deletion on each side.
    std::fs::remove_file(local_file(&calendars, "local-ev").unwrap()).unwrap();
    let del = s.client.delete(s.url("/dav/calendars/default/remote-ev.ics")).basic_auth(&u.identifier, Some(&pw));
    assert_eq!(del.send().await.unwrap().status(), 204);
    vdirsyncer(&cfg, &["sync"]);
    assert!(record_with(&s, &u, "calendar", "local-ev").await.is_none(), "deleted on the server");
    assert!(local_file(&calendars, "remote-ev").is_none(), "deleted locally");
    assert!(record_with(&s, &u, "contacts", "local-1").await.is_some() && local_file(&contacts, "remote-1").is_some());
    s.fsck_ok().await;
}

/// caldav-server-tester's findings against cairn, as docs/API.md lists them: every feature it
/// checks, and how well cairn supports it. A change in either direction fails here, so the
/// list in the docs stays true.
#[tokio::test]
async fn caldav_server_tester_reports_what_the_docs_say() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let pw = app_password(&s, &u).await;
    let out = Command::new("caldav-server-tester")
        .args(["--caldav-url", &s.url("/dav/calendars/"), "--caldav-username", &u.identifier, "--caldav-password", &pw])
        .args(["--format", "json"])
        .output()
        .expect("caldav-server-tester runs (tools/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    let mut found: Vec<(String, String)> = report["features"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["support"].as_str().unwrap_or("-").to_string()))
        .collect();
    found.sort();
    let expected: Vec<(String, String)> =
        EXPECTED_FINDINGS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(found, expected, "{}", serde_json::to_string_pretty(&report).unwrap());
    s.fsck_ok().await;
}

/// The tester's findings (docs/API.md, "Conformance").
const EXPECTED_FINDINGS: &[(&str, &str)] = &[
    ("auth.www-authenticate", "full"),
    ("auth.www-authenticate.usable-scheme", "full"),
    ("calendar-color", "full"),
    ("calendar-color.name", "full"),
    ("calendar-order", "full"),
    ("principal-search", "unsupported"),
    ("save.no-uid-conflict", "full"),
    ("scheduling", "unsupported"),
    ("search.recurrences.expanded", "unsupported"),
    ("search.text.comp-type-optional", "unsupported"),
    ("search.time-range.alarm", "unsupported"),
    ("search.time-range.comp-type-optional", "full"),
    ("synchronous-write", "full"),
    ("url.encode-at.encoded", "unknown"),
    ("url.encode-at.identity", "unknown"),
    ("url.encode-at.literal.collection", "unknown"),
    ("url.encode-at.literal.object", "unknown"),
    ("url.encode-at.literal.principal", "unknown"),
    ("well-known", "unknown"),
];
