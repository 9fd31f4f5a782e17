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
    /// How often the server expires staged chunks and purges old sync tombstones.
    pub sweep_secs: u64,
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
    /// Plan name to quota. `free` is always present (5 GiB unless set here).
    pub plans: BTreeMap<String, ByteSize>,
    /// Codes, sessions, rate limits, the identifier key: `[identity]`.
    pub identity: IdentityConfig,
    /// Where codes are sent: `[notifier]`, `[notifier.smtp]`, `[notifier.webhook]`.
    pub notifier: NotifierConfig,
    /// Connections, transfers per account and in all, and client timeouts: `[limits]`.
    pub limits: LimitsConfig,
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
            pack_target_size: ByteSize(engine.pack_target_size),
            pack_idle_seal_secs: engine.pack_idle_seal.as_secs(),
            verify_reads: engine.verify_reads,
            min_free_bytes: ByteSize(engine.min_free_bytes),
            max_header_bytes: 32 * 1024,
            shutdown_grace_secs: 30,
            staged_ttl_secs: 24 * 3600,
            sweep_secs: 600,
            tombstone_retention_secs: 30 * 24 * 3600,
            backup_retention: crate::backup::Retention::default().keep(),
            gc_interval_secs: 6 * 3600,
            gc_grace_secs: GcOptions::default().grace_secs,
            gc_compact_below: GcOptions::default().compact_below,
            gc_copy_mib_per_sec: 64,
            plans: BTreeMap::new(),
            identity: IdentityConfig::default(),
            notifier: NotifierConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
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

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
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
        self.identity.validate().map_err(ConfigError::Invalid)?;
        self.limits.validate().map_err(ConfigError::Invalid)?;
        Ok(self)
    }

    /// The options of a scheduled collection.
    pub fn gc(&self) -> GcOptions {
        GcOptions {
            grace_secs: self.gc_grace_secs,
            compact_below: self.gc_compact_below,
            copy_rate: CopyRate::mib_per_sec(self.gc_copy_mib_per_sec),
        }
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            data_dir: self.data_dir.clone(),
            chunking: self.chunking,
            zstd_level: self.zstd_level,
            pack_target_size: self.pack_target_size.0,
            pack_idle_seal: Duration::from_secs(self.pack_idle_seal_secs),
            verify_reads: self.verify_reads,
            min_free_bytes: self.min_free_bytes.0,
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
    fn file_settings_and_plans() {
        let c: Config = toml::from_str("listen = \"127.0.0.1:9\"\n[plans]\npro = \"50GiB\"\n").unwrap();
        let c = c.finish().unwrap();
        assert_eq!(c.plans["pro"].0, 50 << 30);
        assert_eq!(c.plans["free"].0, FREE_BYTES);
        assert!(toml::from_str::<Config>("no_such_setting = 1").is_err());
    }
}
