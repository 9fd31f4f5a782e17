//! WebDAV (`/dav/files/`) against the real server: the same files as `/v1/files`, folders,
//! copy and move, dead properties, locks, quota, and app-password authentication. The
//! third-party clients (litmus, rclone) are in `tests/webdav_clients.rs`.

mod common;

use common::identity::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// An account with an app password: (user, app password).
async fn dav_user(s: &Server) -> (User, String) {
    let u = signed_in(s).await;
    let r = s.client.post(s.url("/v1/app-passwords")).bearer_auth(&u.token).json(&json!({"name": "webdav"})).send();
    let made = body_of(r.await.unwrap(), 201).await;
    let pw = made["password"].as_str().unwrap().to_string();
    (u, pw)
}

fn dav(s: &Server, u: &(User, String), method: &str, path: &str) -> reqwest::RequestBuilder {
    s.client
        .request(Method::from_bytes(method.as_bytes()).unwrap(), s.url(&format!("/dav/files/{path}")))
        .basic_auth(&u.0.identifier, Some(&u.1))
}

async fn propfind(s: &Server, u: &(User, String), path: &str, depth: &str) -> (StatusCode, String) {
    let r = dav(s, u, "PROPFIND", path).header("Depth", depth).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn used(s: &Server, u: &User) -> u64 {
    body_of(get_as(s, &u.token, "/v1/quota").await, 200).await["used"].as_u64().unwrap()
}

#[tokio::test]
async fn basic_auth_takes_app_passwords_only_and_accounts_see_only_their_own_files() {
    let s = Server::start();
    let a = dav_user(&s).await;
    let b = dav_user(&s).await;
    let anon = s.client.request(Method::from_bytes(b"PROPFIND").unwrap(), s.url("/dav/files/")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    assert!(anon.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let with_password = dav(&s, &(a.0.clone(), PASSWORD.to_string()), "PROPFIND", "").header("Depth", "0");
    assert_eq!(with_password.send().await.unwrap().status(), 401, "the account password is refused on /dav");
    let bearer = s.client.get(s.url("/dav/files/x")).bearer_auth(&a.0.token).send().await.unwrap();
    assert_eq!(bearer.status(), 401, "a session token is not a DAV credential");

    let put = dav(&s, &a, "PUT", "secret.txt").body("a's data").send().await.unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(dav(&s, &b, "GET", "secret.txt").send().await.unwrap().status(), 404);
    assert_eq!(propfind(&s, &b, "secret.txt", "0").await.0, 404);
    let (status, listing) = propfind(&s, &b, "", "1").await;
    assert_eq!(status, 207);
    assert!(!listing.contains("secret.txt"), "{listing}");
}

#[tokio::test]
async fn a_file_written_one_way_reads_back_the_other_with_the_same_etag() {
    let s = Server::start();
    let u = dav_user(&s).await;
    let data = noise(300_000, 7);
    let put = dav(&s, &u, "PUT", "docs/report.bin").body(data.clone()).send().await.unwrap();
    assert_eq!(put.status(), 409, "no parent folder yet");
    assert_eq!(dav(&s, &u, "MKCOL", "docs").send().await.unwrap().status(), 201);
    let put = dav(&s, &u, "PUT", "docs/report.bin").body(data.clone()).send().await.unwrap();
    assert_eq!(put.status(), 201);
    let dav_etag = put.headers()["etag"].to_str().unwrap().to_string();

    let v1 = get_as(&s, &u.0.token, "/v1/files/docs/report.bin").await;
    assert_eq!(v1.status(), 200);
    assert_eq!(v1.headers()["etag"].to_str().unwrap(), dav_etag);
    assert_eq!(v1.bytes().await.unwrap().as_ref(), &data[..]);

    let v1_put = s.client.put(s.url("/v1/files/docs/b.txt")).bearer_auth(&u.0.token).body("from v1").send();
    let v1_put = v1_put.await.unwrap();
    let v1_etag = v1_put.headers()["etag"].to_str().unwrap().to_string();
    let got = dav(&s, &u, "GET", "docs/b.txt").send().await.unwrap();
    assert_eq!(got.headers()["etag"].to_str().unwrap(), v1_etag);
    assert_eq!(got.text().await.unwrap(), "from v1");

    let ranged = dav(&s, &u, "GET", "docs/report.bin").header("Range", "bytes=100000-100099").send().await.unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &data[100_000..100_100]);

    // If-Match with a stale tag: 412, and the file is unchanged.
    let stale = dav(&s, &u, "PUT", "docs/b.txt").header("If-Match", "\"1\"").body("lost update").send().await.unwrap();
    assert_eq!(stale.status(), 412);
    let fresh = dav(&s, &u, "PUT", "docs/b.txt").header("If-Match", &v1_etag).body("new").send().await.unwrap();
    assert_eq!(fresh.status(), 204);
    assert_eq!(get_as(&s, &u.0.token, "/v1/files/docs/b.txt").await.text().await.unwrap(), "new");
    s.fsck_ok().await;
}

#[tokio::test]
async fn folders_are_real_listed_by_v1_and_survive_a_restart() {
    let mut s = Server::start();
    let u = dav_user(&s).await;
    assert_eq!(dav(&s, &u, "MKCOL", "Photos").send().await.unwrap().status(), 201);
    assert_eq!(dav(&s, &u, "MKCOL", "Photos").send().await.unwrap().status(), 405);
    assert_eq!(dav(&s, &u, "MKCOL", "a/b").send().await.unwrap().status(), 409);
    assert_eq!(dav(&s, &u, "MKCOL", "Photos/2026").send().await.unwrap().status(), 201);
    dav(&s, &u, "PUT", "Photos/cat.jpg").body("meow").send().await.unwrap();

    let (status, xml) = propfind(&s, &u, "Photos/", "1").await;
    assert_eq!(status, 207);
    assert!(xml.contains("/dav/files/Photos/2026/") && xml.contains("/dav/files/Photos/cat.jpg"), "{xml}");
    assert_eq!(propfind(&s, &u, "", "infinity").await.0, 403);

    let listed = body_of(get_as(&s, &u.0.token, "/v1/files?prefix=Photos").await, 200).await;
    let kinds: Vec<(String, String)> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["type"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Photos".into(), "folder".into()),
            ("Photos/2026".into(), "folder".into()),
            ("Photos/cat.jpg".into(), "file".into())
        ]
    );
    // No path is both a file and a folder.
    let under_file = s.client.put(s.url("/v1/files/Photos/cat.jpg/x")).bearer_auth(&u.0.token).body("x").send();
    assert_eq!(under_file.await.unwrap().status(), 409);
    let over_folder = s.client.put(s.url("/v1/files/Photos/2026")).bearer_auth(&u.0.token).body("x").send();
    assert_eq!(over_folder.await.unwrap().status(), 409);

    s.stop();
    let s = Server::start_in(&s.dir.clone(), &[]);
    let (status, xml) = propfind(&s, &u, "Photos/2026/", "0").await;
    assert_eq!(status, 207, "{xml}");
    assert!(xml.contains("<D:collection/>") || xml.contains("collection"), "{xml}");
    s.fsck_ok().await;
}

#[tokio::test]
async fn copy_shares_chunks_and_moving_a_folder_keeps_every_file_and_its_etag() {
    let s = Server::start();
    let u = dav_user(&s).await;
    let big = noise(2 << 20, 3);
    dav(&s, &u, "PUT", "big.bin").body(big.clone()).send().await.unwrap();
    let before = used(&s, &u.0).await;
    let dest = s.url("/dav/files/copy%20of%20big.bin");
    let copied = dav(&s, &u, "COPY", "big.bin").header("Destination", &dest).send().await.unwrap();
    assert_eq!(copied.status(), 201);
    let grew = used(&s, &u.0).await - before;
    assert!(grew < 1024, "a copy costs its item charge, not its {} bytes: grew {grew}", big.len());
    let got = dav(&s, &u, "GET", "copy%20of%20big.bin").send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), &big[..]);
    let refused = dav(&s, &u, "COPY", "big.bin").header("Destination", &dest).header("Overwrite", "F").send().await;
    assert_eq!(refused.unwrap().status(), 412);

    dav(&s, &u, "MKCOL", "album").send().await.unwrap();
    dav(&s, &u, "MKCOL", "album/sub").send().await.unwrap();
    let mut etags = Vec::new();
    for i in 0..200 {
        let p = if i % 2 == 0 { format!("album/p{i:03}.jpg") } else { format!("album/sub/p{i:03}.jpg") };
        let r = dav(&s, &u, "PUT", &p).body(format!("photo {i}")).send().await.unwrap();
        etags.push((p, r.headers()["etag"].to_str().unwrap().to_string()));
    }
    let moved = dav(&s, &u, "MOVE", "album").header("Destination", s.url("/dav/files/trip")).send().await.unwrap();
    assert_eq!(moved.status(), 201);
    for (p, etag) in &etags {
        assert_eq!(dav(&s, &u, "GET", p).send().await.unwrap().status(), 404, "{p} left behind");
        let new = p.replacen("album", "trip", 1);
        let r = dav(&s, &u, "GET", &new).send().await.unwrap();
        assert_eq!(r.status(), 200, "{new}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag, "a move keeps the version");
    }
    assert_eq!(propfind(&s, &u, "trip/sub/", "0").await.0, 207);
    assert_eq!(propfind(&s, &u, "album/", "0").await.0, 404);

    // A folder into itself is refused, and nothing moves.
    let nested = dav(&s, &u, "MOVE", "trip").header("Destination", s.url("/dav/files/trip/sub/x")).send().await;
    assert!(nested.unwrap().status().is_client_error());
    assert_eq!(dav(&s, &u, "GET", "trip/p000.jpg").send().await.unwrap().status(), 200);

    // DELETE of a folder puts its files in the trash.
    assert_eq!(dav(&s, &u, "DELETE", "trip").send().await.unwrap().status(), 204);
    assert_eq!(propfind(&s, &u, "trip/", "0").await.0, 404);
    let trash = body_of(get_as(&s, &u.0.token, "/v1/trash?limit=1000").await, 200).await;
    assert_eq!(trash["items"].as_array().unwrap().len(), 200);
    s.fsck_ok().await;
}

#[tokio::test]
async fn dead_properties_are_stored_and_follow_a_move() {
    let s = Server::start();
    let u = dav_user(&s).await;
    dav(&s, &u, "PUT", "notes.txt").body("n").send().await.unwrap();
    let set = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="http://example.com/z">
        <D:set><D:prop><Z:colour>red</Z:colour></D:prop></D:set></D:propertyupdate>"#;
    let r = dav(&s, &u, "PROPPATCH", "notes.txt").body(set).send().await.unwrap();
    assert_eq!(r.status(), 207);
    let before = used(&s, &u.0).await;
    let moved = dav(&s, &u, "MOVE", "notes.txt").header("Destination", s.url("/dav/files/renamed.txt")).send().await;
    assert_eq!(moved.unwrap().status(), 201);
    assert_eq!(used(&s, &u.0).await, before + 2, "the item's name grew by two bytes; the property moved, not doubled");
    let ask = r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><Z:colour xmlns:Z="http://example.com/z"/></D:prop></D:propfind>"#;
    let r = dav(&s, &u, "PROPFIND", "renamed.txt").header("Depth", "0").body(ask).send().await.unwrap();
    assert_eq!(r.status(), 207);
    let xml = r.text().await.unwrap();
    assert!(xml.contains("red"), "{xml}");
    s.fsck_ok().await;
}

#[tokio::test]
async fn locks_are_honoured_by_writes_and_expire_on_the_servers_clock() {
    let (s, _dir) = start_configured("test_clock = true\n");
    let u = dav_user(&s).await;
    let v = dav_user(&s).await;
    dav(&s, &u, "PUT", "shared.txt").body("v1").send().await.unwrap();
    let body = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>
        <D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"#;
    let r = dav(&s, &u, "LOCK", "shared.txt").header("Timeout", "Second-60").body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.headers()["lock-token"].to_str().unwrap().trim_matches(|c| c == '<' || c == '>').to_string();

    let blocked = dav(&s, &u, "PUT", "shared.txt").body("no token").send().await.unwrap();
    assert_eq!(blocked.status(), 423);
    let with = dav(&s, &u, "PUT", "shared.txt").header("If", format!("(<{token}>)")).body("v2").send().await;
    assert_eq!(with.unwrap().status(), 204);
    // Another account's file of the same name is not locked.
    assert_eq!(dav(&s, &v, "PUT", "shared.txt").body("mine").send().await.unwrap().status(), 201);

    s.advance_clock(59).await;
    assert_eq!(dav(&s, &u, "DELETE", "shared.txt").send().await.unwrap().status(), 423);
    s.advance_clock(1).await;
    let after = dav(&s, &u, "PUT", "shared.txt").body("v3").send().await.unwrap();
    assert_eq!(after.status(), 204, "the lock expired at 60 s");
    let r = dav(&s, &u, "LOCK", "shared.txt").body(body).send().await.unwrap();
    let token = r.headers()["lock-token"].to_str().unwrap().to_string();
    assert_eq!(dav(&s, &u, "UNLOCK", "shared.txt").header("Lock-Token", token).send().await.unwrap().status(), 204);
    assert_eq!(dav(&s, &u, "PUT", "shared.txt").body("v4").send().await.unwrap().status(), 204);
}

#[tokio::test]
async fn quota_properties_and_a_put_past_the_quota() {
    let (s, _dir) = start_configured("[plans]\nfree = \"1MiB\"\n");
    let u = dav_user(&s).await;
    dav(&s, &u, "PUT", "a.bin").body(noise(300_000, 1)).send().await.unwrap();
    let ask = r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>"#;
    let r = dav(&s, &u, "PROPFIND", "").header("Depth", "0").body(ask).send().await.unwrap();
    assert_eq!(r.status(), 207);
    let xml = r.text().await.unwrap();
    let used_now = used(&s, &u.0).await;
    assert!(xml.contains(&format!("{used_now}</D:quota-used-bytes>")), "{xml}");
    assert!(xml.contains(&format!("{}</D:quota-available-bytes>", (1 << 20) - used_now)), "{xml}");

    let too_big = dav(&s, &u, "PUT", "b.bin").body(noise(2 << 20, 2)).send().await.unwrap();
    assert_eq!(too_big.status(), 507);
    assert!(too_big.text().await.unwrap().contains("quota-not-exceeded"));
    let grows = dav(&s, &u, "PUT", "c.bin").body(noise(900_000, 3)).send().await.unwrap();
    assert_eq!(grows.status(), 507, "refused as it passes the quota");
    assert_eq!(dav(&s, &u, "GET", "c.bin").send().await.unwrap().status(), 404);
    assert_eq!(used(&s, &u.0).await, used_now, "nothing of the refused uploads is kept");
    let v: Value = body_of(get_as(&s, &u.0.token, "/v1/files").await, 200).await;
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
}
