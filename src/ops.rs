//! The operators' commands (`cairn gc|fsck|stats|plan|snapshot|restore-snapshot`), against a running server over its
//! admin API or offline against a stopped server's data directory. Both ways print the same
//! report: human lines by default, the API's JSON with `--json`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
use crate::engine::{fsck, Engine, GcOptions, GcReport, Stats};
use crate::http::admin::{GcBody, KeyRotated, PlanBody};
use crate::metrics::Metrics;
use crate::quota::PlanChange;

/// Where an operator command runs.
pub enum Target {
    Server {
        url: String,
        token: String,
    },
    /// A stopped server's configuration, its data directory included.
    DataDir(Box<Config>),
}

/// A spinner on a terminal while a long operation runs; nothing when stderr is not one.
fn spinner(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// No body, for `server_call`.
const NO_BODY: Option<&()> = None;

/// Call the admin API with the typed body its handler takes; its answer is the same typed
/// report the offline path builds.
fn server_call<T: serde::de::DeserializeOwned>(
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&impl serde::Serialize>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut req = client.request(method, format!("{}{path}", url.trim_end_matches('/'))).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            anyhow::bail!("server answered {status}: {}", v["error"]["message"].as_str().unwrap_or("no message"));
        }
        Ok(serde_json::from_str(&text)?)
    })
}

fn open_offline(config: &Config) -> anyhow::Result<Engine> {
    Ok(Engine::open(config.engine(), Arc::new(Metrics::new()))?)
}

fn print<T: serde::Serialize>(v: &T, as_json: bool, human: impl FnOnce(&T)) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v).expect("json"));
    } else {
        human(v);
    }
}

pub fn gc(target: Target, opts: GcOptions, as_json: bool) -> anyhow::Result<ExitCode> {
    let bar = spinner("collecting garbage");
    let v = match target {
        Target::Server { url, token } => {
            let body = GcBody {
                grace_seconds: Some(opts.grace_secs),
                compact_below: Some(opts.compact_below),
                copy_mib_per_sec: opts.copy_rate.map(|r| r.as_mib_per_sec()),
                rekey: Some(opts.rekey),
            };
            server_call(&url, &token, reqwest::Method::POST, "/admin/gc", Some(&body))?
        }
        Target::DataDir(config) => {
            let engine = open_offline(&config)?;
            let report = engine.gc(opts)?;
            engine.close()?;
            report
        }
    };
    bar.finish_and_clear();
    print(&v, as_json, |r: &GcReport| {
        println!(
            "freed {} chunks and {} bytes; rewrote {} packs ({} for their keys), deleted {}; retired {} keys",
            r.chunks_freed, r.bytes_freed, r.packs_rewritten, r.packs_rekeyed, r.packs_deleted, r.keys_retired
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub fn rotate_key(target: Target, as_json: bool) -> anyhow::Result<ExitCode> {
    let v = match target {
        Target::Server { url, token } => {
            server_call(&url, &token, reqwest::Method::POST, "/admin/keys/rotate", NO_BODY)?
        }
        Target::DataDir(config) => {
            let engine = open_offline(&config)?;
            let id = engine.rotate_key()?;
            engine.close()?;
            KeyRotated::new(id)
        }
    };
    print(&v, as_json, |v: &KeyRotated| {
        println!("new data key {}; run `cairn gc --rekey` to move old packs to it", v.key)
    });
    Ok(ExitCode::SUCCESS)
}

pub struct FsckFlags {
    pub rebuild_index: bool,
    pub repair: bool,
    pub json: bool,
}

pub fn fsck(target: Target, flags: FsckFlags) -> anyhow::Result<ExitCode> {
    let bar = spinner("checking packs, index and books");
    let v = match target {
        Target::Server { url, token } => {
            anyhow::ensure!(
                !flags.rebuild_index && !flags.repair,
                "--rebuild-index and --repair run offline only (--data-dir, server stopped)"
            );
            server_call(&url, &token, reqwest::Method::POST, "/admin/fsck", NO_BODY)?
        }
        Target::DataDir(config) => {
            let engine = open_offline(&config)?;
            if flags.rebuild_index {
                let n = fsck::rebuild_index(&engine)?;
                bar.println(format!("rebuilt the chunk index from the packs: {n} chunks"));
            }
            let report = if flags.repair { fsck::repair(&engine)? } else { fsck::check(&engine)? };
            engine.close()?;
            report
        }
    };
    bar.finish_and_clear();
    let ok = v.ok;
    print(&v, flags.json, |r: &fsck::Report| {
        for p in &r.problems {
            println!("problem: {p}");
        }
        println!("{}", if ok { "ok".to_string() } else { format!("{} problems", r.problems.len()) });
        if r.repaired > 0 {
            println!("repaired {} records", r.repaired);
        }
        if r.plaintext_bytes > 0 {
            println!("{} bytes of packs still plaintext (`cairn gc --rekey` seals them)", r.plaintext_bytes);
        }
    });
    // After a repair the books are right even if problems were found on the way.
    Ok(if ok || flags.repair { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn stats(target: Target, as_json: bool) -> anyhow::Result<ExitCode> {
    let v = match target {
        Target::Server { url, token } => server_call(&url, &token, reqwest::Method::GET, "/admin/stats", NO_BODY)?,
        Target::DataDir(config) => {
            let engine = open_offline(&config)?;
            let s = engine.stats()?;
            engine.close()?;
            s
        }
    };
    print(&v, as_json, |s: &Stats| {
        println!(
            "{} accounts, {} chunks in {} packs; {} bytes charged to users, {} bytes on disk",
            s.accounts, s.chunks, s.packs, s.logical_bytes, s.stored_bytes
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub fn plan(target: Target, account: &str, plan: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let v = match target {
        Target::Server { url, token } => server_call(
            &url,
            &token,
            reqwest::Method::PUT,
            &format!("/admin/accounts/{account}/plan"),
            Some(&PlanBody { plan: plan.to_string() }),
        )?,
        Target::DataDir(config) => {
            let limit = config
                .plans
                .get(plan)
                .map(|s| s.0)
                .ok_or_else(|| anyhow::anyhow!("no plan is called {plan:?} in the configuration"))?;
            let id: crate::store::keys::AccountId =
                account.parse().map_err(|_| anyhow::anyhow!("{account:?} is not an account id"))?;
            let engine = open_offline(&config)?;
            let identity = crate::identity::Identity::open(engine.clone(), &config.identity, &config.notifier)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(identity.set_plan(id, plan.to_string()))?;
            engine.close()?;
            PlanChange { plan: plan.to_string(), limit }
        }
    };
    print(&v, as_json, |p: &PlanChange| println!("account {account} is on plan {} ({} bytes)", p.plan, p.limit));
    Ok(ExitCode::SUCCESS)
}

pub fn snapshot(target: Target, to: &std::path::Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let bar = spinner("taking a metadata snapshot");
    let v: crate::snapshot::Manifest = match target {
        Target::Server { url, token } => {
            let body = crate::http::SnapshotBody { to: to.to_path_buf() };
            server_call(&url, &token, reqwest::Method::POST, "/admin/snapshot", Some(&body))?
        }
        Target::DataDir(config) => {
            let to = std::path::absolute(to)?;
            let engine = open_offline(&config)?;
            let m = crate::snapshot::take(&engine, &to)?;
            engine.close()?;
            m
        }
    };
    bar.finish_and_clear();
    print(&v, as_json, |m: &crate::snapshot::Manifest| {
        println!(
            "snapshot in {}: database, {}; it refers to {} packs ({} chunks). The master key is not in it: keep it apart.",
            m.dir.display(),
            if m.key_files.is_empty() { "no key files".to_string() } else { m.key_files.join(", ") },
            m.packs.len(),
            m.chunks
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Where `restore-snapshot` finds what it needs.
pub struct RestoreFrom<'a> {
    pub snapshot: &'a std::path::Path,
    pub packs: &'a std::path::Path,
    pub master_key_file: Option<&'a std::path::Path>,
}

pub fn restore_snapshot(config: &Config, from: RestoreFrom<'_>, as_json: bool) -> anyhow::Result<ExitCode> {
    let bar = spinner("restoring the snapshot and checking it");
    let r = crate::snapshot::restore(config, from.snapshot, from.packs, from.master_key_file)?;
    bar.finish_and_clear();
    let ok = r.fsck.ok;
    print(&r, as_json, |r: &crate::snapshot::Restored| {
        for p in &r.fsck.problems {
            println!("problem: {p}");
        }
        println!(
            "restored {} with {} packs; fsck: {}",
            r.data_dir.display(),
            r.packs_copied,
            if ok { "ok".to_string() } else { format!("{} problems", r.fsck.problems.len()) }
        );
    });
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
