//! The real `cairn-drive` binary against the real `cairn serve`: commands, two-way sync with
//! two devices of one account, backup and restore, and the messages people meet (507, 401,
//! network loss).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn commands_login_put_get_ls_rm_quota_logout() {
    let s = Server::start(&[]);
    let (id, _) = s.register();
    let d = Device::login(&s, &id, "laptop");
    let creds = d.config.path().join("credentials.json");
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);

    let work = tempfile::tempdir().unwrap();
    let big = noise(3 << 20, 1);
    write(work.path(), "big.bin", &big);
    write(work.path(), "small.txt", b"hello");
    let put = d.json(&["put", work.path().join("big.bin").to_str().unwrap(), "docs/big.bin"]);
    assert_eq!(put["file"]["size"], big.len() as u64);
    assert!(put["sent"]["chunks"].as_u64().unwrap() > 5, "{put}");
    // The same bytes again: every chunk is held, nothing is sent.
    let again = d.json(&["put", work.path().join("big.bin").to_str().unwrap(), "docs/copy.bin"]);
    assert_eq!(again["sent"]["bytes"], 0, "{again}");
    d.json(&["put", work.path().join("small.txt").to_str().unwrap()]);
    assert_eq!(
        d.ls(),
        vec![
            ("docs/big.bin".to_string(), big.len() as u64),
            ("docs/copy.bin".to_string(), big.len() as u64),
            ("small.txt".to_string(), 5)
        ]
    );
    let got = work.path().join("back.bin");
    d.json(&["get", "docs/big.bin", got.to_str().unwrap()]);
    assert!(std::fs::read(&got).unwrap() == big);

    let q = d.json(&["quota"]);
    assert!(q["used"].as_u64().unwrap() >= big.len() as u64, "{q}");
    assert_eq!(q["plan"], "free");

    d.json(&["rm", "docs/copy.bin"]);
    assert_eq!(d.paths(), vec!["docs/big.bin", "small.txt"]);
    let missing = d.run(&["rm", "docs/copy.bin"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no such file"), "{}", stderr(&missing));

    // A folder synced into a remote folder: its files land under it, the rest is left alone.
    let photos = tempfile::tempdir().unwrap();
    write(photos.path(), "2024/beach.jpg", &noise(100 << 10, 4));
    let synced = d.json(&["sync", photos.path().to_str().unwrap(), "Pictures/"]);
    assert_eq!(synced["uploaded"], 1, "{synced}");
    assert_eq!(d.paths(), vec!["Pictures/2024/beach.jpg", "docs/big.bin", "small.txt"]);
    // The folder stays bound to that remote folder.
    let other = d.run(&["sync", photos.path().to_str().unwrap(), "Elsewhere"]);
    assert_eq!(other.status.code(), Some(2), "{}", stderr(&other));
    d.json(&["rm", "Pictures/2024/beach.jpg"]);

    let status = d.json(&["status"]);
    assert_eq!(status["device"], "laptop");

    // A revoked session: the next command says to sign in again.
    let kept = std::fs::read(&creds).unwrap();
    d.json(&["logout"]);
    assert!(!creds.exists());
    let out = d.run(&["ls"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("login"), "{}", stderr(&out));
    std::fs::write(&creds, kept).unwrap();
    let out = d.run(&["ls"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("run `cairn-drive login` again"), "{}", stderr(&out));
}

#[test]
fn two_devices_converge() {
    let s = Server::start(&[]);
    let (id, _) = s.register();
    let (a, b) = (Device::login(&s, &id, "alpha"), Device::login(&s, &id, "beta"));
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ra, rb) = (da.path(), db.path());

    // New files, an empty one, a non-ASCII name, ignore rules and temporaries.
    write(ra, "a.txt", b"first");
    write(ra, "nested/deep/b.bin", &noise(600 << 10, 2));
    write(ra, "empty.txt", b"");
    write(ra, "日本語/ファイル.txt", "こんにちは".as_bytes());
    write(ra, ".cairnignore", b"*.log\nbuild/\n");
    write(ra, "debug.log", b"noise");
    write(ra, "build/out.o", b"object");
    write(ra, "notes.txt.swp", b"vim");
    write(ra, ".~lock.sheet.ods#", b"lock");
    let sa = a.sync(ra);
    assert_eq!(sa["uploaded"], 5, "{sa}");
    assert_eq!(a.paths(), vec![".cairnignore", "a.txt", "empty.txt", "nested/deep/b.bin", "日本語/ファイル.txt"]);
    let sb = b.sync(rb);
    assert_eq!(sb["downloaded"], 5, "{sb}");
    assert!(visible(ra) == tree(rb));
    // Nothing to do on either side now.
    assert_eq!(a.sync(ra)["uploaded"], 0);

    // A change on each side travels to the other.
    write(ra, "a.txt", b"second");
    write(rb, "nested/deep/b.bin", &noise(700 << 10, 3));
    a.sync(ra);
    let sb = b.sync(rb);
    assert_eq!((sb["uploaded"].as_u64(), sb["downloaded"].as_u64()), (Some(1), Some(1)), "{sb}");
    let sa = a.sync(ra);
    assert_eq!(sa["downloaded"], 1, "{sa}");
    assert!(visible(ra) == tree(rb));

    // A deletion travels; a file the other side never synced is not deleted.
    std::fs::remove_file(rb.join("empty.txt")).unwrap();
    write(rb, "fresh.txt", b"made on beta");
    let sb = b.sync(rb);
    assert_eq!(sb["deleted_remote"], 1, "{sb}");
    write(ra, "fresh-only-here.txt", b"alpha's own");
    let sa = a.sync(ra);
    assert_eq!(sa["deleted_local"], 1, "{sa}");
    assert!(!ra.join("empty.txt").exists());
    assert!(ra.join("fresh-only-here.txt").exists(), "a never-synced file was deleted");
    // beta deletes fresh.txt remotely; alpha, which has it synced, deletes it; a same-named
    // file that alpha never synced survives and is uploaded.
    std::fs::remove_file(rb.join("fresh.txt")).unwrap();
    b.sync(rb);
    write(rb, "late.txt", b"beta's late file");
    b.sync(rb);
    std::fs::remove_file(rb.join("late.txt")).unwrap();
    write(ra, "late.txt", b"alpha wrote this without ever syncing it");
    let sb = b.sync(rb);
    assert_eq!(sb["deleted_remote"], 1, "{sb}");
    let sa = a.sync(ra);
    assert_eq!(std::fs::read(ra.join("late.txt")).unwrap(), b"alpha wrote this without ever syncing it");
    assert_eq!(sa["uploaded"], 1, "{sa}");
    assert!(a.paths().contains(&"late.txt".to_string()));
    b.sync(rb);

    // A rename costs no upload, and travels as a rename.
    let ingested = s.metric("cairn_ingest_bytes_total");
    std::fs::create_dir_all(ra.join("moved")).unwrap();
    std::fs::rename(ra.join("nested/deep/b.bin"), ra.join("moved/b2.bin")).unwrap();
    let sa = a.sync(ra);
    assert_eq!(sa["renamed_remote"], 1, "{sa}");
    assert_eq!(sa["sent"]["bytes"], 0, "{sa}");
    assert_eq!(s.metric("cairn_ingest_bytes_total"), ingested, "a rename sent bytes");
    let paths = a.paths();
    assert!(
        paths.contains(&"moved/b2.bin".to_string()) && !paths.contains(&"nested/deep/b.bin".to_string()),
        "{paths:?}"
    );
    let sb = b.sync(rb);
    assert_eq!(sb["renamed_local"], 1, "{sb}");
    assert_eq!(sb["downloaded"], 0, "{sb}");
    assert_eq!(std::fs::read(rb.join("moved/b2.bin")).unwrap(), noise(700 << 10, 3));
    assert!(!rb.join("nested").exists(), "emptied folders go too");

    // Both change one file: the remote version keeps the name, the local one becomes a
    // conflicted copy that is uploaded and reaches the other device.
    write(ra, "a.txt", b"alpha's edit");
    write(rb, "a.txt", b"beta's edit");
    a.sync(ra);
    let sb = b.sync(rb);
    assert_eq!(sb["conflicts"], 1, "{sb}");
    assert_eq!(std::fs::read(rb.join("a.txt")).unwrap(), b"alpha's edit");
    let date = time_date();
    let copy = format!("a (conflicted copy beta {date}).txt");
    assert_eq!(std::fs::read(rb.join(&copy)).unwrap(), b"beta's edit");
    a.sync(ra);
    assert_eq!(std::fs::read(ra.join(&copy)).unwrap(), b"beta's edit");
    assert!(visible(ra) == tree(rb));

    // `status DIR` sees a pending change; `sync --dry-run` does nothing.
    write(ra, "pending.txt", b"x");
    let st = a.json(&["status", ra.to_str().unwrap()]);
    assert_eq!(st["pending"].as_array().unwrap().len(), 1, "{st}");
    assert!(!a.paths().contains(&"pending.txt".to_string()));
}

/// What alpha's folder holds that syncs: not its ignored files and temporaries.
fn visible(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let skip =
        |p: &str| p.ends_with(".log") || p.starts_with("build/") || p.ends_with(".swp") || p.starts_with(".~lock");
    tree(root).into_iter().filter(|(p, _)| !skip(p)).collect()
}

/// Today in UTC as YYYY-MM-DD, as conflict copies name it.
fn time_date() -> String {
    let days = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn backup_restores_byte_identical_and_second_backup_sends_the_change() {
    let s = Server::start(&[]);
    let (id, _) = s.register();
    let phone = Device::login(&s, &id, "phone");
    let src = tempfile::tempdir().unwrap();
    let r = src.path();
    for i in 0..60 {
        write(r, &format!("photos/{:02}/img-{i}.jpg", i % 6), &noise(64 << 10, 100 + i));
    }
    write(r, "big/video.mp4", &noise(24 << 20, 7));
    write(r, "empty", b"");
    write(r, "ünïcödé/naïve café.txt", "crème brûlée".as_bytes());
    std::fs::create_dir_all(r.join("empty-folder/inner")).unwrap();
    std::fs::set_permissions(r.join("empty"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(r.join("big/video.mp4"), std::fs::Permissions::from_mode(0o751)).unwrap();
    let past = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    std::fs::File::open(r.join("ünïcödé/naïve café.txt")).unwrap().set_modified(past).unwrap();

    let first = phone.json(&["backup", r.to_str().unwrap(), "--device", "pixel"]);
    let total: u64 = tree(r).values().map(|v| v.len() as u64).sum();
    assert_eq!(first["size"], total, "{first}");
    assert!(first["sent"]["bytes"].as_u64().unwrap() >= total - (1 << 20), "{first}");
    let list = phone.json(&["backups", "--device", "pixel"]);
    assert_eq!(list["backups"][0]["backup_id"], first["backup_id"]);

    // Another device restores it.
    let laptop = Device::login(&s, &id, "laptop");
    let dst = tempfile::tempdir().unwrap();
    let restored = laptop.json(&["restore", first["backup_id"].as_str().unwrap(), dst.path().to_str().unwrap()]);
    assert_eq!(restored["bytes"], total, "{restored}");
    assert!(tree(dst.path()) == tree(r), "restored bytes differ");
    assert!(dst.path().join("empty-folder/inner").is_dir());
    let meta = |root: &std::path::Path, p: &str| std::fs::metadata(root.join(p)).unwrap();
    for p in ["empty", "big/video.mp4", "ünïcödé/naïve café.txt", "photos/03/img-3.jpg", "empty-folder"] {
        assert_eq!(meta(dst.path(), p).permissions().mode(), meta(r, p).permissions().mode(), "{p}");
        assert_eq!(meta(dst.path(), p).modified().unwrap(), meta(r, p).modified().unwrap(), "{p}");
    }

    // Change about 1% of the bytes: the second backup sends about that much.
    let ingested = s.metric("cairn_ingest_bytes_total");
    write(r, "photos/00/img-0.jpg", &noise(64 << 10, 999));
    let mut video = std::fs::read(r.join("big/video.mp4")).unwrap();
    video[10 << 20..(10 << 20) + 100_000].copy_from_slice(&noise(100_000, 5));
    std::fs::write(r.join("big/video.mp4"), video).unwrap();
    let second = phone.json(&["backup", r.to_str().unwrap(), "--device", "pixel"]);
    let sent = second["sent"]["bytes"].as_u64().unwrap();
    let changed = (64 << 10) + 100_000;
    assert!(sent >= changed && sent <= changed + 4 * (256 << 10), "sent {sent} for {changed} changed of {total}");
    assert_eq!(s.metric("cairn_ingest_bytes_total") - ingested, sent as f64);
}

#[test]
fn quota_refusal_explains_and_an_interrupted_sync_resumes_without_resending() {
    let s = Server::start(&["--plan", "tiny=3MiB"]);
    let (id, account) = s.register();
    let d = Device::login(&s, &id, "desk");
    s.set_plan(&account, "tiny");
    let dir = tempfile::tempdir().unwrap();
    let data = noise(8 << 20, 11);
    write(dir.path(), "large.bin", &data);
    let out = d.run(&["sync", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains("not enough space") && msg.contains("3.0 MiB the plan allows") && msg.contains("free at least"),
        "{msg}"
    );
    assert!(d.paths().is_empty());

    // Room again: the re-run sends exactly the chunks the server lacks, none it holds.
    s.set_plan(&account, "free");
    let cutter = cairn_chunking::Cutter::new(Default::default()).unwrap();
    let ids: Vec<String> = cutter.chunks(&data).map(|c| cairn_chunking::ChunkId::of(c).to_hex()).collect();
    let r = s
        .http
        .post(s.url("/v1/chunks/missing"))
        .bearer_auth(&d.token)
        .json(&serde_json::json!({"chunks": ids}))
        .send()
        .unwrap();
    let missing: Vec<String> =
        r.json::<Value>().unwrap()["missing"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().into()).collect();
    assert!(!missing.is_empty() && missing.len() < ids.len(), "{} of {} missing", missing.len(), ids.len());
    let missing_bytes: u64 = cutter
        .chunks(&data)
        .filter(|c| missing.contains(&cairn_chunking::ChunkId::of(c).to_hex()))
        .map(|c| c.len() as u64)
        .sum();
    let ingested = s.metric("cairn_ingest_bytes_total");
    let sum = d.sync(dir.path());
    assert_eq!(sum["sent"]["chunks"], missing.len() as u64, "{sum}");
    assert_eq!(sum["sent"]["bytes"], missing_bytes, "{sum}");
    assert_eq!(s.metric("cairn_ingest_bytes_total") - ingested, missing_bytes as f64);
    assert_eq!(d.ls(), vec![("large.bin".to_string(), data.len() as u64)]);
    // And once in sync, a re-run sends nothing at all.
    let ingested = s.metric("cairn_ingest_bytes_total");
    assert_eq!(d.sync(dir.path())["sent"]["chunks"], 0);
    assert_eq!(s.metric("cairn_ingest_bytes_total"), ingested);
}

#[test]
fn network_loss_is_retried_then_reported() {
    let mut s = Server::start(&[]);
    let (id, _) = s.register();
    let d = Device::login(&s, &id, "desk");
    s.kill();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn-drive"))
        .arg("--config-dir")
        .arg(d.config.path())
        .args(["--retries", "2", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains("cannot reach") && msg.contains("after 3 attempts") && msg.contains("check the network"),
        "{msg}"
    );
}

#[test]
fn watch_syncs_on_filesystem_events() {
    use std::io::BufRead;
    let s = Server::start(&[]);
    let (id, _) = s.register();
    let d = Device::login(&s, &id, "desk");
    let dir = tempfile::tempdir().unwrap();
    let mut child = d
        .command(&["--json", "sync", "--watch", "--interval", "3600", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let next = |what: &str| loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no {what} within a minute"));
        if line.contains(what) {
            return line;
        }
    };
    next("\"synced\"");
    write(dir.path(), "watched.txt", b"seen by inotify");
    next("watched.txt");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(d.ls(), vec![("watched.txt".to_string(), 15)]);
}
