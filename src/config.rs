//! Server configuration: embedded defaults, then a TOML file, then `CAIRN_*` environment
//! variables and flags (the CLI layers those two). Every part of the server gets its settings
//! passed in from here; nothing reads the environment on its own.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::chunk::ChunkingParams;
use crate::engine::{CopyRate, EngineConfig, GcOptions};
use crate::http::limits::LimitsConfig;
use crate::identity::{IdentityConfig, NotifierConfig};

/// A byte count written as a number or with a unit: `"64MiB"`, `"5 GiB"`, `"2TB"`, `1048576`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

#[derive(Debug, thiserror::Error)]
#[error("not a size: {0:?} (use bytes or a unit such as 64MiB, 5GiB, 2TB)")]
pub struct BadSize(String);

impl FromStr for ByteSize {
    type Err = BadSize;
    fn from_str(s: &str) -> Result<Self, BadSize> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| BadSize(s.into()))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(BadSize(s.into())),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| BadSize(s.into()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

pub use crate::quota::{FREE_BYTES, FREE_PLAN};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_token: Option<String>,
    pub chunking: ChunkingParams,
    pub zstd_level: i32,
    /// Compress chunks against a per-pack dictionary (`pack::dicts`). On by default; off, new
    /// packs get none; packs that have one read the same.
    pub pack_dictionary: bool,
    pub pack_target_size: ByteSize,
    pub pack_idle_seal_secs: u64,
    pub verify_reads: bool,
    /// Uploads stop (507 `insufficient_storage`) while the disk has less than this free, so
    /// that deletes, the database and GC always have room.
    pub min_free_bytes: ByteSize,
    /// Largest request header block, in bytes; larger is `431`.
    pub max_header_bytes: usize,
    /// Seconds a shutdown waits for open requests before it seals and flushes anyway.
    pub shutdown_grace_secs: u64,
    /// How long a chunk uploaded through the chunk API waits for a manifest to claim it.
    pub staged_ttl_secs: u64,
    /// How often the server expires staged chunks and resumable uploads, and purges old sync
    /// tombstones.
    pub sweep_secs: u64,
    /// A resumable upload (`/v1/uploads`) that receives nothing for this long is removed and
    /// its chunks released.
    pub upload_expiry_secs: u64,
    /// The largest `Upload-Length` a resumable upload may declare (`Tus-Max-Size`).
    pub upload_max_size: ByteSize,
    /// Unfinished resumable uploads one account may have at once.
    pub unfinished_uploads_per_account: usize,
    /// How long a sync tombstone stays in the feed.
    pub tombstone_retention_secs: u64,
    /// Backups kept per device; a commit drops the oldest beyond this (at least 1).
    pub backup_retention: usize,
    /// Scheduled garbage collection: every this many seconds (0: never), with this grace
    /// and compaction threshold.
    pub gc_interval_secs: u64,
    pub gc_grace_secs: u64,
    pub gc_compact_below: f64,
    /// Ceiling on compaction's copy rate inside the server, scheduled or `POST /admin/gc`
    /// (0: none), so that a big rewrite does not starve uploads of the disk.
    pub gc_copy_mib_per_sec: u64,
    /// Scheduled collections also rewrite packs that are plaintext or sealed under an old data
    /// key (at the copy rate above), and retire keys no pack uses.
    pub gc_rekey: bool,
    /// Seal new pack entries and tables (encryption at rest). Off: new packs are plaintext;
    /// sealed ones stay readable.
    pub encrypt_packs: bool,
    /// The master key that wraps the data keys, 64 hex digits (or `CAIRN_MASTER_KEY`). Unset:
    /// read from `master_key_file`.
    pub master_key: Option<String>,
    /// Where the master key is kept (a secrets manager's mount, say). Unset: `master.key` in
    /// the data directory, created (mode 0600) on first start. Losing it loses the data.
    pub master_key_file: Option<PathBuf>,
    /// Plan name to quota. `free` is always present (5 GiB unless set here).
    pub plans: BTreeMap<String, ByteSize>,
    /// Codes, sessions, rate limits, the identifier key: `[identity]`.
    pub identity: IdentityConfig,
    /// Where codes are sent: `[notifier]`, `[notifier.smtp]`, `[notifier.webhook]`.
    pub notifier: NotifierConfig,
    /// Connections, transfers per account and in all, and client timeouts: `[limits]`.
    pub limits: LimitsConfig,
    /// The trash and old versions of drive files: `[drive]`.
    pub drive: DriveConfig,
    /// A TLS listener beside the plain one: `[tls]`.
    pub tls: crate::http::tls::TlsConfig,
    /// Reverse proxies in front of the server: `[proxy]`.
    pub proxy: ProxyConfig,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plain listener, for proxies that speak
    /// HTTP/2 upstream; HTTP/1.1 is always accepted.
    pub h2c: bool,
    /// Where sealed packs live, local disk or an S3-compatible bucket: `[storage]`.
    pub storage: crate::pack::StorageConfig,
    /// For tests only: time stands still until `POST /admin/clock` moves it, so a test passes
    /// a code's lifetime or a rate-limit window without sleeping. Needs `admin_token`.
    pub test_clock: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriveConfig {
    /// Days a deleted file stays in the trash before housekeeping purges it.
    pub trash_days: u64,
    /// Old versions kept per file at most (0: overwriting keeps none).
    pub versions_kept: usize,
}

/// `[proxy]`: who may tell us the client's address, and whether they terminate TLS.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Addresses or CIDRs (`"10.0.0.0/8"`, `"::1"`) whose `Forwarded` / `X-Forwarded-For` /
    /// `X-Forwarded-Proto` headers are believed. Empty: nobody's.
    pub trusted: crate::http::client_addr::TrustedProxies,
    /// The trusted proxies terminate TLS: their requests may carry passwords and cookies over
    /// the plain listener unless they report `http`.
    pub terminates_tls: bool,
}

impl Default for DriveConfig {
    fn default() -> Self {
        let p = crate::drive::Policy::default();
        DriveConfig { trash_days: p.trash_days, versions_kept: p.versions.max }
    }
}

impl DriveConfig {
    pub fn policy(&self) -> crate::drive::Policy {
        crate::drive::Policy {
            trash_days: self.trash_days,
            versions: crate::drive::versions::Retention { max: self.versions_kept },
        }
    }
}

/// Each default is said once: the engine's in `EngineConfig::new`, GC's in `GcOptions::default`,
/// each section's in its own `Default`; the rest here.
impl Default for Config {
    fn default() -> Self {
        let engine = EngineConfig::new("data");
        Config {
            data_dir: engine.data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            chunking: engine.chunking,
            zstd_level: engine.zstd_level,
            pack_dictionary: engine.pack_dictionary,
            pack_target_size: ByteSize(engine.pack_target_size),
            pack_idle_seal_secs: engine.pack_idle_seal.as_secs(),
            verify_reads: engine.verify_reads,
            min_free_bytes: ByteSize(engine.min_free_bytes),
            max_header_bytes: 32 * 1024,
            shutdown_grace_secs: 30,
            staged_ttl_secs: 24 * 3600,
            sweep_secs: 600,
            upload_expiry_secs: 24 * 3600,
            upload_max_size: ByteSize(1 << 40),
            unfinished_uploads_per_account: 20,
            tombstone_retention_secs: 30 * 24 * 3600,
            backup_retention: crate::backup::Retention::default().keep(),
            gc_interval_secs: 6 * 3600,
            gc_grace_secs: GcOptions::default().grace_secs,
            gc_compact_below: GcOptions::default().compact_below,
            gc_copy_mib_per_sec: 64,
            gc_rekey: true,
            encrypt_packs: engine.keys.encrypt,
            master_key: None,
            master_key_file: None,
            plans: BTreeMap::new(),
            identity: IdentityConfig::default(),
            notifier: NotifierConfig::default(),
            limits: LimitsConfig::default(),
            test_clock: false,
            drive: DriveConfig::default(),
            tls: Default::default(),
            proxy: ProxyConfig::default(),
            h2c: true,
            storage: engine.storage,
        }
    }
}

/// Put one variable's value at its place in the table: a section's key, or a top-level one.
fn set_from_env(table: &mut toml::Table, key: &str, value: &str) {
    let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (path, name) = match SECTIONS.iter().chain(["plans"].iter()).find(|s| key.starts_with(&format!("{s}_"))) {
        Some(section) => (section.split('_').collect::<Vec<_>>(), &key[section.len() + 1..]),
        None => (Vec::new(), key),
    };
    let mut here = table;
    for part in path {
        let entry = here.entry(part).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => here = t,
            other => {
                *other = toml::Value::Table(toml::Table::new());
                here = other.as_table_mut().expect("just made a table");
            }
        }
    }
    here.insert(name.to_string(), value);
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{0}")]
    Invalid(String),
}

/// Environment variables that are not settings: read by tools and the logger, not here.
const NOT_SETTINGS: [&str; 4] = ["CAIRN_CONFIG", "CAIRN_LOG", "CAIRN_LOG_FORMAT", "CAIRN_ROCKSDB"];
/// The sections a `CAIRN_SECTION_NAME` variable may name, longest first (`notifier_smtp_host`
/// is `[notifier.smtp] host`, not `[notifier] smtp_host`).
const SECTIONS: [&str; 10] = [
    "notifier_smtp",
    "notifier_webhook",
    "notifier",
    "identity",
    "limits",
    "chunking",
    "drive",
    "tls",
    "proxy",
    "storage",
];

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::load(Some(path), std::iter::empty())
    }

    /// Embedded defaults, then the file (if any), then `CAIRN_*` variables from `env`: every
    /// setting of the file can come from the environment, `CAIRN_` and its path in upper case
    /// with `_` for the dots (`CAIRN_GC_INTERVAL_SECS`, `CAIRN_LIMITS_UPLOADS`,
    /// `CAIRN_NOTIFIER_SMTP_HOST`, `CAIRN_PLANS_PRO=50GiB`). Values are TOML (`30`, `true`,
    /// `"text"`) or else a plain string. A variable that names no setting is an error, so a
    /// typo does not go unnoticed.
    pub fn load(path: Option<&Path>, env: impl Iterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|source| ConfigError::Parse { path: path.into(), source })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Some(key) = name.strip_prefix("CAIRN_").filter(|_| !NOT_SETTINGS.contains(&name.as_str())) {
                set_from_env(&mut table, &key.to_ascii_lowercase(), &value);
            }
        }
        let place = path.map_or_else(|| PathBuf::from("CAIRN_* variables"), Path::to_path_buf);
        table.try_into().map_err(|source| ConfigError::Parse { path: place, source })
    }

    /// Fill in what must always exist and refuse what cannot work.
    pub fn finish(mut self) -> Result<Self, ConfigError> {
        self.plans.entry(FREE_PLAN.into()).or_insert(ByteSize(FREE_BYTES));
        self.chunking.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if !(1..=22).contains(&self.zstd_level) {
            return Err(ConfigError::Invalid(format!("zstd_level {} is not in 1..=22", self.zstd_level)));
        }
        if !(0.0..=1.0).contains(&self.gc_compact_below) {
            return Err(ConfigError::Invalid("gc_compact_below is a share from 0 to 1".into()));
        }
        if self.backup_retention == 0 {
            return Err(ConfigError::Invalid("backup_retention must keep at least 1 backup per device".into()));
        }
        if self.pack_target_size.0 < 1 << 20 {
            return Err(ConfigError::Invalid("pack_target_size must be at least 1MiB".into()));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid("admin_token must be at least 16 characters".into()));
        }
        if self.test_clock && self.admin_token.is_none() {
            return Err(ConfigError::Invalid("test_clock is moved through the admin API: set admin_token".into()));
        }
        self.identity.validate().map_err(ConfigError::Invalid)?;
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.tls.validate().map_err(ConfigError::Invalid)?;
        self.storage.validate().map_err(ConfigError::Invalid)?;
        Ok(self)
    }

    /// What the server does on its own, and when.
    pub fn schedule(&self) -> crate::maintenance::Schedule {
        crate::maintenance::Schedule {
            sweep: Duration::from_secs(self.sweep_secs),
            staged_ttl_secs: self.staged_ttl_secs,
            tombstone_retention_secs: self.tombstone_retention_secs,
            trash_days: self.drive.trash_days,
            gc_every: (self.gc_interval_secs > 0).then(|| Duration::from_secs(self.gc_interval_secs)),
            gc: self.gc(),
        }
    }

    /// The limits of resumable uploads.
    pub fn upload_settings(&self) -> crate::uploads::Settings {
        crate::uploads::Settings {
            expiry_secs: self.upload_expiry_secs,
            max_size: self.upload_max_size.0,
            per_account: self.unfinished_uploads_per_account,
        }
    }

    /// The options of a scheduled collection.
    pub fn gc(&self) -> GcOptions {
        GcOptions {
            grace_secs: self.gc_grace_secs,
            compact_below: self.gc_compact_below,
            copy_rate: CopyRate::mib_per_sec(self.gc_copy_mib_per_sec),
            rekey: self.gc_rekey,
        }
    }

    /// The HTTP layer's settings.
    pub fn http(&self) -> crate::http::Settings {
        crate::http::Settings {
            admin_token: self.admin_token.clone(),
            max_header_bytes: self.max_header_bytes,
            shutdown_grace_secs: self.shutdown_grace_secs,
            limits: self.limits.clone(),
            plans: crate::quota::Plans(self.plans.iter().map(|(k, v)| (k.clone(), v.0)).collect()),
            backup_retention: crate::backup::Retention::keep_last(self.backup_retention).unwrap_or_default(),
            staged_ttl_secs: self.staged_ttl_secs,
            gc_copy_mib_per_sec: self.gc_copy_mib_per_sec,
            drive: self.drive.policy(),
            uploads: self.upload_settings(),
            proxies: self.proxy.trusted.clone(),
            credentials: crate::http::credentials::CredentialPolicy { proxy_terminates_tls: self.proxy.terminates_tls },
        }
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            data_dir: self.data_dir.clone(),
            chunking: self.chunking,
            zstd_level: self.zstd_level,
            pack_dictionary: self.pack_dictionary,
            dictionary_span: crate::pack::dicts::DEFAULT_SPAN,
            pack_target_size: self.pack_target_size.0,
            pack_idle_seal: Duration::from_secs(self.pack_idle_seal_secs),
            verify_reads: self.verify_reads,
            min_free_bytes: self.min_free_bytes.0,
            clock: if self.test_clock { crate::clock::Clock::manual_from_now() } else { crate::clock::Clock::system() },
            keys: crate::pack::KeySource {
                encrypt: self.encrypt_packs,
                master_key: self.master_key.clone(),
                master_key_file: self.master_key_file.clone(),
            },
            storage: self.storage.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert_eq!("5 GiB".parse::<ByteSize>().unwrap().0, FREE_BYTES);
        assert_eq!("2TB".parse::<ByteSize>().unwrap().0, 2_000_000_000_000);
        assert_eq!("123".parse::<ByteSize>().unwrap().0, 123);
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let c: Config = toml::from_str(include_str!("../docs/config.example.toml")).unwrap();
        let c = c.finish().unwrap();
        assert_eq!(c.plans["family"].0, 2 << 40);
        assert_eq!(c.chunking, ChunkingParams::default());
    }

    #[test]
    fn every_setting_can_come_from_the_environment() {
        let env = [
            ("CAIRN_GC_INTERVAL_SECS", "60"),
            ("CAIRN_VERIFY_READS", "false"),
            ("CAIRN_MIN_FREE_BYTES", "1GiB"),
            ("CAIRN_LIMITS_UPLOADS_PER_ACCOUNT", "3"),
            ("CAIRN_IDENTITY_CODE_TTL_SECS", "120"),
            ("CAIRN_NOTIFIER_SMTP_HOST", "mail.example.com"),
            ("CAIRN_NOTIFIER_SMTP_FROM", "Cairn <no-reply@example.com>"),
            ("CAIRN_PLANS_PRO", "50GiB"),
            ("CAIRN_LOG", "debug"),
            ("CAIRN_ROCKSDB", "bundled"),
        ];
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::load(None, env).unwrap();
        assert_eq!((c.gc_interval_secs, c.verify_reads, c.min_free_bytes.0), (60, false, 1 << 30));
        assert_eq!((c.limits.uploads_per_account, c.identity.code_ttl_secs), (3, 120));
        assert_eq!(c.notifier.smtp.as_ref().map(|s| s.host.as_str()), Some("mail.example.com"));
        assert_eq!(c.plans["pro"].0, 50 << 30);
        let proxy = [("CAIRN_PROXY_TRUSTED", "[\"10.0.0.0/8\", \"::1\"]"), ("CAIRN_TLS_RELOAD_CHECK_SECS", "5")];
        let c = Config::load(None, proxy.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        assert!(c.proxy.trusted.contains("10.1.2.3".parse().unwrap()));
        assert_eq!(c.tls.reload_check_secs, 5);
        let typo = Config::load(None, std::iter::once(("CAIRN_GC_INTERVAL".into(), "1".into())));
        assert!(typo.is_err(), "a variable that names no setting is refused");
    }

    #[test]
    fn file_settings_and_plans() {
        let c: Config = toml::from_str("listen = \"127.0.0.1:9\"\n[plans]\npro = \"50GiB\"\n").unwrap();
        let c = c.finish().unwrap();
        assert_eq!(c.plans["pro"].0, 50 << 30);
        assert_eq!(c.plans["free"].0, FREE_BYTES);
        assert!(toml::from_str::<Config>("no_such_setting = 1").is_err());
    }
}
