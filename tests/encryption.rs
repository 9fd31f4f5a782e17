//! Encryption at rest, through the engine on a real data directory: what lies on disk, what
//! a damaged or swapped entry does, key rotation under load, and plaintext data directories
//! from before encryption.

mod common;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cairn::chunk::ChunkId;
use cairn::engine::{fsck, Engine, EngineConfig, GcOptions, Precondition};
use cairn::metrics::Metrics;
use cairn::store::keys::{AccountId, Namespace};
use common::noise;

fn config(dir: &Path, encrypt: bool) -> EngineConfig {
    let mut cfg = EngineConfig::new(dir);
    cfg.pack_target_size = 4 << 20;
    cfg.keys.encrypt = encrypt;
    cfg
}

fn open(dir: &Path, encrypt: bool) -> Engine {
    Engine::open(config(dir, encrypt), Arc::new(Metrics::new())).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Store `data` as object `name` of `account`; returns its chunk list.
fn put(e: &Engine, account: &AccountId, name: &[u8], data: &[u8]) -> Vec<(ChunkId, u32)> {
    rt().block_on(async {
        let ing = e.ingest_bytes(Bytes::copy_from_slice(data)).await.unwrap();
        let chunks = ing.manifest.chunks.clone();
        e.put_object(account, Namespace::Drive, name, ing, u64::MAX, Precondition::None).unwrap().unwrap();
        chunks
    })
}

fn read(e: &Engine, chunks: &[(ChunkId, u32)]) -> cairn::error::Result<Vec<u8>> {
    rt().block_on(e.read_all(chunks.to_vec()))
}

/// Every file under `dir`, but those under `skip`.
fn files(dir: &Path, skip: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.starts_with(skip) {
            continue;
        } else if path.is_dir() {
            out.extend(files(&path, skip));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The content, its hash and every chunk's id, raw and as hex, in no file outside the database
/// (whose index is where chunk ids belong); the content in no file at all.
fn assert_nothing_shows(dir: &Path, contents: &[&[u8]], chunks: &[(ChunkId, u32)]) {
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for c in contents {
        let hash = blake3::hash(c);
        needles.push(hash.as_bytes().to_vec());
        needles.push(hash.to_hex().as_bytes().to_vec());
    }
    for (id, _) in chunks {
        needles.push(id.0.to_vec());
        needles.push(id.to_string().into_bytes());
    }
    let outside_db = files(dir, &dir.join("db"));
    assert!(outside_db.iter().any(|p| p.extension().is_some_and(|e| e == "pack")), "packs were scanned");
    for path in &outside_db {
        let bytes = std::fs::read(path).unwrap();
        for n in &needles {
            assert!(!contains(&bytes, n), "{} holds a hash in the clear", path.display());
        }
    }
    for path in files(dir, &dir.join("no such dir")) {
        let bytes = std::fs::read(&path).unwrap();
        for c in contents {
            // Any 64 bytes from the start, the middle and the end of each content.
            for at in [0, c.len() / 2, c.len() - 64] {
                assert!(!contains(&bytes, &c[at..at + 64]), "{} holds content in the clear", path.display());
            }
        }
    }
}

#[test]
fn no_file_under_the_data_dir_shows_content_or_its_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let text = "a known sentence that compresses well, over and over; ".repeat(40_000).into_bytes();
    let random = noise(3 << 20, 5);
    let account = AccountId([7; 16]);
    let e = open(dir.path(), true);
    let mut chunks = put(&e, &account, b"text", &text);
    chunks.extend(put(&e, &account, b"noise", &random));
    // Open packs first (as after a crash), then sealed ones.
    assert_nothing_shows(dir.path(), &[&text, &random], &chunks);
    e.close().unwrap();
    assert_nothing_shows(dir.path(), &[&text, &random], &chunks);
    drop(e);
    let e = open(dir.path(), true);
    assert_eq!(read(&e, &chunks).unwrap(), [text, random].concat());
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.plaintext_bytes, 0);
}

#[test]
fn a_flipped_byte_anywhere_in_a_sealed_pack_fails_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(1 << 20, 9);
    let account = AccountId([8; 16]);
    let e = open(dir.path(), true);
    let chunks = put(&e, &account, b"f", &data);
    e.close().unwrap();
    let id = e.packs().list().unwrap()[0];
    drop(e);
    let pack = dir.path().join("packs").join(format!("{id:016x}.pack"));
    let clean = std::fs::read(&pack).unwrap();
    // An entry's sealed bytes, and the first frame's nonce.
    for at in [100_000, 24 + 20] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&pack, &bytes).unwrap();
        let e = open(dir.path(), true);
        let report = fsck::check(&e).unwrap();
        assert!(report.problems.iter().any(|p| p.contains("authentication")), "flip at {at}: {:?}", report.problems);
        let err = read(&e, &chunks).expect_err("a damaged entry is never served");
        assert!(err.to_string().contains("authentication"), "{err}");
        drop(e);
    }
    // The sealed table's tag: the table fails to open, so the next start rebuilds it from the
    // entries, which all verify (as for a version 1 table that fails its checksum).
    let mut bytes = clean.clone();
    let at = clean.len() - 70;
    bytes[at] ^= 0x01;
    std::fs::write(&pack, &bytes).unwrap();
    let e = open(dir.path(), true);
    assert!(fsck::check(&e).unwrap().ok());
    assert_eq!(read(&e, &chunks).unwrap(), data);
}

#[test]
fn two_valid_entries_swapped_fail_as_the_wrong_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), true);
    let account = AccountId([9; 16]);
    // Two single-chunk objects of the same length, so their entries can change places.
    let (a, b) = (noise(10_000, 1), noise(10_000, 2));
    let ca = put(&e, &account, b"a", &a);
    let cb = put(&e, &account, b"b", &b);
    e.close().unwrap();
    let id = e.packs().list().unwrap()[0];
    drop(e);
    let pack = dir.path().join("packs").join(format!("{id:016x}.pack"));
    let mut bytes = std::fs::read(&pack).unwrap();
    let len = 48 + 10_000 + 56;
    let (first, second) = (24, 24 + len);
    let entry_a = bytes[first..first + len].to_vec();
    let entry_b = bytes[second..second + len].to_vec();
    bytes[first..first + len].copy_from_slice(&entry_b);
    bytes[second..second + len].copy_from_slice(&entry_a);
    std::fs::write(&pack, &bytes).unwrap();
    let e = open(dir.path(), true);
    assert!(read(&e, &ca).is_err(), "the entry at a's place is b's: refused");
    assert!(read(&e, &cb).is_err());
    assert!(!fsck::check(&e).unwrap().problems.is_empty());
}

#[test]
fn rotation_with_uploads_running_loses_nothing_and_retires_the_old_keys() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), true);
    let done = Arc::new(AtomicBool::new(false));
    let uploader = {
        let (e, done) = (e.clone(), done.clone());
        std::thread::spawn(move || {
            let mut stored = Vec::new();
            let mut n = 0u64;
            while !done.load(Ordering::Acquire) || n < 8 {
                let data = noise(300_000 + n as usize * 1000, 100 + n);
                let account = AccountId([(n % 3) as u8; 16]);
                let chunks = put(&e, &account, format!("f{n}").as_bytes(), &data);
                stored.push((chunks, data));
                n += 1;
            }
            stored
        })
    };
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(e.rotate_key().unwrap());
        e.gc(GcOptions { grace_secs: 3600, compact_below: 0.5, rekey: true, ..Default::default() }).unwrap();
    }
    done.store(true, Ordering::Release);
    let stored = uploader.join().unwrap();
    // Every pack under the last key, every older key retired.
    e.gc(GcOptions { grace_secs: 3600, compact_below: 0.5, rekey: true, ..Default::default() }).unwrap();
    for (chunks, data) in &stored {
        assert!(read(&e, chunks).unwrap() == *data, "an upload made during rotation reads back");
    }
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let last = format!("{:08x}", keys.last().unwrap());
    assert_eq!(report.packs_by_key.keys().collect::<Vec<_>>(), vec![&last], "{:?}", report.packs_by_key);
    e.close().unwrap();
    drop(e);
    let keys_file = std::fs::read(dir.path().join("datakeys")).unwrap();
    assert_eq!(keys_file.len(), 16 + 4 + 72, "one data key left");
    let e = open(dir.path(), true);
    for (chunks, data) in &stored {
        assert!(read(&e, chunks).unwrap() == *data);
    }
}

#[test]
fn a_plaintext_data_dir_keeps_working_and_rekeying_seals_it() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId([4; 16]);
    let data = noise(2 << 20, 77);
    let chunks = {
        let e = open(dir.path(), false);
        let chunks = put(&e, &account, b"old", &data);
        e.close().unwrap();
        chunks
    };
    assert!(!dir.path().join("master.key").exists(), "no keys while encryption is off");
    let e = open(dir.path(), true);
    assert!(dir.path().join("master.key").exists());
    assert_eq!(read(&e, &chunks).unwrap(), data, "version 1 packs read as before");
    let before = fsck::check(&e).unwrap();
    assert!(before.ok(), "{:?}", before.problems);
    assert!(before.plaintext_bytes > 2 << 20, "{}", before.plaintext_bytes);
    let r = e.gc(GcOptions { grace_secs: 3600, compact_below: 0.5, rekey: true, ..Default::default() }).unwrap();
    assert!(r.packs_rekeyed >= 1, "{r:?}");
    let after = fsck::check(&e).unwrap();
    assert!(after.ok(), "{:?}", after.problems);
    assert_eq!(after.plaintext_bytes, 0);
    assert_eq!(read(&e, &chunks).unwrap(), data);
    e.close().unwrap();
    drop(e);
    assert_nothing_shows(dir.path(), &[&data], &chunks);
    // The index can still be rebuilt from the (sealed) packs alone.
    let e = open(dir.path(), true);
    assert!(fsck::rebuild_index(&e).unwrap() > 0);
    assert!(fsck::check(&e).unwrap().ok());
    assert_eq!(read(&e, &chunks).unwrap(), data);
}

#[test]
fn without_its_master_key_a_sealed_data_dir_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = open(dir.path(), true);
        put(&e, &AccountId([1; 16]), b"x", &noise(100_000, 3));
        e.close().unwrap();
    }
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let err = Engine::open(config(dir.path(), true), Arc::new(Metrics::new())).err().expect("refused");
    assert!(err.to_string().contains("master"), "{err}");
}

/// Through the real server: an upload leaves no hash of it outside the database, and after a
/// byte of its pack is flipped the download fails (the body breaks off; no wrong byte is ever
/// sent), fsck reports the entry, and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_of_a_tampered_pack_fails_cleanly_and_fsck_reports_it() {
    use common::identity::{get_as, signed_in};
    let mut s = common::Server::start();
    let u = signed_in(&s).await;
    let data = noise(1 << 20, 31);
    let r = s.client.put(s.url("/v1/files/photo.jpg")).bearer_auth(&u.token).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let back = get_as(&s, &u.token, "/v1/files/photo.jpg").await.bytes().await.unwrap();
    assert!(back == data);
    s.stop();
    assert_nothing_shows(&s.dir, &[&data], &[]);
    let pack = files(&s.dir.join("packs"), Path::new("-"))
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 1 << 20)
        .expect("the pack holding the file");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[500_000] ^= 0x04;
    std::fs::write(&pack, &bytes).unwrap();

    let s = common::Server::start_in(&s.dir.clone(), &[]);
    // The failure may come before the first byte of the body, and then the connection ends
    // before hyper has written the headers: no response at all is a clean failure too.
    let r = s.client.get(s.url("/v1/files/photo.jpg")).bearer_auth(&u.token).send().await;
    let served_whole = match r {
        Ok(r) => r.bytes().await.is_ok_and(|b| b.len() == data.len()),
        Err(_) => false,
    };
    assert!(!served_whole, "a damaged file is never served whole");
    let r = s.client.post(s.url("/admin/fsck")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    let v = common::body_of(r, 200).await;
    assert_eq!(v["ok"], false);
    assert!(v["problems"].to_string().contains("authentication"), "{v}");
    let r = get_as(&s, &u.token, "/v1/quota").await;
    assert_eq!(r.status(), 200, "the server goes on");
}

fn cairn(args: &[&str]) -> serde_json::Value {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).env("CAIRN_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_cli_rotates_rekeys_and_reports_keys_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(1 << 20, 12);
    let chunks = {
        let e = open(dir.path(), true);
        let chunks = put(&e, &AccountId([3; 16]), b"f", &data);
        e.close().unwrap();
        chunks
    };
    let d = dir.path().to_str().unwrap();
    let key = cairn(&["rotate-key", "--data-dir", d, "--json"])["key"].as_str().unwrap().to_string();
    let before = cairn(&["fsck", "--data-dir", d, "--json"]);
    assert_eq!(before["ok"], true, "{before}");
    assert!(before["packs_by_key"].as_object().unwrap().keys().any(|k| *k != key), "{before}");
    let gc = cairn(&["gc", "--data-dir", d, "--rekey", "--json"]);
    assert!(gc["packs_rekeyed"].as_u64().unwrap() >= 1 && gc["keys_retired"] == 1, "{gc}");
    let after = cairn(&["fsck", "--data-dir", d, "--json"]);
    assert_eq!(after["ok"], true, "{after}");
    assert_eq!(after["packs_by_key"].as_object().unwrap().keys().collect::<Vec<_>>(), vec![&key], "{after}");
    let e = open(dir.path(), true);
    assert_eq!(read(&e, &chunks).unwrap(), data);
}
