//! Criterion benches of the ingest pipeline and of each of its stages, on incompressible
//! (`noise`) and compressible (`text`) input.
//!
//! ```text
//! cargo bench --bench pipeline                  # everything, a few minutes
//! cargo bench --bench pipeline -- 'pipeline/'   # one group
//! ```
//! Throughput is printed in decimal MB/s and GB/s, like the table in DESIGN.md. Every stage
//! runs on one thread; `single_thread` is the plain loop (cut, then BLAKE3 + zstd per chunk)
//! that the pipeline must beat, `disk_write_sync` is the disk as the writer uses it, and
//! `pipeline` is the whole `Engine::ingest` of a stream of 1 MiB frames into a fresh data
//! directory (pack writes and fsyncs included).

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::chunk::{ChunkId, ChunkingParams, Cutter};
use cairn::codec;
use cairn::dictionary::{Dictionary, DICT_LEN};
use cairn::engine::{AdmitAll, Engine, EngineConfig};
use cairn::metrics::Metrics;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};

mod gen;
use gen::Kind;

/// Input of the stage benches and of the single-thread loop.
const STAGE_INPUT: usize = 32 << 20;
/// Input of one pipeline run: one full 64 MiB pack, so sealing is part of the price.
const PIPELINE_INPUT: usize = 64 << 20;
const FRAME: usize = 1 << 20;
/// Fixed-size pieces for the per-chunk stages (hash, zstd), the average FastCDC chunk.
const PIECE: usize = 64 << 10;
const LEVEL: i32 = 3;
const KINDS: [Kind; 2] = [Kind::Noise, Kind::Text];

fn input(kind: Kind, n: usize) -> Bytes {
    Bytes::from(gen::generate(kind, n, 42))
}

fn throughput(n: usize) -> Throughput {
    Throughput::BytesDecimal(n as u64)
}

/// FastCDC 2020 at 16/64/256 KiB over an in-memory buffer.
fn chunking(c: &mut Criterion) {
    let cutter = Cutter::new(ChunkingParams::default()).unwrap();
    let mut g = c.benchmark_group("chunking");
    g.throughput(throughput(STAGE_INPUT));
    for kind in KINDS {
        let data = input(kind, STAGE_INPUT);
        let chunks = cutter.chunks(&data).count();
        eprintln!("chunking/{}: {} chunks, mean {} bytes", kind.name(), chunks, STAGE_INPUT / chunks);
        g.bench_with_input(BenchmarkId::from_parameter(kind.name()), &data, |b, data| {
            b.iter(|| cutter.chunks(black_box(data)).count())
        });
    }
    g.finish();
}

/// BLAKE3 of each 64 KiB piece, as chunk ids are computed.
fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("blake3_64k");
    g.throughput(throughput(STAGE_INPUT));
    for kind in KINDS {
        let data = input(kind, STAGE_INPUT);
        g.bench_with_input(BenchmarkId::from_parameter(kind.name()), &data, |b, data| {
            b.iter(|| data.chunks(PIECE).fold(0u8, |acc, p| acc ^ ChunkId::of(black_box(p)).0[0]))
        });
    }
    g.finish();
}

/// zstd level 3 on its own: one reused context and one reused `compress_bound` output buffer.
fn zstd3(c: &mut Criterion) {
    let mut g = c.benchmark_group("zstd3_64k");
    g.throughput(throughput(STAGE_INPUT));
    for kind in KINDS {
        let data = input(kind, STAGE_INPUT);
        let mut z = zstd::bulk::Compressor::new(LEVEL).unwrap();
        let mut out = vec![0u8; zstd::zstd_safe::compress_bound(PIECE)];
        let stored: usize = data.chunks(PIECE).map(|p| z.compress_to_buffer(p, &mut out[..]).unwrap()).sum();
        eprintln!("zstd3_64k/{}: ratio {:.2}", kind.name(), STAGE_INPUT as f64 / stored as f64);
        g.bench_with_input(BenchmarkId::from_parameter(kind.name()), &data, |b, data| {
            b.iter(|| {
                data.chunks(PIECE).map(|p| z.compress_to_buffer(black_box(p), &mut out[..]).unwrap()).sum::<usize>()
            })
        });
    }
    g.finish();
}

/// zstd level 3 against a raw-content dictionary of `DICT_LEN` bytes of earlier text, as the
/// uploads lane compresses text. A chunk takes its parameters from the prepared dictionary, so
/// the level that dictionary is made at decides the cost: "dict_level_3" (what the lane does)
/// and "dict_level_2" (measured and not taken, docs/benchmarks.md). "none" is the same pieces
/// without a dictionary, the baseline.
fn zstd3_dict(c: &mut Criterion) {
    use zstd::zstd_safe::{CCtx, CDict, CParameter};
    let mut g = c.benchmark_group("zstd3_64k_dict");
    g.throughput(throughput(STAGE_INPUT));
    let (dict_bytes, data) = text_after_dictionary();
    let mut out = vec![0u8; zstd::zstd_safe::compress_bound(PIECE)];
    for (name, dict_level) in [("none", None), ("dict_level_3", Some(3)), ("dict_level_2", Some(2))] {
        let cdict = dict_level.map(|level| CDict::create(&dict_bytes[..], level));
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(LEVEL)).unwrap();
        if let Some(cdict) = &cdict {
            cctx.ref_cdict(cdict).unwrap();
        }
        let mut run = |data: &Bytes| {
            data.chunks(PIECE).map(|p| cctx.compress2(&mut out[..], black_box(p)).unwrap()).sum::<usize>()
        };
        eprintln!("zstd3_64k_dict/{name}: ratio {:.3}", STAGE_INPUT as f64 / run(&data) as f64);
        g.bench_with_input(BenchmarkId::from_parameter(name), &data, |b, data| b.iter(|| run(data)));
    }
    g.finish();
}

/// `codec::seal`: BLAKE3 + zstd-3 (raw when that does not shrink), what a pipeline worker runs.
fn seal(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal_64k");
    g.throughput(throughput(STAGE_INPUT));
    for kind in KINDS {
        let data = input(kind, STAGE_INPUT);
        let stored = seal_all(&data, None);
        eprintln!("seal_64k/{}: stored ratio {:.2}", kind.name(), STAGE_INPUT as f64 / stored as f64);
        g.bench_with_input(BenchmarkId::from_parameter(kind.name()), &data, |b, data| b.iter(|| seal_all(data, None)));
    }
    // Against a pack dictionary made as the uploads lane makes one.
    let (dict_bytes, data) = text_after_dictionary();
    let dict = Dictionary::new(dict_bytes).unwrap();
    eprintln!("seal_64k/text_dict: stored ratio {:.2}", STAGE_INPUT as f64 / seal_all(&data, Some(&dict)) as f64);
    g.bench_with_input(BenchmarkId::from_parameter("text_dict"), &data, |b, data| {
        b.iter(|| seal_all(data, Some(&dict)))
    });
    g.finish();
}

/// A dictionary as the uploads lane makes one (the first `DICT_LEN` bytes of text), and
/// `STAGE_INPUT` bytes of the text that follows it: same vocabulary (the generator's vocabulary
/// comes from its seed), other sentences.
/// `CAIRN_BENCH_TEXT=FILE` takes the text from a file instead (at least `DICT_LEN +
/// STAGE_INPUT` bytes), e.g. the text of `../shared/bench/peers.py`, whose vocabulary is larger.
fn text_after_dictionary() -> (Bytes, Bytes) {
    let mut all = match std::env::var_os("CAIRN_BENCH_TEXT") {
        Some(file) => Bytes::from(std::fs::read(file).unwrap()).slice(..DICT_LEN + STAGE_INPUT),
        None => Bytes::from(gen::generate(Kind::Text, DICT_LEN + STAGE_INPUT, 42)),
    };
    (all.split_to(DICT_LEN), all)
}

/// Stored bytes of `data` sealed in `PIECE`s.
fn seal_all(data: &Bytes, dict: Option<&Arc<Dictionary>>) -> usize {
    (0..data.len())
        .step_by(PIECE)
        .map(|at| codec::seal_with(data.slice(at..(at + PIECE).min(data.len())), LEVEL, dict).stored.len())
        .sum()
}

/// The baseline the pipeline must beat: cut, hash and compress on one thread, no disk.
fn single_thread(c: &mut Criterion) {
    let cutter = Cutter::new(ChunkingParams::default()).unwrap();
    let mut g = c.benchmark_group("single_thread");
    g.throughput(throughput(STAGE_INPUT));
    g.sampling_mode(SamplingMode::Flat);
    for kind in KINDS {
        let data = input(kind, STAGE_INPUT);
        g.bench_with_input(BenchmarkId::from_parameter(kind.name()), &data, |b, data| {
            b.iter(|| {
                cutter.chunks(data).map(|chunk| codec::seal(data.slice_ref(chunk), LEVEL).stored.len()).sum::<usize>()
            })
        });
    }
    g.finish();
}

/// The disk as the pipeline's writer uses it: positioned 64 KiB writes into a fresh file, an
/// `fdatasync` after every 256 of them (the ingest indexes new chunks in groups of 256), and a
/// final `fsync` (sealing), for as many bytes as one pipeline run stores from noise.
fn disk(c: &mut Criterion) {
    let mut g = c.benchmark_group("disk_write_sync");
    g.throughput(throughput(PIPELINE_INPUT));
    g.sampling_mode(SamplingMode::Flat);
    let data = input(Kind::Noise, PIPELINE_INPUT);
    g.bench_function("noise", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let file = std::fs::File::create_new(dir.path().join("pack")).unwrap();
                let started = Instant::now();
                for (i, piece) in data.chunks(PIECE).enumerate() {
                    file.write_all_at(piece, (i * PIECE) as u64).unwrap();
                    if (i + 1) % 256 == 0 {
                        file.sync_data().unwrap();
                    }
                }
                file.sync_all().unwrap();
                total += started.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// The whole ingest: a stream of 1 MiB frames through `Engine::ingest` into a fresh data
/// directory per iteration (opening and removing it is not timed), new chunks written to packs,
/// fsynced and indexed.
fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(throughput(PIPELINE_INPUT));
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(8));
    // "text_plain": text without pack dictionaries, the baseline of what they cost.
    for (name, kind, dictionaries) in
        [("noise", Kind::Noise, true), ("text", Kind::Text, true), ("text_plain", Kind::Text, false)]
    {
        let data = input(kind, PIPELINE_INPUT);
        g.bench_with_input(BenchmarkId::from_parameter(name), &data, |b, data| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let config = EngineConfig { pack_dictionary: dictionaries, ..EngineConfig::new(dir.path()) };
                    let engine = Engine::open(config, Arc::new(Metrics::new())).unwrap();
                    let frames = (0..data.len())
                        .step_by(FRAME)
                        .map(|at| Ok::<_, std::convert::Infallible>(data.slice(at..(at + FRAME).min(data.len()))));
                    let started = Instant::now();
                    let ingested = rt.block_on(engine.ingest(futures::stream::iter(frames), AdmitAll)).unwrap();
                    total += started.elapsed();
                    assert_eq!(ingested.manifest.size, data.len() as u64);
                    drop(ingested);
                    drop(engine);
                }
                total
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    // Small samples keep the default `cargo bench` run to a few minutes on a shared 2-core box.
    Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = stages;
    config = config();
    targets = chunking, hashing, zstd3, zstd3_dict, seal, single_thread, disk, pipeline
}
criterion_main!(stages);
