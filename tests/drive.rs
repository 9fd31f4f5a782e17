//! Drive files, the chunk API and the quota, through HTTP against the real server.

mod common;

use common::identity::*;
use common::*;
use serde_json::{json, Value};

const SMALL: &str = "test_clock = true\nstaged_ttl_secs = 3600\nsweep_secs = 1\n[plans]\nfree = \"8MiB\"\npro = \"64MiB\"\ntiny = \"1MiB\"\n[limits]\nuploads_per_account = 32\n";

async fn put(s: &Server, u: &User, path: &str, body: Vec<u8>) -> reqwest::Response {
    s.client.put(s.url(&format!("/v1/files/{path}"))).bearer_auth(&u.token).body(body).send().await.unwrap()
}

async fn quota(s: &Server, u: &User) -> Value {
    get_as(s, &u.token, "/v1/quota").await.json().await.unwrap()
}

/// What the account's content takes of its quota: `used` less the item charges (`metadata`).
async fn used(s: &Server, u: &User) -> u64 {
    content(&quota(s, u).await)
}

fn content(q: &Value) -> u64 {
    q["used"].as_u64().unwrap() - q["metadata"].as_u64().unwrap()
}

/// Send raw request bytes and read the answer until the server has said something.
async fn raw_exchange(s: &Server, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("an answer without the body")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `POST /v1/chunks/missing` as `u`, with `hashes`.
async fn ask_missing(s: &Server, u: &User, hashes: &[String]) -> reqwest::Response {
    let body = json!({ "chunks": hashes });
    s.client.post(s.url("/v1/chunks/missing")).bearer_auth(&u.token).json(&body).send().await.unwrap()
}

fn hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

#[tokio::test]
async fn put_get_head_range_overwrite_delete() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let data = noise(700_000, 1);
    let v = body_of(put(&s, &u, "photos/2024/a.jpg", data.clone()).await, 201).await;
    assert_eq!(v["path"], "photos/2024/a.jpg");
    assert_eq!(v["size"], 700_000);
    assert_eq!(v["hash"], hash(&data));
    let version = v["version"].as_str().unwrap().to_string();

    let r = get_as(&s, &u.token, "/v1/files/photos/2024/a.jpg").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], format!("\"{version}\""));
    assert_eq!(r.headers()["content-length"], "700000");
    assert!(r.bytes().await.unwrap() == data);

    let r = s.client.head(s.url("/v1/files/photos/2024/a.jpg")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-length"].to_str().unwrap()), (200, "700000"));

    let r = s
        .client
        .get(s.url("/v1/files/photos/2024/a.jpg"))
        .bearer_auth(&u.token)
        .header("range", "bytes=100000-299999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100000-299999/700000");
    assert!(r.bytes().await.unwrap() == data[100_000..300_000]);
    let r = s
        .client
        .get(s.url("/v1/files/photos/2024/a.jpg"))
        .bearer_auth(&u.token)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == data[699_990..]);
    let r = s
        .client
        .get(s.url("/v1/files/photos/2024/a.jpg"))
        .bearer_auth(&u.token)
        .header("range", "bytes=700000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-range"], "bytes */700000");
    assert_eq!(error_code(r, 416).await, "range_not_satisfiable");

    let r = s
        .client
        .get(s.url("/v1/files/photos/2024/a.jpg"))
        .bearer_auth(&u.token)
        .header("if-none-match", format!("\"{version}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // If-Match compares strongly (RFC 9110): the current version as a weak tag matches nothing.
    let r = s
        .client
        .put(s.url("/v1/files/photos/2024/a.jpg"))
        .bearer_auth(&u.token)
        .header("if-match", format!("W/\"{version}\""))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 412).await, "precondition_failed");

    // Overwrite: 200, a new version; If-Match with the old one now fails.
    let v2 = body_of(put(&s, &u, "photos/2024/a.jpg", b"new".to_vec()).await, 200).await;
    assert_ne!(v2["version"], version.as_str());
    let r = s
        .client
        .put(s.url("/v1/files/photos/2024/a.jpg"))
        .bearer_auth(&u.token)
        .header("if-match", format!("\"{version}\""))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 412).await, "precondition_failed");
    let r = s
        .client
        .put(s.url("/v1/files/photos/2024/a.jpg"))
        .bearer_auth(&u.token)
        .header("if-none-match", "*")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 412).await, "precondition_failed");
    let cur = v2["version"].as_str().unwrap();
    let r = s
        .client
        .put(s.url("/v1/files/photos/2024/a.jpg"))
        .bearer_auth(&u.token)
        .header("if-match", format!("\"{cur}\""))
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .put(s.url("/v1/files/new.txt"))
        .bearer_auth(&u.token)
        .header("if-none-match", "*")
        .body("z")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Empty files are files.
    body_of(put(&s, &u, "empty", Vec::new()).await, 201).await;
    let r = get_as(&s, &u.token, "/v1/files/empty").await;
    assert_eq!((r.status().as_u16(), r.bytes().await.unwrap().len()), (200, 0));

    let r = s.client.delete(s.url("/v1/files/photos/2024/a.jpg")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(error_code(get_as(&s, &u.token, "/v1/files/photos/2024/a.jpg").await, 404).await, "not_found");
    let r = s.client.delete(s.url("/v1/files/photos/2024/a.jpg")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
}

#[tokio::test]
async fn bad_paths_are_400_and_paths_are_percent_decoded() {
    let s = Server::start();
    let u = signed_in(&s).await;
    // Sent raw: a URL library would resolve the dot segments itself.
    for bad in ["a//b", "a/./b", "a/../b", "a/%2E%2E/b", "a/", "a%00b", "a%0Ab", "..", "."] {
        let answer = raw_exchange(
            &s,
            &format!(
                "PUT /v1/files/{bad} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1\r\n\r\nx",
                u.token
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("\"bad_path\""), "{bad}: {answer}");
    }
    let long = "x".repeat(4097);
    assert_eq!(error_code(put(&s, &u, &long, b"x".to_vec()).await, 400).await, "bad_path");
    body_of(put(&s, &u, "caf%C3%A9/na%20me.txt", b"x".to_vec()).await, 201).await;
    let l: Value = get_as(&s, &u.token, "/v1/files?prefix=caf").await.json().await.unwrap();
    assert_eq!(l["files"][0]["path"], "café/na me.txt");
    assert_eq!(get_as(&s, &u.token, "/v1/files/caf%C3%A9/na%20me.txt").await.status(), 200);
}

#[tokio::test]
async fn listing_pages_in_byte_order_with_a_prefix() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let mut names: Vec<String> = (0..25).map(|i| format!("docs/{i:03}.txt")).collect();
    names.push("other/x".into());
    for n in &names {
        body_of(put(&s, &u, n, n.as_bytes().to_vec()).await, 201).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let l: Value =
            get_as(&s, &u.token, &format!("/v1/files?prefix=docs/&limit=10&after={after}")).await.json().await.unwrap();
        for f in l["files"].as_array().unwrap() {
            seen.push(f["path"].as_str().unwrap().to_string());
            assert!(f["modified"].as_str().unwrap().ends_with('Z'));
        }
        match l["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, names[..25]);
    let l: Value = get_as(&s, &u.token, "/v1/files").await.json().await.unwrap();
    assert_eq!(l["files"].as_array().unwrap().len(), 26);
    assert_eq!(error_code(get_as(&s, &u.token, "/v1/files?after=zz").await, 400).await, "bad_cursor");
}

#[tokio::test]
async fn the_same_content_under_three_paths_costs_its_size_once() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let data = noise(2 << 20, 3);
    for p in ["a", "b/c", "d/e/f"] {
        body_of(put(&s, &u, p, data.clone()).await, 201).await;
    }
    let q = quota(&s, &u).await;
    assert_eq!(content(&q), 2 << 20);
    // Each file also costs its item charge: 128 bytes plus its path.
    assert_eq!(q["metadata"], 3 * 128 + (1 + 3 + 5));
    assert_eq!(q["services"]["drive"], 3 * (2 << 20), "services show the logical size");
    assert_eq!(q["plan"], "free");
    assert_eq!(q["limit"], 5u64 << 30);
    assert_eq!(q["available"], (5u64 << 30) - q["used"].as_u64().unwrap());
    // Deleting two copies releases nothing; the third moves the content to the trash, which
    // holds it until it is emptied.
    s.client.delete(s.url("/v1/files/a")).bearer_auth(&u.token).send().await.unwrap();
    s.client.delete(s.url("/v1/files/b/c")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(used(&s, &u).await, 2 << 20);
    s.client.delete(s.url("/v1/files/d/e/f")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(used(&s, &u).await, 2 << 20);
    s.client.delete(s.url("/v1/trash")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(used(&s, &u).await, 0);
}

#[tokio::test]
async fn quota_refusals_leave_nothing_and_concurrent_uploads_stay_under_the_limit() {
    let (s, _tmp) = start_configured(SMALL);
    let u = signed_in(&s).await;
    // A declared length over the limit is refused before any byte is read: the answer comes
    // back although not one byte of the body was sent.
    let answer = raw_exchange(
        &s,
        &format!(
            "PUT /v1/files/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
            u.token,
            9 << 20
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 507"), "{answer}");
    assert!(answer.contains("\"quota_exceeded\"") && answer.contains(&format!("\"limit\":{}", 8 << 20)), "{answer}");
    assert_eq!(used(&s, &u).await, 0);

    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let (client, url, token) = (s.client.clone(), s.url(&format!("/v1/files/f{i}")), u.token.clone());
            tokio::spawn(async move {
                client.put(url).bearer_auth(token).body(noise(600_000, 100 + i)).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut ok = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            201 => ok += 1,
            507 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((1..32).contains(&ok), "{ok} uploads succeeded");
    let q = quota(&s, &u).await;
    assert!(q["used"].as_u64().unwrap() <= 8 << 20);
    assert_eq!(content(&q), ok * 600_000, "refused uploads left nothing behind");
    let l: Value = get_as(&s, &u.token, "/v1/files").await.json().await.unwrap();
    assert_eq!(l["files"].as_array().unwrap().len() as u64, ok);

    // Over quota: reads and deletes still work; a write of new bytes does not.
    let first = l["files"][0]["path"].as_str().unwrap().to_string();
    assert_eq!(get_as(&s, &u.token, &format!("/v1/files/{first}")).await.status(), 200);
    assert_eq!(
        s.client.delete(s.url(&format!("/v1/files/{first}"))).bearer_auth(&u.token).send().await.unwrap().status(),
        204
    );
    s.fsck_ok().await;
}

#[tokio::test]
async fn an_upload_cut_off_midway_leaves_usage_as_it_was() {
    use tokio::io::AsyncWriteExt;
    let s = Server::start();
    let u = signed_in(&s).await;
    body_of(put(&s, &u, "keep", b"kept".to_vec()).await, 201).await;
    let before = used(&s, &u).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/files/cut HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 8000000\r\n\r\n",
        u.token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&noise(3 << 20, 9)).await.unwrap();
    s.wait_for_metric("cairn_transfers_in_progress{kind=\"upload\"}", |n| n == 1.0).await;
    drop(conn);
    // The upload has let go of its permit: it has ended, whatever it left behind.
    s.wait_for_metric("cairn_transfers_in_progress{kind=\"upload\"}", |n| n == 0.0).await;
    assert_eq!(used(&s, &u).await, before);
    assert_eq!(get_as(&s, &u.token, "/v1/files/cut").await.status(), 404);
    assert_eq!(get_as(&s, &u.token, "/healthz").await.status(), 200);
}

#[tokio::test]
async fn chunk_api_rows() {
    let (s, _tmp) = start_configured(SMALL);
    let u = signed_in(&s).await;
    let c: Value = s.client.get(s.url("/v1/chunking")).send().await.unwrap().json().await.unwrap();
    let max = c["max"].as_u64().unwrap() as usize;
    let chunk = noise(100_000, 5);
    let h = hash(&chunk);

    let m = body_of(ask_missing(&s, &u, std::slice::from_ref(&h)).await, 200).await;
    assert_eq!(m["missing"], json!([h]));
    let put_chunk = |h: String, body: Vec<u8>| {
        s.client.put(s.url(&format!("/v1/chunks/{h}"))).bearer_auth(&u.token).body(body).send()
    };
    assert_eq!(put_chunk(h.clone(), chunk.clone()).await.unwrap().status(), 201);
    assert_eq!(put_chunk(h.clone(), chunk.clone()).await.unwrap().status(), 200);
    assert_eq!(used(&s, &u).await, 100_000, "a staged chunk counts toward used");
    let m = body_of(ask_missing(&s, &u, std::slice::from_ref(&h)).await, 200).await;
    assert_eq!(m["missing"], json!([]));
    let r = get_as(&s, &u.token, &format!("/v1/chunks/{h}")).await;
    assert!(r.bytes().await.unwrap() == chunk);

    // Over `max` is refused on the declared length, before the body (or the hash) is looked at.
    for h in [h.as_str(), "zz"] {
        let answer = raw_exchange(
            &s,
            &format!(
                "PUT /v1/chunks/{h} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
                u.token,
                max + 1
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("payload_too_large"), "{answer}");
    }
    assert_eq!(error_code(put_chunk(h.clone(), b"other bytes".to_vec()).await.unwrap(), 400).await, "hash_mismatch");
    assert_eq!(error_code(put_chunk("ABC".into(), b"x".to_vec()).await.unwrap(), 400).await, "bad_hash");
    assert_eq!(error_code(put_chunk(h.to_uppercase(), chunk.clone()).await.unwrap(), 400).await, "bad_hash");
    let too_many: Vec<String> = (0..10_001).map(|_| h.clone()).collect();
    let r = ask_missing(&s, &u, &too_many).await;
    assert_eq!(error_code(r, 400).await, "too_many_chunks");
    assert_eq!(
        error_code(get_as(&s, &u.token, &format!("/v1/chunks/{}", hash(b"never"))).await, 404).await,
        "not_found"
    );

    // A manifest commits a file from held chunks; missing ones are named; sizes must match.
    let second = noise(50_000, 6);
    let h2 = hash(&second);
    let manifest = json!({ "chunks": [{ "hash": h, "size": 100_000 }, { "hash": h2, "size": 50_000 }] });
    let put_manifest = |body: Value| {
        s.client
            .put(s.url("/v1/files/assembled.bin"))
            .bearer_auth(&u.token)
            .header("content-type", "application/vnd.cairn.manifest+json")
            .body(body.to_string())
            .send()
    };
    let r = body_of(put_manifest(manifest.clone()).await.unwrap(), 409).await;
    assert_eq!(r["error"]["code"], "missing_chunks");
    assert_eq!(r["error"]["missing"], json!([h2]));
    assert_eq!(put_chunk(h2.clone(), second.clone()).await.unwrap().status(), 201);
    let bad = json!({ "chunks": [{ "hash": h, "size": 99_999 }] });
    assert_eq!(error_code(put_manifest(bad).await.unwrap(), 400).await, "bad_size");
    let v = body_of(put_manifest(manifest).await.unwrap(), 201).await;
    let whole = [chunk.clone(), second.clone()].concat();
    assert_eq!(v["hash"], hash(&whole));
    assert_eq!(v["size"], 150_000);
    assert!(get_as(&s, &u.token, "/v1/files/assembled.bin").await.bytes().await.unwrap() == whole);
    assert_eq!(used(&s, &u).await, 150_000, "the file now holds what was staged");

    // Quota applies to chunks too.
    let (s2, _tmp2) = start_configured(SMALL);
    let v = signed_in(&s2).await;
    let admin = s2
        .client
        .put(s2.url(&format!("/admin/accounts/{}/plan", v.account_id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "plan": "tiny" }))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    for i in 0..4 {
        let c = noise(250_000, 50 + i);
        let _ = s2
            .client
            .put(s2.url(&format!("/v1/chunks/{}", hash(&c))))
            .bearer_auth(&v.token)
            .body(c)
            .send()
            .await
            .unwrap();
    }
    let c = noise(250_000, 60);
    let r =
        s2.client.put(s2.url(&format!("/v1/chunks/{}", hash(&c)))).bearer_auth(&v.token).body(c).send().await.unwrap();
    assert_eq!(error_code(r, 507).await, "quota_exceeded");
}

#[tokio::test]
async fn a_staged_chunk_no_manifest_claims_leaves_used_after_its_time() {
    let (s, _tmp) = start_configured(SMALL);
    let u = signed_in(&s).await;
    let chunk = noise(40_000, 8);
    let r = s
        .client
        .put(s.url(&format!("/v1/chunks/{}", hash(&chunk))))
        .bearer_auth(&u.token)
        .body(chunk.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(used(&s, &u).await, 40_000);
    s.advance_clock(3599).await;
    s.housekeeping_pass().await;
    assert_eq!(used(&s, &u).await, 40_000, "a second before its time the chunk is still held");
    s.advance_clock(1).await;
    s.wait_for_metric("cairn_swept_total{what=\"staged_chunks\"}", |n| n >= 1.0).await;
    assert_eq!(used(&s, &u).await, 0);
    let m: Value = ask_missing(&s, &u, &[hash(&chunk)]).await.json().await.unwrap();
    assert_eq!(m["missing"], json!([hash(&chunk)]));
}

#[tokio::test]
async fn other_accounts_see_404_and_missing() {
    let s = Server::start();
    let (a, b) = (signed_in(&s).await, signed_in(&s).await);
    let data = noise(300_000, 11);
    body_of(put(&s, &a, "secret.txt", data.clone()).await, 201).await;
    let chunk = noise(10_000, 12);
    let h = hash(&chunk);
    s.client.put(s.url(&format!("/v1/chunks/{h}"))).bearer_auth(&a.token).body(chunk.clone()).send().await.unwrap();

    assert_eq!(error_code(get_as(&s, &b.token, "/v1/files/secret.txt").await, 404).await, "not_found");
    let r = s.client.head(s.url("/v1/files/secret.txt")).bearer_auth(&b.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        error_code(s.client.delete(s.url("/v1/files/secret.txt")).bearer_auth(&b.token).send().await.unwrap(), 404)
            .await,
        "not_found"
    );
    assert_eq!(error_code(get_as(&s, &b.token, &format!("/v1/chunks/{h}")).await, 404).await, "not_found");
    let m: Value = ask_missing(&s, &b, std::slice::from_ref(&h)).await.json().await.unwrap();
    assert_eq!(m["missing"], json!([h]), "another account's chunk is missing for this one");
    let l: Value = get_as(&s, &b.token, "/v1/files").await.json().await.unwrap();
    assert_eq!(l["files"], json!([]));
    // B uploading the same bytes pays for them in full, and A is unaffected.
    s.client.put(s.url(&format!("/v1/chunks/{h}"))).bearer_auth(&b.token).body(chunk).send().await.unwrap();
    assert_eq!(used(&s, &b).await, 10_000);
    assert_eq!(error_code(get_as(&s, "not-a-token", "/v1/files").await, 401).await, "unauthorized");
}

#[tokio::test]
async fn plans_downgrades_and_account_deletion() {
    let (s, _tmp) = start_configured(SMALL);
    let u = signed_in(&s).await;
    let set_plan = |id: String, plan: &str| {
        s.client
            .put(s.url(&format!("/admin/accounts/{id}/plan")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "plan": plan }))
            .send()
    };
    let v = body_of(set_plan(u.account_id.clone(), "pro").await.unwrap(), 200).await;
    assert_eq!(v, json!({ "plan": "pro", "limit": 64 << 20 }));
    assert_eq!(error_code(set_plan(u.account_id.clone(), "platinum").await.unwrap(), 400).await, "unknown_plan");
    assert_eq!(error_code(set_plan("0".repeat(32), "pro").await.unwrap(), 404).await, "not_found");
    let r = s
        .client
        .put(s.url(&format!("/admin/accounts/{}/plan", u.account_id)))
        .bearer_auth(&u.token)
        .json(&json!({ "plan": "pro" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a user's token is no admin token");

    body_of(put(&s, &u, "big", noise(12 << 20, 2)).await, 201).await;
    // Downgrade below usage: readable and deletable, not writable.
    set_plan(u.account_id.clone(), "free").await.unwrap();
    assert_eq!(quota(&s, &u).await["available"], 0);
    assert_eq!(error_code(put(&s, &u, "more", noise(1000, 3)).await, 507).await, "quota_exceeded");
    assert_eq!(get_as(&s, &u.token, "/v1/files/big").await.status(), 200);

    // Deleting the account removes its files and its usage, and its bytes become garbage.
    delete_account(&s, &u).await;
    let stats: Value =
        s.client.get(s.url("/admin/stats")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["logical_bytes"], 0);
    let gc: Value = s
        .client
        .post(s.url("/admin/gc"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "grace_seconds": 0, "compact_below": 1.0 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(gc["chunks_freed"].as_u64().unwrap() > 100, "{gc}");
    s.fsck_ok().await;
}

#[tokio::test]
async fn an_upload_that_ends_after_its_account_was_deleted_stores_nothing() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let upload = s.client.put(s.url("/v1/files/late.bin")).bearer_auth(&u.token).body(body).send();
    let upload = tokio::spawn(upload);
    tx.send(Ok(noise(3 << 20, 40))).await.unwrap();
    // Once the server has taken the first part in, delete the account under the upload.
    s.wait_for_metric("cairn_ingest_bytes_total", |n| n >= (3 << 20) as f64).await;
    delete_account(&s, &u).await;
    tx.send(Ok(noise(1 << 20, 41))).await.unwrap();
    drop(tx);
    let r = upload.await.unwrap().unwrap();
    // Refused by the commit, not by authentication: the path under test was taken.
    let v = body_of(r, 401).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("deleted while"), "{v}");

    let gc = s.client.post(s.url("/admin/gc")).bearer_auth(ADMIN_TOKEN).json(&json!({"grace_seconds": 0})).send();
    body_of(gc.await.unwrap(), 200).await;
    let stats = body_of(s.client.get(s.url("/admin/stats")).bearer_auth(ADMIN_TOKEN).send().await.unwrap(), 200).await;
    assert_eq!((stats["chunks"].as_u64(), stats["logical_bytes"].as_u64()), (Some(0), Some(0)), "{stats}");
    s.fsck_ok().await;
}
