//! Starts the real `cairn serve` (the workspace's server binary) on a loopback port with a
//! temporary data directory, and runs the real `cairn-drive` binary against it, each device
//! with its own temporary config directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const PASSWORD: &str = "correct horse battery";

/// The `cairn` server binary: `CAIRN_BIN`, else the one cargo built beside this test (a
/// `cargo test` at the workspace root builds it), else built now.
fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CAIRN_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap();
        let beside = exe.parent().unwrap().parent().unwrap().join("cairn");
        if !beside.exists() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(root).args(["build", "--bin", "cairn"]);
            if std::env::var("CAIRN_ROCKSDB").as_deref() == Ok("bundled") {
                cmd.args(["--features", "bundled-rocksdb"]);
            }
            assert!(cmd.status().unwrap().success(), "building the cairn server");
        }
        assert!(beside.exists(), "no server binary at {}", beside.display());
        beside
    })
}

pub struct Server {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub http: reqwest::blocking::Client,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut cmd = Command::new(server_bin());
        cmd.args(["serve", "--data-dir"]).arg(&dir).args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN_TOKEN]);
        cmd.args(extra).env("CAIRN_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start cairn serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("cairn listening on ")
            .unwrap_or_else(|| panic!("first line {line:?}"))
            .to_string();
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        Server { child, base, dir, _tmp: tmp, http }
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    /// A new account (its code read from the outbox); returns (identifier, account_id).
    pub fn register(&self) -> (String, String) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!("drive{}.{}@example.com", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let r = self
            .http
            .post(self.url("/v1/codes"))
            .json(&json!({"identifier": id, "purpose": "register"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
        let outbox = std::fs::read_to_string(self.dir.join("outbox.jsonl")).unwrap();
        let code = outbox
            .lines()
            .rev()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|m| m["to"] == id.as_str())
            .unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string();
        let r = self
            .http
            .post(self.url("/v1/accounts"))
            .json(&json!({"identifier": id, "password": PASSWORD, "code": code}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        let account = r.json::<Value>().unwrap()["account_id"].as_str().unwrap().to_string();
        (id, account)
    }

    pub fn set_plan(&self, account: &str, plan: &str) {
        let r = self
            .http
            .put(self.url(&format!("/admin/accounts/{account}/plan")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"plan": plan}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    }

    /// One Prometheus sample from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.http.get(self.url("/metrics")).bearer_auth(ADMIN_TOKEN).send().unwrap().text().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One device: a config directory and a signed-in `cairn-drive`.
pub struct Device {
    pub config: tempfile::TempDir,
    pub name: String,
    pub token: String,
}

impl Device {
    pub fn login(s: &Server, identifier: &str, name: &str) -> Device {
        let config = tempfile::tempdir().unwrap();
        let mut d = Device { config, name: name.to_string(), token: String::new() };
        let out = d.run_input(
            &["login", "--server", &s.base, "--identifier", identifier, "--device", name, "--password-stdin"],
            PASSWORD,
        );
        assert!(out.status.success(), "login: {}", String::from_utf8_lossy(&out.stderr));
        let creds: Value =
            serde_json::from_slice(&std::fs::read(d.config.path().join("credentials.json")).unwrap()).unwrap();
        d.token = creds["token"].as_str().unwrap().to_string();
        d
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn-drive"));
        cmd.arg("--config-dir").arg(self.config.path()).args(["--retries", "1"]).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn run_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{input}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs with `--json`, asserts success, returns the result document (the last stdout line).
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?} failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap()
    }

    /// `sync DIR` with `--json`: the summary.
    pub fn sync(&self, dir: &Path) -> Value {
        self.json(&["sync", dir.to_str().unwrap()])
    }

    /// Drive paths and their sizes.
    pub fn ls(&self) -> Vec<(String, u64)> {
        let v = self.json(&["ls"]);
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].as_str().unwrap().to_string(), f["size"].as_u64().unwrap()))
            .collect()
    }

    pub fn paths(&self) -> Vec<String> {
        self.ls().into_iter().map(|(p, _)| p).collect()
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

pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Every file under `root` (not the client's state directory) with its bytes.
pub fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if rel.starts_with(".cairn-drive") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}
