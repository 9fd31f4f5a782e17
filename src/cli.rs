//! The `cairn` command line: `serve`, and the operators' offline tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::{ByteSize, Config};
use crate::engine::{CopyRate, Engine, GcOptions};
use crate::http::{self, App};
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::ops;

#[derive(Parser)]
#[command(name = "cairn", version, about = "Storage backend of a consumer cloud")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Check packs, index, reference counts and usage.
    Fsck(FsckArgs),
    /// Collect garbage: forget unreferenced chunks, compact sparse packs.
    Gc(GcArgs),
    /// Accounts, chunks, packs, bytes charged and bytes stored.
    Stats(StatsArgs),
    /// Put an account on a plan.
    Plan(PlanArgs),
    /// Make a new data key current (encryption at rest); `gc --rekey` moves old packs to it.
    RotateKey(StatsArgs),
    /// Copy the database, the identity key and the data keys consistently into a new directory
    /// (on the server's host), with a manifest of the packs they refer to; uploads go on.
    Snapshot(SnapshotArgs),
    /// Make a new data directory from a snapshot and the pack files, then fsck it (offline).
    RestoreSnapshot(RestoreArgs),
}

#[derive(Args)]
struct SnapshotArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// A new directory for the snapshot; with --server, an absolute path on the server's host.
    #[arg(long)]
    to: PathBuf,
}

#[derive(Args)]
struct RestoreArgs {
    /// The snapshot directory (`cairn snapshot --to`).
    #[arg(long)]
    snapshot: PathBuf,
    /// A directory holding the pack files (a copy of DATA_DIR/packs taken after the snapshot).
    #[arg(long)]
    packs: PathBuf,
    /// The new data directory (absent or empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// The master key file to put in the new data directory (snapshots never hold it). Without
    /// it, the configuration's master_key / master_key_file must provide the key.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// The server's configuration file (engine settings, identity and master key sources).
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Where an operator command runs: a running server, or a stopped one's data directory.
#[derive(Args)]
struct TargetArgs {
    /// A running server's base URL; the admin token comes from --admin-token or
    /// CAIRN_ADMIN_TOKEN.
    #[arg(long, conflicts_with = "data_dir", required_unless_present = "data_dir")]
    server: Option<String>,
    #[arg(long, env = "CAIRN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A stopped server's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Offline, the server's configuration file: its engine settings, plans and identifier
    /// key apply (the data directory is --data-dir's).
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<ops::Target> {
        match (&self.server, &self.data_dir) {
            (Some(url), _) => {
                let token = self
                    .admin_token
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("--server needs the admin token (CAIRN_ADMIN_TOKEN)"))?;
                Ok(ops::Target::Server { url: url.clone(), token })
            }
            (None, Some(dir)) => {
                let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
                config.data_dir = dir.clone();
                Ok(ops::Target::DataDir(Box::new(config.finish()?)))
            }
            (None, None) => anyhow::bail!("give --server URL or --data-dir DIR"),
        }
    }
}

#[derive(Args)]
struct GcArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Seconds a chunk must have been unreferenced before it goes.
    #[arg(long, default_value_t = GcOptions::default().grace_secs)]
    grace_seconds: u64,
    /// Rewrite packs whose live share is below this (0 to 1).
    #[arg(long, default_value_t = GcOptions::default().compact_below)]
    compact_below: f64,
    /// Ceiling on compaction's copies, MiB/s (0: none). Default: the server's
    /// `gc_copy_mib_per_sec` with --server, none offline (no uploads to protect).
    #[arg(long)]
    copy_mib_per_sec: Option<u64>,
    /// Also rewrite every pack that is plaintext or under an old data key, then retire the
    /// keys no pack uses.
    #[arg(long)]
    rekey: bool,
}

#[derive(Args)]
struct PlanArgs {
    /// The account id (32 hex digits).
    account: String,
    /// A plan name from the configuration.
    plan: String,
    /// Offline, --config names the plans (and the identifier key).
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Args)]
struct StatsArgs {
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file; flags and CAIRN_* variables win over it.
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "CAIRN_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Enables /admin/*; at least 16 characters.
    #[arg(long, env = "CAIRN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A plan and its quota, e.g. `pro=50GiB`; repeatable.
    #[arg(long = "plan", value_parser = parse_plan)]
    plans: Vec<(String, ByteSize)>,
    #[arg(long, env = "CAIRN_PACK_TARGET_SIZE")]
    pack_target_size: Option<ByteSize>,
    #[arg(long, env = "CAIRN_ZSTD_LEVEL")]
    zstd_level: Option<i32>,
}

#[derive(Args)]
struct FsckArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Throw the chunk index away and rebuild it from the packs alone, then check (offline).
    #[arg(long)]
    rebuild_index: bool,
    /// Set reference counts and usage to what the manifests imply (offline).
    #[arg(long)]
    repair: bool,
}

fn parse_plan(s: &str) -> Result<(String, ByteSize), String> {
    let (name, size) = s.split_once('=').ok_or("expected NAME=SIZE")?;
    Ok((name.trim().to_string(), size.parse().map_err(|e: crate::config::BadSize| e.to_string())?))
}

impl ServeArgs {
    fn config(self) -> Result<Config, crate::config::ConfigError> {
        let mut c = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.admin_token {
            c.admin_token = Some(v);
        }
        if let Some(v) = self.pack_target_size {
            c.pack_target_size = v;
        }
        if let Some(v) = self.zstd_level {
            c.zstd_level = v;
        }
        c.plans.extend(self.plans);
        c.finish()
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Fsck(a) => a.target.target().and_then(|t| {
            ops::fsck(t, ops::FsckFlags { rebuild_index: a.rebuild_index, repair: a.repair, json: a.target.json })
        }),
        Command::Gc(a) => a.target.target().and_then(|t| {
            let opts = GcOptions {
                grace_secs: a.grace_seconds,
                compact_below: a.compact_below,
                copy_rate: a.copy_mib_per_sec.and_then(CopyRate::mib_per_sec),
                rekey: a.rekey,
            };
            ops::gc(t, opts, a.target.json)
        }),
        Command::Stats(a) => a.target.target().and_then(|t| ops::stats(t, a.target.json)),
        Command::RotateKey(a) => a.target.target().and_then(|t| ops::rotate_key(t, a.target.json)),
        Command::Plan(a) => a.target.target().and_then(|t| ops::plan(t, &a.account, &a.plan, a.target.json)),
        Command::Snapshot(a) => a.target.target().and_then(|t| ops::snapshot(t, &a.to, a.target.json)),
        Command::RestoreSnapshot(a) => restore_snapshot(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn restore_snapshot(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(a.config.as_deref(), std::env::vars())?;
    config.data_dir = a.data_dir;
    let config = config.finish()?;
    let from =
        ops::RestoreFrom { snapshot: &a.snapshot, packs: &a.packs, master_key_file: a.master_key_file.as_deref() };
    ops::restore_snapshot(&config, from, a.json)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("CAIRN_LOG_FORMAT").is_ok_and(|f| f == "json") {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Arc::new(args.config()?);
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(http::limits::BLOCKING_THREADS)
        .build()?;
    runtime.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        crate::host_metrics::HostGauges::register(&config.data_dir, &metrics.registry)?;
        let engine_config = config.engine();
        let m = metrics.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config, m)).await??;
        let (e, c) = (engine.clone(), config.clone());
        let identity = tokio::task::spawn_blocking(move || Identity::open(e, &c.identity, &c.notifier)).await??;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (tls, reloader) = tls_listener(&config, &metrics).await?;
        let tls_addr = tls.as_ref().map(|t| t.listener.local_addr()).transpose()?;
        let app = Arc::new(App::new(config.http(), engine.clone(), metrics, identity));
        let sealer = engine.spawn_idle_sealer();
        let housekeeping =
            crate::maintenance::spawn(config.schedule(), engine.clone(), app.sync.clone(), app.resumable.clone());
        let sweeper = app.identity.spawn_sweeper();
        // Handlers go in before anyone learns the address, so an early SIGTERM is graceful too.
        let shutdown = shutdown_signal()?;
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "cairn is serving");
        // One line on stdout per listener, for scripts and tests that asked for port 0; the
        // plain one last.
        if let Some(tls_addr) = tls_addr {
            tracing::info!(%tls_addr, "serving TLS");
            println!("cairn listening on https://{tls_addr}");
        }
        println!("cairn listening on http://{addr}");
        let listeners = http::Listeners { plain: listener, plain_h2c: config.h2c, tls };
        http::serve(app, listeners, shutdown).await;
        reloader.abort();
        sealer.abort();
        housekeeping.iter().for_each(|t| t.abort());
        sweeper.abort();
        tokio::task::spawn_blocking(move || engine.close()).await??;
        tracing::info!("open pack sealed, database flushed; bye");
        Ok(ExitCode::SUCCESS)
    })
}

/// The TLS listener if `[tls]` names a certificate, and the task that reloads it (on a change
/// of its files, and on SIGHUP). Without TLS, SIGHUP is logged and ignored rather than ending
/// the process, so an operator's habitual reload signal is harmless.
async fn tls_listener(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<(Option<http::TlsListener>, tokio::task::JoinHandle<()>)> {
    use tokio::signal::unix::{signal, SignalKind};
    let Some((cert, key)) = config.tls.files() else {
        let mut hup = signal(SignalKind::hangup())?;
        let ignorer = tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: no TLS certificate to reload");
            }
        });
        return Ok((None, ignorer));
    };
    let certs = http::tls::Certificates::load(&cert, &key, &metrics.registry)?;
    let acceptor = certs.acceptor(config.tls.http2)?;
    let listener = tokio::net::TcpListener::bind(config.tls.listen).await?;
    let reloader = certs.spawn_reloader(std::time::Duration::from_secs(config.tls.reload_check_secs))?;
    Ok((Some(http::TlsListener { listener, acceptor }), reloader))
}

/// Take the hard limit on open files as the soft one: every connection, pack reader and
/// database file is a descriptor, and the soft default (often 1024) would run out first.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
