//! Packs in an S3-compatible bucket (`[storage] backend = "s3"`), against a real one: moto's
//! server on loopback (tools/setup installs it). The drive, backup and GC tests also run
//! whole against it in the s3 pass of tools/test (`TEST_PACK_STORAGE=s3`); these are what
//! only a bucket has: uploads that outlive an outage, damage in the bucket, an index rebuilt
//! from the bucket alone, and SIGKILL between seal, upload and switch.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cairn::engine::{fsck, Engine, EngineConfig, GcOptions};
use cairn::metrics::Metrics;
use cairn::store::keys::{AccountId, Namespace};
use common::faults::{Faults, FaultyFront};
use common::identity::*;
use common::s3::{self, Moto};
use common::*;

fn env_of(moto: &Moto, dir: &Path, more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = moto.server_env(&s3::prefix_for(dir));
    env.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn put_file(s: &Server, u: &User, path: &str, body: Vec<u8>) {
    let r = s.client.put(s.url(&format!("/v1/files/{path}"))).bearer_auth(&u.token).body(body).send().await.unwrap();
    body_of(r, 201).await;
}

async fn get_file(s: &Server, u: &User, path: &str) -> Vec<u8> {
    let r = get_as(s, &u.token, &format!("/v1/files/{path}")).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

/// Wait until every sealed pack is in the bucket and at least `uploads` were uploaded.
async fn drained(s: &Server, uploads: f64) {
    s.wait_for_metric("cairn_pack_uploads_total", |n| n >= uploads).await;
    s.wait_for_metric("cairn_pack_upload_backlog_packs", |n| n == 0.0).await;
}

fn pack_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map_or(0, |d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".pack")).count())
}

#[tokio::test]
async fn files_go_up_to_the_bucket_and_come_back_and_a_cold_small_read_fetches_little() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let env = env_of(&moto, dir.path(), &[]);
    let mut s = Server::start_in_env(dir.path(), &[], &env);
    let u = signed_in(&s).await;
    let files: Vec<Vec<u8>> = (0..3).map(|i| noise(3 << 20, 100 + i)).collect();
    for (i, f) in files.iter().enumerate() {
        put_file(&s, &u, &format!("f{i}"), f.clone()).await;
    }
    // 9 MiB in packs of 1 MiB: at least 8 of them sealed and uploaded.
    drained(&s, 8.0).await;
    let objects = moto.list(&s3::prefix_for(dir.path()));
    assert!(objects.len() >= 8, "{objects:?}");
    assert!(pack_files(&dir.path().join("packs")) <= 2, "only the open pack and the spare stay in packs/");
    assert_eq!(pack_files(&dir.path().join("pack-cache")), 0, "disk_cache_size = 0 keeps none");
    for (i, f) in files.iter().enumerate() {
        assert!(get_file(&s, &u, &format!("f{i}")).await == *f, "f{i} reads back from the bucket");
    }
    let read = s.metric("cairn_object_store_read_bytes_total").await;
    assert!(read >= (8 << 20) as f64, "read {read} bytes from the bucket");
    s.fsck_ok().await;

    // A new process has an empty cache: a 4 KiB range fetches its chunk and little more.
    s.stop();
    let s = Server::start_in_env(dir.path(), &[], &env);
    let u = login(&s, &u.identifier, &u.password).await;
    let r = s.client.get(s.url("/v1/files/f1")).bearer_auth(&u.token).header("Range", "bytes=1500000-1504095");
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == files[1][1_500_000..1_504_096]);
    let fetched = s.metric("cairn_object_store_read_bytes_total").await as u64;
    let bound = 256 * 1024 + 48 + 2 * cairn::pack::remote::CACHE_BLOCK;
    assert!((4096..=bound).contains(&fetched), "a cold 4 KiB read fetched {fetched} bytes");
}

#[tokio::test]
async fn with_the_store_frozen_uploads_are_still_acknowledged_and_the_backlog_drains_after() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let env = env_of(&moto, dir.path(), &[("CAIRN_STORAGE_TIMEOUT_SECS", "1")]);
    let s = Server::start_in_env(dir.path(), &[], &env);
    let u = signed_in(&s).await;
    moto.freeze();
    let files: Vec<Vec<u8>> = (0..2).map(|i| noise(2 << 20, 200 + i)).collect();
    for (i, f) in files.iter().enumerate() {
        put_file(&s, &u, &format!("f{i}"), f.clone()).await;
    }
    s.wait_for_metric("cairn_pack_upload_failures_total", |n| n >= 1.0).await;
    s.wait_for_metric("cairn_pack_upload_backlog_packs", |n| n >= 3.0).await;
    assert!(s.metric("cairn_pack_upload_backlog_bytes").await >= (3 << 20) as f64);
    assert_eq!(s.metric("cairn_object_store_up").await, 0.0);
    // Still ready: uploads go on, and what waits is read from local disk.
    let r = s.client.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for (i, f) in files.iter().enumerate() {
        assert!(get_file(&s, &u, &format!("f{i}")).await == *f);
    }
    moto.thaw();
    s.wait_for_metric("cairn_pack_upload_backlog_packs", |n| n == 0.0).await;
    assert_eq!(s.metric("cairn_object_store_up").await, 1.0);
    assert!(s.metric("cairn_pack_uploads_total").await >= 3.0);
    for (i, f) in files.iter().enumerate() {
        assert!(get_file(&s, &u, &format!("f{i}")).await == *f);
    }
    s.fsck_ok().await;
}

/// Damage the largest pack in the bucket with `damage` while the server is down; then the file
/// is never served whole, and fsck reports the pack.
async fn damage_is_found_by_fsck_and_never_served(seed: u64, damage: impl FnOnce(&mut Vec<u8>)) {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let env = env_of(&moto, dir.path(), &[]);
    let mut s = Server::start_in_env(dir.path(), &[], &env);
    let u = signed_in(&s).await;
    let data = noise(3 << 20, seed);
    put_file(&s, &u, "f", data.clone()).await;
    drained(&s, 2.0).await;
    s.stop();
    let prefix = s3::prefix_for(dir.path());
    let (key, _) = moto.list(&prefix).into_iter().max_by_key(|(_, size)| *size).unwrap();
    let mut body = moto.get(&key).await;
    damage(&mut body);
    moto.overwrite(&key, body).await;

    let s = Server::start_in_env(dir.path(), &[], &env);
    let u = login(&s, &u.identifier, &u.password).await;
    let r = get_as(&s, &u.token, "/v1/files/f").await;
    let status = r.status();
    let got = r.bytes().await;
    // Either an error status, or a stream that breaks off at the damaged chunk.
    if let Ok(b) = got {
        assert!(status != 200 || b.len() < data.len(), "damaged bytes were served as the file");
    }
    let r = s.client.post(s.url("/admin/fsck")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let v = body_of(r, 200).await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["problems"].to_string().contains("pack"), "{v}");
    assert!(s.client.get(s.url("/healthz")).send().await.unwrap().status() == 200, "the server stays up");
}

#[tokio::test]
async fn a_corrupted_object_is_found_by_fsck_and_never_served() {
    // One byte flipped in the middle of the pack (inside an entry, past the header).
    damage_is_found_by_fsck_and_never_served(300, |body| {
        let at = body.len() / 2;
        body[at] ^= 0x40;
    })
    .await;
}

#[tokio::test]
async fn a_truncated_object_is_found_by_fsck_and_never_served() {
    // Cut to its first half: the entries after the cut, the table and the trailer are gone.
    damage_is_found_by_fsck_and_never_served(301, |body| body.truncate(body.len() / 2)).await;
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_and_an_outage_answers_503_and_loses_nothing() {
    let moto = Moto::start();
    let front = FaultyFront::start(&moto);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = front.endpoint();
    let env = env_of(
        &moto,
        dir.path(),
        &[("CAIRN_STORAGE_ENDPOINT", endpoint.as_str()), ("CAIRN_STORAGE_TIMEOUT_SECS", "2")],
    );
    let mut s = Server::start_in_env(dir.path(), &[], &env);
    let u = signed_in(&s).await;

    // Every request meets one 503 SlowDown or 500 InternalError first: the retries absorb them.
    front.set(Faults::FailEachOnce);
    let files: Vec<Vec<u8>> = (0..2).map(|i| noise(3 << 20, 500 + i)).collect();
    for (i, f) in files.iter().enumerate() {
        put_file(&s, &u, &format!("f{i}"), f.clone()).await;
    }
    drained(&s, 5.0).await;
    assert_eq!(s.metric("cairn_pack_upload_failures_total").await, 0.0, "each error was retried within its try");
    for (i, f) in files.iter().enumerate() {
        assert!(get_file(&s, &u, &format!("f{i}")).await == *f, "f{i} reads back through the errors");
    }
    s.fsck_ok().await;
    assert!(front.injected() >= 20, "only {} errors were made up", front.injected());

    // An outage: every answer an error. After a restart (an empty memory cache) reads reach the
    // store, and answer 503 storage_unavailable with Retry-After; writes are still taken.
    s.stop();
    front.set(Faults::FailAll);
    let mut s = Server::start_in_env(dir.path(), &[], &env);
    let u = login(&s, &u.identifier, &u.password).await;
    let r = get_as(&s, &u.token, "/v1/files/f0").await;
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    assert_eq!(error_code(r, 503).await, "storage_unavailable");
    let late = noise(2 << 20, 510);
    put_file(&s, &u, "late", late.clone()).await;
    s.wait_for_metric("cairn_pack_upload_failures_total", |n| n >= 1.0).await;
    assert_eq!(s.client.get(s.url("/healthz")).send().await.unwrap().status(), 200);

    // The store is back: the backlog drains and everything reads back.
    front.set(Faults::Pass);
    s.wait_for_metric("cairn_pack_upload_backlog_packs", |n| n == 0.0).await;
    assert!(get_file(&s, &u, "late").await == late);
    for (i, f) in files.iter().enumerate() {
        assert!(get_file(&s, &u, &format!("f{i}")).await == *f);
    }
    s.fsck_ok().await;
    s.stop();
}

#[tokio::test]
async fn the_index_is_rebuilt_from_the_bucket_alone() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let env = env_of(&moto, dir.path(), &[]);
    let mut s = Server::start_in_env(dir.path(), &[], &env);
    let u = signed_in(&s).await;
    let data = noise(3 << 20, 400);
    put_file(&s, &u, "f", data.clone()).await;
    drained(&s, 2.0).await;
    s.stop();
    // What the stop sealed goes up at the next start; then nothing is left locally.
    let mut s = Server::start_in_env(dir.path(), &[], &env);
    s.wait_for_metric("cairn_pack_upload_backlog_packs", |n| n == 0.0).await;
    s.stop();
    std::fs::remove_dir_all(dir.path().join("packs")).unwrap();
    std::fs::remove_dir_all(dir.path().join("pack-cache")).unwrap();
    std::fs::remove_file(dir.path().join("pack-ids")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["fsck", "--rebuild-index", "--data-dir"])
        .arg(dir.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CAIRN_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let s = Server::start_in_env(dir.path(), &[], &env);
    let u = login(&s, &u.identifier, &u.password).await;
    assert!(get_file(&s, &u, "f").await == data);
    s.fsck_ok().await;
}

#[tokio::test]
async fn a_multipart_upload_cut_by_a_crash_is_aborted_before_the_next_upload() {
    let moto = Moto::start();
    let front = FaultyFront::start(&moto);
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3::prefix_for(dir.path());
    let endpoint = front.endpoint();
    let env = env_of(
        &moto,
        dir.path(),
        &[("CAIRN_STORAGE_ENDPOINT", endpoint.as_str()), ("CAIRN_PACK_TARGET_SIZE", "24MiB")],
    );
    let mut s = Server::start_in_env(dir.path(), &[], &env);
    let u = signed_in(&s).await;
    // One pack of 18 MiB, sealed when idle: three parts, none of which is ever answered.
    front.set(Faults::HoldParts);
    let data = noise(18 << 20, 600);
    put_file(&s, &u, "big", data.clone()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while moto.multipart_uploads(&prefix) == 0 {
        assert!(std::time::Instant::now() < deadline, "no multipart upload began");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.kill9();
    assert_eq!(moto.multipart_uploads(&prefix), 1, "the crash left its upload's parts");

    front.set(Faults::Pass);
    let s = Server::start_in_env(dir.path(), &[], &env);
    s.wait_for_metric("cairn_pack_uploads_total", |n| n >= 1.0).await;
    assert_eq!(moto.multipart_uploads(&prefix), 0, "the journaled upload was aborted");
    let u = login(&s, &u.identifier, &u.password).await;
    assert!(get_file(&s, &u, "big").await == data);
    s.fsck_ok().await;
}

// SIGKILL between seal, upload and switch (and GC's removes), as tests/crash.rs does on local
// disk: a child process writes, acknowledges, deletes and collects while the parent kills it.

const ACCOUNT: AccountId = AccountId([9; 16]);

fn content(round: u64, i: u64) -> Vec<u8> {
    noise(((round * 7919 + i * 104_729) % (1 << 20)) as usize + 1, round * 1000 + i)
}

fn crash_config(dir: &Path, moto: &Moto) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.pack_target_size = 1 << 20; // many seals, uploads and switches a round
    c.storage = s3::storage(moto, &s3::prefix_for(dir));
    // A disk cache of three packs: kills land in moves into it and evictions from it too.
    c.storage.disk_cache_size = cairn::config::ByteSize(3 << 20);
    c
}

/// A moto the child reaches through the endpoint its parent gives it.
fn moto_of_parent() -> Moto {
    let port = std::env::var("CAIRN_CRASH_MOTO_PORT").unwrap().parse().unwrap();
    Moto::attach(port)
}

#[test]
#[ignore = "run only as the child process of sigkill_between_seal_upload_and_switch_loses_nothing"]
fn object_store_crash_child() {
    let dir = std::env::var("CAIRN_CRASH_DIR").expect("CAIRN_CRASH_DIR");
    let round: u64 = std::env::var("CAIRN_CRASH_ROUND").unwrap().parse().unwrap();
    let moto = moto_of_parent();
    let engine = Engine::open(crash_config(dir.as_ref(), &moto), Arc::new(Metrics::new())).unwrap();
    let collector = {
        let e = engine.clone();
        std::thread::spawn(move || loop {
            let _ = e.gc(GcOptions { grace_secs: 0, compact_below: 1.0, ..Default::default() });
            let _ = e.seal_idle();
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(common::write_ack_delete_forever(&engine, ACCOUNT, round, content));
    drop(collector);
}

/// Let the child acknowledge a few writes (so packs seal and go up), then kill it at a moment
/// that differs from round to round.
fn run_and_kill(dir: &Path, port: u16, round: u64) -> Vec<String> {
    let env = [
        ("CAIRN_CRASH_DIR", dir.display().to_string()),
        ("CAIRN_CRASH_ROUND", round.to_string()),
        ("CAIRN_CRASH_MOTO_PORT", port.to_string()),
    ];
    common::run_and_kill("object_store_crash_child", &env, 3, Duration::from_millis((round * 7919 % 29) * 25))
}

#[test]
fn sigkill_between_seal_upload_and_switch_loses_nothing_and_leaves_no_orphan() {
    let moto = Moto::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut survivors: Vec<(u64, u64)> = Vec::new();
    let rounds = 20u64;
    for round in 0..rounds {
        let acked: Vec<u64> = run_and_kill(tmp.path(), moto.port, round)
            .iter()
            .filter_map(|l| l.trim().strip_prefix("ACK ").map(|r| r.split(' ').nth(1).unwrap().parse().unwrap()))
            .collect();
        if let Some(&last) = acked.last() {
            survivors.extend([last.checked_sub(1), Some(last)].into_iter().flatten().map(|i| (round, i)));
        }
        let engine = Engine::open(crash_config(tmp.path(), &moto), Arc::new(Metrics::new())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for &(r, i) in &survivors {
            let name = format!("r{r}-{i}");
            let obj = engine
                .get_object(&ACCOUNT, Namespace::Scratch, name.as_bytes())
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: {name} is gone"));
            let chunks = engine.object_chunks(&ACCOUNT, Namespace::Scratch, name.as_bytes(), &obj).unwrap();
            assert!(rt.block_on(engine.read_all(chunks)).unwrap() == content(r, i), "round {round}: {name} differs");
        }
        let report = fsck::check(&engine).unwrap();
        assert!(report.ok(), "round {round}: fsck found {:?}", report.problems);
        engine.close().unwrap();
    }
    assert!(survivors.len() as u64 >= rounds, "too few acknowledged writes: {}", survivors.len());

    // After one collection, every pack in the bucket holds live chunks only: no orphan.
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::open(crash_config(tmp.path(), &moto), metrics.clone()).unwrap();
    engine.gc(GcOptions { grace_secs: 0, compact_below: 1.0, ..Default::default() }).unwrap();
    let report = fsck::check(&engine).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, report.chunks_indexed, "after GC every pack entry is a live chunk");
    let quiet = engine.packs().quiet().unwrap();
    let objects = moto.list(&s3::prefix_for(tmp.path()));
    assert!(!objects.is_empty(), "the children's packs went up to the bucket");
    eprintln!("{} objects survived {rounds} kills; {} packs in the bucket", survivors.len(), objects.len());
    for (key, _) in objects {
        let id = u64::from_str_radix(key.rsplit('/').next().unwrap().trim_end_matches(".pack"), 16).unwrap();
        assert!(quiet.contains(&id), "{key} is not a pack the store knows");
        assert!(!engine.packs().table(id).unwrap().is_empty(), "{key} is an empty pack GC left behind");
    }
    engine.close().unwrap();
}
