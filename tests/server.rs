//! The server process itself: health, metrics, the error shape, and shutdown.

mod common;
use common::*;

#[tokio::test]
async fn health_metrics_and_chunking() {
    let s = Server::start();
    let r = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = s.client.get(s.url("/metrics")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("cairn_http_requests_total"), "{m}");
    // Its counters describe every account (new versus deduplicated chunks): operators only.
    assert_eq!(error_code(s.client.get(s.url("/metrics")).send().await.unwrap(), 401).await, "unauthorized");
    let user = common::identity::signed_in(&s).await;
    let r = s.client.get(s.url("/metrics")).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");
    let c: serde_json::Value = s.client.get(s.url("/v1/chunking")).send().await.unwrap().json().await.unwrap();
    assert_eq!(c["algorithm"], "fastcdc-2020");
    assert_eq!((c["min"].as_u64(), c["avg"].as_u64(), c["max"].as_u64()), (Some(16384), Some(65536), Some(262144)));
}

#[tokio::test]
async fn errors_are_json_for_unknown_routes_wrong_methods_and_big_headers() {
    let s = Server::start();
    assert_eq!(error_code(s.client.get(s.url("/no/such/thing")).send().await.unwrap(), 404).await, "not_found");
    assert_eq!(error_code(s.client.post(s.url("/healthz")).send().await.unwrap(), 405).await, "method_not_allowed");
    let big = "x".repeat(40 * 1024);
    let r = s.client.get(s.url("/healthz")).header("x-big", big).send().await.unwrap();
    assert_eq!(error_code(r, 431).await, "headers_too_large");
    // The server is still up after all of that.
    assert_eq!(s.client.get(s.url("/healthz")).send().await.unwrap().status(), 200);
}

#[test]
fn sigterm_shuts_down_cleanly_and_the_data_dir_reopens() {
    let mut s = Server::start();
    s.stop();
    let mut again = Server::start_in(&s.dir.clone(), &[]);
    assert!(again.is_running());
    again.stop();
}
