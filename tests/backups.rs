//! Device backups through HTTP against the real server: a phone uploads the chunks it lacks,
//! commits a manifest; a new phone lists the backups and restores them file by file.

mod common;

use common::identity::*;
use common::*;
use serde_json::{json, Value};

/// A phone's file: its bytes cut into `piece`-byte chunks, as the manifest lists them.
struct PhoneFile {
    path: String,
    data: Vec<u8>,
    piece: usize,
}

impl PhoneFile {
    fn new(path: &str, data: Vec<u8>, piece: usize) -> Self {
        PhoneFile { path: path.into(), data, piece }
    }

    fn chunks(&self) -> Vec<&[u8]> {
        self.data.chunks(self.piece).collect()
    }

    fn entry(&self) -> Value {
        let chunks: Vec<Value> = self
            .chunks()
            .iter()
            .map(|c| json!({"hash": blake3::hash(c).to_hex().to_string(), "size": c.len()}))
            .collect();
        json!({"path": self.path, "size": self.data.len(), "mode": 33188, "mtime": "2026-11-20T08:30:00+08:00", "chunks": chunks})
    }
}

/// Upload what the server says is missing, the way a phone does.
async fn upload_missing(s: &Server, u: &User, files: &[&PhoneFile]) {
    let all: Vec<&[u8]> = files.iter().flat_map(|f| f.chunks()).collect();
    let hashes: Vec<String> = all.iter().map(|c| blake3::hash(c).to_hex().to_string()).collect();
    let r = s.client.post(s.url("/v1/chunks/missing")).bearer_auth(&u.token).json(&json!({"chunks": hashes})).send();
    let missing = body_of(r.await.unwrap(), 200).await["missing"].as_array().unwrap().clone();
    for (c, h) in all.iter().zip(&hashes) {
        if missing.iter().any(|m| m == h.as_str()) {
            let r = s.client.put(s.url(&format!("/v1/chunks/{h}"))).bearer_auth(&u.token).body(c.to_vec()).send();
            let status = r.await.unwrap().status().as_u16();
            assert!(status == 201 || status == 200, "chunk upload: {status}");
        }
    }
}

async fn post_backup(s: &Server, u: &User, device: &str, label: &str, files: &[&PhoneFile]) -> reqwest::Response {
    let entries: Vec<Value> = files.iter().map(|f| f.entry()).collect();
    let body = json!({"device_id": device, "label": label, "entries": entries});
    s.client.post(s.url("/v1/backups")).bearer_auth(&u.token).json(&body).send().await.unwrap()
}

async fn backed_up(s: &Server, u: &User, device: &str, label: &str, files: &[&PhoneFile]) -> String {
    upload_missing(s, u, files).await;
    let v = body_of(post_backup(s, u, device, label, files).await, 201).await;
    v["backup_id"].as_str().unwrap().to_string()
}

async fn list(s: &Server, u: &User, query: &str) -> Vec<Value> {
    body_of(get_as(s, &u.token, &format!("/v1/backups{query}")).await, 200).await["backups"].as_array().unwrap().clone()
}

/// The entry path as one percent-encoded segment, every byte outside the unreserved set encoded.
fn file_url(id: &str, path: &str) -> String {
    let encoded: String = path
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/v1/backups/{id}/files/{encoded}")
}

async fn quota(s: &Server, u: &User) -> Value {
    get_as(s, &u.token, "/v1/quota").await.json().await.unwrap()
}

#[tokio::test]
async fn a_phone_backs_up_and_a_new_phone_restores_every_file_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[]);
    let u = signed_in(&s).await;
    let photo = PhoneFile::new("/sdcard/DCIM/Camera/IMG 001.jpg", noise(700_000, 1), 64 * 1024);
    let note = PhoneFile::new("/sdcard/Documents/100%.txt", b"half of it is here".repeat(50), 300);
    let empty = PhoneFile::new("/sdcard/.nomedia", Vec::new(), 1);
    let files = [&photo, &note, &empty];
    upload_missing(&s, &u, &files).await;
    let staged_used = quota(&s, &u).await["used"].as_u64().unwrap();
    let v = body_of(post_backup(&s, &u, "pixel-8", "nightly", &files).await, 201).await;
    let id = v["backup_id"].as_str().unwrap().to_string();
    let size = (photo.data.len() + note.data.len()) as u64;
    assert_eq!((v["size"].as_u64(), v["files"].as_u64()), (Some(size), Some(3)));
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));

    // The staged chunks now belong to the backup: `used` does not count them twice.
    let q = quota(&s, &u).await;
    let items = q["metadata"].as_u64().unwrap();
    assert!(items > 3 * 128, "three entries and a head cost their item charges: {q}");
    assert_eq!(q["used"].as_u64(), Some(staged_used + items));
    assert_eq!(q["services"]["backups"].as_u64(), Some(size));

    for restart in [false, true] {
        if restart {
            s.stop();
            s = Server::start_in(dir.path(), &[]);
        }
        let listed = list(&s, &u, "").await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["backup_id"], id.as_str());
        assert_eq!((listed[0]["device_id"].as_str(), listed[0]["label"].as_str()), (Some("pixel-8"), Some("nightly")));
        let m = body_of(get_as(&s, &u.token, &format!("/v1/backups/{id}")).await, 200).await;
        let posted: Vec<Value> = files.iter().map(|f| f.entry()).collect();
        assert_eq!(m["entries"], Value::Array(posted), "the manifest as posted, in posted order");
        assert_eq!(m["backup_id"], id.as_str());
        for f in files {
            let r = get_as(&s, &u.token, &file_url(&id, &f.path)).await;
            assert_eq!(r.status(), 200, "{}", f.path);
            assert!(r.bytes().await.unwrap() == f.data, "{} restores byte for byte", f.path);
        }
    }
    let r = s
        .client
        .get(s.url(&file_url(&id, &photo.path)))
        .bearer_auth(&u.token)
        .header("range", "bytes=65000-65999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == photo.data[65_000..66_000]);
    assert_eq!(get_as(&s, &u.token, &file_url(&id, "/sdcard/nope")).await.status(), 404);
    s.fsck_ok().await;
}

#[tokio::test]
async fn bad_manifests_are_refused_and_store_nothing() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let a = PhoneFile::new("/a", noise(50_000, 2), 20_000);
    upload_missing(&s, &u, &[&a]).await;
    let before = quota(&s, &u).await;
    let post = |body: Value| s.client.post(s.url("/v1/backups")).bearer_auth(&u.token).json(&body).send();

    // A chunk the account never uploaded.
    let stranger = PhoneFile::new("/b", noise(10_000, 3), 10_000);
    let r = post_backup(&s, &u, "d", "", &[&a, &stranger]).await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "missing_chunks");
    assert_eq!(v["error"]["missing"], json!([blake3::hash(&stranger.data).to_hex().to_string()]));

    let mut e = a.entry();
    e["chunks"][0]["size"] = json!(19_999);
    e["size"] = json!(49_999);
    assert_eq!(error_code(post(json!({"device_id": "d", "entries": [e]})).await.unwrap(), 400).await, "bad_size");
    let mut e = a.entry();
    e["size"] = json!(1);
    assert_eq!(error_code(post(json!({"device_id": "d", "entries": [e]})).await.unwrap(), 400).await, "size_mismatch");
    let dup = json!({"device_id": "d", "entries": [a.entry(), a.entry()]});
    assert_eq!(error_code(post(dup).await.unwrap(), 400).await, "duplicate_path");
    let mut e = a.entry();
    e["mtime"] = json!("last tuesday");
    assert_eq!(error_code(post(json!({"device_id": "d", "entries": [e]})).await.unwrap(), 400).await, "bad_mtime");
    assert_eq!(error_code(post(json!({"entries": []})).await.unwrap(), 400).await, "bad_json");
    let r = s.client.post(s.url("/v1/backups")).bearer_auth(&u.token).body("{not json").send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "bad_json");

    assert!(list(&s, &u, "").await.is_empty());
    assert_eq!(quota(&s, &u).await, before);
    assert_eq!(get_as(&s, &u.token, "/v1/backups/0123456789abcdef").await.status(), 404);
    assert_eq!(get_as(&s, &u.token, "/v1/backups/not-an-id").await.status(), 404);
    s.fsck_ok().await;
}

#[tokio::test]
async fn retention_keeps_the_newest_backups_of_each_device() {
    let (s, _dir) = start_configured("backup_retention = 2\n");
    let u = signed_in(&s).await;
    let mut ids = Vec::new();
    for n in 0..3u64 {
        let f = PhoneFile::new("/sdcard/state.db", noise(30_000, 10 + n), 10_000);
        ids.push(backed_up(&s, &u, "phone", &format!("#{n}"), &[&f]).await);
    }
    let tablet = PhoneFile::new("/data/t", noise(5_000, 20), 5_000);
    let tablet_id = backed_up(&s, &u, "tablet", "", &[&tablet]).await;

    let phone: Vec<String> =
        list(&s, &u, "?device_id=phone").await.iter().map(|b| b["backup_id"].as_str().unwrap().into()).collect();
    assert_eq!(phone, vec![ids[2].clone(), ids[1].clone()], "newest first, the oldest dropped");
    assert_eq!(get_as(&s, &u.token, &format!("/v1/backups/{}", ids[0])).await.status(), 404);
    let all = list(&s, &u, "").await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["backup_id"], tablet_id.as_str());
    assert!(list(&s, &u, "?device_id=unknown").await.is_empty());
    // The dropped backup's bytes left the books: two phone backups and the tablet's.
    assert_eq!(quota(&s, &u).await["services"]["backups"].as_u64(), Some(30_000 * 2 + 5_000));
    s.fsck_ok().await;
}

#[tokio::test]
async fn another_accounts_backup_answers_404() {
    let s = Server::start();
    let (owner, other) = (signed_in(&s).await, signed_in(&s).await);
    let f = PhoneFile::new("/secret", noise(20_000, 4), 20_000);
    let id = backed_up(&s, &owner, "phone", "", &[&f]).await;
    assert_eq!(get_as(&s, &other.token, &format!("/v1/backups/{id}")).await.status(), 404);
    assert_eq!(get_as(&s, &other.token, &file_url(&id, "/secret")).await.status(), 404);
    let r = s.client.delete(s.url(&format!("/v1/backups/{id}"))).bearer_auth(&other.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(list(&s, &other, "").await.is_empty());
    // And another account cannot commit a backup of chunks it does not hold.
    let r = post_backup(&s, &other, "phone", "", &[&f]).await;
    assert_eq!(r.status(), 409);
    assert_eq!(get_as(&s, &owner.token, &file_url(&id, "/secret")).await.bytes().await.unwrap(), f.data);
}

#[tokio::test]
async fn deleted_backups_and_accounts_give_their_bytes_back_to_gc() {
    let s = Server::start();
    let (u, leaving) = (signed_in(&s).await, signed_in(&s).await);
    let f = PhoneFile::new("/big", noise(300_000, 5), 100_000);
    let id = backed_up(&s, &u, "phone", "", &[&f]).await;
    let g = PhoneFile::new("/other", noise(200_000, 6), 100_000);
    backed_up(&s, &leaving, "phone", "", &[&g]).await;

    let r = s.client.delete(s.url(&format!("/v1/backups/{id}"))).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = s.client.delete(s.url(&format!("/v1/backups/{id}"))).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let q = quota(&s, &u).await;
    assert_eq!((q["used"].as_u64(), q["services"]["backups"].as_u64()), (Some(0), Some(0)));
    delete_account(&s, &leaving).await;

    let r = s.client.post(s.url("/admin/gc")).bearer_auth(ADMIN_TOKEN).json(&json!({"grace_seconds": 0})).send();
    let report = body_of(r.await.unwrap(), 200).await;
    assert_eq!(report["chunks_freed"].as_u64(), Some(5), "three chunks of one backup, two of the other");
    s.fsck_ok().await;
}

#[tokio::test]
async fn fsck_finds_a_backup_whose_records_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[]);
    let u = signed_in(&s).await;
    let (a, b) = (PhoneFile::new("/a", noise(40_000, 7), 10_000), PhoneFile::new("/b", noise(9_000, 8), 9_000));
    backed_up(&s, &u, "phone", "", &[&a, &b]).await;
    backed_up(&s, &u, "tablet", "empty", &[]).await;
    s.fsck_ok().await;
    s.stop();

    let mut cfg = cairn::engine::EngineConfig::new(dir.path());
    common::s3::configure(&mut cfg);
    let e = cairn::engine::Engine::open(cfg, std::sync::Arc::new(cairn::metrics::Metrics::new())).unwrap();
    assert!(cairn::engine::fsck::check(&e).unwrap().ok(), "clean offline too, empty backup included");
    // Lose one entry record: the backup's head and objects now say two files, its entries one.
    let db = e.db();
    let cf = db.cf(cairn::store::CF_BACKUPS);
    let entry = db.raw().iterator_cf(cf, rocksdb::IteratorMode::Start).map(|kv| kv.unwrap().0).find(|k| k[16] == 1);
    db.raw().delete_cf(cf, entry.unwrap()).unwrap();
    let report = cairn::engine::fsck::check(&e).unwrap();
    assert!(!report.ok());
    assert!(report.problems.iter().any(|p| p.contains("by its entries")), "{:?}", report.problems);
}

#[tokio::test]
async fn many_phones_committing_at_once_all_land() {
    let s = Server::start();
    let users: Vec<User> = futures::future::join_all((0..10).map(|_| signed_in(&s))).await;
    let files: Vec<PhoneFile> = (0..10).map(|n| PhoneFile::new("/photo", noise(100_000, 100 + n), 50_000)).collect();
    for (u, f) in users.iter().zip(&files) {
        upload_missing(&s, u, &[f]).await;
    }
    // More at once than the server reads manifests at a time: the rest wait their turn.
    let one_each: Vec<[&PhoneFile; 1]> = files.iter().map(|f| [f]).collect();
    let posts = users.iter().zip(&one_each).map(|(u, f)| post_backup(&s, u, "phone", "", f));
    for r in futures::future::join_all(posts).await {
        assert_eq!(r.status(), 201);
    }
    for (u, f) in users.iter().zip(&files) {
        let id = list(&s, u, "").await[0]["backup_id"].as_str().unwrap().to_string();
        assert_eq!(get_as(&s, &u.token, &file_url(&id, "/photo")).await.bytes().await.unwrap(), f.data);
    }
}

#[tokio::test]
async fn empty_files_and_non_ascii_paths_restore() {
    let s = Server::start();
    let u = signed_in(&s).await;
    let empty = PhoneFile::new("/sdcard/.nomedia", Vec::new(), 1);
    let japanese = PhoneFile::new("日本語/ファイル.txt", b"konnichiwa".to_vec(), 4);
    let spaced = PhoneFile::new("/sdcard/Download/100% sure?#.pdf", noise(5000, 3), 4096);
    let id = backed_up(&s, &u, "phone", "one", &[&empty, &japanese, &spaced]).await;
    for f in [&empty, &japanese, &spaced] {
        let r = get_as(&s, &u.token, &file_url(&id, &f.path)).await;
        assert_eq!(r.status(), 200, "{}", f.path);
        assert_eq!(r.bytes().await.unwrap().to_vec(), f.data, "{}", f.path);
    }
    // A client that leaves the slashes unencoded reaches the same files.
    for f in [&japanese, &spaced] {
        let raw = file_url(&id, &f.path).replace("%2F", "/");
        let r = get_as(&s, &u.token, &raw).await;
        assert_eq!(r.status(), 200, "{raw}");
        assert_eq!(r.bytes().await.unwrap().to_vec(), f.data, "{raw}");
    }
    let head = s.client.head(s.url(&file_url(&id, &empty.path))).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!((head.status().as_u16(), head.headers()["content-length"].to_str().unwrap()), (200, "0"));
    let m = body_of(get_as(&s, &u.token, &format!("/v1/backups/{id}")).await, 200).await;
    assert_eq!(m["entries"][0]["size"], 0);
    assert_eq!(m["entries"][1]["path"], "日本語/ファイル.txt");
}
