//! The operators' API and command line: gc, fsck (with repair), stats and plan, against a
//! running server and offline against a stopped one's data directory.

mod common;

use std::process::Command;

use common::identity::*;
use common::*;
use serde_json::{json, Value};

fn cairn(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_LOG", "warn")
        .env("CAIRN_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn admin_api_guards_validation_and_figures() {
    let s = Server::start();
    let u = signed_in(&s).await;
    for (method, path) in [
        (reqwest::Method::POST, "/admin/gc"),
        (reqwest::Method::POST, "/admin/fsck"),
        (reqwest::Method::GET, "/admin/stats"),
    ] {
        let r = s.client.request(method.clone(), s.url(path)).send().await.unwrap();
        assert_eq!(error_code(r, 401).await, "unauthorized", "{path}");
        let r = s.client.request(method, s.url(path)).bearer_auth(&u.token).send().await.unwrap();
        assert_eq!(r.status(), 401, "a user's token on {path}");
    }
    let r = s
        .client
        .post(s.url("/admin/gc"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "compact_below": 1.5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_compact_below");

    let data = noise(3 << 20, 4);
    s.client.put(s.url("/v1/files/a")).bearer_auth(&u.token).body(data.clone()).send().await.unwrap();
    s.client.put(s.url("/v1/files/b")).bearer_auth(&u.token).body(data).send().await.unwrap();
    let st: Value =
        s.client.get(s.url("/admin/stats")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["accounts"], 1);
    // Every account's `used`: the content once, and each file's item charge (128 + its name).
    assert_eq!(st["logical_bytes"], (3 << 20) + 2 * (128 + 1));
    assert!(st["chunks"].as_u64().unwrap() >= 12);
    assert!(st["stored_bytes"].as_u64().unwrap() > 3 << 20 && st["stored_bytes"].as_u64().unwrap() < 4 << 20, "{st}");
    // Empty body: the defaults (an hour's grace frees nothing young).
    let gc: Value =
        s.client.post(s.url("/admin/gc")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        gc,
        json!({ "chunks_freed": 0, "bytes_freed": 0, "packs_rewritten": 0, "packs_deleted": 0, "packs_rekeyed": 0, "keys_retired": 0,
            "dictionaries_retired": 0 })
    );
    let m = s.client.get(s.url("/metrics")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("cairn_gc_runs_total 1"), "{m}");
    let admin_gc = |body: Value| s.client.post(s.url("/admin/gc")).bearer_auth(ADMIN_TOKEN).json(&body).send();
    assert_eq!(error_code(admin_gc(json!({ "copy_mib_per_sec": -1 })).await.unwrap(), 400).await, "bad_json");
    assert_eq!(admin_gc(json!({ "copy_mib_per_sec": 0 })).await.unwrap().status(), 200, "0: no ceiling");
}

#[tokio::test]
async fn without_an_admin_token_the_routes_do_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--data-dir"])
        .arg(tmp.path())
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("CAIRN_ADMIN_TOKEN")
        .env("CAIRN_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let base = line.trim().strip_prefix("cairn listening on ").unwrap().to_string();
    let r = reqwest::Client::new().get(format!("{base}/admin/stats")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn cli_against_a_running_server_and_offline() {
    let (mut s, tmp) = start_configured("[plans]\npro = \"50GiB\"\n");
    let u = signed_in(&s).await;
    let data = noise(2 << 20, 9);
    s.client.put(s.url("/v1/files/x")).bearer_auth(&u.token).body(data.clone()).send().await.unwrap();
    s.client.delete(s.url("/v1/files/x")).bearer_auth(&u.token).send().await.unwrap();
    s.client.delete(s.url("/v1/trash")).bearer_auth(&u.token).send().await.unwrap();
    s.client.put(s.url("/v1/files/keep")).bearer_auth(&u.token).body(noise(1 << 20, 10)).send().await.unwrap();

    let (code, out) = cairn(&["stats", "--server", &s.base, "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_of(&out)["logical_bytes"], (1 << 20) + 128 + "keep".len());
    let (code, out) = cairn(&["gc", "--server", &s.base, "--grace-seconds", "0", "--compact-below", "1.0", "--json"]);
    assert_eq!(code, 0, "{out}");
    let gc = json_of(&out);
    assert!(gc["chunks_freed"].as_u64().unwrap() >= 8, "{gc}");
    assert!(gc["bytes_freed"].as_u64().unwrap() >= 1 << 20, "{gc}");
    let (code, out) = cairn(&["fsck", "--server", &s.base]);
    assert_eq!((code, out.trim().lines().last().unwrap()), (0, "ok"));
    let (code, out) = cairn(&["plan", &u.account_id, "pro", "--server", &s.base, "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_of(&out)["limit"], 50u64 << 30);
    let q: Value = get_as(&s, &u.token, "/v1/quota").await.json().await.unwrap();
    assert_eq!(q["plan"], "pro");
    let (code, _) = cairn(&["gc", "--server", &s.base, "--compact-below", "7"]);
    assert_ne!(code, 0);

    // Offline: stop the server, make the books drift, and let fsck find and repair it.
    s.stop();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let (code, out) = cairn(&["fsck", "--data-dir", d]);
    assert_eq!(code, 0, "{out}");
    {
        let db = cairn::store::Db::open(&dir.join("db")).unwrap();
        let account: cairn::store::keys::AccountId = u.account_id.parse().unwrap();
        let wrong =
            cairn::store::keys::Usage { used: 1, drive: 2, backups: 3, sync: 4, metadata: 5, trash: 6, versions: 7 };
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(db.cf(cairn::store::CF_USAGE), account.0, cairn::store::keys::encode_usage(&wrong));
        db.commit(b).unwrap();
    }
    let (code, out) = cairn(&["fsck", "--data-dir", d]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("problem: account") && out.contains("usage"), "{out}");
    let (code, out) = cairn(&["fsck", "--data-dir", d, "--repair"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cairn(&["fsck", "--data-dir", d, "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_of(&out)["ok"], true);
    let (code, out) = cairn(&["fsck", "--data-dir", d, "--rebuild-index"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cairn(&["stats", "--data-dir", d, "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_of(&out)["logical_bytes"], (1 << 20) + 128 + "keep".len());
    let cfg = tmp.path().join("cairn.toml");
    // Offline, every command reads the server's configuration: a setting it refuses stops it.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nuploads = 0\n").unwrap();
    for cmd in ["stats", "gc", "fsck"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args([cmd, "--data-dir", d, "--config", bad.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("[limits]"), "{cmd}: {err}");
    }
    let (code, out) = cairn(&["plan", &u.account_id, "free", "--data-dir", d, "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cairn(&["gc", "--data-dir", d, "--json"]);
    assert_eq!(code, 0, "{out}");

    // The restarted server serves what is left, on the plan set offline.
    let s = Server::start_in(&dir, &["--config", cfg.to_str().unwrap()]);
    let u2 = login(&s, &u.identifier, PASSWORD).await;
    assert_eq!(get_as(&s, &u2.token, "/v1/files/keep").await.bytes().await.unwrap().len(), 1 << 20);
    let q: Value = get_as(&s, &u2.token, "/v1/quota").await.json().await.unwrap();
    assert_eq!(q["plan"], "free");
}

#[tokio::test]
async fn scheduled_gc_reclaims_a_deleted_accounts_unshared_bytes_and_keeps_shared_ones() {
    let (s, _tmp) = start_configured("gc_interval_secs = 1\ngc_grace_secs = 0\ngc_compact_below = 1.0\n");
    let (a, b) = (signed_in(&s).await, signed_in(&s).await);
    let shared = noise(1 << 20, 21);
    let own = noise(2 << 20, 22);
    for (u, path, data) in [(&a, "shared", &shared), (&b, "shared", &shared), (&a, "own", &own)] {
        let r = s
            .client
            .put(s.url(&format!("/v1/files/{path}")))
            .bearer_auth(&u.token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let stats = || async {
        s.client
            .get(s.url("/admin/stats"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = stats().await;
    delete_account(&s, &a).await;
    let b_used = (1 << 20) + 128 + "shared".len();
    assert_eq!(stats().await["logical_bytes"], b_used, "the deleted account's usage left the books at once");
    // No one calls GC: the schedule does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = stats().await;
        if now["stored_bytes"].as_u64().unwrap() + (2 << 20) <= before["stored_bytes"].as_u64().unwrap() + (64 << 10) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "scheduled GC never reclaimed the bytes: {before} -> {now}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let got = get_as(&s, &b.token, "/v1/files/shared").await.bytes().await.unwrap();
    assert!(got == shared, "a chunk another account holds stays");
    let m = s.client.get(s.url("/metrics")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(m.lines().any(|l| l.starts_with("cairn_gc_bytes_reclaimed_total ") && !l.ends_with(" 0")), "{m}");
    s.fsck_ok().await;
}
