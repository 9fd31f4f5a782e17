//! The storage engine through its library API, on a real data directory: round trips, dedup,
//! concurrency, corruption.

mod common;
use bytes::Bytes;
use cairn::chunk::ChunkingParams;
use cairn::engine::{Engine, EngineConfig, Precondition};
use cairn::metrics::Metrics;
use cairn::store::keys::{AccountId, Namespace};
use common::noise;
use proptest::prelude::*;
use std::sync::Arc;

fn open(dir: &std::path::Path, pack_size: u64) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.pack_target_size = pack_size;
    Engine::open(cfg, Arc::new(Metrics::new())).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn round_trip(e: &Engine, data: &[u8]) {
    let ing = e.ingest_bytes(Bytes::copy_from_slice(data)).await.unwrap();
    assert_eq!(ing.manifest.size, data.len() as u64);
    assert_eq!(&ing.manifest.hash, blake3::hash(data).as_bytes());
    let back = e.read_all(ing.manifest.chunks.clone()).await.unwrap();
    assert!(back == data, "round trip of {} bytes differs", data.len());
}

#[test]
fn round_trips_at_the_edges() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 64 << 20);
    let p = ChunkingParams::default();
    rt().block_on(async {
        for n in [0, 1, p.min as usize, p.avg as usize, p.max as usize, p.max as usize + 1, 3 * p.max as usize] {
            round_trip(&e, &noise(n, n as u64)).await;
        }
        round_trip(&e, &vec![0u8; 5 << 20]).await; // all zeros: every chunk is `max` and the same
        round_trip(&e, "text ".repeat(300_000).as_bytes()).await;
    });
}

#[test]
fn multi_pack_input_round_trips_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(9 << 20, 99);
    let account = AccountId([1; 16]);
    {
        let e = open(dir.path(), 1 << 20); // tiny packs: the input spans many
        rt().block_on(async {
            let ing = e.ingest_bytes(Bytes::from(data.clone())).await.unwrap();
            e.put_object(&account, Namespace::Scratch, b"big", ing, u64::MAX, Precondition::None).unwrap().unwrap();
        });
        assert!(e.packs().list().unwrap().len() >= 8);
        e.close().unwrap();
    }
    let e = open(dir.path(), 1 << 20);
    let obj = e.get_object(&account, Namespace::Scratch, b"big").unwrap().unwrap();
    let chunks = e.object_chunks(&account, Namespace::Scratch, b"big", &obj).unwrap();
    let back = rt().block_on(e.read_all(chunks)).unwrap();
    assert!(back == data);
    let report = cairn::engine::fsck::check(&e).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_sizes_round_trip(len in 0usize..1_500_000, seed in any::<u64>(), text in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), 4 << 20);
        let data = if text { format!("{seed} lorem ipsum ").repeat(len / 16 + 1).into_bytes()[..len].to_vec() } else { noise(len, seed) };
        rt().block_on(round_trip(&e, &data));
    }
}

#[test]
fn the_same_64_mib_is_stored_once_and_an_insert_adds_under_1_mib() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 64 << 20);
    let data = noise(64 << 20, 5);
    rt().block_on(async {
        let first = e.ingest_bytes(Bytes::from(data.clone())).await.unwrap();
        assert!(first.new_stored_bytes >= 64 << 20);
        let again = e.ingest_bytes(Bytes::from(data.clone())).await.unwrap();
        assert_eq!(again.new_chunks, 0);
        assert_eq!(again.new_stored_bytes, 0);
        assert_eq!(again.manifest, first.manifest);

        let mut edited = data.clone();
        edited.insert(32 << 20, 0x42);
        let third = e.ingest_bytes(Bytes::from(edited.clone())).await.unwrap();
        assert!(third.new_stored_bytes < 1 << 20, "one inserted byte added {} bytes", third.new_stored_bytes);
        assert!(e.read_all(third.manifest.chunks).await.unwrap() == edited);
    });
}

#[test]
fn concurrent_ingests_of_the_same_new_data_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 64 << 20);
    let data = Bytes::from(noise(8 << 20, 11));
    rt().block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (e, d) = (e.clone(), data.clone());
                tokio::spawn(async move { e.ingest_bytes(d).await.unwrap() })
            })
            .collect();
        let mut new_chunks = 0;
        let mut stored = 0;
        let mut manifests = Vec::new();
        for t in tasks {
            let ing = t.await.unwrap();
            new_chunks += ing.new_chunks;
            stored += ing.new_stored_bytes;
            manifests.push(ing.manifest.clone());
        }
        let distinct = manifests[0].chunks.iter().map(|c| c.0).collect::<std::collections::HashSet<_>>().len();
        assert_eq!(new_chunks as usize, distinct, "every chunk stored exactly once");
        assert!(stored < (8 << 20) + (1 << 20));
        assert!(manifests.iter().all(|m| *m == manifests[0]));
    });
    e.close().unwrap();
    let report = cairn::engine::fsck::check(&e).unwrap();
    assert_eq!(report.entries_checked as usize, report.chunks_indexed as usize, "no duplicate entries in packs");
}

#[test]
fn a_flipped_byte_is_an_error_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 64 << 20);
    let data = noise(2 << 20, 21);
    let account = AccountId([2; 16]);
    let chunks = rt().block_on(async {
        let ing = e.ingest_bytes(Bytes::from(data.clone())).await.unwrap();
        let chunks = ing.manifest.chunks.clone();
        e.put_object(&account, Namespace::Scratch, b"f", ing, u64::MAX, Precondition::None).unwrap().unwrap();
        chunks
    });
    e.close().unwrap();
    // The local store's file of the first pack (pack-format.md names them by id).
    let pack = dir.path().join("packs").join(format!("{:016x}.pack", e.packs().list().unwrap()[0]));
    drop(e);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[200_000] ^= 0x01; // inside the data of an early entry
    std::fs::write(&pack, &bytes).unwrap();

    let e = open(dir.path(), 64 << 20);
    let report = cairn::engine::fsck::check(&e).unwrap();
    assert!(!report.problems.is_empty(), "fsck must see the flipped byte");
    let read = rt().block_on(e.read_all(chunks));
    assert!(read.is_err(), "a damaged chunk must fail the read");
}

#[test]
fn long_chunk_lists_are_stored_in_segments_and_books_balance() {
    // ~38 000 chunks of ~1.3 KiB: more than two segments of 16 384.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.chunking = ChunkingParams { min: 512, avg: 1024, max: 2048 };
    let e = Engine::open(cfg, Arc::new(Metrics::new())).unwrap();
    let account = AccountId([3; 16]);
    let data = noise(50_000 * 1024, 8);
    rt().block_on(async {
        let ing = e.ingest_bytes(Bytes::from(data.clone())).await.unwrap();
        let n = ing.manifest.chunks.len();
        assert!(n > 2 * 16_384, "{n} chunks");
        let rec = e
            .put_object(&account, Namespace::Drive, b"long", ing, u64::MAX, Precondition::None)
            .unwrap()
            .unwrap()
            .record;
        assert_eq!(rec.chunk_count as usize, n);
        assert!(rec.tail_segments() >= 2);
        let chunks = e.object_chunks(&account, Namespace::Drive, b"long", &rec).unwrap();
        assert!(e.read_all(chunks).await.unwrap() == data);
    });
    assert_eq!(e.usage(&account).unwrap().drive, data.len() as u64);
    assert!(cairn::engine::fsck::check(&e).unwrap().ok());
    e.delete_object(&account, Namespace::Drive, b"long", Precondition::None).unwrap().unwrap().unwrap();
    let u = e.usage(&account).unwrap();
    assert_eq!((u.used, u.drive), (0, 0));
    let report = cairn::engine::fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", &report.problems[..report.problems.len().min(5)]);
}

#[test]
fn versions_stay_above_every_earlier_one_across_a_restart_even_if_the_clock_went_back() {
    let dir = tempfile::tempdir().unwrap();
    let a = AccountId([3; 16]);
    let put = |e: &Engine, name: &str| {
        let ing = rt().block_on(e.ingest_bytes(bytes::Bytes::from_static(b"hello"))).unwrap();
        e.put_object(&a, Namespace::Drive, name.as_bytes(), ing, u64::MAX, Precondition::None).unwrap().unwrap()
    };
    let e = open(dir.path(), 1 << 20);
    let first = put(&e, "a").record.version;
    // As if versions had been handed out far ahead of today's clock before this restart.
    let future = first + 3_600_000_000_000;
    let mut batch = rocksdb::WriteBatch::default();
    batch.merge_cf(e.db().cf(cairn::store::CF_META), cairn::store::META_LAST_VERSION, future.to_le_bytes());
    e.db().commit(batch).unwrap();
    e.close().unwrap();
    drop(e);
    let e = open(dir.path(), 1 << 20);
    assert!(put(&e, "b").record.version > future, "the floor survives the restart");
}

/// A data directory from before item charges: its usage records gain them once at open, and
/// fsck finds the books whole.
#[test]
fn usage_from_before_item_charges_is_brought_up_to_date_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId([7; 16]);
    {
        let e = open(dir.path(), 64 << 20);
        let ing = rt().block_on(e.ingest_bytes(Bytes::from(noise(100_000, 1)))).unwrap();
        e.put_object(&account, Namespace::Drive, b"notes/a.txt", ing, u64::MAX, Precondition::None).unwrap().unwrap();
        let u = e.usage(&account).unwrap();
        assert_eq!(u.metadata, 128 + 11);
        // Written back the way version 1 stored it: no item charges.
        let mut v1 = vec![1u8];
        for n in [u.used - u.metadata, u.drive, u.backups, u.sync] {
            v1.extend_from_slice(&n.to_le_bytes());
        }
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(e.db().cf(cairn::store::CF_USAGE), account.0, v1);
        e.db().commit(b).unwrap();
        assert_eq!(e.usage(&account).unwrap().metadata, 0);
        e.close().unwrap();
    }
    let e = open(dir.path(), 64 << 20);
    let u = e.usage(&account).unwrap();
    assert_eq!((u.metadata, u.used), (128 + 11, 100_000 + 128 + 11));
    let report = cairn::engine::fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

/// Time is the engine's clock: a staged chunk expires and an unreferenced chunk passes its GC
/// grace when the clock says so, with no test waiting for it.
#[test]
fn staged_expiry_and_gc_grace_follow_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = cairn::clock::Clock::manual(1_700_000_000_000);
    let mut cfg = EngineConfig::new(dir.path());
    cfg.clock = clock.clone();
    let e = Engine::open(cfg, Arc::new(Metrics::new())).unwrap();
    let account = AccountId([9; 16]);
    let ing = rt().block_on(e.ingest_bytes(Bytes::from(noise(50_000, 5)))).unwrap();
    let name = ing.manifest.chunks[0].0 .0;
    e.put_object(&account, Namespace::Staged, &name, ing, u64::MAX, Precondition::None).unwrap().unwrap();
    let ttl = 24 * 3600;
    assert_eq!(e.expire_staged(ttl).unwrap(), 0, "younger than its time");
    clock.advance(std::time::Duration::from_secs(ttl + 1));
    assert_eq!(e.expire_staged(ttl).unwrap(), 1);
    assert_eq!(e.usage(&account).unwrap().used, 0);
    let grace = cairn::engine::GcOptions { grace_secs: 3600, compact_below: 1.0, ..Default::default() };
    assert_eq!(e.gc(grace).unwrap().chunks_freed, 0, "unreferenced for less than the grace");
    clock.advance(std::time::Duration::from_secs(3601));
    assert!(e.gc(grace).unwrap().chunks_freed >= 1);
}

/// A pack's dictionary damaged on disk: fsck reports it and every chunk that needs it, and
/// reads fail, also with `verify_reads` off (the dictionary is checked by its hash, and each
/// frame by zstd's checksum): never other bytes.
#[test]
fn a_damaged_pack_dictionary_is_reported_and_never_serves_wrong_bytes() {
    use cairn::codec::Compression;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.pack_dictionary = true; // the default, said here because the test needs it
    let e = Engine::open(cfg, Arc::new(Metrics::new())).unwrap();
    // More than the pipeline holds in flight (~6 MiB, compressed before the lane has its
    // dictionary), so that later chunks are compressed against it.
    let data: Vec<u8> =
        (0..400_000u32).flat_map(|i| format!("line {} of the text, word {}\n", i, i % 997).into_bytes()).collect();
    let account = AccountId([4; 16]);
    let chunks = rt().block_on(async {
        let ing = e.ingest_bytes(Bytes::from(data.clone())).await.unwrap();
        let chunks = ing.manifest.chunks.clone();
        e.put_object(&account, Namespace::Scratch, b"t", ing, u64::MAX, Precondition::None).unwrap().unwrap();
        chunks
    });
    e.close().unwrap();
    let with_dict = e
        .packs()
        .list()
        .unwrap()
        .into_iter()
        .find(|id| e.packs().table(*id).unwrap()[0].compression == Compression::Dictionary)
        .expect("text gets a pack with a dictionary");
    drop(e);
    let pack = dir.path().join("packs").join(format!("{with_dict:016x}.pack"));
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[24 + 48 + 5000] ^= 0x04; // inside the dictionary, the pack's first entry
    std::fs::write(&pack, &bytes).unwrap();

    let mut cfg = EngineConfig::new(dir.path());
    cfg.verify_reads = false;
    let e = Engine::open(cfg, Arc::new(Metrics::new())).unwrap();
    let report = cairn::engine::fsck::check(&e).unwrap();
    assert!(report.problems.iter().any(|p| p.contains("dictionary")), "{:?}", report.problems);
    let read = rt().block_on(e.read_all(chunks));
    assert!(read.is_err(), "a chunk whose dictionary is damaged must fail the read");
}
