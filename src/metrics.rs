//! Prometheus metrics. One registry per server (not the global default), so tests that run
//! several servers in one process do not collide.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

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
        let ingest_seconds = Histogram::with_opts(
            HistogramOpts::new("cairn_ingest_seconds", "Time to ingest one body")
                .buckets(prometheus::exponential_buckets(0.001, 4.0, 10).expect("valid buckets")),
        )
        .expect("valid metric");
        registry.register(Box::new(ingest_seconds.clone())).expect("unique metric");
        Metrics {
            ingest_bytes: counter(&registry, "cairn_ingest_bytes_total", "Raw bytes received by ingests"),
            chunks_new: counter(&registry, "cairn_chunks_new_total", "Chunks written to packs"),
            chunks_dedup: counter(&registry, "cairn_chunks_dedup_total", "Chunks found already stored"),
            stored_bytes: counter(&registry, "cairn_pack_bytes_written_total", "Bytes appended to packs"),
            read_bytes: counter(&registry, "cairn_read_bytes_total", "Raw bytes served by reads"),
            packs_sealed: counter(&registry, "cairn_packs_sealed_total", "Packs sealed"),
            requests,
            ingest_seconds,
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
