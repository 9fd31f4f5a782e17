//! Garbage collection and compaction through the engine: what is unreferenced goes, what is
//! referenced stays readable, also while uploads run.

mod common;
use common::noise;
use std::sync::Arc;

use bytes::Bytes;
use cairn::codec::Compression;
use cairn::engine::{fsck, Engine, EngineConfig, GcOptions, Precondition};
use cairn::metrics::Metrics;
use cairn::store::keys::{AccountId, Namespace};

fn open(dir: &std::path::Path) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.pack_target_size = 1 << 20;
    cfg.pack_dictionary = true; // the default, said here because the dictionary tests need it
    common::s3::configure(&mut cfg);
    Engine::open(cfg, Arc::new(Metrics::new())).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn put(e: &Engine, a: &AccountId, name: &str, data: Vec<u8>) {
    let ing = e.ingest_bytes(Bytes::from(data)).await.unwrap();
    let e2 = e.clone();
    let (a, name) = (*a, name.to_string());
    tokio::task::spawn_blocking(move || {
        e2.put_object(&a, Namespace::Drive, name.as_bytes(), ing, u64::MAX, Precondition::None).unwrap().unwrap()
    })
    .await
    .unwrap();
}

async fn read(e: &Engine, a: &AccountId, name: &str) -> Vec<u8> {
    let rec = e.get_object(a, Namespace::Drive, name.as_bytes()).unwrap().unwrap();
    let chunks = e.object_chunks(a, Namespace::Drive, name.as_bytes(), &rec).unwrap();
    e.read_all(chunks).await.unwrap()
}

#[test]
fn deleted_data_is_reclaimed_and_the_rest_survives_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let (a, b) = (AccountId([1; 16]), AccountId([2; 16]));
    let keep = noise(3 << 20, 1);
    let shared = noise(2 << 20, 2);
    rt().block_on(async {
        put(&e, &a, "keep", keep.clone()).await;
        put(&e, &a, "drop", noise(4 << 20, 3)).await;
        put(&e, &a, "shared", shared.clone()).await;
        put(&e, &b, "shared", shared.clone()).await;
    });
    e.close().unwrap();
    let before: u64 = e.packs().list().unwrap().iter().map(|p| e.packs().size(*p).unwrap()).sum();
    e.delete_object(&a, Namespace::Drive, b"drop", Precondition::None).unwrap().unwrap().unwrap();
    e.delete_object(&a, Namespace::Drive, b"shared", Precondition::None).unwrap().unwrap().unwrap();

    // Within the grace period nothing goes.
    let r = e.gc(GcOptions { grace_secs: 3600, compact_below: 0.5, ..Default::default() }).unwrap();
    assert_eq!(r.chunks_freed, 0);

    let r = e.gc(GcOptions { grace_secs: 0, compact_below: 1.0, ..Default::default() }).unwrap();
    assert!(r.chunks_freed >= 40, "{r:?}");
    assert!(r.bytes_freed >= 3 << 20, "{r:?}");
    assert!(r.packs_deleted >= 1);
    let after: u64 = e.packs().list().unwrap().iter().map(|p| e.packs().size(*p).unwrap()).sum();
    assert!(after + (3 << 20) < before, "packs went from {before} to {after} bytes");

    rt().block_on(async {
        assert!(read(&e, &a, "keep").await == keep);
        assert!(read(&e, &b, "shared").await == shared, "a chunk another account holds must stay");
    });
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    // A second run finds nothing more to do.
    let again = e.gc(GcOptions { grace_secs: 0, compact_below: 1.0, ..Default::default() }).unwrap();
    assert_eq!(again.chunks_freed, 0, "{again:?}");
    assert_eq!(again.packs_rewritten, 0, "{again:?}");
}

#[test]
fn gc_in_a_loop_never_frees_what_concurrent_uploads_reference() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let a = AccountId([5; 16]);
    // Overlapping content: every upload shares most chunks with the others, so uploads keep
    // deduplicating against chunks that deletes keep making unreferenced.
    let base = noise(300 << 10, 42);
    let version = |i: u64| {
        let mut v = base.clone();
        let at = (i as usize * 70_001) % (v.len() - 8);
        v[at..at + 8].copy_from_slice(&i.to_le_bytes());
        v
    };
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // With packs in a bucket each collection also lists it and reads tables by range, so fewer
    // run beside the same uploads; enough still interleave with every kind of step.
    let enough = if common::s3::shared().is_some() { 50 } else { 500 };
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let collector = {
        let (e, stop, runs) = (e.clone(), stop.clone(), runs.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                e.gc(GcOptions { grace_secs: 0, compact_below: 1.0, ..Default::default() }).unwrap();
                runs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    rt().block_on(async {
        // At least 2000 uploads, and on until `enough` collections ran beside them: counted in
        // steps, not in time, so a loaded machine makes the test longer, never weaker.
        let mut i = 0u64;
        while i < 2000 || runs.load(Ordering::Relaxed) < enough {
            assert!(i < 50_000, "only {} collections ran beside {i} uploads", runs.load(Ordering::Relaxed));
            let name = format!("f{}", i % 7);
            put(&e, &a, &name, version(i)).await;
            if i.is_multiple_of(5) {
                e.delete_object(&a, Namespace::Drive, format!("f{}", (i + 3) % 7).as_bytes(), Precondition::None)
                    .unwrap()
                    .unwrap();
            }
            assert!(read(&e, &a, &name).await == version(i), "upload {i} reads back wrong");
            i += 1;
        }
    });
    stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn compaction_copying_more_than_one_sync_interval_keeps_everything_readable() {
    // Packs of 32 MiB, half of it live after the deletes: one rewrite copies ~12 MiB in one
    // group, which compaction makes durable in several syncs before moving the index entries.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.pack_target_size = 32 << 20;
    common::s3::configure(&mut cfg);
    let e = Engine::open(cfg, Arc::new(Metrics::new())).unwrap();
    let a = AccountId([7; 16]);
    let files: Vec<Vec<u8>> = (0..6).map(|i| noise(4 << 20, 100 + i)).collect();
    rt().block_on(async {
        for (i, f) in files.iter().enumerate() {
            put(&e, &a, &format!("f{i}"), f.clone()).await;
        }
    });
    e.close().unwrap();
    for i in (0..6).filter(|i| i % 2 == 1) {
        e.delete_object(&a, Namespace::Drive, format!("f{i}").as_bytes(), Precondition::None)
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let r = e.gc(GcOptions { grace_secs: 0, compact_below: 1.0, ..Default::default() }).unwrap();
    assert!(r.packs_rewritten >= 1, "{r:?}");
    assert!(r.bytes_freed >= 10 << 20, "{r:?}");
    rt().block_on(async {
        for i in (0..6).filter(|i| i % 2 == 0) {
            assert!(read(&e, &a, &format!("f{i}")).await == files[i], "f{i} reads back wrong after compaction");
        }
    });
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn forgotten_chunks_leave_the_index_once_it_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let a = AccountId([5; 16]);
    rt().block_on(async {
        put(&e, &a, "keep", noise(1 << 20, 50)).await;
        put(&e, &a, "drop", noise(3 << 20, 51)).await;
    });
    let keys = |e: &Engine| {
        let db = e.db();
        db.raw().iterator_cf(db.cf(cairn::store::CF_CHUNKS), rocksdb::IteratorMode::Start).count()
    };
    let before = keys(&e);
    e.delete_object(&a, Namespace::Drive, b"drop", Precondition::None).unwrap().unwrap().unwrap();
    let freed =
        e.gc(GcOptions { grace_secs: 0, compact_below: 0.0, ..Default::default() }).unwrap().chunks_freed as usize;
    assert!(freed > 0 && freed < before);
    let db = e.db();
    db.raw().flush_cf(db.cf(cairn::store::CF_CHUNKS)).unwrap();
    // The first compaction folds each `Forget` into an empty value, the next drops it.
    for _ in 0..2 {
        db.raw().compact_range_cf(db.cf(cairn::store::CF_CHUNKS), None::<&[u8]>, None::<&[u8]>);
    }
    assert_eq!(keys(&e), before - freed, "no empty value is left behind");
    assert_eq!(rt().block_on(read(&e, &a, "keep")), noise(1 << 20, 50));
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

/// Lines of words from a vocabulary of 2000, as the peers bench's text: what a pack dictionary
/// is for.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let vocabulary = noise(2000 * 8, 77);
    let word = |i: usize| vocabulary[i * 8..i * 8 + 2 + i % 7].iter().map(|b| b'a' + b % 26).collect::<Vec<u8>>();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&word((x % 2000) as usize));
        out.push(if x.is_multiple_of(12) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// Text goes into packs that carry a dictionary; compaction copies their live chunks (into its
/// own pack, which adopts the dictionary), the index follows, everything reads back, fsck is
/// clean, and the copies are as small as the originals.
#[test]
fn compaction_of_dictionary_packs_keeps_text_readable_and_small() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let a = AccountId([3; 16]);
    let keep = text(3 << 20, 1);
    rt().block_on(async {
        // The first upload of a process gives the lane its dictionary; the chunks already in
        // flight then (up to ~6 MiB) go without.
        put(&e, &a, "first", text(3 << 20, 3)).await;
        put(&e, &a, "keep", keep.clone()).await;
        put(&e, &a, "drop", text(3 << 20, 2)).await;
    });
    e.close().unwrap();
    // "first" stays: the dictionary was made from it (deleting it retires the dictionary:
    // `a_dictionary_goes_with_the_data_it_was_made_from`).
    e.delete_object(&a, Namespace::Drive, b"drop", Precondition::None).unwrap().unwrap().unwrap();
    let before = e.packs().list().unwrap();
    let r = e.gc(GcOptions { grace_secs: 0, compact_below: 1.0, ..Default::default() }).unwrap();
    assert!(r.packs_rewritten >= 1, "{r:?}");
    rt().block_on(async { assert!(read(&e, &a, "keep").await == keep) });
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    // The copies are still compressed against a dictionary: the new packs start with one.
    for id in e.packs().list().unwrap().into_iter().filter(|p| !before.contains(p)) {
        let table = e.packs().table(id).unwrap();
        assert_eq!(table[0].compression, Compression::Dictionary, "pack {id}");
        assert!(table.iter().any(|en| en.compression == Compression::ZstdDict), "pack {id}");
    }
    // A small pack's dictionary counts as live: a second run rewrites nothing.
    let again = e.gc(GcOptions { grace_secs: 0, compact_below: 0.5, ..Default::default() }).unwrap();
    assert_eq!(again.packs_rewritten, 0, "{again:?}");
    // The index can be rebuilt from the packs alone: dictionaries are not chunks.
    assert!(fsck::rebuild_index(&e).unwrap() > 0);
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    rt().block_on(async { assert!(read(&e, &a, "keep").await == keep) });
}

/// The dictionary each pack carries, if any.
fn carried(e: &Engine) -> Vec<Option<cairn::chunk::ChunkId>> {
    let tables = common::pack_tables(e);
    tables.iter().map(|t| t.first().filter(|en| en.compression == Compression::Dictionary).map(|en| en.id)).collect()
}

/// Deleting data deletes the copy of it a pack dictionary holds: the dictionary made from the
/// first upload of a process is retired once that upload is deleted and collected, every pack
/// that carries it is rewritten without it, and another account's text, compressed against it,
/// still reads back. New uploads then get a new dictionary.
#[test]
fn a_dictionary_goes_with_the_data_it_was_made_from() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let (a, b) = (AccountId([4; 16]), AccountId([5; 16]));
    let kept = text(3 << 20, 5);
    rt().block_on(async {
        // The lane's first compressible bytes: its dictionary is made of them.
        put(&e, &a, "diary", text(1 << 20, 1)).await;
        put(&e, &b, "kept", kept.clone()).await;
    });
    e.close().unwrap();
    let dicts: std::collections::HashSet<_> = carried(&e).into_iter().flatten().collect();
    assert_eq!(dicts.len(), 1, "one dictionary, carried by b's packs too: {dicts:?}");
    let first = *dicts.iter().next().unwrap();

    // While the diary lives, or within the grace period, the dictionary stays.
    let r = e.gc(GcOptions { grace_secs: 0, compact_below: 0.5, ..Default::default() }).unwrap();
    assert_eq!((r.dictionaries_retired, r.packs_rewritten), (0, 0), "{r:?}");
    e.delete_object(&a, Namespace::Drive, b"diary", Precondition::None).unwrap().unwrap().unwrap();
    let r = e.gc(GcOptions { grace_secs: 3600, compact_below: 0.5, ..Default::default() }).unwrap();
    assert_eq!(r.dictionaries_retired, 0, "{r:?}");
    assert!(carried(&e).contains(&Some(first)));

    // Collected: retired, and no pack carries it any more.
    let r = e.gc(GcOptions { grace_secs: 0, compact_below: 0.5, ..Default::default() }).unwrap();
    assert_eq!(r.dictionaries_retired, 1, "{r:?}");
    assert!(r.packs_rewritten >= 1, "b's packs carried it: {r:?}");
    assert!(!carried(&e).contains(&Some(first)), "{:?}", carried(&e));
    rt().block_on(async { assert!(read(&e, &b, "kept").await == kept) });
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);

    // New uploads make and use a new dictionary; a run after that retires nothing.
    rt().block_on(async { put(&e, &b, "more", text(2 << 20, 9)).await });
    e.close().unwrap();
    let now: std::collections::HashSet<_> = carried(&e).into_iter().flatten().collect();
    assert!(!now.is_empty() && !now.contains(&first), "{now:?}");
    let r = e.gc(GcOptions { grace_secs: 0, compact_below: 0.5, ..Default::default() }).unwrap();
    assert_eq!((r.dictionaries_retired, r.packs_rewritten), (0, 0), "{r:?}");
    rt().block_on(async {
        assert!(read(&e, &b, "kept").await == kept);
        assert!(read(&e, &b, "more").await == text(2 << 20, 9));
    });
}

/// A dictionary serves a bounded span of bytes, then the lane makes the next: retiring one
/// rewrites the packs made against it and leaves the others alone.
#[test]
fn dictionaries_take_turns_and_retiring_one_rewrites_only_its_packs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.pack_target_size = 1 << 20;
    cfg.dictionary_span = 2 << 20;
    cfg.pack_dictionary = true;
    common::s3::configure(&mut cfg);
    let e = Engine::open(cfg, Arc::new(Metrics::new())).unwrap();
    let (a, b) = (AccountId([6; 16]), AccountId([7; 16]));
    let two = text(8 << 20, 2);
    rt().block_on(async {
        put(&e, &a, "one", text(3 << 20, 1)).await;
        put(&e, &b, "two", two.clone()).await;
    });
    e.close().unwrap();
    let packs_before: Vec<_> = e.packs().list().unwrap().into_iter().zip(carried(&e)).collect();
    let dicts: std::collections::HashSet<_> = packs_before.iter().filter_map(|(_, d)| *d).collect();
    assert!(dicts.len() >= 3, "a dictionary per span: {dicts:?}");

    e.delete_object(&a, Namespace::Drive, b"one", Precondition::None).unwrap().unwrap().unwrap();
    // compact_below 0: only packs whose dictionary is retired are rewritten.
    let r = e.gc(GcOptions { grace_secs: 0, compact_below: 0.0, ..Default::default() }).unwrap();
    assert!(r.dictionaries_retired >= 1 && r.dictionaries_retired < dicts.len() as u64, "{r:?}");
    let after: std::collections::HashSet<_> = carried(&e).into_iter().flatten().collect();
    let survivors: std::collections::HashSet<_> = dicts.intersection(&after).copied().collect();
    assert_eq!(survivors.len() as u64, dicts.len() as u64 - r.dictionaries_retired, "{r:?}");
    let now = e.packs().list().unwrap();
    // (A pack with no dictionary held only "one"'s first chunks, and goes as empty.)
    for (pack, d) in packs_before.iter().filter_map(|(p, d)| Some((p, (*d)?))) {
        assert_eq!(now.contains(pack), survivors.contains(&d), "pack {pack} with {d}");
    }
    rt().block_on(async { assert!(read(&e, &b, "two").await == two) });
    let report = fsck::check(&e).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
