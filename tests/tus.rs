//! Resumable uploads (tus 1.0, `/v1/uploads`) against the real server: the protocol, every
//! refusal, crashes, quota, expiry and GC; and the real clients (tuspy, tus-js-client) through a
//! relay that cuts their connection, across a server restart.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::identity::*;
use common::*;
use serde_json::{json, Value};
use sha1::Digest as _;

const OFFSET_TYPE: &str = "application/offset+octet-stream";

fn meta(path: &str) -> String {
    format!("path {}", B64.encode(path))
}

fn h<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

fn tus(s: &Server, u: &User, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
    s.client.request(method, s.url(url)).bearer_auth(&u.token).header("Tus-Resumable", "1.0.0")
}

/// Create an upload of `length` bytes for `path`; its URL (a path on the server).
async fn create(s: &Server, u: &User, path: &str, length: u64) -> String {
    let r = tus(s, u, reqwest::Method::POST, "/v1/uploads")
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", meta(path))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(h(&r, "tus-resumable"), Some("1.0.0"));
    assert!(h(&r, "upload-expires").is_some());
    h(&r, "location").unwrap().to_string()
}

async fn patch(s: &Server, u: &User, url: &str, offset: u64, bytes: &[u8]) -> reqwest::Response {
    tus(s, u, reqwest::Method::PATCH, url)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", OFFSET_TYPE)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn head(s: &Server, u: &User, url: &str) -> reqwest::Response {
    tus(s, u, reqwest::Method::HEAD, url).send().await.unwrap()
}

async fn offset_of(s: &Server, u: &User, url: &str) -> u64 {
    let r = head(s, u, url).await;
    assert_eq!(r.status(), 200);
    h(&r, "upload-offset").unwrap().parse().unwrap()
}

/// A 204 PATCH and the offset it reports.
async fn patch_ok(s: &Server, u: &User, url: &str, offset: u64, bytes: &[u8]) -> u64 {
    let r = patch(s, u, url, offset, bytes).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    h(&r, "upload-offset").unwrap().parse().unwrap()
}

async fn file(s: &Server, u: &User, path: &str) -> Vec<u8> {
    let r = get_as(s, &u.token, &format!("/v1/files/{path}")).await;
    assert_eq!(r.status(), 200, "{path}");
    r.bytes().await.unwrap().to_vec()
}

async fn quota(s: &Server, u: &User) -> Value {
    get_as(s, &u.token, "/v1/quota").await.json().await.unwrap()
}

/// What the account's content takes: `used` less the item charges.
async fn content(s: &Server, u: &User) -> u64 {
    let q = quota(s, u).await;
    q["used"].as_u64().unwrap() - q["metadata"].as_u64().unwrap()
}

#[tokio::test]
async fn options_advertise_the_protocol() {
    let s = Server::start();
    let r = s.client.request(reqwest::Method::OPTIONS, s.url("/v1/uploads")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(h(&r, "tus-version"), Some("1.0.0"));
    let ext = h(&r, "tus-extension").unwrap();
    for e in ["creation", "creation-with-upload", "creation-defer-length", "termination", "expiration", "checksum"] {
        assert!(ext.split(',').any(|x| x == e), "{e} in {ext}");
    }
    assert_eq!(h(&r, "tus-max-size"), Some("1099511627776"));
    assert_eq!(h(&r, "tus-checksum-algorithm"), Some("sha1,blake3"));
}

#[tokio::test]
async fn pieces_make_the_same_file_and_chunks_as_one_put() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let data = noise(5_000_000, 7);
    let url = create(&s, &u, "videos/clip.mp4", data.len() as u64).await;
    let r = head(&s, &u, &url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "upload-offset"), Some("0"));
    assert_eq!(h(&r, "upload-length"), Some("5000000"));
    assert_eq!(h(&r, "upload-metadata"), Some(meta("videos/clip.mp4").as_str()));
    assert_eq!(h(&r, "cache-control"), Some("no-store"));
    // Odd piece sizes, one smaller than a chunk: cuts must continue across them.
    let mut at = 0u64;
    for piece in [1_234_567usize, 10_001, 2_000_000] {
        let end = at as usize + piece;
        at = patch_ok(&s, &u, &url, at, &data[at as usize..end]).await;
        assert_eq!(at, end as u64);
        assert_eq!(offset_of(&s, &u, &url).await, at);
    }
    assert_eq!(get_as(&s, &u.token, "/v1/files/videos/clip.mp4").await.status(), 404, "not a file before the end");
    let r = patch(&s, &u, &url, at, &data[at as usize..]).await;
    assert_eq!(r.status(), 204);
    assert_eq!(h(&r, "upload-offset"), Some("5000000"));
    let etag = h(&r, "etag").unwrap().to_string();
    assert_eq!(file(&s, &u, "videos/clip.mp4").await, data);
    let listed: Value = get_as(&s, &u.token, "/v1/files").await.json().await.unwrap();
    let f = &listed["files"][0];
    assert_eq!(f["hash"], blake3::hash(&data).to_hex().to_string());
    assert_eq!(format!("\"{}\"", f["version"].as_str().unwrap()), etag);
    // The same bytes PUT whole dedup completely: the chunk boundaries are the same.
    let before = content(&s, &u).await;
    assert_eq!(before, data.len() as u64, "the pieces' chunks are the file's");
    let r = s.client.put(s.url("/v1/files/copy.mp4")).bearer_auth(&u.token).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(content(&s, &u).await, before, "one PUT of the same bytes stores nothing new");
    // A finished upload reports its end, and a retry of the last PATCH is answered, not redone.
    assert_eq!(offset_of(&s, &u, &url).await, 5_000_000);
    assert_eq!(patch_ok(&s, &u, &url, 5_000_000, b"").await, 5_000_000);
    s.fsck_ok().await;
}

#[tokio::test]
async fn creation_with_upload_deferred_length_and_checksums() {
    let s = Server::start();
    let u = signed_in(&s).await;
    // Creation with upload: the first bytes ride on the POST.
    let data = noise(300_000, 3);
    let r = tus(&s, &u, reqwest::Method::POST, "/v1/uploads")
        .header("Upload-Length", "300000")
        .header("Upload-Metadata", meta("a.bin"))
        .header("Content-Type", OFFSET_TYPE)
        .body(data[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(h(&r, "upload-offset"), Some("100000"));
    let url = h(&r, "location").unwrap().to_string();
    // A correct sha1, then a correct blake3.
    let sum = B64.encode(sha1::Sha1::digest(&data[100_000..200_000]));
    let r = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", "100000")
        .header("Content-Type", OFFSET_TYPE)
        .header("Upload-Checksum", format!("sha1 {sum}"))
        .body(data[100_000..200_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let sum = B64.encode(blake3::hash(&data[200_000..]).as_bytes());
    let r = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", "200000")
        .header("Content-Type", OFFSET_TYPE)
        .header("Upload-Checksum", format!("blake3 {sum}"))
        .body(data[200_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(file(&s, &u, "a.bin").await, data);

    // Deferred length: said with a later PATCH.
    let r = tus(&s, &u, reqwest::Method::POST, "/v1/uploads")
        .header("Upload-Defer-Length", "1")
        .header("Upload-Metadata", meta("b.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let url = h(&r, "location").unwrap().to_string();
    let r = head(&s, &u, &url).await;
    assert_eq!(h(&r, "upload-defer-length"), Some("1"));
    assert_eq!(patch_ok(&s, &u, &url, 0, &data[..1000]).await, 1000);
    // The last bytes in a chunked body, whose length is not declared: the tail is cut at the end.
    let rest: Vec<Result<Vec<u8>, std::io::Error>> = data[1000..].chunks(70_000).map(|c| Ok(c.to_vec())).collect();
    let r = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", "1000")
        .header("Upload-Length", "300000")
        .header("Content-Type", OFFSET_TYPE)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(rest)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(file(&s, &u, "b.bin").await, data);

    // An empty upload is a file at once.
    let url = create(&s, &u, "empty", 0).await;
    assert_eq!(offset_of(&s, &u, &url).await, 0);
    assert_eq!(file(&s, &u, "empty").await, b"");
    s.fsck_ok().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let other = signed_in(&s).await;
    let data = noise(200_000, 5);
    let url = create(&s, &u, "x.bin", 200_000).await;
    assert_eq!(patch_ok(&s, &u, &url, 0, &data[..50_000]).await, 50_000);

    // Tus-Resumable missing or another version: 412, with the versions we speak.
    let r = s.client.head(s.url(&url)).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(r.status(), 412);
    assert_eq!(h(&r, "tus-version"), Some("1.0.0"));
    let r = s
        .client
        .patch(s.url(&url))
        .bearer_auth(&u.token)
        .header("Tus-Resumable", "0.2.2")
        .header("Upload-Offset", "50000")
        .header("Content-Type", OFFSET_TYPE)
        .body(data[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 412).await, "unsupported_tus_version");
    // Wrong Content-Type: 415.
    let r = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", "50000")
        .header("Content-Type", "application/octet-stream")
        .body(data[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 415).await, "unsupported_media_type");
    // Offset mismatch: 409, saying where the upload stands.
    let r = patch(&s, &u, &url, 40_000, &data[40_000..60_000]).await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "offset_mismatch");
    assert_eq!(v["error"]["offset"], 50_000);
    // Past Upload-Length: 413.
    let r = patch(&s, &u, &url, 50_000, &noise(150_001, 9)).await;
    assert_eq!(error_code(r, 413).await, "past_upload_length");
    // Checksum mismatch: 460, the bytes discarded.
    let r = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", "50000")
        .header("Content-Type", OFFSET_TYPE)
        .header("Upload-Checksum", format!("sha1 {}", B64.encode(sha1::Sha1::digest(b"something else"))))
        .body(data[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 460).await, "checksum_mismatch");
    // An algorithm we do not offer, a malformed checksum: 400.
    let r = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", "50000")
        .header("Content-Type", OFFSET_TYPE)
        .header("Upload-Checksum", "md5 1B2M2Y8AsgTpgAmY7PhCfg==")
        .body(data[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_checksum_algorithm");
    let r = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", "50000")
        .header("Content-Type", OFFSET_TYPE)
        .header("Upload-Checksum", "sha1 !!!")
        .body(data[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_header");
    let r = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Content-Type", OFFSET_TYPE)
        .body(data[50_000..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_header", "no Upload-Offset");
    assert_eq!(offset_of(&s, &u, &url).await, 50_000, "no refused PATCH moved the offset");

    // Another account's upload, and ids that are not uploads: 404.
    for r in [
        head(&s, &other, &url).await,
        patch(&s, &other, &url, 50_000, &data[50_000..60_000]).await,
        tus(&s, &other, reqwest::Method::DELETE, &url).send().await.unwrap(),
        head(&s, &u, "/v1/uploads/0123456789abcdef0123456789abcdef").await,
        head(&s, &u, "/v1/uploads/not-an-id").await,
    ] {
        assert_eq!(r.status(), 404);
    }
    let r = s.client.head(s.url(&url)).header("Tus-Resumable", "1.0.0").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Creation: no length, bad metadata, no path, a bad path, too big.
    let post = || tus(&s, &u, reqwest::Method::POST, "/v1/uploads");
    let r = post().header("Upload-Metadata", meta("y")).send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_header");
    let r = post().header("Upload-Length", "5").header("Upload-Metadata", "path ***").send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_header");
    let r = post().header("Upload-Length", "5").header("Upload-Metadata", "name eQ==").send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_header");
    let r = post().header("Upload-Length", "5").header("Upload-Metadata", meta("../etc")).send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_path");
    let r = post().header("Upload-Length", "1099511627777").header("Upload-Metadata", meta("y")).send().await.unwrap();
    assert_eq!(error_code(r, 413).await, "upload_too_large");
    // A precondition on the file, in the metadata: if_none_match * on a file that exists.
    let r = s.client.put(s.url("/v1/files/exists")).bearer_auth(&u.token).body("x").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let m = format!("{},if_none_match {}", meta("exists"), B64.encode("*"));
    let r = post().header("Upload-Length", "5").header("Upload-Metadata", m).send().await.unwrap();
    assert_eq!(error_code(r, 412).await, "precondition_failed");

    // The upload still completes, byte for byte.
    assert_eq!(patch_ok(&s, &u, &url, 50_000, &data[50_000..]).await, 200_000);
    assert_eq!(file(&s, &u, "x.bin").await, data);
    s.fsck_ok().await;
}

#[tokio::test]
async fn a_second_patch_while_one_runs_is_locked_out() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let data = noise(400_000, 11);
    let url = create(&s, &u, "c.bin", 400_000).await;
    // A PATCH whose body arrives slowly: its first half, then a pause we control.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let slow = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", "0")
        .header("Content-Type", OFFSET_TYPE)
        .header("Content-Length", "400000")
        .body(body)
        .send();
    let slow = tokio::spawn(slow);
    tx.send(Ok(data[..200_000].to_vec())).await.unwrap();
    s.wait_for_metric("cairn_transfers_in_progress{kind=\"upload\"}", |v| v >= 1.0).await;
    let mut locked = None;
    for _ in 0..500 {
        let r = patch(&s, &u, &url, 0, &data[..1000]).await;
        if r.status() == 423 {
            locked = Some(error_code(r, 423).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(locked.as_deref(), Some("upload_locked"));
    let r = tus(&s, &u, reqwest::Method::DELETE, &url).send().await.unwrap();
    assert_eq!(r.status(), 423, "no termination under a running PATCH either");
    tx.send(Ok(data[200_000..].to_vec())).await.unwrap();
    drop(tx);
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(file(&s, &u, "c.bin").await, data);
}

#[tokio::test]
async fn quota_is_refused_at_creation_charged_as_bytes_land_and_released_by_termination() {
    let (s, _dir) = start_configured("[plans]\nfree = \"1MiB\"\n");
    let u = signed_in(&s).await;
    let r = tus(&s, &u, reqwest::Method::POST, "/v1/uploads")
        .header("Upload-Length", (2u64 << 20).to_string())
        .header("Upload-Metadata", meta("big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "quota_exceeded");
    assert_eq!(v["error"]["limit"], 1 << 20);
    assert!(v["error"]["used"].is_u64());

    let data = noise(900_000, 13);
    let url = create(&s, &u, "fits", 900_000).await;
    assert_eq!(patch_ok(&s, &u, &url, 0, &data[..700_000]).await, 700_000);
    let held = content(&s, &u).await;
    assert!(held > 0 && held <= 700_000, "chunks charged as they land ({held})");
    let r = tus(&s, &u, reqwest::Method::DELETE, &url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(content(&s, &u).await, 0, "termination releases the charge");
    assert_eq!(head(&s, &u, &url).await.status(), 404);
    s.fsck_ok().await;
}

#[tokio::test]
async fn unfinished_uploads_per_account_are_capped() {
    let (s, _dir) = start_configured("unfinished_uploads_per_account = 2\n");
    let u = signed_in(&s).await;
    let a = create(&s, &u, "a", 10).await;
    create(&s, &u, "b", 10).await;
    let r = tus(&s, &u, reqwest::Method::POST, "/v1/uploads")
        .header("Upload-Length", "10")
        .header("Upload-Metadata", meta("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 429).await, "too_many_uploads");
    assert_eq!(patch_ok(&s, &u, &a, 0, b"0123456789").await, 10);
    create(&s, &u, "c", 10).await; // a finished upload no longer counts
}

#[tokio::test]
async fn abandoned_uploads_expire_and_release_their_chunks() {
    let (s, _dir) = start_configured("upload_expiry_secs = 1\nsweep_secs = 1\n");
    let u = signed_in(&s).await;
    let url = create(&s, &u, "gone", 1_000_000).await;
    assert_eq!(patch_ok(&s, &u, &url, 0, &noise(600_000, 17)).await, 600_000);
    assert!(content(&s, &u).await > 0);
    s.wait_for_metric("cairn_uploads_expired_total", |v| v >= 1.0).await;
    assert_eq!(content(&s, &u).await, 0);
    assert_eq!(head(&s, &u, &url).await.status(), 404);
    s.fsck_ok().await;
}

#[tokio::test]
async fn gc_keeps_the_chunks_of_an_unfinished_upload() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let data = noise(3_000_000, 19);
    let url = create(&s, &u, "kept", 3_000_000).await;
    assert_eq!(patch_ok(&s, &u, &url, 0, &data[..2_000_000]).await, 2_000_000);
    let r = s
        .client
        .post(s.url("/admin/gc"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "grace_seconds": 0, "compact_below": 1.0 }))
        .send()
        .await
        .unwrap();
    let report = body_of(r, 200).await;
    assert_eq!(report["chunks_freed"], 0, "{report}");
    s.fsck_ok().await; // an unfinished upload's references are consistent
    assert_eq!(patch_ok(&s, &u, &url, 2_000_000, &data[2_000_000..]).await, 3_000_000);
    assert_eq!(file(&s, &u, "kept").await, data);
    s.fsck_ok().await;
}

#[tokio::test]
async fn kill9_mid_patch_then_restart_resumes_at_the_last_reported_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    let u = signed_in(&s).await;
    let data = noise(4_000_000, 23);
    let url = create(&s, &u, "crash.bin", 4_000_000).await;
    let reported = patch_ok(&s, &u, &url, 0, &data[..1_500_000]).await;
    // A PATCH under way when the server dies: some of its bytes sent, the rest never.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let inflight = tus(&s, &u, reqwest::Method::PATCH, &url)
        .header("Upload-Offset", reported.to_string())
        .header("Content-Type", OFFSET_TYPE)
        .header("Content-Length", (4_000_000 - reported).to_string())
        .body(body)
        .send();
    let inflight = tokio::spawn(inflight);
    tx.send(Ok(data[1_500_000..2_500_000].to_vec())).await.unwrap();
    s.wait_for_metric("cairn_ingest_bytes_total", |v| v >= 2_500_000.0).await;
    s.kill9();
    assert!(inflight.await.unwrap().is_err(), "the server died under the request");
    drop(tx);

    let s2 = Server::start_in(tmp.path(), &[]);
    let u2 = login(&s2, &u.identifier, &u.password).await;
    let at = offset_of(&s2, &u2, &url).await;
    assert!(at >= reported, "HEAD says {at}, below the {reported} a 204 reported");
    assert_eq!(patch_ok(&s2, &u2, &url, at, &data[at as usize..]).await, 4_000_000);
    assert_eq!(file(&s2, &u2, "crash.bin").await, data);
    s2.fsck_ok().await;
}

// ---- real clients ---------------------------------------------------------------------------

/// A TCP relay in front of the server: it cuts the connection that is sending when more than
/// `cut_after` bytes have gone upstream in all (a phone losing its network mid-request), counts
/// the bytes sent, and can be pointed at a restarted server.
struct Relay {
    base: String,
    target: Arc<Mutex<String>>,
    upstream: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(target: &str, cut_after: usize) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let target = Arc::new(Mutex::new(target.trim_start_matches("http://").to_string()));
        let (upstream, cuts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let cut_done = Arc::new(AtomicBool::new(false));
        let (t, up, c) = (target.clone(), upstream.clone(), cuts.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => panic!("the relay cannot accept: {e}"),
                };
                let addr = t.lock().unwrap().clone();
                let (up, c, cut_done) = (up.clone(), c.clone(), cut_done.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&addr).await else { return };
                    let (mut sr, mut sw) = server.into_split();
                    let (mut cr, mut cw) = client.split();
                    let down = async { tokio::io::copy(&mut sr, &mut cw).await.map(|_| ()) };
                    let upward = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await?;
                            if n == 0 {
                                return sw.shutdown().await;
                            }
                            let total = up.fetch_add(n, Ordering::SeqCst) + n;
                            if total > cut_after && !cut_done.swap(true, Ordering::SeqCst) {
                                c.fetch_add(1, Ordering::SeqCst);
                                return Err(std::io::Error::other("cut"));
                            }
                            sw.write_all(&buf[..n]).await?;
                        }
                    };
                    // Either side ending ends the connection: a server killed mid-request
                    // must not leave its client waiting on an open socket forever.
                    tokio::select! {
                        _ = down => {}
                        _ = upward => {}
                    }
                });
            }
        });
        Relay { base, target, upstream, cuts }
    }

    fn retarget(&self, server: &Server) {
        *self.target.lock().unwrap() = server.base.trim_start_matches("http://").to_string();
    }
}

/// The drive path the clients upload to, and how far (bytes sent upstream) they get before the
/// server is killed and restarted under them.
const CLIENT_PATH: &str = "from/client.bin";
const RESTART_AT: usize = 2_600_000;

/// Run a client that uploads `src` to `CLIENT_PATH` through a relay, in pieces of 256 KiB,
/// retrying on failures; kill -9 and restart the server once `RESTART_AT` bytes have gone
/// upstream. Returns the restarted server.
async fn run_client(program: &str, script: &str, s: &mut Server, dir: &Path, u: &User, src: &Path) -> Server {
    let (path, restart_at) = (CLIENT_PATH, RESTART_AT);
    let relay = Relay::start(&s.base, 1_200_000).await;
    let child = tokio::process::Command::new(program)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .args([&format!("{}/v1/uploads", relay.base), &u.token, src.to_str().unwrap(), path, "262144"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (tools/setup): {e}"));
    for _ in 0..6000 {
        if relay.upstream.load(Ordering::SeqCst) >= restart_at {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(relay.upstream.load(Ordering::SeqCst) >= restart_at, "the client never got that far");
    s.kill9();
    let s2 = Server::start_in(dir, &[]);
    relay.retarget(&s2);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{program} {script} failed (is it installed? tools/setup)");
    assert_eq!(relay.cuts.load(Ordering::SeqCst), 1, "the relay cut one connection");
    s2
}

async fn client_round_trip(program: &str, script: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &[]);
    let u = signed_in(&s).await;
    let data = noise(4_000_000, 29);
    let src = tmp.path().join("video.bin");
    std::fs::write(&src, &data).unwrap();
    let s2 = run_client(program, script, &mut s, &dir, &u, &src).await;
    let u2 = login(&s2, &u.identifier, &u.password).await;
    assert_eq!(file(&s2, &u2, CLIENT_PATH).await, data);
    s2.fsck_ok().await;
}

#[tokio::test]
async fn tuspy_resumes_after_a_cut_and_a_server_restart() {
    client_round_trip("python3", "tests/clients/tus_upload.py").await;
}

#[tokio::test]
async fn tus_js_client_resumes_after_a_cut_and_a_server_restart() {
    client_round_trip("node", "tests/clients/tus_upload.cjs").await;
}
