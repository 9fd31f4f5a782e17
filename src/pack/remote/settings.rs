//! `[storage]`: where sealed packs live. The file form is the one the engine takes; `config`
//! embeds it as it is.

use serde::Deserialize;

use crate::config::ByteSize;

/// Local disk (the default), or an S3-compatible bucket with the open packs and a cache on
/// local disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    S3,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    /// The bucket (S3 backend). It must exist: the server never creates or configures one.
    pub bucket: Option<String>,
    /// Objects are named `PREFIX/packs/<id>.pack`; empty: `packs/<id>.pack`.
    pub prefix: String,
    /// An S3-compatible service's URL (MinIO, Ceph RGW, Garage...); unset: AWS, or
    /// `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Unset: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Allow a plain `http://` endpoint (a service on loopback or a private network).
    pub allow_http: bool,
    /// Memory for recently read ranges of packs in the bucket (LRU, in 64 KiB blocks).
    pub cache_size: ByteSize,
    /// Local disk for packs already uploaded (the newest first; LRU). 0: deleted once uploaded.
    pub disk_cache_size: ByteSize,
    /// Longest wait for one request to the store (connect included) before it counts as failed.
    pub timeout_secs: u64,
    /// The longest pause between two tries of a pack's upload while the store fails.
    pub retry_max_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Local,
            bucket: None,
            prefix: String::new(),
            endpoint: None,
            region: None,
            allow_http: false,
            cache_size: ByteSize(256 << 20),
            disk_cache_size: ByteSize(4 << 30),
            timeout_secs: 30,
            retry_max_secs: 60,
        }
    }
}

impl StorageConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.backend == Backend::S3 && self.bucket.as_deref().is_none_or(str::is_empty) {
            return Err("[storage] backend = \"s3\" needs a bucket".into());
        }
        if self.timeout_secs == 0 || self.retry_max_secs == 0 {
            return Err("[storage] timeout_secs and retry_max_secs must be at least 1".into());
        }
        if self.prefix.split('/').any(|part| part == "." || part == "..") {
            return Err("[storage] prefix may not have . or .. parts".into());
        }
        Ok(())
    }

    /// The prefix without leading or trailing slashes.
    pub(crate) fn prefix(&self) -> &str {
        self.prefix.trim_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_needs_a_bucket_and_local_needs_nothing() {
        let mut c = StorageConfig::default();
        assert!(c.validate().is_ok());
        c.backend = Backend::S3;
        assert!(c.validate().is_err(), "no bucket");
        c.bucket = Some("b".into());
        c.prefix = "/eu/1/".into();
        assert!(c.validate().is_ok());
        assert_eq!(c.prefix(), "eu/1");
        c.prefix = "eu/../x".into();
        assert!(c.validate().is_err());
        let parsed: StorageConfig = toml::from_str("backend = \"s3\"\nbucket = \"b\"\ncache_size = \"1GiB\"").unwrap();
        assert_eq!((parsed.backend, parsed.cache_size.0), (Backend::S3, 1 << 30));
        assert!(toml::from_str::<StorageConfig>("backend = \"ftp\"").is_err());
    }
}
