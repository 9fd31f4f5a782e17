//! Prometheus metrics. One registry per server (not the global default), so tests that run
//! several servers in one process do not collide.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
    pub gc_runs: IntCounter,
    pub gc_chunks_freed: IntCounter,
    pub gc_bytes_reclaimed: IntCounter,
    pub gc_packs_rewritten: IntCounter,
    pub gc_seconds: Histogram,
    pub fsck_problems: IntGauge,
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
        Metrics {
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
            gc_runs: counter(&registry, "cairn_gc_runs_total", "Garbage collections run"),
            gc_chunks_freed: counter(&registry, "cairn_gc_chunks_freed_total", "Chunks removed from the index by GC"),
            gc_bytes_reclaimed: counter(
                &registry,
                "cairn_gc_bytes_reclaimed_total",
                "Pack bytes given back to the disk",
            ),
            gc_packs_rewritten: counter(&registry, "cairn_gc_packs_rewritten_total", "Packs compacted"),
            gc_seconds: histogram(&registry, "cairn_gc_seconds", "Duration of a garbage collection"),
            fsck_problems: {
                let g = IntGauge::new("cairn_fsck_problems", "Problems found by the last fsck").expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            registry,
        }
    }

    pub fn record_gc(&self, r: &crate::engine::GcReport, took: std::time::Duration) {
        self.gc_runs.inc();
        self.gc_chunks_freed.inc_by(r.chunks_freed);
        self.gc_bytes_reclaimed.inc_by(r.bytes_freed);
        self.gc_packs_rewritten.inc_by(r.packs_rewritten);
        self.gc_seconds.observe(took.as_secs_f64());
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
