//! `cairn-drive`: the desktop client of a cairn server. Commands parse here and run in their
//! modules; errors become one sentence on stderr (or a JSON error) and an exit code.

mod api;
mod backup;
mod config;
mod error;
mod local;
mod plan;
mod report;
mod state;
mod sync;
mod transfer;

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_chunking::Cutter;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::api::{Api, Precondition};
use crate::config::Credentials;
use crate::error::{DriveError, Result};
use crate::report::{size, Mode, Reporter};
use crate::transfer::Transfer;

#[derive(Parser)]
#[command(name = "cairn-drive", version, about = "Sync a folder with a cairn drive, back up and restore a device")]
struct Cli {
    /// Where the sign-in is kept (default: $XDG_CONFIG_HOME/cairn-drive or ~/.config/cairn-drive).
    #[arg(long, global = true, env = "CAIRN_DRIVE_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// One line per action.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Nothing but errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// JSON on stdout: one object per action with -v semantics, then the result.
    #[arg(long, global = true, conflicts_with_all = ["verbose", "quiet"])]
    json: bool,
    /// Attempts after a network failure, with exponential backoff (0.25 s doubling).
    #[arg(long, global = true, env = "CAIRN_DRIVE_RETRIES", default_value_t = 5)]
    retries: u32,
    /// Chunk uploads in flight at once (memory: this many chunks of at most 256 KiB by default).
    #[arg(long, global = true, default_value_t = 4)]
    parallel: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sign in and keep the token in the config directory (mode 0600).
    Login {
        #[arg(long, env = "CAIRN_SERVER")]
        server: String,
        #[arg(long)]
        identifier: String,
        /// This device's name (conflict copies carry it). Default: the host name.
        #[arg(long)]
        device: Option<String>,
        /// Read the password from the first line of stdin (else CAIRN_DRIVE_PASSWORD, else a prompt).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke this device's session and forget the token.
    Logout,
    /// List drive files under a prefix.
    Ls { prefix: Option<String> },
    /// Upload a file (replacing a remote file of that path).
    Put { local: PathBuf, remote: Option<String> },
    /// Download a file.
    Get { remote: String, local: Option<PathBuf> },
    /// Delete a drive file (it goes to the trash).
    Rm { remote: String },
    /// Show what is used and what the plan allows.
    Quota,
    /// Sync DIR both ways with the drive folder REMOTE (default: the whole drive).
    Sync {
        dir: PathBuf,
        remote: Option<String>,
        /// Keep running: sync again on filesystem events and every --interval seconds.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Show what would be done, do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Back up DIR as a backup of device NAME.
    Backup {
        dir: PathBuf,
        #[arg(long)]
        device: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List backups (of one device with --device).
    Backups {
        #[arg(long)]
        device: Option<String>,
    },
    /// Restore backup BACKUP_ID into DIR.
    Restore { backup_id: String, dir: PathBuf },
    /// Who is signed in, the quota, and what a sync of DIR would do.
    Status { dir: Option<PathBuf> },
}

fn main() {
    let cli = Cli::parse();
    let mode = if cli.json {
        Mode::Json
    } else if cli.quiet {
        Mode::Quiet
    } else if cli.verbose {
        Mode::Verbose
    } else {
        Mode::Normal
    };
    let report = Arc::new(Reporter::new(mode));
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Err(e) = rt.block_on(run(cli, report.clone())) {
        report.finish();
        if mode == Mode::Json {
            eprintln!("{}", json!({"error": {"code": e.code(), "message": e.to_string()}}));
        } else {
            eprintln!("cairn-drive: {e}");
        }
        std::process::exit(e.exit_code());
    }
}

struct Ctx {
    dir: PathBuf,
    retries: u32,
    parallel: usize,
    report: Arc<Reporter>,
}

impl Ctx {
    fn creds(&self) -> Result<Credentials> {
        config::load(&self.dir).map_err(DriveError::io(&self.dir))?.ok_or(DriveError::NotLoggedIn)
    }

    fn api(&self, c: &Credentials) -> Api {
        Api::new(&c.server, Some(c.token.clone()), self.retries)
    }

    /// A transfer that only downloads (so needs no chunking check).
    fn downloads(&self, c: &Credentials) -> Transfer {
        let cutter = Cutter::new(Default::default()).expect("default parameters are valid");
        Transfer { api: self.api(c), cutter, parallel: self.parallel, report: self.report.clone() }
    }

    /// A transfer for the signed-in account, after checking the server chunks as we do.
    async fn transfer(&self, c: &Credentials) -> Result<Transfer> {
        let api = self.api(c);
        let params = api.chunking().await?;
        let cutter = Cutter::new(params).map_err(|e| DriveError::Usage(e.to_string()))?;
        Ok(Transfer { api, cutter, parallel: self.parallel, report: self.report.clone() })
    }
}

async fn run(cli: Cli, report: Arc<Reporter>) -> Result<()> {
    let dir = cli
        .config_dir
        .or_else(config::default_dir)
        .ok_or_else(|| DriveError::Usage("no config directory: set --config-dir or HOME".into()))?;
    let ctx = Ctx { dir, retries: cli.retries, parallel: cli.parallel, report: report.clone() };
    let r = &report;
    match cli.cmd {
        Cmd::Login { server, identifier, device, password_stdin } => {
            let password = password(password_stdin)?;
            let device = device.unwrap_or_else(hostname);
            let api = Api::new(&server, None, ctx.retries);
            let s = api.login(&identifier, &password, &device).await?;
            let c = Credentials {
                server: api.base().to_string(),
                token: s.token,
                identifier,
                account_id: s.account_id,
                device_id: s.device_id,
                device_name: device,
            };
            config::save(&ctx.dir, &c).map_err(DriveError::io(&ctx.dir))?;
            r.result(
                &format!("signed in to {} as {} on device {}", c.server, c.identifier, c.device_name),
                json!({"server": c.server, "identifier": c.identifier, "account_id": c.account_id, "device_id": c.device_id}),
            );
        }
        Cmd::Logout => {
            let c = ctx.creds()?;
            match ctx.api(&c).logout().await {
                // Already revoked elsewhere: signing out is done either way.
                Ok(()) | Err(api::ApiError::Unauthorized) => {}
                Err(e) => return Err(e.into()),
            }
            config::remove(&ctx.dir).map_err(DriveError::io(&ctx.dir))?;
            r.result("signed out", json!({"signed_out": true}));
        }
        Cmd::Ls { prefix } => {
            let c = ctx.creds()?;
            let files = ctx.api(&c).list(prefix.as_deref().unwrap_or("")).await?;
            let human: Vec<String> =
                files.iter().map(|f| format!("{:>10}  {}  {}", size(f.size), f.modified, f.path)).collect();
            r.result(&human.join("\n"), json!({ "files": files }));
        }
        Cmd::Put { local, remote } => {
            let c = ctx.creds()?;
            let t = ctx.transfer(&c).await?;
            let remote = match remote {
                Some(r) => r,
                None => file_name(&local)?,
            };
            let meta = std::fs::metadata(&local).map_err(DriveError::io(&local))?;
            r.start(1, meta.len());
            let (f, _, sent) = t.upload(&local, &remote, &Precondition::None).await?;
            r.action("upload", &remote, &format!("{} chunks sent", sent.chunks));
            r.result(
                &format!("{} ({}): {} chunks, {} sent", f.path, size(f.size), sent.chunks, size(sent.bytes)),
                json!({"file": f, "sent": sent}),
            );
        }
        Cmd::Get { remote, local } => {
            let c = ctx.creds()?;
            let t = ctx.downloads(&c);
            let dest = match local {
                Some(p) if p.is_dir() => p.join(remote.rsplit('/').next().unwrap_or(&remote)),
                Some(p) => p,
                None => PathBuf::from(remote.rsplit('/').next().unwrap_or(&remote)),
            };
            let (version, hash, n) = t.download(&remote, &dest).await?;
            r.action("download", &remote, "");
            r.result(
                &format!("{} -> {} ({})", remote, dest.display(), size(n)),
                json!({"path": remote, "local": dest, "size": n, "hash": hash, "version": version}),
            );
        }
        Cmd::Rm { remote } => {
            let c = ctx.creds()?;
            ctx.api(&c).delete_file(&remote, &Precondition::None).await.map_err(|e| match e {
                api::ApiError::NotFound => DriveError::Usage(format!("{remote}: no such file")),
                e => e.into(),
            })?;
            r.action("delete", &remote, "");
            r.result(&format!("deleted {remote} (it is in the trash)"), json!({"deleted": remote}));
        }
        Cmd::Quota => {
            let c = ctx.creds()?;
            let q = ctx.api(&c).quota().await?;
            r.result(
                &format!(
                    "{} used of {} (plan {}), {} available",
                    size(q.used),
                    size(q.limit),
                    q.plan,
                    size(q.available)
                ),
                serde_json::to_value(&q).expect("serializable"),
            );
        }
        Cmd::Sync { dir, remote, watch, interval, dry_run } => {
            let c = ctx.creds()?;
            let t = ctx.transfer(&c).await?;
            let folder = open_folder(&c, &t, &dir, remote.as_deref())?;
            if watch {
                folder
                    .watch(Duration::from_secs(interval.max(1)), |s| {
                        r.result(&format!("synced: {}", s.line()), json!({"synced": s}));
                    })
                    .await?;
            } else {
                let s = folder.sync(dry_run).await?;
                let human = if dry_run { s.pending.join("\n") } else { format!("synced: {}", s.line()) };
                r.result(&human, serde_json::to_value(&s).expect("serializable"));
            }
        }
        Cmd::Backup { dir, device, label } => {
            let c = ctx.creds()?;
            let t = ctx.transfer(&c).await?;
            let done = backup::backup(&t, &dir, &device, &label).await?;
            r.result(
                &format!(
                    "backup {} of {}: {} files, {}; {} chunks sent ({})",
                    done.backup.backup_id,
                    device,
                    done.backup.files,
                    size(done.backup.size),
                    done.sent.chunks,
                    size(done.sent.bytes)
                ),
                serde_json::to_value(&done).expect("serializable"),
            );
        }
        Cmd::Backups { device } => {
            let c = ctx.creds()?;
            let list = ctx.api(&c).backups(device.as_deref()).await?;
            let human: Vec<String> = list
                .iter()
                .map(|b| {
                    format!(
                        "{}  {}  {:<16} {:>10} {:>6} files  {}",
                        b.backup_id,
                        b.created_at,
                        b.device_id,
                        size(b.size),
                        b.files,
                        b.label
                    )
                })
                .collect();
            r.result(&human.join("\n"), json!({ "backups": list }));
        }
        Cmd::Restore { backup_id, dir } => {
            let c = ctx.creds()?;
            let t = ctx.downloads(&c);
            let done = backup::restore(&t, &backup_id, &dir).await.map_err(|e| match e {
                DriveError::Api(api::ApiError::NotFound) => DriveError::Usage(format!("no backup {backup_id}")),
                e => e,
            })?;
            r.result(
                &format!(
                    "restored {} files and {} folders ({}) into {}",
                    done.files,
                    done.folders,
                    size(done.bytes),
                    dir.display()
                ),
                serde_json::to_value(&done).expect("serializable"),
            );
        }
        Cmd::Status { dir } => {
            let c = ctx.creds()?;
            let api = ctx.api(&c);
            let q = api.quota().await?;
            let mut human = format!(
                "{} on {} as device {}\n{} used of {} (plan {})",
                c.identifier,
                c.server,
                c.device_name,
                size(q.used),
                size(q.limit),
                q.plan
            );
            let mut data = json!({"server": c.server, "identifier": c.identifier, "device": c.device_name, "quota": q});
            if let Some(dir) = dir {
                let t = ctx.transfer(&c).await?;
                let remote = state::State::open(&dir)?.meta("remote")?;
                let folder = open_folder(&c, &t, &dir, remote.as_deref())?;
                let s = folder.sync(true).await?;
                human.push_str(&format!("\n{}: {} changes to sync", dir.display(), s.pending.len()));
                for p in &s.pending {
                    human.push_str(&format!("\n  {p}"));
                }
                data["pending"] = json!(s.pending);
            }
            r.result(&human, data);
        }
    }
    Ok(())
}

fn open_folder<'a>(c: &Credentials, t: &'a Transfer, dir: &Path, remote: Option<&str>) -> Result<sync::Folder<'a>> {
    if !dir.is_dir() {
        return Err(DriveError::Usage(format!("{}: not a folder", dir.display())));
    }
    let remote = remote.unwrap_or("").trim_matches('/').to_string();
    let state = state::State::open(dir)?;
    state.bind(&c.server, &c.account_id, &remote)?;
    Ok(sync::Folder { root: dir.to_path_buf(), remote, device: c.device_name.clone(), state, t })
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .ok_or_else(|| DriveError::Usage(format!("{}: give the remote path", p.display())))
}

fn password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(DriveError::io("stdin"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Ok(p) = std::env::var("CAIRN_DRIVE_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(DriveError::Usage("no password: use --password-stdin or CAIRN_DRIVE_PASSWORD".into()));
    }
    rpassword::prompt_password("password: ").map_err(DriveError::io("terminal"))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if ok && !h.is_empty() => h.to_string(),
        _ => "desktop".to_string(),
    }
}
