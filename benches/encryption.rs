//! What encryption at rest costs (issue 22), each figure beside its baseline in one run, rounds
//! interleaved (plain, sealed, plain, sealed, ...) and medians taken, so that the load of a
//! shared machine falls on both sides alike:
//!
//! ```text
//! cargo bench --bench encryption                 # all, about two minutes
//! cargo bench --bench encryption -- aead         # the cipher choice alone
//! ```
//! - `aead`: sealing 64 KiB pieces (the average chunk) in place with AES-256-GCM (the
//!   `aes-gcm` crate: AES-NI and CLMUL, detected at run time) and XChaCha20-Poly1305 (the
//!   `chacha20poly1305` crate: AVX2, detected at run time), with BLAKE3 of the same pieces for
//!   scale (the work every chunk already costs). ring's AES-256-GCM (assembly, in the tree
//!   through rustls) is measured too, as the bound of what a faster implementation would give.
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
use cairn::chunk::ChunkId;
use cairn::engine::{AdmitAll, Engine, EngineConfig, Precondition};
use cairn::metrics::Metrics;
use cairn::store::keys::{AccountId, Namespace};
use chacha20poly1305::XChaCha20Poly1305;

mod gen;
use gen::Kind;

const PIECE: usize = 64 << 10;
const AEAD_INPUT: usize = 32 << 20;
const ENGINE_INPUT: usize = 64 << 20;
const FRAME: usize = 1 << 20;
const ROUNDS: usize = 7;

fn input(kind: Kind, n: usize) -> Bytes {
    Bytes::from(gen::generate(kind, n, 42))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn mb_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Run each case once per round, in turn, and return each case's median.
fn interleaved(cases: &mut [&mut dyn FnMut() -> Duration]) -> Vec<Duration> {
    let mut times = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (case, t) in cases.iter_mut().zip(&mut times) {
            t.push(case());
        }
    }
    times.into_iter().map(median).collect()
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn aead() {
    let data = input(Kind::Noise, AEAD_INPUT).to_vec();
    let gcm = Aes256Gcm::new(&[7u8; 32].into());
    let xchacha = XChaCha20Poly1305::new(&[7u8; 32].into());
    let ring_key =
        ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7; 32]).unwrap());
    let (mut b1, mut b2, mut b3) = (data.clone(), data.clone(), data.clone());
    let t = interleaved(&mut [
        &mut || {
            timed(|| {
                for (i, piece) in b1.chunks_mut(PIECE).enumerate() {
                    let mut nonce = [0u8; 12];
                    nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    black_box(gcm.encrypt_in_place_detached(&nonce.into(), b"aad", piece).unwrap());
                }
            })
        },
        &mut || {
            timed(|| {
                for (i, piece) in b2.chunks_mut(PIECE).enumerate() {
                    let mut nonce = [0u8; 24];
                    nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    black_box(xchacha.encrypt_in_place_detached(&nonce.into(), b"aad", piece).unwrap());
                }
            })
        },
        &mut || {
            timed(|| {
                for (i, piece) in b3.chunks_mut(PIECE).enumerate() {
                    let mut nonce = [0u8; 12];
                    nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                    let tag = ring_key.seal_in_place_separate_tag(nonce, ring::aead::Aad::from(b"aad"), piece);
                    black_box(tag.unwrap().as_ref()[0]);
                }
            })
        },
        &mut || {
            timed(|| {
                black_box(data.chunks(PIECE).map(|p| blake3::hash(p).as_bytes()[0]).sum::<u8>());
            })
        },
    ]);
    let names = ["aes256gcm (aes-gcm)", "xchacha20poly1305", "aes256gcm (ring)", "blake3 (baseline)"];
    println!("aead: 32 MiB in 64 KiB pieces, one core, median of {ROUNDS}");
    for (name, d) in names.iter().zip(&t) {
        println!(
            "  {name:<22} {:>8.1} ms {:>7.0} MB/s   time / blake3 {:.2}",
            d.as_secs_f64() * 1e3,
            mb_s(AEAD_INPUT, *d),
            d.as_secs_f64() / t[3].as_secs_f64()
        );
    }
}

fn engine(dir: &std::path::Path, encrypt: bool) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.keys.encrypt = encrypt;
    Engine::open(cfg, Arc::new(Metrics::new())).unwrap()
}

fn ingest_once(rt: &tokio::runtime::Runtime, data: &Bytes, encrypt: bool) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), encrypt);
    let frames = (0..data.len())
        .step_by(FRAME)
        .map(|at| Ok::<_, std::convert::Infallible>(data.slice(at..(at + FRAME).min(data.len()))));
    let started = Instant::now();
    let ingested = rt.block_on(e.ingest(futures::stream::iter(frames), AdmitAll)).unwrap();
    let took = started.elapsed();
    assert_eq!(ingested.manifest.size, data.len() as u64);
    took
}

fn stored(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    data: &Bytes,
    encrypt: bool,
) -> (Engine, Vec<(ChunkId, u32)>) {
    let e = engine(dir, encrypt);
    let chunks = rt.block_on(async {
        let ing = e.ingest_bytes(data.clone()).await.unwrap();
        let chunks = ing.manifest.chunks.clone();
        e.put_object(&AccountId([1; 16]), Namespace::Scratch, b"f", ing, u64::MAX, Precondition::None)
            .unwrap()
            .unwrap();
        chunks
    });
    e.close().unwrap();
    (e, chunks)
}

fn engine_costs() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("engine: 64 MiB, median of {ROUNDS} interleaved rounds");
    for kind in [Kind::Noise, Kind::Text] {
        let data = input(kind, ENGINE_INPUT);
        let t = interleaved(&mut [&mut || ingest_once(&rt, &data, false), &mut || ingest_once(&rt, &data, true)]);
        report("ingest", kind, &t);
        let (plain_dir, sealed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (plain, pc) = stored(&rt, plain_dir.path(), &data, false);
        let (sealed, sc) = stored(&rt, sealed_dir.path(), &data, true);
        let read = |e: &Engine, c: &Vec<(ChunkId, u32)>| {
            timed(|| assert_eq!(rt.block_on(e.read_all(c.clone())).unwrap().len(), data.len()))
        };
        let t = interleaved(&mut [&mut || read(&plain, &pc), &mut || read(&sealed, &sc)]);
        report("read", kind, &t);
    }
}

fn report(what: &str, kind: Kind, t: &[Duration]) {
    println!(
        "  {what:<6} {:<5}  plain {:>7.1} ms ({:>4.0} MB/s)  sealed {:>7.1} ms ({:>4.0} MB/s)  sealed / plain {:.3}",
        kind.name(),
        t[0].as_secs_f64() * 1e3,
        mb_s(ENGINE_INPUT, t[0]),
        t[1].as_secs_f64() * 1e3,
        mb_s(ENGINE_INPUT, t[1]),
        t[1].as_secs_f64() / t[0].as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a word after `--` picks one part.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    if wants("aead") {
        aead();
    }
    if wants("engine") {
        engine_costs();
    }
}
