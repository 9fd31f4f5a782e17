//! What encryption at rest costs (issue 22), each figure beside its baseline in one run:
//!
//! ```text
//! cargo bench --bench encryption                 # all, about three minutes
//! cargo bench --bench encryption -- 'aead/'      # the cipher choice alone
//! ```
//! - `aead`: AES-256-GCM (AES-NI and CLMUL when the CPU has them, as this machine does) against
//!   XChaCha20-Poly1305, sealing 64 KiB pieces (the average chunk) in place, with BLAKE3 and
//!   zstd -3 of the same pieces for scale: the work every chunk already costs.
//! - `ingest`: `Engine::ingest` of 64 MiB into a fresh data directory, sealing off and on.
//! - `read`: `Engine::read_all` of a 64 MiB object (page cache warm), sealing off and on.
//!
//! docs/benchmarks.md ("Issue 22") keeps the ratios.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use bytes::Bytes;
use cairn::engine::{AdmitAll, Engine, EngineConfig, Precondition};
use cairn::metrics::Metrics;
use cairn::store::keys::{AccountId, Namespace};
use chacha20poly1305::XChaCha20Poly1305;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};

mod gen;
use gen::Kind;

const PIECE: usize = 64 << 10;
const AEAD_INPUT: usize = 32 << 20;
const ENGINE_INPUT: usize = 64 << 20;
const FRAME: usize = 1 << 20;
const KINDS: [Kind; 2] = [Kind::Noise, Kind::Text];

fn input(kind: Kind, n: usize) -> Bytes {
    Bytes::from(gen::generate(kind, n, 42))
}

fn aead(c: &mut Criterion) {
    let data = input(Kind::Noise, AEAD_INPUT).to_vec();
    let mut g = c.benchmark_group("aead");
    g.throughput(Throughput::BytesDecimal(AEAD_INPUT as u64));
    let gcm = Aes256Gcm::new(&[7u8; 32].into());
    let xchacha = XChaCha20Poly1305::new(&[7u8; 32].into());
    let mut buf = data.clone();
    g.bench_function("aes256gcm", |b| {
        b.iter(|| {
            for (i, piece) in buf.chunks_mut(PIECE).enumerate() {
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
                black_box(gcm.encrypt_in_place_detached(&nonce.into(), b"aad", piece).unwrap());
            }
        })
    });
    g.bench_function("xchacha20poly1305", |b| {
        b.iter(|| {
            for (i, piece) in buf.chunks_mut(PIECE).enumerate() {
                let mut nonce = [0u8; 24];
                nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
                black_box(xchacha.encrypt_in_place_detached(&nonce.into(), b"aad", piece).unwrap());
            }
        })
    });
    g.bench_function("blake3", |b| b.iter(|| data.chunks(PIECE).map(|p| blake3::hash(p).as_bytes()[0]).sum::<u8>()));
    let text = input(Kind::Text, AEAD_INPUT);
    g.bench_function("zstd3_text", |b| {
        b.iter(|| text.chunks(PIECE).map(|p| zstd::bulk::compress(p, 3).unwrap().len()).sum::<usize>())
    });
    g.finish();
}

fn engine(dir: &std::path::Path, encrypt: bool) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.keys.encrypt = encrypt;
    Engine::open(cfg, Arc::new(Metrics::new())).unwrap()
}

fn mode(encrypt: bool) -> &'static str {
    if encrypt {
        "sealed"
    } else {
        "plain"
    }
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::BytesDecimal(ENGINE_INPUT as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(8));
    for kind in KINDS {
        let data = input(kind, ENGINE_INPUT);
        for encrypt in [false, true] {
            let id = BenchmarkId::new(kind.name(), mode(encrypt));
            g.bench_with_input(id, &data, |b, data| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir().unwrap();
                        let e = engine(dir.path(), encrypt);
                        let frames = (0..data.len())
                            .step_by(FRAME)
                            .map(|at| Ok::<_, std::convert::Infallible>(data.slice(at..(at + FRAME).min(data.len()))));
                        let started = Instant::now();
                        let ingested = rt.block_on(e.ingest(futures::stream::iter(frames), AdmitAll)).unwrap();
                        total += started.elapsed();
                        assert_eq!(ingested.manifest.size, data.len() as u64);
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::BytesDecimal(ENGINE_INPUT as u64));
    g.sampling_mode(SamplingMode::Flat);
    for kind in KINDS {
        let data = input(kind, ENGINE_INPUT);
        for encrypt in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let e = engine(dir.path(), encrypt);
            let chunks = rt.block_on(async {
                let ing = e.ingest_bytes(data.clone()).await.unwrap();
                let chunks = ing.manifest.chunks.clone();
                let account = AccountId([1; 16]);
                e.put_object(&account, Namespace::Scratch, b"f", ing, u64::MAX, Precondition::None).unwrap().unwrap();
                chunks
            });
            e.close().unwrap();
            g.bench_function(BenchmarkId::new(kind.name(), mode(encrypt)), |b| {
                b.iter(|| rt.block_on(e.read_all(chunks.clone())).unwrap().len())
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = encryption;
    config = config();
    targets = aead, ingest, read
}
criterion_main!(encryption);
