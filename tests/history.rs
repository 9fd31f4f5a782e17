//! The trash and old versions of drive files (issue 19), through HTTP against the real server,
//! with the server's clock moved by the test.

mod common;

use common::identity::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const DAY: u64 = 24 * 3600;
const CONFIG: &str = "test_clock = true\nsweep_secs = 1\n[plans]\nfree = \"4MiB\"\n[drive]\ntrash_days = 30\n";

async fn call(s: &Server, u: &User, method: Method, path: &str, body: Option<Vec<u8>>) -> reqwest::Response {
    let mut r = s.client.request(method, s.url(path)).bearer_auth(&u.token);
    if let Some(b) = body {
        r = r.body(b);
    }
    r.send().await.unwrap()
}

async fn put(s: &Server, u: &User, path: &str, body: Vec<u8>) -> Value {
    let r = call(s, u, Method::PUT, &format!("/v1/files/{path}"), Some(body)).await;
    let status = r.status().as_u16();
    assert!(status == 200 || status == 201, "PUT {path}: {status} {}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn read(s: &Server, u: &User, path: &str) -> reqwest::Response {
    call(s, u, Method::GET, &format!("/v1/files/{path}"), None).await
}

async fn trash(s: &Server, u: &User) -> Vec<Value> {
    body_of(get_as(s, &u.token, "/v1/trash").await, 200).await["items"].as_array().unwrap().clone()
}

async fn quota(s: &Server, u: &User) -> Value {
    body_of(get_as(s, &u.token, "/v1/quota").await, 200).await
}

#[tokio::test]
async fn a_deleted_file_waits_in_the_trash_and_comes_back_byte_identical() {
    let (s, _tmp) = start_configured(CONFIG);
    let (u, other) = (signed_in(&s).await, signed_in(&s).await);
    let data = noise(300_000, 1);
    let written = put(&s, &u, "photos/cat.jpg", data.clone()).await;
    assert_eq!(call(&s, &u, Method::DELETE, "/v1/files/photos/cat.jpg", None).await.status(), 204);
    assert_eq!(read(&s, &u, "photos/cat.jpg").await.status(), 404);

    let items = trash(&s, &u).await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!((item["path"].as_str(), item["size"].as_u64()), (Some("photos/cat.jpg"), Some(300_000)));
    assert_eq!(item["device_id"], u.device_id.as_str());
    assert_eq!(item["version"], written["version"]);
    let q = quota(&s, &u).await;
    assert_eq!((q["services"]["drive"].as_u64(), q["services"]["trash"].as_u64()), (Some(0), Some(300_000)));
    assert!(q["used"].as_u64().unwrap() >= 300_000, "the trash holds its chunks: {q}");

    // Another account sees nothing of it, and cannot restore or purge it.
    assert!(trash(&s, &other).await.is_empty());
    let id = item["id"].as_str().unwrap();
    let restore = format!("/v1/trash/{id}/restore");
    assert_eq!(error_code(call(&s, &other, Method::POST, &restore, None).await, 404).await, "not_found");
    assert_eq!(call(&s, &other, Method::DELETE, &format!("/v1/trash/{id}"), None).await.status(), 404);

    // Its path taken meanwhile: 409, unless it goes back under a new path.
    put(&s, &u, "photos/cat.jpg", b"another cat".to_vec()).await;
    assert_eq!(error_code(call(&s, &u, Method::POST, &restore, None).await, 409).await, "conflict");
    let body = serde_json::to_vec(&json!({ "path": "photos/cat (restored).jpg" })).unwrap();
    let back = body_of(call(&s, &u, Method::POST, &restore, Some(body)).await, 200).await;
    assert_eq!(back["version"], written["version"], "the file comes back as it was");
    let got = read(&s, &u, "photos/cat%20(restored).jpg").await.bytes().await.unwrap();
    assert!(got == data, "restored bytes differ");
    assert!(trash(&s, &u).await.is_empty());
    s.fsck_ok().await;
}

#[tokio::test]
async fn overwrites_keep_old_versions_each_readable_and_restorable() {
    let (s, _tmp) = start_configured(CONFIG);
    let u = signed_in(&s).await;
    let mut versions = Vec::new();
    for i in 0..6u64 {
        let v = put(&s, &u, "notes/todo.txt", format!("version {i}").into_bytes()).await;
        versions.push(v["version"].as_str().unwrap().to_string());
        s.advance_clock(60).await;
    }
    let listed = body_of(read(&s, &u, "notes/todo.txt?versions").await, 200).await;
    let kept: Vec<&str> =
        listed["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = versions[..5].iter().map(String::as_str).collect();
    expected.reverse();
    assert_eq!(kept, expected, "five old versions, newest first");
    for (i, v) in versions.iter().enumerate() {
        let r = read(&s, &u, &format!("notes/todo.txt?version={v}")).await;
        assert_eq!(r.headers()["etag"], format!("\"{v}\"").as_str());
        assert_eq!(r.bytes().await.unwrap(), format!("version {i}").as_bytes());
    }
    // Version 1 live again, as a new version; version 5 joins the kept ones.
    let path = format!("/v1/files/notes/todo.txt?restore-version={}", versions[1]);
    let restored = body_of(call(&s, &u, Method::POST, &path, None).await, 200).await;
    assert!(!versions.contains(&restored["version"].as_str().unwrap().to_string()));
    assert_eq!(read(&s, &u, "notes/todo.txt").await.bytes().await.unwrap(), "version 1".as_bytes());
    let q = quota(&s, &u).await;
    assert_eq!(q["services"]["versions"].as_u64(), Some(6 * 9), "six kept versions of 9 bytes: {q}");
    // Bad asks: an unknown version, a version that is not a number, another account's file.
    assert_eq!(read(&s, &u, "notes/todo.txt?version=12345").await.status(), 404);
    assert_eq!(error_code(read(&s, &u, "notes/todo.txt?version=abc").await, 400).await, "bad_version");
    let other = signed_in(&s).await;
    assert_eq!(read(&s, &other, &format!("notes/todo.txt?version={}", versions[0])).await.status(), 404);
    assert!(body_of(read(&s, &other, "notes/todo.txt?versions").await, 200).await["versions"]
        .as_array()
        .unwrap()
        .is_empty());
    s.fsck_ok().await;
}

#[tokio::test]
async fn old_versions_thin_out_with_age() {
    let (s, _tmp) = start_configured(CONFIG);
    let u = signed_in(&s).await;
    // Four versions on day 0, an hour apart; then a write 40 days later.
    for i in 0..4 {
        put(&s, &u, "a.txt", format!("day 0, hour {i}").into_bytes()).await;
        s.advance_clock(3600).await;
    }
    let kept = |v: Value| v["versions"].as_array().unwrap().len();
    assert_eq!(kept(body_of(read(&s, &u, "a.txt?versions").await, 200).await), 3);
    s.advance_clock(40 * DAY).await;
    let u = login(&s, &u.identifier, &u.password).await; // the session has lapsed meanwhile
    put(&s, &u, "a.txt", b"day 40".to_vec()).await;
    // Day 0's four are now in one weekly bucket: only its newest stays.
    let listed = body_of(read(&s, &u, "a.txt?versions").await, 200).await;
    assert_eq!(kept(listed.clone()), 1, "{listed}");
    let v = listed["versions"][0]["version"].as_str().unwrap();
    let r = read(&s, &u, &format!("a.txt?version={v}")).await;
    assert_eq!(r.bytes().await.unwrap(), "day 0, hour 3".as_bytes());
    s.fsck_ok().await;
}

#[tokio::test]
async fn the_trash_empties_itself_after_its_days_and_gc_reclaims_the_bytes() {
    let (s, _tmp) = start_configured(CONFIG);
    let u = signed_in(&s).await;
    put(&s, &u, "big.bin", noise(2 << 20, 7)).await;
    assert_eq!(call(&s, &u, Method::DELETE, "/v1/files/big.bin", None).await.status(), 204);
    s.advance_clock(30 * DAY - 1).await;
    s.housekeeping_pass().await;
    assert_eq!(trash(&s, &u).await.len(), 1, "a second before its time it is still there");
    s.advance_clock(1).await;
    s.wait_for_metric("cairn_swept_total{what=\"trash\"}", |n| n >= 1.0).await;
    assert!(trash(&s, &u).await.is_empty());
    let q = quota(&s, &u).await;
    assert_eq!(q["used"].as_u64().unwrap() - q["metadata"].as_u64().unwrap(), 0, "{q}");
    let gc = s.client.post(s.url("/admin/gc")).bearer_auth(ADMIN_TOKEN);
    let report =
        body_of(gc.json(&json!({ "grace_seconds": 0, "compact_below": 1.0 })).send().await.unwrap(), 200).await;
    assert!(report["bytes_freed"].as_u64().unwrap() >= 2 << 20, "{report}");
    s.fsck_ok().await;
}

#[tokio::test]
async fn quota_pressure_purges_trash_then_old_versions_before_refusing() {
    let (s, _tmp) = start_configured(CONFIG);
    let u = signed_in(&s).await;
    // 4 MiB quota: 1.5 MiB in the trash, 1 MiB kept as an old version, 1 MiB live.
    put(&s, &u, "old.bin", noise(1536 << 10, 1)).await;
    assert_eq!(call(&s, &u, Method::DELETE, "/v1/files/old.bin", None).await.status(), 204);
    put(&s, &u, "doc.bin", noise(1 << 20, 2)).await;
    put(&s, &u, "doc.bin", noise(1 << 20, 3)).await;
    // 1.5 MiB more fits only once the trash is gone; the old version stays.
    put(&s, &u, "new.bin", noise(1536 << 10, 4)).await;
    assert!(trash(&s, &u).await.is_empty(), "the trash went first");
    let kept = body_of(read(&s, &u, "doc.bin?versions").await, 200).await;
    assert_eq!(kept["versions"].as_array().unwrap().len(), 1, "the old version was not needed");
    // Another MiB takes the old version too.
    put(&s, &u, "more.bin", noise(1 << 20, 5)).await;
    let kept = body_of(read(&s, &u, "doc.bin?versions").await, 200).await;
    assert!(kept["versions"].as_array().unwrap().is_empty());
    // Nothing left to give: the next upload is refused, and live files are untouched.
    let r = call(&s, &u, Method::PUT, "/v1/files/too-much.bin", Some(noise(1 << 20, 6))).await;
    assert_eq!(error_code(r, 507).await, "quota_exceeded");
    for (path, seed, len) in [("doc.bin", 3, 1 << 20), ("new.bin", 4, 1536 << 10), ("more.bin", 5, 1 << 20)] {
        let got = read(&s, &u, path).await.bytes().await.unwrap();
        assert!(got == noise(len, seed), "{path} changed");
    }
    s.fsck_ok().await;
}

#[tokio::test]
async fn purging_one_or_all_and_bad_ids() {
    let (s, _tmp) = start_configured(CONFIG);
    let u = signed_in(&s).await;
    for name in ["a", "b", "c"] {
        put(&s, &u, name, name.as_bytes().to_vec()).await;
        assert_eq!(call(&s, &u, Method::DELETE, &format!("/v1/files/{name}"), None).await.status(), 204);
    }
    let items = trash(&s, &u).await;
    let paths: Vec<&str> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["c", "b", "a"], "newest deletion first");
    // Paging.
    let page = body_of(get_as(&s, &u.token, "/v1/trash?limit=2").await, 200).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let rest = body_of(get_as(&s, &u.token, &format!("/v1/trash?after={next}")).await, 200).await;
    assert_eq!(rest["items"][0]["path"], "a");
    assert!(rest["next"].is_null());
    assert_eq!(error_code(get_as(&s, &u.token, "/v1/trash?after=zz").await, 400).await, "bad_cursor");
    // One, then the rest.
    let id = items[1]["id"].as_str().unwrap();
    assert_eq!(call(&s, &u, Method::DELETE, &format!("/v1/trash/{id}"), None).await.status(), 204);
    assert_eq!(call(&s, &u, Method::DELETE, &format!("/v1/trash/{id}"), None).await.status(), 404);
    assert_eq!(call(&s, &u, Method::DELETE, "/v1/trash/not-an-id", None).await.status(), 404);
    let all = body_of(call(&s, &u, Method::DELETE, "/v1/trash", None).await, 200).await;
    assert_eq!(all["purged"], 2);
    assert!(trash(&s, &u).await.is_empty());
    let bad = call(&s, &u, Method::POST, &format!("/v1/trash/{id}/restore"), Some(b"{\"path\": 7}".to_vec())).await;
    assert_eq!(error_code(bad, 400).await, "bad_json");
    s.fsck_ok().await;
}

#[tokio::test]
async fn deleting_the_account_takes_its_trash_and_versions_and_gc_their_bytes() {
    let (s, _tmp) = start_configured(CONFIG);
    let u = signed_in(&s).await;
    put(&s, &u, "v.bin", noise(1 << 20, 1)).await;
    put(&s, &u, "v.bin", noise(1 << 20, 2)).await;
    put(&s, &u, "t.bin", noise(1 << 20, 3)).await;
    assert_eq!(call(&s, &u, Method::DELETE, "/v1/files/t.bin", None).await.status(), 204);
    let stats = || async {
        body_of(s.client.get(s.url("/admin/stats")).bearer_auth(ADMIN_TOKEN).send().await.unwrap(), 200).await
    };
    assert!(stats().await["logical_bytes"].as_u64().unwrap() >= 3 << 20);
    delete_account(&s, &u).await;
    assert_eq!(stats().await["logical_bytes"], 0);
    let gc = s.client.post(s.url("/admin/gc")).bearer_auth(ADMIN_TOKEN);
    let report =
        body_of(gc.json(&json!({ "grace_seconds": 0, "compact_below": 1.0 })).send().await.unwrap(), 200).await;
    assert!(report["bytes_freed"].as_u64().unwrap() >= 3 << 20, "{report}");
    s.fsck_ok().await;
}
