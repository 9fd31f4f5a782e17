//! Starts the real `cairn serve` on a loopback port with a temporary data directory, and talks
//! HTTP to it. Shared by every integration test file (`mod common;`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct Server {
    pub child: Child,
    pub base: String,
    /// `https://127.0.0.1:PORT` when `[tls]` is configured.
    pub tls_base: Option<String>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
}

impl Server {
    /// A fresh server with its own temporary data directory.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data directory (restarts).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        Self::start_in_env(dir, extra, &[])
    }

    /// `start_in`, with these environment variables too.
    pub fn start_in_env(dir: &Path, extra: &[&str], env: &[(String, String)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(["serve", "--data-dir"]).arg(dir).args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN_TOKEN]);
        cmd.args(extra).env("CAIRN_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit());
        if let Some(moto) = s3::shared() {
            cmd.envs(moto.server_env(&s3::prefix_for(dir)));
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("start cairn serve");
        // One line per listener, the TLS one (if any) first and the plain one last.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut tls_base = None;
        let base = loop {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let addr = line
                .trim()
                .strip_prefix("cairn listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .to_string();
            if addr.starts_with("https://") {
                tls_base = Some(addr);
            } else {
                break addr;
            }
        };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        Server { child, base, tls_base, dir: dir.to_path_buf(), _tmp: None, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "server exited with {status}");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of one Prometheus sample (`name` with its labels, as `/metrics` prints it).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.client.get(self.url("/metrics")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        let text = text.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Move a `test_clock` server's time forward.
    pub async fn advance_clock(&self, secs: u64) {
        let r = self.client.post(self.url("/admin/clock")).bearer_auth(ADMIN_TOKEN);
        let r = r.json(&serde_json::json!({ "advance_secs": secs })).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// Wait until a whole housekeeping pass has run since this call (`sweep_secs` apart): one
    /// that began earlier may still be finishing, so two must end.
    pub async fn housekeeping_pass(&self) {
        let name = "cairn_housekeeping_runs_total";
        let seen = self.metric(name).await;
        self.wait_for_metric(name, |n| n >= seen + 2.0).await;
    }

    /// Poll `/metrics` until `name` satisfies `ok`: waiting on an event the server reports,
    /// not on a guess of how long it takes. Gives up (panics) after 30 s.
    pub async fn wait_for_metric(&self, name: &str, ok: impl Fn(f64) -> bool) {
        for _ in 0..3000 {
            if ok(self.metric(name).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never reached the expected value");
    }

    /// Put `account_id` on `plan` through the admin API.
    pub async fn set_plan(&self, account_id: &str, plan: &str) {
        let r = self.client.put(self.url(&format!("/admin/accounts/{account_id}/plan"))).bearer_auth(ADMIN_TOKEN);
        let r = r.json(&serde_json::json!({ "plan": plan })).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// `POST /admin/fsck` finds nothing wrong.
    pub async fn fsck_ok(&self) {
        let r = self.client.post(self.url("/admin/fsck")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        let v = body_of(r, 200).await;
        assert_eq!(v["ok"], true, "{v}");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Deterministic incompressible bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Assert the status (showing the body if it differs) and return the body as JSON (`Null` for
/// a body that is not JSON, such as a 204's).
pub async fn body_of(r: reqwest::Response, status: u16) -> serde_json::Value {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// Assert the API's error shape and return the code.
pub async fn error_code(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert!(ct.starts_with("application/json"), "error content-type {ct:?}");
    let v: serde_json::Value = resp.json().await.unwrap();
    let code = v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {v}")).to_string();
    assert!(v["error"]["message"].is_string(), "no error.message in {v}");
    code
}

/// Run the ignored child test `name` of this test binary with `env`, let it print `acks` lines
/// starting with `ACK ` (a write it acknowledged), wait `delay` more, then SIGKILL it. Returns
/// the complete lines it printed (a torn last line is dropped). Used by the crash tests.
pub fn run_and_kill(name: &str, env: &[(&str, String)], acks: usize, delay: Duration) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ACK ") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    // Under load a child can take a while to start; what matters is that it is mid-work.
    for _ in 0..acks {
        let _ = rx.recv_timeout(Duration::from_secs(60));
    }
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

pub mod faults;
pub mod identity;
pub mod s3;

/// A crash test's child: write object `i` of `round`, print `ACK round i` once it is durable,
/// then delete object `i - 2` (so there is always garbage for a collector to work on), forever;
/// the parent kills it at some moment. Every acknowledged object whose `ACK i+2` never came must
/// survive the kill.
pub async fn write_ack_delete_forever(
    engine: &cairn::engine::Engine,
    account: cairn::store::keys::AccountId,
    round: u64,
    content: impl Fn(u64, u64) -> Vec<u8>,
) {
    use cairn::engine::Precondition;
    use cairn::store::keys::Namespace;
    for i in 0.. {
        let ing = engine.ingest_bytes(bytes::Bytes::from(content(round, i))).await.unwrap();
        let (e, name) = (engine.clone(), format!("r{round}-{i}"));
        tokio::task::spawn_blocking(move || {
            e.put_object(&account, Namespace::Scratch, name.as_bytes(), ing, u64::MAX, Precondition::None)
                .unwrap()
                .unwrap();
        })
        .await
        .unwrap();
        println!("ACK {round} {i}");
        if i >= 2 {
            let (e, old) = (engine.clone(), format!("r{round}-{}", i - 2));
            tokio::task::spawn_blocking(move || {
                e.delete_object(&account, Namespace::Scratch, old.as_bytes(), Precondition::None).unwrap().unwrap();
            })
            .await
            .unwrap();
        }
    }
}

/// Every pack's table of entries, in pack order: what the dictionary tests inspect (a pack's
/// dictionary is its first entry, tag `Dictionary`).
pub fn pack_tables(e: &cairn::engine::Engine) -> Vec<Vec<cairn::pack::format::EntryInfo>> {
    let packs = e.packs().list().unwrap();
    packs.iter().map(|p| e.packs().table(*p).unwrap()).collect()
}
