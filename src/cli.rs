//! The `cairn` command line: `serve`, and the operators' offline tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::{ByteSize, Config};
use crate::engine::{fsck, Engine, EngineConfig};
use crate::http::{self, App};
use crate::identity::Identity;
use crate::metrics::Metrics;

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
    /// Check packs, index, reference counts and usage of a stopped server's data directory.
    Fsck(FsckArgs),
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
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: PathBuf,
    /// Throw the chunk index away and rebuild it from the packs alone, then check.
    #[arg(long)]
    rebuild_index: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_plan(s: &str) -> Result<(String, ByteSize), String> {
    let (name, size) = s.split_once('=').ok_or("expected NAME=SIZE")?;
    Ok((name.trim().to_string(), size.parse().map_err(|e: crate::config::BadSize| e.to_string())?))
}

impl ServeArgs {
    fn config(self) -> Result<Config, crate::config::ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
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
        Command::Fsck(args) => run_fsck(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        let engine_config = config.engine();
        let m = metrics.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config, m)).await??;
        let (e, c) = (engine.clone(), config.clone());
        let identity = tokio::task::spawn_blocking(move || Identity::open(e, &c)).await??;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App { config: config.clone(), engine: engine.clone(), metrics, identity });
        let sealer = engine.spawn_idle_sealer();
        let sweeper = app.identity.spawn_sweeper();
        // Handlers go in before anyone learns the address, so an early SIGTERM is graceful too.
        let shutdown = shutdown_signal()?;
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "cairn is serving");
        // One line on stdout, for scripts and tests that asked for port 0.
        println!("cairn listening on http://{addr}");
        http::serve(app, listener, shutdown).await;
        sealer.abort();
        sweeper.abort();
        tokio::task::spawn_blocking(move || engine.close()).await??;
        tracing::info!("open pack sealed, database flushed; bye");
        Ok(ExitCode::SUCCESS)
    })
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

fn run_fsck(args: FsckArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::open(EngineConfig::new(&args.data_dir), Arc::new(Metrics::new()))?;
    if args.rebuild_index {
        let n = fsck::rebuild_index(&engine)?;
        eprintln!("rebuilt the chunk index from the packs: {n} chunks");
    }
    let report = fsck::check(&engine)?;
    engine.close()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("problem: {p}");
        }
        println!(
            "{} packs, {} entries, {} indexed chunks, {} objects checked: {}",
            report.packs_checked,
            report.entries_checked,
            report.chunks_indexed,
            report.objects_checked,
            if report.ok() { "ok".to_string() } else { format!("{} problems", report.problems.len()) }
        );
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
