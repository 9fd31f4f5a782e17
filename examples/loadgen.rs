//! Load generator behind `tools/bench-drive`, `tools/bench-sync` and `tools/bench-gc`
//! (issues 4, 5 and 6; figures and how to read them in docs/benchmarks.md).
//!
//! HTTP workloads start the real `cairn serve` (the binary given with `--cairn`) on
//! 127.0.0.1:0 with a temporary data directory and an admin token, sign users up through the
//! outbox file, run bounded loops against loopback only, stop the server with SIGTERM and print
//! a Markdown table. Engine workloads run in this process on a temporary directory. Every
//! figure is printed next to a baseline measured in the same run, because the machine is
//! shared and absolute numbers drift from one run to the next.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use cairn::chunk::ChunkingParams;
use cairn::engine::{AdmitAll, ByteRange, Engine, EngineConfig, GcOptions, GcReport, Precondition};
use cairn::metrics::Metrics;
use cairn::store::keys::{AccountId, Namespace};
use cairn::store::CF_CHUNKS;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const PASSWORD: &str = "correct horse battery staple";
/// Plans large enough for every workload; no scheduled GC to disturb the figures; transfer
/// limits above the drive bench's 16 at a time on one account (the default 8 answers 429).
const SERVER_CONFIG: &str = "gc_interval_secs = 0\n[plans]\nfree = \"100GiB\"\n\
                             [limits]\nuploads_per_account = 64\ndownloads_per_account = 64\n";
const MB: f64 = 1e6;

#[derive(Parser)]
#[command(about = "cairn benchmarks: drive (issue 4), sync (issue 5), gc (issue 6)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upload and download one big file and many small ones, over HTTP and in-process.
    Drive(DriveArgs),
    /// Sync record writes and feed reads with 1 and with N concurrent clients.
    Sync(SyncArgs),
    /// GC and compaction over many chunks, and upload latency while GC runs (engine).
    Gc(GcArgs),
    /// WebDAV: MOVE of a folder of many files against one of one file, and downloads over DAV
    /// against `/v1/files`.
    Dav(DavArgs),
    /// One big download, over HTTP (three clients: curl, a raw hyper client, reqwest) against
    /// the engine's in-process read of the same bytes; rounds alternate the order.
    Download(DownloadArgs),
    /// Internal: collections on a store `gc` built, in a fresh process.
    #[command(hide = true)]
    GcChild {
        #[arg(long)]
        dir: PathBuf,
        /// compact_below of each run, comma-separated.
        #[arg(long, value_delimiter = ',')]
        runs: Vec<f64>,
    },
}

#[derive(Args)]
struct DriveArgs {
    /// The `cairn` binary to start (a release build).
    #[arg(long)]
    cairn: PathBuf,
    /// Size of the big file, in MiB.
    #[arg(long, default_value_t = 1024)]
    big_mib: u64,
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    #[arg(long, default_value_t = 4096)]
    file_bytes: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Size of the frames the client generates and sends, in KiB.
    #[arg(long, default_value_t = 256)]
    frame_kib: usize,
    /// Rounds of HTTP then engine, alternating which goes first.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

#[derive(Args)]
struct DownloadArgs {
    /// The `cairn` binary to start (a release build). Given twice or more, each is started and
    /// measured in every round (an A/B of server builds in one invocation).
    #[arg(long, required = true)]
    cairn: Vec<PathBuf>,
    /// Size of the file, in MiB.
    #[arg(long, default_value_t = 1024)]
    big_mib: u64,
    /// Rounds; each reads the file once per client and once in-process.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Which HTTP clients to run, comma-separated: curl, hyper, reqwest.
    #[arg(long, value_delimiter = ',', default_value = "curl,hyper,reqwest")]
    clients: Vec<String>,
    /// Seconds to sleep before each timed download (lets the page cache writeback settle).
    #[arg(long, default_value_t = 0.0)]
    settle_secs: f64,
    /// Record each download with `perf record -g` into this directory: the server's process
    /// for HTTP steps, this process for the engine's (and the hyper and reqwest clients').
    /// The machine's CPU figures then include perf's; the server's and clients' do not.
    #[arg(long)]
    perf_dir: Option<PathBuf>,
}

#[derive(Args)]
struct DavArgs {
    #[arg(long)]
    cairn: PathBuf,
    /// Files in the folder that is moved.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Size of the file downloaded over both fronts, in MiB.
    #[arg(long, default_value_t = 256)]
    big_mib: u64,
    /// Moves (and downloads) of each kind; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[derive(Args)]
struct SyncArgs {
    #[arg(long)]
    cairn: PathBuf,
    /// Concurrent clients of the big level; each level is also compared with 1 client.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds each write or read phase lasts.
    #[arg(long, default_value_t = 8)]
    secs: u64,
    /// Upper bound on requests per client per phase (the loops are bounded either way).
    #[arg(long, default_value_t = 200_000)]
    max_ops: usize,
}

#[derive(Args)]
struct GcArgs {
    /// Chunks to create (tiny chunking: min 64, avg 256, max 1024 bytes).
    #[arg(long, default_value_t = 1_000_000)]
    chunks: u64,
    /// Keep every Nth object; the others are deleted and become garbage.
    #[arg(long, default_value_t = 10)]
    keep_every: usize,
    /// Size of each object of the tiny-chunk store, in KiB.
    #[arg(long, default_value_t = 2560)]
    object_kib: usize,
    /// Uploads in the no-GC baseline of each latency scenario.
    #[arg(long, default_value_t = 400)]
    uploads: usize,
    #[arg(long, default_value_t = 64)]
    upload_kib: usize,
    /// Size of the default-chunking store of the second latency scenario, in MiB (0: skip).
    #[arg(long, default_value_t = 1536)]
    bytes_mib: u64,
    /// Keep every Nth file of the default-chunking stores (engine and HTTP): 2 leaves packs
    /// half live, the most compaction copies at the default threshold.
    #[arg(long, default_value_t = 2)]
    bytes_keep_every: usize,
    /// The `cairn` binary: with it, the latency scenario is also run over HTTP against the
    /// real server (PUT /v1/files beside POST /admin/gc).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Garbage uploaded over HTTP for that scenario, in MiB (8 MiB files).
    #[arg(long, default_value_t = 1024)]
    http_mib: u64,
    /// Ceiling on compaction copies in the latency scenarios, MiB/s (0: none, as offline).
    #[arg(long, default_value_t = 0)]
    copy_mib_per_sec: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.cmd {
        Cmd::Drive(a) => rt.block_on(drive(a)),
        Cmd::Sync(a) => rt.block_on(sync_bench(a)),
        Cmd::Gc(a) => gc_bench(&rt, a),
        Cmd::Dav(a) => rt.block_on(dav_bench(a)),
        Cmd::Download(a) => rt.block_on(download_bench(a)),
        Cmd::GcChild { dir, runs } => gc_child(&dir, &runs),
    }
}

// ---------------------------------------------------------------------------------------------
// Data, numbers, tables

/// xorshift64: incompressible enough for zstd (which then stores raw) and far faster than the
/// pipeline, so the generator is never the bottleneck.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; n];
    Rng::new(seed).fill(&mut v);
    v
}

/// A body of `left` pseudo-random bytes made one frame at a time: the client never holds more
/// than the frame it is handing over.
struct NoiseStream {
    rng: Rng,
    left: u64,
    frame: usize,
}

impl NoiseStream {
    fn new(seed: u64, len: u64, frame: usize) -> Self {
        NoiseStream { rng: Rng::new(seed), left: len, frame }
    }
}

impl Stream for NoiseStream {
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = (self.frame as u64).min(self.left) as usize;
        let mut buf = vec![0u8; n];
        self.rng.fill(&mut buf);
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Bytes::from(buf))))
    }
}

/// Latencies in milliseconds.
#[derive(Default)]
struct Lat(Vec<f64>);

impl Lat {
    fn add(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }
    fn extend(&mut self, other: Lat) {
        self.0.extend(other.0);
    }
    fn q(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
    fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }
    fn over(&self, ms: f64) -> usize {
        self.0.iter().filter(|&&x| x > ms).count()
    }
}

fn print_table(title: &str, head: &[&str], rows: &[Vec<String>]) {
    println!("\n{title}\n");
    println!("| {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(head.len().saturating_sub(1)));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}
fn f2(x: f64) -> String {
    format!("{x:.2}")
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// Reset VmHWM to the current RSS (Linux >= 4.0), so the next reading is the peak of what
/// follows rather than of the whole process.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------------
// The server

struct Server {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
    stopped: bool,
}

impl Server {
    fn start(cairn: &Path, config: &str) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
        let cfg = dir.path().join("cairn.toml");
        std::fs::write(&cfg, config)?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut child = Command::new(cairn)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN_TOKEN, "--config"])
            .arg(&cfg)
            .env("CAIRN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", cairn.display()))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        let Some(base) = line.trim().strip_prefix("cairn listening on ").map(str::to_string) else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            bail!("the server did not start (first line {line:?}); its log:\n{log}");
        };
        ensure!(base.starts_with("http://127.0.0.1:"), "the server listens on {base}, not on loopback");
        // Keep draining stdout so that the server can never block on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let client =
            reqwest::Client::builder().pool_max_idle_per_host(128).timeout(Duration::from_secs(600)).build()?;
        Ok(Server { child, base, dir, client, stopped: false })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGTERM and wait: the graceful path.
    fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait()?;
        ensure!(status.success(), "the server exited with {status}");
        Ok(())
    }

    /// Sign up `email` through the outbox and sign in; returns the bearer token.
    async fn sign_up(&self, email: &str) -> Result<String> {
        let r = self
            .client
            .post(self.url("/v1/codes"))
            .json(&json!({ "identifier": email, "purpose": "register" }))
            .send()
            .await?;
        ensure!(r.status() == 202, "POST /v1/codes: {} {}", r.status(), r.text().await?);
        let code = self.code_for(email).await?;
        let r = self
            .client
            .post(self.url("/v1/accounts"))
            .json(&json!({ "identifier": email, "password": PASSWORD, "code": code }))
            .send()
            .await?;
        ensure!(r.status() == 201, "POST /v1/accounts: {} {}", r.status(), r.text().await?);
        let device = json!({ "name": "loadgen", "model": "bench", "os": "linux" });
        let r = self
            .client
            .post(self.url("/v1/sessions"))
            .json(&json!({ "identifier": email, "password": PASSWORD, "device": device }))
            .send()
            .await?;
        ensure!(r.status() == 201, "POST /v1/sessions: {} {}", r.status(), r.text().await?);
        let v: Value = r.json().await?;
        Ok(v["token"].as_str().context("no token in the session")?.to_string())
    }

    async fn code_for(&self, email: &str) -> Result<String> {
        let outbox = self.dir.path().join("data").join("outbox.jsonl");
        for _ in 0..100 {
            let text = std::fs::read_to_string(&outbox).unwrap_or_default();
            let found = text
                .lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|m| m["to"] == email && m["purpose"] == "register");
            if let Some(code) = found.and_then(|m| m["code"].as_str().map(String::from)) {
                return Ok(code);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no register code for {email} in {}", outbox.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 4: drive

struct DriveFigures {
    big_up_s: f64,
    big_down_s: f64,
    small_up_s: f64,
    small_down_s: f64,
}

impl DriveFigures {
    fn add(&mut self, o: &DriveFigures) {
        self.big_up_s += o.big_up_s;
        self.big_down_s += o.big_down_s;
        self.small_up_s += o.small_up_s;
        self.small_down_s += o.small_down_s;
    }
}

async fn drive(a: DriveArgs) -> Result<()> {
    let big = a.big_mib << 20;
    // Rounds alternate which side goes first, so that neither always inherits the other's
    // page-cache writeback; figures are totals over all rounds.
    let mut http = DriveFigures { big_up_s: 0.0, big_down_s: 0.0, small_up_s: 0.0, small_down_s: 0.0 };
    let mut eng = DriveFigures { big_up_s: 0.0, big_down_s: 0.0, small_up_s: 0.0, small_down_s: 0.0 };
    for round in 0..a.rounds.max(1) {
        let (h, e) = if round % 2 == 0 {
            let h = drive_http(&a).await?;
            (h, drive_engine(&a).await?)
        } else {
            let e = drive_engine(&a).await?;
            (drive_http(&a).await?, e)
        };
        let big_mb = (a.big_mib << 20) as f64 / MB;
        eprintln!(
            "round {round}: big up {:.0}/{:.0} MB/s, big down {:.0}/{:.0} MB/s, small up {:.0}/{:.0} files/s, small down {:.0}/{:.0} files/s (HTTP/engine)",
            big_mb / h.big_up_s,
            big_mb / e.big_up_s,
            big_mb / h.big_down_s,
            big_mb / e.big_down_s,
            a.files as f64 / h.small_up_s,
            a.files as f64 / e.small_up_s,
            a.files as f64 / h.small_down_s,
            a.files as f64 / e.small_down_s
        );
        http.add(&h);
        eng.add(&e);
    }
    let rounds = a.rounds.max(1) as f64;
    let mbs = |secs: f64| rounds * big as f64 / MB / secs;
    let fps = |secs: f64| rounds * a.files as f64 / secs;
    let row = |what: String, unit: &str, h: f64, e: f64| vec![what, unit.into(), f1(h), f1(e), f2(h / e)];
    let rows = vec![
        row(format!("upload {} MiB random, one stream", a.big_mib), "MB/s", mbs(http.big_up_s), mbs(eng.big_up_s)),
        row(format!("download {} MiB", a.big_mib), "MB/s", mbs(http.big_down_s), mbs(eng.big_down_s)),
        row(
            format!("upload {} x {} B, {} at a time", a.files, a.file_bytes, a.concurrency),
            "files/s",
            fps(http.small_up_s),
            fps(eng.small_up_s),
        ),
        row(
            format!("download {} x {} B, {} at a time", a.files, a.file_bytes, a.concurrency),
            "files/s",
            fps(http.small_down_s),
            fps(eng.small_down_s),
        ),
    ];
    print_table(
        "Drive (issue 4): HTTP on loopback vs the engine in-process, same run",
        &["workload", "unit", "HTTP", "engine", "HTTP/engine"],
        &rows,
    );
    Ok(())
}

/// The drive workload over HTTP, against the real server.
async fn drive_http(a: &DriveArgs) -> Result<DriveFigures> {
    let big = a.big_mib << 20;
    let frame = a.frame_kib << 10;
    let small_seed = |i: usize| 1_000_000 + i as u64;
    let mut server = Server::start(&a.cairn, SERVER_CONFIG)?;
    let token = server.sign_up("drive@bench.example").await?;
    let s = &server;
    let t = Instant::now();
    let body = reqwest::Body::wrap_stream(NoiseStream::new(1, big, frame));
    let r = s
        .client
        .put(s.url("/v1/files/big.bin"))
        .bearer_auth(&token)
        .header("content-length", big)
        .body(body)
        .send()
        .await?;
    ensure!(r.status() == 201, "big upload: {} {}", r.status(), r.text().await?);
    let big_up_s = t.elapsed().as_secs_f64();
    let v: Value = r.json().await?;
    ensure!(v["size"] == big, "big upload stored {} bytes", v["size"]);

    let t = Instant::now();
    let r = s.client.get(s.url("/v1/files/big.bin")).bearer_auth(&token).send().await?;
    ensure!(r.status() == 200, "big download: {}", r.status());
    let mut got = 0u64;
    let mut body = r.bytes_stream();
    while let Some(piece) = body.next().await {
        got += piece?.len() as u64;
    }
    let big_down_s = t.elapsed().as_secs_f64();
    ensure!(got == big, "big download gave {got} bytes");

    let t = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..a.files)
        .map(|i| {
            let (s, token, n) = (&server, &token, a.file_bytes);
            async move {
                let r = s
                    .client
                    .put(s.url(&format!("/v1/files/small/{i:05}")))
                    .bearer_auth(token)
                    .body(noise(n, small_seed(i)))
                    .send()
                    .await?;
                ensure!(r.status() == 201, "small upload {i}: {}", r.status());
                Ok(())
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    let small_up_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..a.files)
        .map(|i| {
            let (s, token, n) = (&server, &token, a.file_bytes);
            async move {
                let r = s.client.get(s.url(&format!("/v1/files/small/{i:05}"))).bearer_auth(token).send().await?;
                ensure!(r.status() == 200, "small download {i}: {}", r.status());
                ensure!(r.bytes().await?.len() == n, "small download {i}: wrong length");
                Ok(())
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    let small_down_s = t.elapsed().as_secs_f64();
    server.stop()?;
    drop(server);
    Ok(DriveFigures { big_up_s, big_down_s, small_up_s, small_down_s })
}

/// The same work in-process: Engine::ingest + put_object, read_stream.
async fn drive_engine(a: &DriveArgs) -> Result<DriveFigures> {
    let big = a.big_mib << 20;
    let frame = a.frame_kib << 10;
    let small_seed = |i: usize| 1_000_000 + i as u64;
    let tmp = tempfile::Builder::new().prefix("cairn-bench-engine-").tempdir()?;
    let engine = Engine::open(EngineConfig::new(tmp.path()), Arc::new(Metrics::new()))?;
    let acct = AccountId([4; 16]);
    let t = Instant::now();
    let ing = engine.ingest(NoiseStream::new(1, big, frame), AdmitAll).await?;
    commit(&engine, acct, "big.bin".into(), ing).await?;
    let big_up_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let got = read_object(&engine, acct, "big.bin".into()).await?;
    let big_down_s = t.elapsed().as_secs_f64();
    ensure!(got == big, "engine read gave {got} bytes");

    let t = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..a.files)
        .map(|i| {
            let (e, n) = (engine.clone(), a.file_bytes);
            async move {
                let ing = e.ingest_bytes(Bytes::from(noise(n, small_seed(i)))).await?;
                commit(&e, acct, format!("small/{i:05}"), ing).await
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    let small_up_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..a.files)
        .map(|i| {
            let (e, n) = (engine.clone(), a.file_bytes as u64);
            async move {
                ensure!(
                    read_object(&e, acct, format!("small/{i:05}")).await? == n,
                    "engine small read {i}: wrong length"
                );
                Ok(())
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    let small_down_s = t.elapsed().as_secs_f64();
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.close()).await??;
    Ok(DriveFigures { big_up_s, big_down_s, small_up_s, small_down_s })
}

async fn commit(e: &Engine, acct: AccountId, name: String, ing: cairn::engine::Ingested) -> Result<()> {
    let e = e.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        e.put_object(&acct, Namespace::Drive, name.as_bytes(), ing, u64::MAX, Precondition::None)??;
        Ok(())
    })
    .await?
}

/// Stream an object out of the engine as the HTTP handler does; returns the byte count.
async fn read_object(e: &Engine, acct: AccountId, name: String) -> Result<u64> {
    let e2 = e.clone();
    let (chunks, size) = tokio::task::spawn_blocking(move || -> Result<_> {
        let rec = e2.get_object(&acct, Namespace::Drive, name.as_bytes())?.context("no such object")?;
        Ok((e2.object_chunks(&acct, Namespace::Drive, name.as_bytes(), &rec)?, rec.size))
    })
    .await??;
    let mut got = 0u64;
    let mut s = std::pin::pin!(e.read_stream(chunks, ByteRange::all(size)));
    while let Some(piece) = s.next().await {
        got += piece?.len() as u64;
    }
    Ok(got)
}

// ---------------------------------------------------------------------------------------------
// Issue 13: one big download, HTTP against the engine

/// `curl -o /dev/null`: a client whose receive path is a read into one buffer and nothing
/// else. Returns the seconds from the request to the last byte, as curl counts them.
fn curl_download(url: &str, token: &str, size: u64) -> Result<f64> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<&str> = text.split_whitespace().collect();
    ensure!(f.len() == 3 && f[0] == "200", "curl: {text:?}");
    ensure!(f[1].parse::<u64>()? == size, "curl got {} bytes", f[1]);
    Ok(f[2].parse()?)
}

/// A raw hyper HTTP/1.1 client on one connection that drops each frame as it arrives.
async fn hyper_download(url: &str, token: &str, size: u64) -> Result<f64> {
    use http_body_util::{BodyExt, Empty};
    let uri: hyper::Uri = url.parse()?;
    let addr = format!("{}:{}", uri.host().context("host")?, uri.port_u16().context("port")?);
    let t = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(uri.path())
        .header("host", uri.authority().context("authority")?.as_str())
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    ensure!(resp.status() == 200, "hyper download: {}", resp.status());
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            got += data.len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    ensure!(got == size, "hyper download gave {got} bytes");
    drop(send);
    let _ = conn.await;
    Ok(secs)
}

/// loadgen's client until issue 13's third pass: reqwest, `bytes_stream()`.
async fn reqwest_download(s: &Server, token: &str, size: u64) -> Result<f64> {
    let t = Instant::now();
    let r = s.client.get(s.url("/v1/files/big.bin")).bearer_auth(token).send().await?;
    ensure!(r.status() == 200, "big download: {}", r.status());
    let mut got = 0u64;
    let mut body = r.bytes_stream();
    while let Some(piece) = body.next().await {
        got += piece?.len() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    ensure!(got == size, "reqwest download gave {got} bytes");
    Ok(secs)
}

/// CPU seconds (user + system) of a process so far, from `/proc/PID/stat`.
fn proc_cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    if f.len() > 13 {
        (f[11] + f[12]) / hz
    } else {
        0.0
    }
}

/// CPU seconds of the children this process has waited for (curl's, here).
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Busy CPU seconds of the whole machine so far (every process, interrupts included), from
/// `/proc/stat`.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: f64 = f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy / hz
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

async fn download_bench(a: DownloadArgs) -> Result<()> {
    let big = a.big_mib << 20;
    let mb = big as f64 / MB;
    for c in &a.clients {
        ensure!(["curl", "hyper", "reqwest"].contains(&c.as_str()), "unknown client {c}");
    }
    // The engine's copy of the file, in this process (as `drive` measures it).
    let tmp = tempfile::Builder::new().prefix("cairn-bench-engine-").tempdir()?;
    let engine = Engine::open(EngineConfig::new(tmp.path()), Arc::new(Metrics::new()))?;
    let acct = AccountId([4; 16]);
    let ing = engine.ingest(NoiseStream::new(1, big, 256 << 10), AdmitAll).await?;
    commit(&engine, acct, "big.bin".into(), ing).await?;
    // One server per binary, each with the same file uploaded over HTTP.
    let mut servers = Vec::new();
    for (i, cairn) in a.cairn.iter().enumerate() {
        let server = Server::start(cairn, SERVER_CONFIG)?;
        let token = server.sign_up(&format!("download{i}@bench.example")).await?;
        let r = server
            .client
            .put(server.url("/v1/files/big.bin"))
            .bearer_auth(&token)
            .header("content-length", big)
            .body(reqwest::Body::wrap_stream(NoiseStream::new(1, big, 256 << 10)))
            .send()
            .await?;
        ensure!(r.status() == 201, "big upload: {} {}", r.status(), r.text().await?);
        servers.push((server, token));
    }
    let label =
        |i: usize| if a.cairn.len() == 1 { "HTTP".to_string() } else { format!("HTTP {}", (b'A' + i as u8) as char) };
    // Every (server, client) pair, then the engine; each round reverses the order.
    let mut order: Vec<Option<(usize, String)>> = vec![None];
    for i in 0..servers.len() {
        for c in &a.clients {
            order.push(Some((i, c.clone())));
        }
    }
    let mut secs: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut ratios: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    // CPU seconds per GB of each step: server, this process, curl, the whole machine.
    let mut cpu_gb: std::collections::BTreeMap<String, Vec<[f64; 4]>> = Default::default();
    for round in 0..a.rounds.max(1) {
        let mut this: Vec<(String, f64)> = Vec::new();
        let mut steps = order.clone();
        if round % 2 == 1 {
            steps.reverse();
        }
        for step in steps {
            if a.settle_secs > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
            }
            let server_pid = step.as_ref().map(|(i, _)| servers[*i].0.child.id().to_string());
            let perf = match &a.perf_dir {
                Some(dir) => {
                    let pid = server_pid.clone().unwrap_or_else(|| std::process::id().to_string());
                    let what = match &step {
                        None => "engine".to_string(),
                        Some((i, c)) => format!("server{i}-{c}"),
                    };
                    let child = Command::new("perf")
                        .args(["record", "-q", "-g", "-F", "999", "-p", &pid, "-o"])
                        .arg(dir.join(format!("r{round}-{what}.data")))
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .context("starting perf")?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some(child)
                }
                None => None,
            };
            let before = (
                server_pid.as_deref().map_or(0.0, proc_cpu_secs),
                proc_cpu_secs("self"),
                children_cpu_secs(),
                machine_busy_secs(),
            );
            let (name, s) = match step {
                None => {
                    let t = Instant::now();
                    let got = read_object(&engine, acct, "big.bin".into()).await?;
                    ensure!(got == big, "engine read gave {got} bytes");
                    ("engine".to_string(), t.elapsed().as_secs_f64())
                }
                Some((i, c)) => {
                    let (server, token) = &servers[i];
                    let url = server.url("/v1/files/big.bin");
                    let s = match c.as_str() {
                        "curl" => {
                            let (url, token) = (url.clone(), token.clone());
                            tokio::task::spawn_blocking(move || curl_download(&url, &token, big)).await??
                        }
                        "hyper" => hyper_download(&url, token, big).await?,
                        _ => reqwest_download(server, token, big).await?,
                    };
                    (format!("{}, {c}", label(i)), s)
                }
            };
            let cpu = [
                server_pid.as_deref().map_or(0.0, proc_cpu_secs) - before.0,
                proc_cpu_secs("self") - before.1,
                children_cpu_secs() - before.2,
                machine_busy_secs() - before.3,
            ];
            // Stopped (and reaped) after the CPU figures, which then leave perf's own out.
            if let Some(mut child) = perf {
                // SAFETY: signalling our own child by its pid.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGINT);
                }
                child.wait()?;
            }
            let per_gb = cpu.map(|c| c / (big as f64 / 1e9));
            cpu_gb.entry(name.clone()).or_default().push(per_gb);
            this.push((name, s));
        }
        let engine_s = this.iter().find(|(n, _)| n == "engine").map(|(_, s)| *s).expect("engine ran");
        let line: Vec<String> = this.iter().map(|(n, s)| format!("{n} {:.0}", mb / s)).collect();
        eprintln!("round {round} (MB/s): {}", line.join(", "));
        for (n, s) in this {
            if n != "engine" {
                ratios.entry(n.clone()).or_default().push(engine_s / s);
            }
            secs.entry(n).or_default().push(s);
        }
    }
    let engine_mbs = mb / median(&secs["engine"]);
    let mut rows = vec![vec!["engine, in-process read_stream".into(), f1(engine_mbs), "1.00".into(), String::new()]];
    for (n, s) in &secs {
        if n == "engine" {
            continue;
        }
        let per: Vec<String> = ratios[n].iter().map(|r| f2(*r)).collect();
        rows.push(vec![n.clone(), f1(mb / median(s)), f2(median(&ratios[n])), per.join(" / ")]);
    }
    print_table(
        &format!(
            "Download of {} MiB (issue 13): HTTP on loopback vs the engine in-process, medians of {} rounds",
            a.big_mib,
            a.rounds.max(1)
        ),
        &["reader", "MB/s (median)", "HTTP/engine (median of rounds)", "HTTP/engine per round"],
        &rows,
    );
    let cpu_rows: Vec<Vec<String>> = cpu_gb
        .iter()
        .map(|(n, v)| {
            let m = |k: usize| f2(median(&v.iter().map(|x| x[k]).collect::<Vec<_>>()));
            let client = if n.ends_with("curl") { m(2) } else { m(1) };
            let server = if n == "engine" { "-".to_string() } else { m(0) };
            let secs = median(&secs[n]);
            vec![
                n.clone(),
                server,
                client,
                m(3),
                f2(median(&v.iter().map(|x| x[3]).collect::<Vec<_>>()) * (big as f64 / 1e9) / secs),
            ]
        })
        .collect();
    print_table(
        "CPU seconds per GB moved, medians (engine: the loadgen process, read thread and consumer; machine: every process on it, so other load too)",
        &["reader", "server", "client (engine: in-process)", "machine", "cores busy"],
        &cpu_rows,
    );
    for (mut server, _) in servers {
        server.stop()?;
    }
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.close()).await??;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Issue 5: sync

struct Client {
    token: String,
    /// Records this client writes are `{prefix}-{n}`.
    prefix: String,
    /// Which account (index into the sign-ups) the client belongs to.
    account: usize,
}

#[derive(Default)]
struct Phase {
    ops: usize,
    secs: f64,
    lat: Lat,
    records: usize,
}

#[derive(Deserialize)]
struct FeedPage<'a> {
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

fn payload(i: usize) -> Value {
    json!({
        "title": format!("note {i}"),
        "body": "Buy milk, eggs and bread; call the plumber about the kitchen tap before Friday.",
        "tags": ["home", "todo"],
        "pinned": i.is_multiple_of(7),
    })
}

async fn sync_bench(a: SyncArgs) -> Result<()> {
    let mut server = Server::start(&a.cairn, SERVER_CONFIG)?;
    let n = a.clients.max(1);
    let emails: Vec<String> = (0..n).map(|i| format!("sync{i}@bench.example")).collect();
    let tokens: Vec<Result<String>> =
        futures::stream::iter(&emails).map(|e| server.sign_up(e)).buffered(4).collect().await;
    let tokens: Vec<String> = tokens.into_iter().collect::<Result<_>>()?;
    let secs = Duration::from_secs(a.secs);

    let one: Vec<Client> = vec![Client { token: tokens[0].clone(), prefix: "solo".into(), account: 0 }];
    let many: Vec<Client> =
        (0..n).map(|i| Client { token: tokens[i].clone(), prefix: format!("c{i}"), account: i }).collect();
    let shared: Vec<Client> =
        (0..n).map(|i| Client { token: tokens[0].clone(), prefix: format!("s{i}"), account: 0 }).collect();

    let mut rows = Vec::new();
    let mut figures = Vec::new();
    let n_str = n.to_string();
    for (label, accounts, clients) in [("1", "1", &one), (&*n_str, &*n_str, &many), (&*n_str, "1 (shared)", &shared)] {
        let (w, last_seq) = sync_writes(&server, clients, n, secs, a.max_ops).await?;
        let r = sync_reads(&server, clients, &last_seq, secs, a.max_ops).await?;
        rows.push(vec![
            label.to_string(),
            accounts.to_string(),
            f1(w.ops as f64 / w.secs),
            f2(w.lat.q(0.5)),
            f2(w.lat.q(0.99)),
            f1(r.ops as f64 / r.secs),
            f2(r.lat.q(0.5)),
            f2(r.lat.q(0.99)),
            format!("{:.0}", r.records as f64 / r.secs),
        ]);
        figures.push((w.ops as f64 / w.secs, r.ops as f64 / r.secs, w.lat.q(0.99), r.lat.q(0.99)));
    }
    server.stop()?;
    print_table(
        &format!("Sync (issue 5): {}-second phases, PUT /v1/sync/notes/ID (~170-byte JSON) and GET /v1/sync/notes?since=S&limit=100", a.secs),
        &["clients", "accounts", "writes/s", "write p50 ms", "write p99 ms", "feed reads/s", "read p50 ms", "read p99 ms", "records read/s"],
        &rows,
    );
    let (base_w, base_r, base_wp, base_rp) = figures[0];
    let ratio_rows: Vec<Vec<String>> = figures[1..]
        .iter()
        .zip([format!("{n} clients, {n} accounts"), format!("{n} clients, 1 account")])
        .map(|((w, r, wp, rp), label)| vec![label, f2(w / base_w), f2(r / base_r), f2(wp / base_wp), f2(rp / base_rp)])
        .collect();
    print_table(
        &format!("Ratios to 1 client (same run); {n} clients would be {n}.00 with perfect scaling"),
        &["", "writes/s", "feed reads/s", "write p99", "read p99"],
        &ratio_rows,
    );
    Ok(())
}

/// Every client writes new records until the time is up. Returns the phase and, per account,
/// the highest `seq` handed out.
async fn sync_writes(
    s: &Server,
    clients: &[Client],
    accounts: usize,
    secs: Duration,
    max_ops: usize,
) -> Result<(Phase, Vec<u64>)> {
    let started = Instant::now();
    let deadline = started + secs;
    let per_client: Vec<Result<(usize, Lat, u64)>> = futures::future::join_all(clients.iter().map(|c| async move {
        let mut lat = Lat::default();
        let mut top = 0u64;
        let mut i = 0;
        while i < max_ops && Instant::now() < deadline {
            let t = Instant::now();
            let r = s
                .client
                .put(s.url(&format!("/v1/sync/notes/{}-{i}", c.prefix)))
                .bearer_auth(&c.token)
                .json(&json!({ "payload": payload(i) }))
                .send()
                .await?;
            ensure!(r.status() == 200, "sync write: {} {}", r.status(), r.text().await?);
            let v: Value = r.json().await?;
            lat.add(t.elapsed());
            top = top.max(v["seq"].as_u64().context("no seq")?);
            i += 1;
        }
        Ok((i, lat, top))
    }))
    .await;
    let secs = started.elapsed().as_secs_f64();
    let mut phase = Phase { secs, ..Default::default() };
    let mut last_seq = vec![0u64; accounts];
    for (c, r) in clients.iter().zip(per_client) {
        let (ops, lat, top) = r?;
        phase.ops += ops;
        phase.lat.extend(lat);
        last_seq[c.account] = last_seq[c.account].max(top);
    }
    Ok((phase, last_seq))
}

/// Every client reads full pages of its account's feed from random points.
async fn sync_reads(s: &Server, clients: &[Client], last_seq: &[u64], secs: Duration, max_ops: usize) -> Result<Phase> {
    let started = Instant::now();
    let deadline = started + secs;
    let per_client: Vec<Result<(usize, Lat, usize)>> =
        futures::future::join_all(clients.iter().enumerate().map(|(k, c)| async move {
            let mut rng = Rng::new(77 + k as u64);
            let hi = last_seq[c.account].saturating_sub(100);
            let (mut lat, mut records, mut i) = (Lat::default(), 0, 0);
            while i < max_ops && Instant::now() < deadline {
                let since = rng.below(hi + 1);
                let t = Instant::now();
                let r = s
                    .client
                    .get(s.url(&format!("/v1/sync/notes?since={since}&limit=100")))
                    .bearer_auth(&c.token)
                    .send()
                    .await?;
                ensure!(r.status() == 200, "feed read: {}", r.status());
                let body = r.bytes().await?;
                let page: FeedPage = serde_json::from_slice(&body)?;
                lat.add(t.elapsed());
                records += page.records.len();
                i += 1;
            }
            Ok((i, lat, records))
        }))
        .await;
    let mut phase = Phase { secs: started.elapsed().as_secs_f64(), ..Default::default() };
    for r in per_client {
        let (ops, lat, records) = r?;
        phase.ops += ops;
        phase.records += records;
        phase.lat.extend(lat);
    }
    Ok(phase)
}

// ---------------------------------------------------------------------------------------------
// Issue 6: GC and compaction

fn tiny_config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.chunking = ChunkingParams { min: 64, avg: 256, max: 1024 };
    c
}

fn open_engine(config: EngineConfig) -> Result<Engine> {
    Ok(Engine::open(config, Arc::new(Metrics::new()))?)
}

/// Fill a store with objects of `object_bytes` until `chunks` chunks exist (or, with
/// `chunks == 0`, until `total_bytes` are written), then delete all but every `keep_every`th.
/// Objects go in one after another, so every pack ends up with about 1/keep_every live.
fn build_garbage(
    rt: &tokio::runtime::Runtime,
    e: &Engine,
    acct: AccountId,
    object_bytes: u64,
    chunks: u64,
    total_bytes: u64,
    keep_every: usize,
) -> Result<(usize, u64)> {
    let (mut made, mut written, mut objects) = (0u64, 0u64, 0usize);
    while if chunks > 0 { made < chunks } else { written < total_bytes } {
        let ing =
            rt.block_on(e.ingest(NoiseStream::new(10_000 + objects as u64, object_bytes, 256 << 10), AdmitAll))?;
        made += ing.new_chunks;
        written += object_bytes;
        e.put_object(
            &acct,
            Namespace::Drive,
            format!("obj/{objects:06}").as_bytes(),
            ing,
            u64::MAX,
            Precondition::None,
        )??;
        objects += 1;
    }
    for i in (0..objects).filter(|i| i % keep_every != 0) {
        e.delete_object(&acct, Namespace::Drive, format!("obj/{i:06}").as_bytes(), Precondition::None)??;
    }
    Ok((objects, made))
}

/// Keys of the `chunks` column family: (records, empty values left by forgotten chunks), and
/// how long the scan took (the floor under any pass over the index).
fn scan_index(e: &Engine) -> Result<(u64, u64, f64)> {
    let t = Instant::now();
    let db = e.db();
    let (mut live, mut empty) = (0, 0);
    for item in db.raw().iterator_cf(db.cf(CF_CHUNKS), rocksdb::IteratorMode::Start) {
        if item?.1.is_empty() {
            empty += 1;
        } else {
            live += 1;
        }
    }
    Ok((live, empty, t.elapsed().as_secs_f64()))
}

/// No figure is printed for a collection that lost or damaged anything.
fn fsck_clean(e: &Engine) -> Result<()> {
    let report = cairn::engine::fsck::check(e)?;
    ensure!(report.ok(), "fsck after GC: {:?}", report.problems);
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    ensure!(status.success(), "cp -a {} {} failed", from.display(), to.display());
    Ok(())
}

fn timed_gc(e: &Engine, compact_below: f64) -> Result<(f64, GcReport, Option<u64>)> {
    reset_peak_rss();
    let t = Instant::now();
    let report = e.gc(GcOptions { grace_secs: 0, compact_below, copy_rate: None, rekey: false })?;
    Ok((t.elapsed().as_secs_f64(), report, proc_status_kib("VmHWM:")))
}

/// `GcReport`, which the server only ever serializes.
#[derive(serde::Serialize, Deserialize)]
struct Rep {
    chunks_freed: u64,
    bytes_freed: u64,
    packs_rewritten: u64,
    packs_deleted: u64,
}

impl From<GcReport> for Rep {
    fn from(r: GcReport) -> Self {
        Rep {
            chunks_freed: r.chunks_freed,
            bytes_freed: r.bytes_freed,
            packs_rewritten: r.packs_rewritten,
            packs_deleted: r.packs_deleted,
        }
    }
}

/// What `loadgen gc-child` measured, for the parent to print.
#[derive(serde::Serialize, Deserialize)]
struct ChildFigures {
    records: u64,
    scan_s: f64,
    rss_kib: Option<u64>,
    /// Per run: seconds, report, VmHWM during the run (KiB).
    runs: Vec<(f64, Rep, Option<u64>)>,
    records_after: u64,
    empty_after: u64,
    scan_after_s: f64,
}

/// One or more collections on an existing tiny-chunk store, in a fresh process so that its
/// RSS is the engine's and the collection's alone. Prints `ChildFigures` as JSON.
fn gc_child(dir: &Path, runs: &[f64]) -> Result<()> {
    let e = open_engine(tiny_config(dir))?;
    let (records, _, scan_s) = scan_index(&e)?;
    let rss_kib = proc_status_kib("VmRSS:");
    let mut out = Vec::new();
    for &compact_below in runs {
        let (secs, report, hwm) = timed_gc(&e, compact_below)?;
        out.push((secs, Rep::from(report), hwm));
    }
    let (records_after, empty_after, scan_after_s) = scan_index(&e)?;
    fsck_clean(&e)?;
    e.close()?;
    let figures = ChildFigures { records, scan_s, rss_kib, runs: out, records_after, empty_after, scan_after_s };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

fn run_child(dir: &Path, runs: &[f64]) -> Result<ChildFigures> {
    let list = runs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
    let out = Command::new(std::env::current_exe()?)
        .arg("gc-child")
        .arg("--dir")
        .arg(dir)
        .arg("--runs")
        .arg(&list)
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "gc-child failed: {}", out.status);
    let text = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(text.lines().last().context("gc-child printed nothing")?)?)
}

fn gc_bench(rt: &tokio::runtime::Runtime, a: GcArgs) -> Result<()> {
    let base = tempfile::Builder::new().prefix("cairn-bench-gc-").tempdir()?;
    let acct = AccountId([6; 16]);
    let mut lat_rows = Vec::new();
    let mut wait_rows = Vec::new();
    if a.chunks > 0 {
        let dir_one = base.path().join("one");
        let t = Instant::now();
        let e = open_engine(tiny_config(&dir_one))?;
        let (objects, made) = build_garbage(rt, &e, acct, (a.object_kib as u64) << 10, a.chunks, 0, a.keep_every)?;
        e.close()?;
        drop(e);
        let build_s = t.elapsed().as_secs_f64();
        // The same store three times: one full collection, the phases one by one, and uploads.
        let (dir_split, dir_lat) = (base.path().join("split"), base.path().join("lat"));
        copy_dir(&dir_one, &dir_split)?;
        copy_dir(&dir_one, &dir_lat)?;
        eprintln!("built {made} chunks in {objects} objects in {build_s:.1} s");

        // One collection as an operator runs it (grace 0, compact_below 1.0), then a rerun with
        // nothing to do; on the copy, the phases one by one: forget (compact_below 0 rewrites
        // nothing), then compaction (nothing left to forget). Each in a fresh process.
        let one = run_child(&dir_one, &[1.0])?;
        let idle = run_child(&dir_one, &[1.0])?;
        let forget = run_child(&dir_split, &[0.0])?;
        let compact = run_child(&dir_split, &[1.0])?;
        let scan_s = one.scan_s;
        let report_cells = |r: &Rep| {
            vec![
                r.chunks_freed.to_string(),
                r.packs_rewritten.to_string(),
                r.packs_deleted.to_string(),
                format!("{:.0}", r.bytes_freed as f64 / (1 << 20) as f64),
            ]
        };
        let mut rows = Vec::new();
        for (what, (secs, r, hwm), rss) in [
            ("one run: grace 0, compact_below 1.0", &one.runs[0], one.rss_kib),
            ("  forget phase alone (compact_below 0)", &forget.runs[0], forget.rss_kib),
            ("  compaction alone (after the forget run)", &compact.runs[0], compact.rss_kib),
            ("rerun with nothing to do", &idle.runs[0], idle.rss_kib),
        ] {
            let mut row = vec![what.to_string(), f2(*secs), f1(secs / scan_s)];
            row.extend(report_cells(r));
            row.push(mib(rss));
            row.push(mib(*hwm));
            row.push(match (hwm, rss) {
                (Some(h), Some(b)) => f2(*h as f64 / b as f64),
                _ => "n/a".into(),
            });
            rows.push(row);
        }
        print_table(
            &format!(
                "GC (issue 6): {} chunks indexed ({objects} objects of {} KiB, chunking 64/256/1024), all but every {}th object deleted; \
                 each collection in a fresh process; baseline: one scan of the chunk index = {scan_s:.2} s",
                one.records, a.object_kib, a.keep_every,
            ),
            &["run", "seconds", "x index scan", "chunks freed", "packs rewritten", "packs deleted", "MiB freed", "RSS before MiB", "peak RSS during MiB", "peak / before"],
            &rows,
        );
        println!(
            "\nAfter GC: {} chunk records, {} empty values left in the index by forgotten chunks; a scan takes {:.2} s ({:.2}x the scan before GC).",
            idle.records_after,
            idle.empty_after,
            idle.scan_after_s,
            idle.scan_after_s / scan_s
        );

        // Upload latency beside a heavy collection, on the untouched third copy.
        let e = open_engine(tiny_config(&dir_lat))?;
        let (rows, waits) =
            latency_scenario(rt, &e, &a, &format!("engine: {made} tiny chunks (forget-heavy), chunking 64/256/1024"))?;
        lat_rows.extend(rows);
        wait_rows.extend(waits);
        e.close()?;
        drop(e);
    }
    if a.bytes_mib > 0 {
        let dir = base.path().join("bytes");
        let e = open_engine(EngineConfig::new(&dir))?;
        let t = Instant::now();
        let (objects, made) = build_garbage(rt, &e, acct, 8 << 20, 0, a.bytes_mib << 20, a.bytes_keep_every)?;
        eprintln!("built {made} chunks in {objects} objects of 8 MiB in {:.1} s", t.elapsed().as_secs_f64());
        let store = format!("engine: {} MiB in 8 MiB files (compaction-heavy), default chunking", a.bytes_mib);
        let (rows, waits) = latency_scenario(rt, &e, &a, &store)?;
        lat_rows.extend(rows);
        wait_rows.extend(waits);
        e.close()?;
    }
    if let Some(cairn) = &a.cairn {
        lat_rows.extend(rt.block_on(http_gc_latency(cairn, &a))?);
    }
    print_table(
        &format!("Upload latency beside GC (issue 6): {} KiB uploads one at a time (engine: ingest + put_object in-process; HTTP: PUT /v1/files)", a.upload_kib),
        &["store", "GC", "uploads", "p50 ms", "p99 ms", "max ms", "> 10 ms", "> 50 ms", "p99 / p99 without GC", "GC run s"],
        &lat_rows,
    );
    print_table(
        "Waits for the locks uploads share (cairn_lock_wait_seconds), by any thread, during the uploads without GC and while the collection ran",
        &["store", "GC", "lock", "waits", "> 1 ms", "> 2 ms", "> 5 ms", "> 10 ms", "longest at most ms"],
        &wait_rows,
    );
    Ok(())
}

type Rows = Vec<Vec<String>>;

/// Cumulative bucket counts of each lock-wait histogram: (lock, [(upper bound s, count)]).
type WaitSnapshot = Vec<(&'static str, Vec<(f64, u64)>)>;

fn wait_snapshot(e: &Engine) -> WaitSnapshot {
    use prometheus::core::Collector;
    let w = &e.metrics().lock_waits;
    let locks = [
        ("chunk_table", &w.chunk_table),
        ("chunk_table_gc", &w.chunk_table_gc),
        ("chunk_doomed", &w.chunk_doomed),
        ("pack_lane", &w.pack_lane),
        ("pack_sync", &w.pack_sync),
    ];
    locks
        .into_iter()
        .map(|(name, h)| {
            let family = h.collect();
            let hist = family[0].get_metric()[0].get_histogram();
            let mut buckets: Vec<(f64, u64)> =
                hist.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect();
            buckets.push((f64::INFINITY, hist.get_sample_count()));
            (name, buckets)
        })
        .collect()
}

/// Table rows of the waits between two snapshots.
fn wait_rows(store: &str, gc: &str, before: &WaitSnapshot, after: &WaitSnapshot) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for ((lock, b), (_, a)) in before.iter().zip(after) {
        let within: Vec<(f64, u64)> = b.iter().zip(a).map(|((bound, nb), (_, na))| (*bound, na - nb)).collect();
        let total = within.last().map_or(0, |w| w.1);
        let over = |ms: f64| total - within.iter().find(|(bound, _)| *bound >= ms / 1e3).map_or(total, |w| w.1);
        let longest = within.iter().find(|(_, n)| *n == total).map_or(f64::INFINITY, |w| w.0 * 1e3);
        let bound = match total {
            0 => "-".into(),
            _ if longest.is_finite() => format!("{longest}"),
            _ => "> 500".into(),
        };
        let cells = [total, over(1.0), over(2.0), over(5.0), over(10.0)].map(|n| n.to_string());
        rows.push([vec![store.to_string(), gc.to_string(), (*lock).to_string()], cells.to_vec(), vec![bound]].concat());
    }
    rows
}

/// Uploads one at a time without GC, then while one heavy collection runs beside them. Returns
/// the latency rows and the lock-wait rows of the run with GC.
fn latency_scenario(rt: &tokio::runtime::Runtime, e: &Engine, a: &GcArgs, store: &str) -> Result<(Rows, Rows)> {
    let acct = AccountId([9; 16]);
    let size = a.upload_kib << 10;
    let mut n = 0u64;
    let mut upload = |e: &Engine| -> Result<Duration> {
        n += 1;
        let data = Bytes::from(noise(size, 5_000_000 + n));
        let t = Instant::now();
        let ing = rt.block_on(e.ingest_bytes(data))?;
        e.put_object(&acct, Namespace::Drive, format!("up/{n:07}").as_bytes(), ing, u64::MAX, Precondition::None)??;
        Ok(t.elapsed())
    };
    let mut quiet = Lat::default();
    let waits_quiet = wait_snapshot(e);
    for _ in 0..a.uploads {
        quiet.add(upload(e)?);
    }
    let mut waits = wait_rows(store, "no", &waits_quiet, &wait_snapshot(e));

    let waits_before = wait_snapshot(e);
    let done = Arc::new(AtomicBool::new(false));
    let copy_rate = cairn::engine::CopyRate::mib_per_sec(a.copy_mib_per_sec);
    let collector = {
        let (e, done) = (e.clone(), done.clone());
        std::thread::Builder::new().name("gc".into()).spawn(move || -> Result<f64> {
            let t = Instant::now();
            let r = e.gc(GcOptions { grace_secs: 0, compact_below: 1.0, copy_rate, rekey: false });
            done.store(true, Ordering::Release);
            r?;
            Ok(t.elapsed().as_secs_f64())
        })?
    };
    let mut busy = Lat::default();
    while !done.load(Ordering::Acquire) && busy.0.len() < 100 * a.uploads {
        busy.add(upload(e)?);
    }
    let gc_s = collector.join().expect("the collector panicked")?;
    waits.extend(wait_rows(store, "running", &waits_before, &wait_snapshot(e)));
    fsck_clean(e)?;
    Ok((latency_rows(store, &quiet, &busy, gc_s), waits))
}

/// The two latency rows of a scenario: uploads without GC, and while it ran.
fn latency_rows(store: &str, quiet: &Lat, busy: &Lat, gc_s: f64) -> Rows {
    let row = |gc: &str, l: &Lat, ratio: String, gc_s: String| {
        vec![
            store.to_string(),
            gc.into(),
            l.0.len().to_string(),
            f2(l.q(0.5)),
            f2(l.q(0.99)),
            f1(l.max()),
            l.over(10.0).to_string(),
            l.over(50.0).to_string(),
            ratio,
            gc_s,
        ]
    };
    vec![row("no", quiet, "1.00".into(), "-".into()), row("running", busy, f2(busy.q(0.99) / quiet.q(0.99)), f1(gc_s))]
}

/// The latency scenario over HTTP: garbage uploaded and deleted through the API, then 64 KiB
/// PUTs without GC and while `POST /admin/gc` (grace 0, compact_below 1.0) runs.
async fn http_gc_latency(cairn: &Path, a: &GcArgs) -> Result<Vec<Vec<String>>> {
    let mut server = Server::start(cairn, SERVER_CONFIG)?;
    let token = server.sign_up("gc@bench.example").await?;
    let s = &server;
    let file = 8u64 << 20;
    let files = (a.http_mib << 20).div_ceil(file) as usize;
    let t = Instant::now();
    for i in 0..files {
        let body = reqwest::Body::wrap_stream(NoiseStream::new(20_000 + i as u64, file, 256 << 10));
        let r = s
            .client
            .put(s.url(&format!("/v1/files/g/{i:05}")))
            .bearer_auth(&token)
            .header("content-length", file)
            .body(body)
            .send()
            .await?;
        ensure!(r.status() == 201, "garbage upload {i}: {}", r.status());
    }
    for i in (0..files).filter(|i| i % a.bytes_keep_every != 0) {
        let r = s.client.delete(s.url(&format!("/v1/files/g/{i:05}"))).bearer_auth(&token).send().await?;
        ensure!(r.status() == 204, "delete {i}: {}", r.status());
    }
    eprintln!(
        "uploaded {files} files of 8 MiB over HTTP and deleted all but every {}th in {:.1} s",
        a.bytes_keep_every,
        t.elapsed().as_secs_f64()
    );
    let size = a.upload_kib << 10;
    let mut n = 0u64;
    let mut put = || {
        n += 1;
        let (url, body, token) = (s.url(&format!("/v1/files/up/{n:07}")), noise(size, 6_000_000 + n), &token);
        async move {
            let t = Instant::now();
            let r = s.client.put(url).bearer_auth(token).body(body).send().await?;
            ensure!(r.status() == 201, "upload: {}", r.status());
            Ok::<_, anyhow::Error>(t.elapsed())
        }
    };
    let mut quiet = Lat::default();
    for _ in 0..a.uploads {
        quiet.add(put().await?);
    }
    let (client, url, copy_mib_per_sec) = (s.client.clone(), s.url("/admin/gc"), a.copy_mib_per_sec);
    let gc = tokio::spawn(async move {
        let t = Instant::now();
        let r = client
            .post(url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "grace_seconds": 0, "compact_below": 1.0, "copy_mib_per_sec": copy_mib_per_sec }))
            .send()
            .await?;
        ensure!(r.status() == 200, "POST /admin/gc: {}", r.status());
        let report: Value = r.json().await?;
        Ok::<_, anyhow::Error>((t.elapsed().as_secs_f64(), report))
    });
    let mut busy = Lat::default();
    while !gc.is_finished() && busy.0.len() < 100 * a.uploads {
        busy.add(put().await?);
    }
    let (gc_s, report) = gc.await??;
    eprintln!("POST /admin/gc: {report}");
    let r = s.client.post(s.url("/admin/fsck")).bearer_auth(ADMIN_TOKEN).send().await?;
    let fsck: Value = r.json().await?;
    ensure!(fsck["ok"] == true, "fsck after GC: {fsck}");
    server.stop()?;
    let store = format!("HTTP: {} MiB in 8 MiB files, default chunking", a.http_mib);
    Ok(latency_rows(&store, &quiet, &busy, gc_s))
}

// ---------------------------------------------------------------------------------------------
// Issue 14: WebDAV

async fn dav_bench(a: DavArgs) -> Result<()> {
    let s = Server::start(&a.cairn, "")?;
    let token = s.sign_up("dav-bench@example.com").await?;
    let r =
        s.client.post(s.url("/v1/app-passwords")).bearer_auth(&token).json(&json!({"name": "bench"})).send().await?;
    ensure!(r.status() == 201, "POST /v1/app-passwords: {}", r.status());
    let password = r.json::<Value>().await?["password"].as_str().context("no password")?.to_string();
    let dav = |method: &str, path: &str| {
        s.client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("a method"),
                s.url(&format!("/dav/files/{path}")),
            )
            .basic_auth("dav-bench@example.com", Some(&password))
    };
    let put = |path: String, body: Vec<u8>| {
        s.client.put(s.url(&format!("/v1/files/{path}"))).bearer_auth(&token).body(body).send()
    };
    let made = Instant::now();
    let written: Vec<_> = futures::stream::iter(0..a.files)
        .map(|i| put(format!("many/{:02}/f{i:06}", i % 50), i.to_le_bytes().to_vec()))
        .buffer_unordered(4) // within the per-account upload limit
        .collect()
        .await;
    for r in written {
        ensure_ok(r?.status())?;
    }
    put("one/f".into(), b"x".to_vec()).await?;
    eprintln!("{} files written in {:.1} s", a.files, made.elapsed().as_secs_f64());
    let (s, dav, rounds) = (&s, &dav, a.rounds);
    let moves = |from: &'static str, to: &'static str| async move {
        let mut lat = Lat(Vec::new());
        for round in 0..rounds {
            let (f, t) = if round % 2 == 0 { (from, to) } else { (to, from) };
            let started = Instant::now();
            let r = dav("MOVE", f).header("Destination", s.url(&format!("/dav/files/{t}"))).send().await?;
            ensure!(r.status() == 201, "MOVE {f}: {}", r.status());
            lat.add(started.elapsed());
        }
        Ok::<Lat, anyhow::Error>(lat)
    };
    let (one, many) = (moves("one", "one2").await?, moves("many", "many2").await?);
    let big = noise((a.big_mib << 20) as usize, 9);
    put("big.bin".into(), big).await?;
    let (mut v1, mut dv) = (Lat(Vec::new()), Lat(Vec::new()));
    for _ in 0..a.rounds {
        let started = Instant::now();
        let n = s.client.get(s.url("/v1/files/big.bin")).bearer_auth(&token).send().await?.bytes().await?.len();
        v1.add(started.elapsed());
        let started = Instant::now();
        let m = dav("GET", "big.bin").send().await?.bytes().await?.len();
        dv.add(started.elapsed());
        ensure!(n == m && n as u64 == a.big_mib << 20, "downloads of {n} and {m} bytes");
    }
    let mbs = |l: &Lat| (a.big_mib << 20) as f64 / MB / (l.q(0.5) / 1000.0);
    let rows = vec![
        vec![
            format!("MOVE a folder of {} files", a.files),
            "ms".into(),
            f1(many.q(0.5)),
            f1(one.q(0.5)),
            f2(many.q(0.5) / one.q(0.5)),
        ],
        vec![
            format!("GET {} MiB, DAV vs /v1", a.big_mib),
            "MB/s".into(),
            f1(mbs(&dv)),
            f1(mbs(&v1)),
            f2(mbs(&dv) / mbs(&v1)),
        ],
    ];
    print_table(
        "WebDAV (issue 14): medians of the same run; baseline a 1-file folder's MOVE, and /v1/files",
        &["workload", "unit", "measured", "baseline", "ratio"],
        &rows,
    );
    Ok(())
}

fn ensure_ok(status: reqwest::StatusCode) -> Result<()> {
    ensure!(status.is_success(), "a PUT answered {status}");
    Ok(())
}
