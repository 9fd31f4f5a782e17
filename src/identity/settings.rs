//! The `[identity]` and `[notifier]` sections of the configuration file. Defaults are those of
//! API.md ("Running it"); see docs/config.example.toml for every setting.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// 64 hex digits. Without it the key lives in `DATA_DIR/identity.key` (made on first start).
    pub key: Option<String>,
    pub code_ttl_secs: u64,
    /// Wrong tries after which a code is dead.
    pub code_max_tries: u32,
    /// A session ends this long after its last use.
    pub session_ttl_secs: u64,
    pub code_sends_per_identifier: u32,
    pub code_sends_per_ip: u32,
    pub code_send_window_secs: u64,
    pub failed_logins_per_identifier: u32,
    pub failed_logins_per_ip: u32,
    pub failed_login_window_secs: u64,
    /// Wrong codes (any purpose) per identifier and per client address within
    /// `code_failure_window_secs`; then code checks answer `429` until the oldest leaves.
    pub code_failures_per_identifier: u32,
    pub code_failures_per_ip: u32,
    pub code_failure_window_secs: u64,
    /// Activity events kept per account; older ones are dropped as new ones arrive.
    pub activity_kept: usize,
    /// How often expired codes and sessions are removed.
    pub sweep_interval_secs: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            key: None,
            code_ttl_secs: 600,
            code_max_tries: 5,
            session_ttl_secs: 30 * 24 * 3600,
            code_sends_per_identifier: 5,
            code_sends_per_ip: 100,
            code_send_window_secs: 900,
            failed_logins_per_identifier: 5,
            failed_logins_per_ip: 100,
            failed_login_window_secs: 900,
            code_failures_per_identifier: 20,
            code_failures_per_ip: 100,
            code_failure_window_secs: 24 * 3600,
            activity_kept: 200,
            sweep_interval_secs: 600,
        }
    }
}

impl IdentityConfig {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("code_ttl_secs", self.code_ttl_secs),
            ("code_max_tries", u64::from(self.code_max_tries)),
            ("session_ttl_secs", self.session_ttl_secs),
            ("code_sends_per_identifier", u64::from(self.code_sends_per_identifier)),
            ("code_sends_per_ip", u64::from(self.code_sends_per_ip)),
            ("code_send_window_secs", self.code_send_window_secs),
            ("failed_logins_per_identifier", u64::from(self.failed_logins_per_identifier)),
            ("failed_logins_per_ip", u64::from(self.failed_logins_per_ip)),
            ("failed_login_window_secs", self.failed_login_window_secs),
            ("code_failures_per_identifier", u64::from(self.code_failures_per_identifier)),
            ("code_failures_per_ip", u64::from(self.code_failures_per_ip)),
            ("code_failure_window_secs", self.code_failure_window_secs),
            ("activity_kept", self.activity_kept as u64),
            ("sweep_interval_secs", self.sweep_interval_secs),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("identity.{name} must be at least 1"));
            }
        }
        if let Some(k) = &self.key {
            if k.trim().len() != 64 || hex::decode(k.trim()).is_err() {
                return Err("identity.key must be 64 hex digits (32 bytes)".into());
            }
        }
        Ok(())
    }

    pub fn code_ttl(&self) -> Duration {
        Duration::from_secs(self.code_ttl_secs)
    }
}

/// Where codes go. Email goes to SMTP and phones to the webhook when those are configured;
/// whatever has no gateway goes to the outbox file (development and tests).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierConfig {
    pub smtp: Option<SmtpConfig>,
    pub webhook: Option<WebhookConfig>,
    /// Defaults to `DATA_DIR/outbox.jsonl`.
    pub outbox: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: only for a relay on the same host or a test sink.
    None,
    /// Plain connection upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Defaults by TLS mode: 25, 587, 465.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, e.g. `"Cairn <no-reply@example.com>"`.
    pub from: String,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receives `POST` with `{"to", "purpose", "code", "at", "text"}`.
    pub url: String,
    /// Sent as `Authorization: Bearer ...` when set.
    pub bearer_token: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_api_defaults() {
        let c = IdentityConfig::default();
        assert_eq!((c.code_ttl_secs, c.code_max_tries, c.session_ttl_secs), (600, 5, 2_592_000));
        assert_eq!((c.code_sends_per_identifier, c.code_send_window_secs), (5, 900));
        assert_eq!((c.failed_logins_per_identifier, c.failed_logins_per_ip, c.failed_login_window_secs), (5, 100, 900));
        assert_eq!(
            (c.code_failures_per_identifier, c.code_failures_per_ip, c.code_failure_window_secs),
            (20, 100, 86_400)
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn sections_parse_and_refuse_unknown_settings() {
        let n: NotifierConfig =
            toml::from_str("[smtp]\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\nfrom = \"a@b.cd\"\n").unwrap();
        assert_eq!(n.smtp.unwrap().tls, SmtpTls::None);
        assert!(toml::from_str::<NotifierConfig>("[smtp]\nhost = \"h\"\nfrom = \"a@b.cd\"\nbogus = 1\n").is_err());
        assert!(toml::from_str::<IdentityConfig>("bogus = 1").is_err());
        let bad = IdentityConfig { code_max_tries: 0, ..IdentityConfig::default() };
        assert!(bad.validate().is_err());
    }
}
