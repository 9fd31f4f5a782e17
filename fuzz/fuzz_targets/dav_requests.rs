//! WebDAV requests with arbitrary bodies and headers, through the real front (`dav-server`'s
//! XML parsing, our file system, locks and properties) on a real engine in a temporary
//! directory. Nothing may panic and no answer may be a 5xx: bad input is the client's error.
//!
//! Input: a method byte, a header byte (Depth, Overwrite, If, Timeout choices), then the body.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use cairn::config::Config;
use cairn::engine::Engine;
use cairn::http::{dav, App, AppState};
use cairn::identity::Identity;
use cairn::metrics::Metrics;
use cairn::store::identity_keys::DeviceId;
use cairn::store::keys::AccountId;
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 12] =
    ["PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "MKCOL", "COPY", "MOVE", "PUT", "DELETE", "GET", "OPTIONS", "HEAD"];
const PATHS: [&str; 4] = ["/dav/files/", "/dav/files/a", "/dav/files/d/", "/dav/files/d/x%20y"];

fn app() -> &'static (tokio::runtime::Runtime, AppState) {
    static APP: OnceLock<(tokio::runtime::Runtime, AppState)> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::open(config.engine(), metrics.clone()).unwrap();
        let identity = Identity::open(engine.clone(), &config.identity, &config.notifier).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        (rt, Arc::new(App::new(config.http(), engine, metrics, identity)))
    })
}

fuzz_target!(|data: &[u8]| {
    let [m, h, body @ ..] = data else { return };
    let (rt, app) = app();
    let method = METHODS[*m as usize % METHODS.len()];
    let mut req = axum::http::Request::builder().method(method).uri(PATHS[(*m as usize / 16) % PATHS.len()]);
    req = req.header("Depth", ["0", "1", "infinity", "2"][*h as usize % 4]);
    if h & 4 != 0 {
        req = req.header("Destination", "http://localhost/dav/files/d/copy");
    }
    if h & 8 != 0 {
        req = req.header("Overwrite", "F");
    }
    if h & 16 != 0 {
        req = req.header("Timeout", "Second-3600, Infinite");
    }
    if h & 32 != 0 {
        let text = String::from_utf8_lossy(body);
        if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
            req = req.header("If", v);
        }
    }
    let req = req.body(Body::from(body.to_vec())).unwrap();
    let status = rt.block_on(dav::serve_as(app, AccountId([1; 16]), DeviceId([2; 16]), 1 << 30, req)).status();
    assert!(status.as_u16() < 500, "{method} answered {status}");
});
