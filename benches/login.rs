//! What a sign-in costs: Argon2id (19 MiB, 2 iterations, 1 lane) on every `POST /v1/sessions`.
//!
//! Starts the real server (release build) on loopback, signs up one account, then drives it
//! with concurrent clients for a fixed number of requests:
//! - baseline: `GET /v1/account` with a token (session lookup, account read, JSON),
//! - logins: `POST /v1/sessions` with the right password,
//!
//! and prints throughput, latency under load, the latency of one login on an idle server, and
//! the ratio to the baseline, all from the same run on the same machine.
//!
//!     cargo bench --bench login [-- CONCURRENCY LOGINS]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn drive<F, Fut>(concurrency: usize, total: usize, f: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let status = f().await;
                assert!(status < 300, "status {status}");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    all.sort();
    Run { per_sec: total as f64 / wall.as_secs_f64(), p50: all[all.len() / 2], p99: all[all.len() * 99 / 100] }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let concurrency = args.first().copied().unwrap_or(8);
    let logins = args.get(1).copied().unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("CAIRN_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("cairn listening on ").unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let email = "bench@example.com";
        let r = client.post(format!("{base}/v1/codes")).json(&json!({ "identifier": email, "purpose": "register" })).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let outbox = std::fs::read_to_string(dir.path().join("outbox.jsonl")).unwrap();
        let code = serde_json::from_str::<Value>(outbox.lines().last().unwrap()).unwrap()["code"].as_str().unwrap().to_string();
        let password = "bench password 123";
        let r = client
            .post(format!("{base}/v1/accounts"))
            .json(&json!({ "identifier": email, "password": password, "code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body = json!({ "identifier": email, "password": password, "device": { "name": "bench", "model": "m", "os": "o" } });
        let login = {
            let (client, base, body) = (client.clone(), base.clone(), body.clone());
            move || {
                let (client, url, body) = (client.clone(), format!("{base}/v1/sessions"), body.clone());
                async move { client.post(url).json(&body).send().await.unwrap().status().as_u16() }
            }
        };
        let token = client.post(format!("{base}/v1/sessions")).json(&body).send().await.unwrap().json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let baseline = {
            let (client, base) = (client.clone(), base.clone());
            move || {
                let (client, url, token) = (client.clone(), format!("{base}/v1/account"), token.clone());
                async move { client.get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
            }
        };
        // Warm up both paths (connection pool, the dummy hash, caches).
        drive(2, 20, baseline.clone()).await;
        drive(2, 4, login.clone()).await;
        let idle = drive(1, 10, login.clone()).await;
        let b = drive(concurrency, logins * 20, baseline).await;
        let l = drive(concurrency, logins, login).await;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("cores: {cores}, concurrency: {concurrency}");
        println!("one login, idle server: p50 {:.1} ms", idle.p50.as_secs_f64() * 1e3);
        println!(
            "baseline GET /v1/account: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            b.per_sec,
            b.p50.as_secs_f64() * 1e3,
            b.p99.as_secs_f64() * 1e3
        );
        println!(
            "login POST /v1/sessions: {:.1}/s, p50 {:.1} ms, p99 {:.1} ms under load",
            l.per_sec,
            l.p50.as_secs_f64() * 1e3,
            l.p99.as_secs_f64() * 1e3
        );
        println!("a login costs {:.0} baseline requests", b.per_sec / l.per_sec);
    });
    let _ = child.kill();
    let _ = child.wait();
}
