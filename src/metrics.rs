//! Prometheus metrics. One registry per server (not the global default), so tests that run
//! several servers in one process do not collide.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub struct Metrics {
    pub registry: Registry,
    pub ingest_bytes: IntCounter,
    pub chunks_new: IntCounter,
    pub chunks_dedup: IntCounter,
    pub stored_bytes: IntCounter,
    pub read_bytes: IntCounter,
    pub packs_sealed: IntCounter,
    pub requests: IntCounterVec,
    pub ingest_seconds: Histogram,
    pub upload_seconds: Histogram,
    pub download_seconds: Histogram,
    pub quota_refusals: IntCounter,
    /// Resumable uploads removed by housekeeping because nobody resumed them in time.
    pub uploads_expired: IntCounter,
    pub gc_runs: IntCounter,
    pub gc_chunks_freed: IntCounter,
    pub gc_bytes_reclaimed: IntCounter,
    pub gc_packs_rewritten: IntCounter,
    pub gc_seconds: Histogram,
    pub fsck_problems: IntGauge,
    /// Uploads and downloads holding a transfer permit now, by kind: what `[limits]` bounds,
    /// and what tests wait on to know a transfer has begun or ended.
    pub transfers: IntGaugeVec,
    /// Expired things housekeeping removed, by kind (codes, sessions, failures, staged chunks,
    /// tombstones): what tests wait on after moving the clock past a lifetime.
    pub swept: IntCounterVec,
    /// Passes of the housekeeping sweep: how a test knows one has run since it moved the clock.
    pub housekeeping_runs: IntCounter,
    pub lock_waits: LockWaits,
}

/// Time spent waiting for the locks that uploads share with one another and with GC. GC must
/// never stall an upload on one of these for more than a few milliseconds (issue 6);
/// `loadgen gc` reads these during a collection to show that it does not.
#[derive(Clone)]
pub struct LockWaits {
    /// The chunk table's mutex (pins, claims), as uploads wait for it.
    pub chunk_table: Histogram,
    /// The same mutex as GC waits for it (dooming and sparing chunks); not a stall of uploads.
    pub chunk_table_gc: Histogram,
    /// Waiting out a GC that is forgetting the very chunk an upload wants to pin.
    pub chunk_doomed: Histogram,
    /// A lane's open-pack mutex (one append at a time).
    pub pack_lane: Histogram,
    /// A pack's sync lock (one `fdatasync` of a pack at a time).
    pub pack_sync: Histogram,
}

const LOCK_WAIT_BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

impl LockWaits {
    fn registered(r: &Registry) -> Self {
        let opts = HistogramOpts::new("cairn_lock_wait_seconds", "Waits for locks that uploads share, by lock")
            .buckets(LOCK_WAIT_BUCKETS.to_vec());
        let v = HistogramVec::new(opts, &["lock"]).expect("valid metric");
        r.register(Box::new(v.clone())).expect("unique metric");
        let h = |name| v.with_label_values(&[name]);
        LockWaits {
            chunk_table: h("chunk_table"),
            chunk_table_gc: h("chunk_table_gc"),
            chunk_doomed: h("chunk_doomed"),
            pack_lane: h("pack_lane"),
            pack_sync: h("pack_sync"),
        }
    }

    /// Histograms that go nowhere, for parts used without a server (unit tests, tools).
    pub fn unregistered() -> Self {
        let h = || {
            Histogram::with_opts(HistogramOpts::new("unregistered", "-").buckets(LOCK_WAIT_BUCKETS.to_vec()))
                .expect("valid metric")
        };
        LockWaits { chunk_table: h(), chunk_table_gc: h(), chunk_doomed: h(), pack_lane: h(), pack_sync: h() }
    }
}

/// Take a lock through `lock`, recording how long that took in `waits`.
pub fn timed<G>(waits: &Histogram, lock: impl FnOnce() -> G) -> G {
    let started = std::time::Instant::now();
    let guard = lock();
    waits.observe(started.elapsed().as_secs_f64());
    guard
}

fn histogram(r: &Registry, name: &str, help: &str) -> Histogram {
    let buckets = prometheus::exponential_buckets(0.001, 4.0, 10).expect("valid buckets");
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests =
            IntCounterVec::new(Opts::new("cairn_http_requests_total", "HTTP requests by status class"), &["class"])
                .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("unique metric");
        let transfers =
            IntGaugeVec::new(Opts::new("cairn_transfers_in_progress", "Transfers holding a permit"), &["kind"])
                .expect("valid metric");
        registry.register(Box::new(transfers.clone())).expect("unique metric");
        let swept = IntCounterVec::new(Opts::new("cairn_swept_total", "Expired records removed, by kind"), &["what"])
            .expect("valid metric");
        registry.register(Box::new(swept.clone())).expect("unique metric");
        Metrics {
            transfers,
            swept,
            ingest_bytes: counter(&registry, "cairn_ingest_bytes_total", "Raw bytes received by ingests"),
            chunks_new: counter(&registry, "cairn_chunks_new_total", "Chunks written to packs"),
            chunks_dedup: counter(&registry, "cairn_chunks_dedup_total", "Chunks found already stored"),
            stored_bytes: counter(&registry, "cairn_pack_bytes_written_total", "Bytes appended to packs"),
            read_bytes: counter(&registry, "cairn_read_bytes_total", "Raw bytes served by reads"),
            packs_sealed: counter(&registry, "cairn_packs_sealed_total", "Packs sealed"),
            requests,
            ingest_seconds: histogram(&registry, "cairn_ingest_seconds", "Time to ingest one body"),
            upload_seconds: histogram(&registry, "cairn_upload_seconds", "Drive uploads, request to commit"),
            download_seconds: histogram(&registry, "cairn_download_seconds", "Drive downloads, request to last byte"),
            quota_refusals: counter(&registry, "cairn_quota_refusals_total", "Writes refused with 507"),
            uploads_expired: counter(
                &registry,
                "cairn_uploads_expired_total",
                "Resumable uploads removed by housekeeping after their expiry",
            ),
            gc_runs: counter(&registry, "cairn_gc_runs_total", "Garbage collections run"),
            gc_chunks_freed: counter(&registry, "cairn_gc_chunks_freed_total", "Chunks removed from the index by GC"),
            gc_bytes_reclaimed: counter(
                &registry,
                "cairn_gc_bytes_reclaimed_total",
                "Pack bytes given back to the disk",
            ),
            gc_packs_rewritten: counter(&registry, "cairn_gc_packs_rewritten_total", "Packs compacted"),
            gc_seconds: histogram(&registry, "cairn_gc_seconds", "Duration of a garbage collection"),
            housekeeping_runs: counter(&registry, "cairn_housekeeping_runs_total", "Housekeeping sweeps run"),
            fsck_problems: {
                let g = IntGauge::new("cairn_fsck_problems", "Problems found by the last fsck").expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            lock_waits: LockWaits::registered(&registry),
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_utf8(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
