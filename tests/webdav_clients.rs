//! The drive over WebDAV with the third-party clients people use: litmus (the WebDAV
//! conformance suite: basic, copymove, props, locks, http) and rclone, each against the real
//! server with an app password. Both are installed by `tools/setup`.

mod common;

use std::path::Path;
use std::process::Command;

use common::identity::*;
use common::*;
use serde_json::{json, Value};

async fn app_password(s: &Server, u: &User) -> String {
    let r = s.client.post(s.url("/v1/app-passwords")).bearer_auth(&u.token).json(&json!({"name": "client"})).send();
    body_of(r.await.unwrap(), 201).await["password"].as_str().unwrap().to_string()
}

/// litmus' summary lines: `<- summary for `NAME': of N tests run: P passed, F failed. X%`.
fn failed_by_suite(out: &str) -> Vec<(String, u32, u32)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("<- summary for `")?;
            let (name, rest) = rest.split_once('\'')?;
            let passed = rest.split(": ").nth(2)?.split(' ').next()?.parse().ok()?;
            let failed = rest.split(", ").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((name.to_string(), passed, failed))
        })
        .collect()
}

#[tokio::test]
async fn litmus_passes_every_suite() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let pw = app_password(&s, &u).await;
    let logs = tempfile::tempdir().unwrap(); // litmus writes debug.log and child.log where it runs
    let out = Command::new("litmus")
        .current_dir(logs.path())
        .arg("-k")
        .arg(s.url("/dav/files/"))
        .arg(&u.identifier)
        .arg(&pw)
        .env("TESTS", "basic copymove props locks http")
        .output()
        .expect("litmus runs (tools/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let suites = failed_by_suite(&text);
    let names: Vec<&str> = suites.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["basic", "copymove", "props", "locks", "http"], "{text}");
    for (name, passed, failed) in &suites {
        assert_eq!(*failed, 0, "litmus suite {name}: {passed} passed, {failed} failed\n{text}");
    }
    s.fsck_ok().await;
}

fn rclone(dir: &Path, s: &Server, user: &str, obscured: &str, args: &[&str]) -> String {
    let out = Command::new("rclone")
        .args(args)
        .env("RCLONE_CONFIG", dir.join("rclone.conf"))
        .env("RCLONE_CONFIG_CAIRN_TYPE", "webdav")
        .env("RCLONE_CONFIG_CAIRN_URL", s.url("/dav/files/"))
        .env("RCLONE_CONFIG_CAIRN_VENDOR", "other")
        .env("RCLONE_CONFIG_CAIRN_USER", user)
        .env("RCLONE_CONFIG_CAIRN_PASS", obscured)
        .output()
        .expect("rclone runs (tools/setup installs it)");
    assert!(out.status.success(), "rclone {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn rclone_copies_checks_moves_and_deletes() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let pw = app_password(&s, &u).await;
    let tmp = tempfile::tempdir().unwrap();
    let obscured = Command::new("rclone").args(["obscure", &pw]).output().unwrap();
    let obscured = String::from_utf8(obscured.stdout).unwrap().trim().to_string();
    let run = |args: &[&str]| rclone(tmp.path(), &s, &u.identifier, &obscured, args);

    let local = tmp.path().join("photos");
    std::fs::create_dir_all(local.join("2026/december")).unwrap();
    std::fs::write(local.join("a.jpg"), noise(1 << 20, 1)).unwrap();
    std::fs::write(local.join("2026/b.jpg"), noise(300_000, 2)).unwrap();
    std::fs::write(local.join("2026/december/c.txt"), "snow").unwrap();
    std::fs::write(local.join("empty.txt"), "").unwrap();
    let local_s = local.to_str().unwrap();

    run(&["copy", local_s, "cairn:photos"]);
    run(&["check", local_s, "cairn:photos"]);
    let v1 = get_as(&s, &u.token, "/v1/files/photos/2026/b.jpg").await;
    assert_eq!(v1.bytes().await.unwrap().as_ref(), &noise(300_000, 2)[..], "what rclone wrote reads back over v1");

    let back = tmp.path().join("back");
    run(&["copy", "cairn:photos", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(back.join("2026/december/c.txt")).unwrap(), b"snow");
    assert_eq!(std::fs::read(back.join("a.jpg")).unwrap(), noise(1 << 20, 1));

    run(&["mkdir", "cairn:empty-folder"]);
    run(&["moveto", "cairn:photos/a.jpg", "cairn:photos/renamed.jpg"]);
    let listed: Value = serde_json::from_str(&run(&["lsjson", "-R", "cairn:"])).unwrap();
    let mut paths: Vec<String> =
        listed.as_array().unwrap().iter().map(|e| e["Path"].as_str().unwrap().into()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "empty-folder",
            "photos",
            "photos/2026",
            "photos/2026/b.jpg",
            "photos/2026/december",
            "photos/2026/december/c.txt",
            "photos/empty.txt",
            "photos/renamed.jpg"
        ]
    );
    let about: Value = serde_json::from_str(&run(&["about", "--json", "cairn:"])).unwrap();
    let quota = body_of(get_as(&s, &u.token, "/v1/quota").await, 200).await;
    assert_eq!(about["used"], quota["used"], "{about}");
    assert_eq!(about["total"], quota["limit"], "{about}");

    run(&["purge", "cairn:photos/2026"]);
    let gone = get_as(&s, &u.token, "/v1/files/photos/2026/b.jpg").await;
    assert_eq!(gone.status(), 404);
    s.fsck_ok().await;
}
