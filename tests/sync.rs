//! Sync records through HTTP against the real server: versions, the feed, batches, limits,
//! quota, tombstone purge, isolation and concurrency.

mod common;

use common::identity::*;
use common::*;
use serde_json::{json, Value};

async fn call(
    s: &Server,
    u: &User,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> reqwest::Response {
    let mut r = s.client.request(method, s.url(path)).bearer_auth(&u.token);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

use reqwest::Method;

#[tokio::test]
async fn records_versions_and_preconditions() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let put = |id: &str, payload: Value, headers: Vec<(&'static str, String)>| {
        let (s, u, id) = (&s, &u, id.to_string());
        async move {
            call(s, u, Method::PUT, &format!("/v1/sync/contacts/{id}"), Some(json!({ "payload": payload })), &headers)
                .await
        }
    };
    let v1 = body_of(put("c1", json!({"name": "Ann", "tel": "+4915112345678"}), vec![]).await, 200).await;
    assert_eq!(v1["id"], "c1");
    let ver1 = v1["version"].as_str().unwrap().to_string();
    let r = call(&s, &u, Method::GET, "/v1/sync/contacts/c1", None, &[]).await;
    assert_eq!(r.headers()["etag"], format!("\"{ver1}\""));
    let rec: Value = r.json().await.unwrap();
    assert_eq!(rec["payload"], json!({"name": "Ann", "tel": "+4915112345678"}));
    assert_eq!(rec["deleted"], false);
    let r = call(&s, &u, Method::GET, "/v1/sync/contacts/c1", None, &[("if-none-match", format!("\"{ver1}\""))]).await;
    assert_eq!(r.status(), 304);

    // If-Match with the current version wins; with an old one, 412 carries the current record.
    let v2 = body_of(put("c1", json!({"name": "Ann B"}), vec![("if-match", format!("\"{ver1}\""))]).await, 200).await;
    assert!(v2["seq"].as_u64() > v1["seq"].as_u64());
    let r = body_of(put("c1", json!({"name": "stale"}), vec![("if-match", format!("\"{ver1}\""))]).await, 412).await;
    assert_eq!(r["error"]["code"], "version_conflict");
    assert_eq!(r["error"]["current"]["payload"], json!({"name": "Ann B"}));
    assert_eq!(r["error"]["current"]["version"], v2["version"]);
    let r = body_of(put("c1", json!({}), vec![("if-none-match", "*".into())]).await, 412).await;
    assert_eq!(r["error"]["code"], "version_conflict");
    body_of(put("c2", json!({}), vec![("if-none-match", "*".into())]).await, 200).await;

    // Deletes leave tombstones: 404 to GET, 404 to a second DELETE, 412 on a stale If-Match.
    let ver2 = v2["version"].as_str().unwrap().to_string();
    let r = call(&s, &u, Method::DELETE, "/v1/sync/contacts/c1", None, &[("if-match", format!("\"{ver1}\""))]).await;
    assert_eq!(body_of(r, 412).await["error"]["code"], "version_conflict");
    let d = body_of(
        call(&s, &u, Method::DELETE, "/v1/sync/contacts/c1", None, &[("if-match", format!("\"{ver2}\""))]).await,
        200,
    )
    .await;
    assert!(d["seq"].as_u64() > v2["seq"].as_u64());
    assert_eq!(error_code(call(&s, &u, Method::GET, "/v1/sync/contacts/c1", None, &[]).await, 404).await, "not_found");
    assert_eq!(
        error_code(call(&s, &u, Method::DELETE, "/v1/sync/contacts/c1", None, &[]).await, 404).await,
        "not_found"
    );
    assert_eq!(
        error_code(call(&s, &u, Method::DELETE, "/v1/sync/contacts/never", None, &[]).await, 404).await,
        "not_found"
    );
    // A tombstone can be written over; If-None-Match: * treats it as absent.
    body_of(put("c1", json!({"back": true}), vec![("if-none-match", "*".into())]).await, 200).await;
}

#[tokio::test]
async fn limits_and_names() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let big = "x".repeat(256 * 1024);
    let r = call(&s, &u, Method::PUT, "/v1/sync/notes/n1", Some(json!({ "payload": big })), &[]).await;
    assert_eq!(error_code(r, 413).await, "payload_too_large");
    let fits = "x".repeat(256 * 1024 - 2); // the quotes make it exactly 256 KiB of JSON
    body_of(call(&s, &u, Method::PUT, "/v1/sync/notes/n1", Some(json!({ "payload": fits })), &[]).await, 200).await;
    for bad in ["Contacts", "1abc", "a-b", &"a".repeat(33)] {
        let r = call(&s, &u, Method::PUT, &format!("/v1/sync/{bad}/x"), Some(json!({ "payload": 1 })), &[]).await;
        assert_eq!(error_code(r, 400).await, "bad_collection", "{bad}");
    }
    body_of(
        call(&s, &u, Method::PUT, &format!("/v1/sync/{}/x", "a".repeat(32)), Some(json!({ "payload": 1 })), &[]).await,
        200,
    )
    .await;
    for bad in ["a%20b", "a%2Fb", &"i".repeat(65)] {
        let r = call(&s, &u, Method::PUT, &format!("/v1/sync/notes/{bad}"), Some(json!({ "payload": 1 })), &[]).await;
        assert_eq!(error_code(r, 400).await, "bad_id", "{bad}");
    }
    body_of(call(&s, &u, Method::PUT, "/v1/sync/notes/A.b_c~d-9", Some(json!({ "payload": 1 })), &[]).await, 200).await;
    let r = call(&s, &u, Method::PUT, "/v1/sync/notes/x", Some(json!({ "nopayload": 1 })), &[]).await;
    assert_eq!(r.status(), 400);
    let r = s.client.put(s.url("/v1/sync/notes/x")).bearer_auth(&u.token).body("{not json").send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_json");
}

#[tokio::test]
async fn feed_summary_and_batches() {
    let s = Server::start();
    let u = signed_in(&s).await;
    for i in 0..5 {
        body_of(
            call(&s, &u, Method::PUT, &format!("/v1/sync/calendar/e{i}"), Some(json!({ "payload": { "n": i } })), &[])
                .await,
            200,
        )
        .await;
    }
    body_of(
        call(&s, &u, Method::PUT, "/v1/sync/calendar/e1", Some(json!({ "payload": { "n": "updated" } })), &[]).await,
        200,
    )
    .await;
    body_of(call(&s, &u, Method::DELETE, "/v1/sync/calendar/e2", None, &[]).await, 200).await;
    body_of(call(&s, &u, Method::PUT, "/v1/sync/notes/other", Some(json!({ "payload": "x" })), &[]).await, 200).await;

    let f = body_of(call(&s, &u, Method::GET, "/v1/sync/calendar?since=0&limit=2", None, &[]).await, 200).await;
    assert_eq!(f["records"].as_array().unwrap().len(), 2);
    assert_eq!(f["more"], true);
    let mut ids = Vec::new();
    let mut since = 0;
    loop {
        let f = body_of(
            call(&s, &u, Method::GET, &format!("/v1/sync/calendar?since={since}&limit=2"), None, &[]).await,
            200,
        )
        .await;
        for r in f["records"].as_array().unwrap() {
            assert!(r["seq"].as_u64().unwrap() > since);
            ids.push((r["id"].as_str().unwrap().to_string(), r["deleted"].as_bool().unwrap()));
        }
        since = f["next"].as_u64().unwrap();
        if f["more"] == false {
            break;
        }
    }
    // Each record once, at its latest version, tombstones included, in seq order.
    assert_eq!(
        ids,
        vec![
            ("e0".into(), false),
            ("e3".into(), false),
            ("e4".into(), false),
            ("e1".into(), false),
            ("e2".into(), true)
        ]
    );
    let empty =
        body_of(call(&s, &u, Method::GET, &format!("/v1/sync/calendar?since={since}"), None, &[]).await, 200).await;
    assert_eq!(
        (empty["records"].as_array().unwrap().len(), empty["next"].as_u64().unwrap(), empty["more"].as_bool().unwrap()),
        (0, since, false)
    );

    let sum = body_of(call(&s, &u, Method::GET, "/v1/sync", None, &[]).await, 200).await;
    assert_eq!(sum["collections"]["calendar"]["count"], 4);
    assert_eq!(sum["collections"]["calendar"]["seq"], since);
    assert_eq!(sum["collections"]["notes"]["count"], 1);
    assert_eq!(sum["collections"]["notes"]["bytes"], 3);

    // Batches: all or nothing.
    let cur = body_of(call(&s, &u, Method::GET, "/v1/sync/calendar/e0", None, &[]).await, 200).await;
    let batch = json!({
        "put": [{ "id": "b1", "payload": 1 }, { "id": "e0", "payload": 2, "if_version": "999999" }],
        "delete": [{ "id": "e3" }]
    });
    let r = body_of(call(&s, &u, Method::POST, "/v1/sync/calendar/batch", Some(batch), &[]).await, 412).await;
    assert_eq!(r["error"]["code"], "version_conflict");
    assert_eq!(r["error"]["conflicts"], json!(["e0"]));
    assert_eq!(
        call(&s, &u, Method::GET, "/v1/sync/calendar/b1", None, &[]).await.status(),
        404,
        "nothing of a failed batch lands"
    );
    let batch = json!({
        "put": [{ "id": "b1", "payload": 1 }, { "id": "e0", "payload": 2, "if_version": cur["version"] }],
        "delete": [{ "id": "e3" }, { "id": "nope" }]
    });
    let r = body_of(call(&s, &u, Method::POST, "/v1/sync/calendar/batch", Some(batch), &[]).await, 200).await;
    let recs = r["records"].as_array().unwrap();
    assert_eq!(recs.len(), 3, "deleting what does not exist is a no-op: {r}");
    assert_eq!(recs[2]["deleted"], true);
    let too_big: Vec<Value> = (0..101).map(|i| json!({ "id": format!("x{i}"), "payload": i })).collect();
    let r = call(&s, &u, Method::POST, "/v1/sync/calendar/batch", Some(json!({ "put": too_big })), &[]).await;
    assert_eq!(error_code(r, 400).await, "batch_too_large");
    let hundred: Vec<Value> = (0..100).map(|i| json!({ "id": format!("x{i}"), "payload": i })).collect();
    body_of(call(&s, &u, Method::POST, "/v1/sync/calendar/batch", Some(json!({ "put": hundred })), &[]).await, 200)
        .await;
    let f = body_of(call(&s, &u, Method::GET, "/v1/sync/calendar?limit=5000", None, &[]).await, 200).await;
    assert_eq!(f["records"].as_array().unwrap().len(), 106);
}

#[tokio::test]
async fn payload_bytes_count_toward_quota_and_isolation_and_deletion() {
    let (s, _tmp) = start_configured("[plans]\nfree = \"1MiB\"\n");
    let u = signed_in(&s).await;
    let other = signed_in(&s).await;
    let payload = "y".repeat(200 * 1024);
    for i in 0..5 {
        let r =
            call(&s, &u, Method::PUT, &format!("/v1/sync/notes/n{i}"), Some(json!({ "payload": payload })), &[]).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let q: Value = get_as(&s, &u.token, "/v1/quota").await.json().await.unwrap();
    assert_eq!(q["services"]["sync"], 5 * (200 * 1024 + 2));
    let items = q["metadata"].as_u64().unwrap();
    assert_eq!(items, 5 * (128 + "notesn0".len() as u64), "each record costs its item charge");
    assert_eq!(q["used"].as_u64().unwrap() - items, q["services"]["sync"].as_u64().unwrap());
    let r = call(&s, &u, Method::PUT, "/v1/sync/notes/n5", Some(json!({ "payload": payload })), &[]).await;
    assert_eq!(error_code(r, 507).await, "quota_exceeded");
    // Deletes work over quota and give the bytes back.
    body_of(call(&s, &u, Method::DELETE, "/v1/sync/notes/n0", None, &[]).await, 200).await;
    body_of(call(&s, &u, Method::PUT, "/v1/sync/notes/n5", Some(json!({ "payload": payload })), &[]).await, 200).await;

    assert_eq!(error_code(call(&s, &other, Method::GET, "/v1/sync/notes/n1", None, &[]).await, 404).await, "not_found");
    assert_eq!(
        error_code(call(&s, &other, Method::DELETE, "/v1/sync/notes/n1", None, &[]).await, 404).await,
        "not_found"
    );
    let f = body_of(call(&s, &other, Method::GET, "/v1/sync/notes", None, &[]).await, 200).await;
    assert_eq!(f["records"], json!([]));

    delete_account(&s, &u).await;
    let again = signed_up(&s, &u.identifier).await;
    let sum = body_of(call(&s, &again, Method::GET, "/v1/sync", None, &[]).await, 200).await;
    assert_eq!(sum["collections"], json!({}), "a new account starts empty");
    s.fsck_ok().await;
}

#[tokio::test]
async fn purged_tombstones_make_old_cursors_resync() {
    let (s, _tmp) = start_configured("test_clock = true\ntombstone_retention_secs = 3600\nsweep_secs = 1\n");
    let u = signed_in(&s).await;
    let a =
        body_of(call(&s, &u, Method::PUT, "/v1/sync/bookmarks/a", Some(json!({ "payload": 1 })), &[]).await, 200).await;
    body_of(call(&s, &u, Method::PUT, "/v1/sync/bookmarks/b", Some(json!({ "payload": 2 })), &[]).await, 200).await;
    body_of(call(&s, &u, Method::DELETE, "/v1/sync/bookmarks/b", None, &[]).await, 200).await;
    let since = a["seq"].as_u64().unwrap();
    let feed_path = format!("/v1/sync/bookmarks?since={since}");
    let feed = || call(&s, &u, Method::GET, &feed_path, None, &[]);
    s.advance_clock(3599).await;
    s.housekeeping_pass().await;
    let kept = body_of(feed().await, 200).await;
    assert_eq!(kept["records"][0]["deleted"], true, "a second before its time the tombstone is in the feed: {kept}");
    s.advance_clock(1).await;
    s.wait_for_metric("cairn_swept_total{what=\"tombstones\"}", |n| n >= 1.0).await;
    assert_eq!(error_code(feed().await, 410).await, "resync_required");
    // A full resync from zero works and shows what is live.
    let f = body_of(call(&s, &u, Method::GET, "/v1/sync/bookmarks?since=0", None, &[]).await, 200).await;
    assert_eq!(f["records"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_writers_and_a_following_reader_see_every_change_once_in_order() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, base, token) = (s.client.clone(), s.base.clone(), u.token.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    let url = format!("{base}/v1/sync/messages/w{w}-{i}");
                    let r = client
                        .put(url)
                        .bearer_auth(&token)
                        .json(&json!({ "payload": { "w": w, "i": i } }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut since = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < 160 {
        assert!(std::time::Instant::now() < deadline, "reader saw only {} changes", seen.len());
        let f: Value =
            get_as(&s, &u.token, &format!("/v1/sync/messages?since={since}&limit=7")).await.json().await.unwrap();
        for r in f["records"].as_array().unwrap() {
            seen.push((r["seq"].as_u64().unwrap(), r["id"].as_str().unwrap().to_string()));
        }
        since = f["next"].as_u64().unwrap();
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(seen.windows(2).all(|p| p[0].0 < p[1].0), "seq order");
    let mut ids: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 160, "every change exactly once");
    let more: Value = get_as(&s, &u.token, &format!("/v1/sync/messages?since={since}")).await.json().await.unwrap();
    assert_eq!(more["records"], json!([]));
}
