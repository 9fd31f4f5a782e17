//! Hostile clients against the real server: stalled bodies, unread downloads, oversized
//! headers, manifests that ask for unbounded work, a full disk. Each test fails on a server
//! without the limit it names.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::identity::*;
use common::*;
use serde_json::{json, Value};

/// Short client timeouts so that the tests see them fire in a second or two, not thirty.
const QUICK_LIMITS: &str = "[limits]\nbody_idle_secs = 1\nwrite_stall_secs = 1\n";

fn host_port(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// A raw connection that sends `head` and then nothing more.
fn send_head(s: &Server, head: &str) -> TcpStream {
    let mut c = TcpStream::connect(host_port(s)).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c
}

/// The status line's code of whatever the server answers on `c` within `wait`.
fn status_of(c: &mut TcpStream, wait: Duration) -> Option<u16> {
    c.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Another account's small request answers, and quickly, while `held` stays open.
async fn others_are_served(s: &Server, other: &User) {
    let quick = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    for path in ["/v1/quota", "/v1/files", "/readyz"] {
        let r = quick.get(s.url(path)).bearer_auth(&other.token).send().await;
        let r = r.unwrap_or_else(|e| panic!("{path} did not answer within 1 s: {e}"));
        assert_eq!(r.status(), 200, "{path}");
    }
    let login = quick
        .post(s.url("/v1/sessions"))
        .json(&json!({"identifier": other.identifier, "password": PASSWORD, "device": {"name": "n", "model": "m", "os": "o"}}))
        .send()
        .await
        .expect("a sign-in answers within 1 s");
    assert_eq!(login.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_stalled_uploads_leave_other_accounts_served_and_end_in_408() {
    let (s, _tmp) = start_configured(QUICK_LIMITS);
    let (mallory, alice) = (signed_in(&s).await, signed_in(&s).await);
    let head = format!(
        "PUT /v1/files/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        mallory.token
    );
    let mut stalled: Vec<TcpStream> = (0..300).map(|_| send_head(&s, &head)).collect();
    others_are_served(&s, &alice).await;
    // Past the account's allowance the uploads were refused at once, before any body byte.
    let refused =
        stalled.iter_mut().map(|c| status_of(c, Duration::from_millis(200))).filter(|s| *s == Some(429)).count();
    assert!(refused >= 280, "only {refused} of 300 were refused with 429");
    // The admitted ones sent nothing: each ends with 408 once its body has idled for 1 s.
    let mut timed_out = 0;
    for c in stalled.iter_mut() {
        if status_of(c, Duration::from_secs(5)) == Some(408) {
            timed_out += 1;
        }
    }
    assert!(timed_out >= 1, "no stalled upload was answered 408");
    // Mallory's places came back: an honest upload of hers goes through.
    let r = s.client.put(s.url("/v1/files/y")).bearer_auth(&mallory.token).body(noise(1000, 1)).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_unread_downloads_leave_other_accounts_served_and_are_closed() {
    let (s, _tmp) = start_configured(QUICK_LIMITS);
    let (mallory, alice) = (signed_in(&s).await, signed_in(&s).await);
    let big = noise(8 << 20, 2);
    let r = s.client.put(s.url("/v1/files/big")).bearer_auth(&mallory.token).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let head = format!("GET /v1/files/big HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n", mallory.token);
    let mut unread: Vec<TcpStream> = (0..300).map(|_| send_head(&s, &head)).collect();
    for c in &unread {
        c.set_nonblocking(false).unwrap();
    }
    others_are_served(&s, &alice).await;
    let refused =
        unread.iter_mut().map(|c| status_of(c, Duration::from_millis(200))).filter(|s| *s == Some(429)).count();
    assert!(refused >= 280, "only {refused} of 300 were refused with 429");
    // The admitted downloads stall on a client that never reads; their connections are closed
    // after 1 s, which gives Mallory's places back: her own download then succeeds.
    let mut got = None;
    for _ in 0..100 {
        let r = s.client.get(s.url("/v1/files/big")).bearer_auth(&mallory.token).send().await.unwrap();
        if r.status() == 200 {
            got = Some(r.bytes().await.unwrap());
            break;
        }
        assert_eq!(r.status(), 429);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.expect("the stalled downloads were never closed").len(), big.len());
    drop(unread);
}

#[tokio::test]
async fn request_headers_over_the_limit_get_the_json_431_whatever_their_shape() {
    let s = Server::start();
    let one_big = s.client.get(s.url("/healthz")).header("x-big", "x".repeat(40 << 10)).send().await.unwrap();
    assert_eq!(error_code(one_big, 431).await, "headers_too_large");
    let mut many = reqwest::header::HeaderMap::new();
    for i in 0..2000 {
        many.insert(
            reqwest::header::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
            "v".repeat(16).parse().unwrap(),
        );
    }
    let r = s.client.get(s.url("/healthz")).headers(many).send().await.unwrap();
    assert_eq!(error_code(r, 431).await, "headers_too_large");
    assert_eq!(s.client.get(s.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_batch_version_this_server_never_issued_is_a_conflict() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let r = s.client.put(s.url("/v1/sync/notes/n1")).bearer_auth(&u.token).json(&json!({"payload": {"t": 1}})).send();
    assert_eq!(r.await.unwrap().status(), 200);
    for stale in [json!("not-a-version"), json!("\"v9\""), json!(-1), json!(1.5)] {
        let body = json!({"put": [{"id": "n1", "payload": {"t": 2}, "if_version": stale}]});
        let r = s.client.post(s.url("/v1/sync/notes/batch")).bearer_auth(&u.token).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 412, "if_version {stale}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "version_conflict");
        assert_eq!(v["error"]["conflicts"], json!(["n1"]));
    }
    let body = json!({"put": [{"id": "n1", "payload": {}, "if_version": {"v": 1}}]});
    let r = s.client.post(s.url("/v1/sync/notes/batch")).bearer_auth(&u.token).json(&body).send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_version");
}

#[tokio::test]
async fn a_manifest_may_not_ask_for_more_bytes_than_the_quota() {
    let (s, _tmp) = start_configured("[plans]\ntiny = \"64MiB\"\n");
    let u = signed_in(&s).await;
    s.set_plan(&u.account_id, "tiny").await;
    let chunk = noise(256 << 10, 9);
    let hash = blake3::hash(&chunk).to_hex().to_string();
    let r = s.client.put(s.url(&format!("/v1/chunks/{hash}"))).bearer_auth(&u.token).body(chunk.clone()).send();
    assert_eq!(r.await.unwrap().status(), 201);
    let manifest = |n: usize| json!({"chunks": vec![json!({"hash": hash, "size": chunk.len()}); n]}).to_string();
    let put = |n: usize| {
        s.client
            .put(s.url("/v1/files/repeated"))
            .bearer_auth(&u.token)
            .header("content-type", "application/vnd.cairn.manifest+json")
            .body(manifest(n))
            .send()
    };
    // 300 references of 256 KiB: 75 MiB of content on a 64 MiB plan. Refused before reading.
    let v: Value = put(300).await.unwrap().json().await.unwrap();
    assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
    assert_eq!(get_as(&s, &u.token, "/v1/files/repeated").await.status(), 404);
    // 200 of them, 50 MiB: stored, with the hash of the whole content.
    let r = put(200).await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let mut whole = blake3::Hasher::new();
    for _ in 0..200 {
        whole.update(&chunk);
    }
    assert_eq!(v["hash"], whole.finalize().to_hex().to_string());
    let q: Value = get_as(&s, &u.token, "/v1/quota").await.json().await.unwrap();
    assert_eq!(q["services"]["drive"], 200 * (256 << 10));
}

/// Mount a tmpfs of `mib` at `dir`; `None` where this process may not mount (not root, or a
/// sandbox without the capability), and the test says so instead of passing silently.
fn tmpfs(dir: &std::path::Path, mib: u64) -> Option<Mount> {
    std::fs::create_dir_all(dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(dir.to_path_buf()))
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_loses_nothing_and_recovers_after_deletes_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = tmpfs(&tmp.path().join("data"), 400) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the disk-full test did not run");
        return;
    };
    let cfg = tmp.path().join("cairn.toml");
    std::fs::write(&cfg, "min_free_bytes = \"96MiB\"\n[plans]\nfree = \"10GiB\"\n").unwrap();
    let mut s = Server::start_in(&tmp.path().join("data"), &["--config", cfg.to_str().unwrap()]);
    let u = signed_in(&s).await;
    let mut stored = Vec::new();
    let mut full = None;
    for i in 0..64u64 {
        let body = noise(16 << 20, 100 + i);
        let r = s.client.put(s.url(&format!("/v1/files/f{i}"))).bearer_auth(&u.token).body(body.clone()).send();
        let r = r.await.unwrap();
        if r.status() == 201 {
            stored.push((i, blake3::hash(&body)));
            continue;
        }
        full = Some(error_code(r, 507).await);
        break;
    }
    assert_eq!(full.as_deref(), Some("insufficient_storage"), "the disk never filled");
    assert!(!stored.is_empty());
    // The server closes a connection whose upload it refused before reading the body; a
    // pooled connection can be closed under the next request (the keep-alive race any HTTP/1.1
    // client meets). Reads from here on take a fresh connection each, as a retrying client would.
    let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    // Everything acknowledged reads back; the refused file does not exist.
    for (i, hash) in &stored {
        let got =
            c.get(s.url(&format!("/v1/files/f{i}"))).bearer_auth(&u.token).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(blake3::hash(&got), *hash, "f{i}");
    }
    // Deletes work on a full disk, GC gives the space back, and uploads work again.
    for (i, _) in &stored {
        let r = c.delete(s.url(&format!("/v1/files/f{i}"))).bearer_auth(&u.token).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
    let r = c.delete(s.url("/v1/trash")).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let gc = c.post(s.url("/admin/gc")).bearer_auth(ADMIN_TOKEN);
    let v: Value =
        gc.json(&json!({"grace_seconds": 0, "compact_below": 1.0})).send().await.unwrap().json().await.unwrap();
    assert!(v["packs_deleted"].as_u64().unwrap() > 0, "{v}");
    let again = noise(16 << 20, 999);
    let r = c.put(s.url("/v1/files/again")).bearer_auth(&u.token).body(again.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    s.stop();
    let s = Server::start_in(&tmp.path().join("data"), &["--config", cfg.to_str().unwrap()]);
    let got = get_as(&s, &u.token, "/v1/files/again").await.bytes().await.unwrap();
    assert_eq!(got.len(), again.len());
    s.fsck_ok().await;
}

#[tokio::test]
async fn items_cost_quota_so_empty_files_and_tombstones_cannot_fill_the_disk() {
    let (s, _tmp) = start_configured("[plans]\ntiny = \"16KiB\"\n");
    let u = signed_in(&s).await;
    s.set_plan(&u.account_id, "tiny").await;
    let quota = || async { get_as(&s, &u.token, "/v1/quota").await.json::<Value>().await.unwrap() };
    // An empty file costs its item charge: 128 bytes plus its name.
    let r = s.client.put(s.url("/v1/files/e0")).bearer_auth(&u.token).body(Vec::new()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let q = quota().await;
    assert_eq!((q["metadata"].as_u64(), q["used"].as_u64()), (Some(130), Some(130)), "{q}");
    // A record and its tombstone: the tombstone replaces the record's charge, and stays.
    let put = s.client.put(s.url("/v1/sync/notes/n1")).bearer_auth(&u.token).json(&json!({"payload": "x"}));
    assert_eq!(put.send().await.unwrap().status(), 200);
    assert_eq!(s.client.delete(s.url("/v1/sync/notes/n1")).bearer_auth(&u.token).send().await.unwrap().status(), 200);
    assert_eq!(quota().await["metadata"].as_u64(), Some(130 + 128 + 7));
    // Empty files until the quota says no: the account cannot grow the database without bound.
    let mut refused = None;
    for i in 1..1000 {
        let r = s.client.put(s.url(&format!("/v1/files/e{i}"))).bearer_auth(&u.token).body(Vec::new()).send();
        let r = r.await.unwrap();
        if r.status() != 201 {
            refused = Some((i, error_code(r, 507).await));
            break;
        }
    }
    let (at, code) = refused.expect("empty files were free");
    assert_eq!(code, "quota_exceeded");
    assert!(at < 130, "{at} empty files fit in 16 KiB");
    // Deleting gives the charge back; fsck agrees with the books.
    assert_eq!(s.client.delete(s.url("/v1/files/e1")).bearer_auth(&u.token).send().await.unwrap().status(), 204);
    let r = s.client.put(s.url("/v1/files/again")).bearer_auth(&u.token).body(Vec::new()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    s.fsck_ok().await;
}

#[tokio::test]
async fn connections_that_send_nothing_do_not_keep_the_server_full() {
    let (s, _tmp) = start_configured("[limits]\nmax_connections = 4\nheader_read_secs = 1\n");
    // As many connections as the server takes, each silent or stopping inside its first bytes
    // (half an HTTP/2 preface): each must be dropped once its head is late.
    let mut quiet: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(host_port(&s)).unwrap()).collect();
    quiet.push(send_head(&s, "PRI * HT"));
    let patient = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let r = patient.get(s.url("/healthz")).send().await.expect("the server took a new connection");
    assert_eq!(r.status(), 200);
    drop(quiet);
}
