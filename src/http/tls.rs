//! TLS on the server's second listener: rustls with the certificate chain and key of two PEM
//! files, swapped in without a restart when the files change or on SIGHUP.
//!
//! Invariants: a handshake always gets a complete, self-consistent certificate and key (the
//! pair is swapped as one `Arc`); a reload that fails (a file half written, a key that does
//! not match the certificate) keeps the pair in use and is counted and logged, so a bad
//! renewal never takes the listener down. The files are looked at every `reload_check_secs`:
//! polling their metadata is a few `stat`s a minute, needs no dependency, and sees every way a
//! certificate gets replaced (rewritten in place, renamed over, a symlink swapped by a secrets
//! mount), where file-change notifications miss renames of the directory or symlink above.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// `[tls]`: a second listener that speaks TLS. Absent `cert_file`: no TLS listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: std::net::SocketAddr,
    /// The certificate chain, leaf first (PEM), e.g. an ACME client's `fullchain.pem`.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// How often the two files are checked for a change (seconds).
    pub reload_check_secs: u64,
    /// Offer HTTP/2 through ALPN (besides HTTP/1.1).
    pub http2: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8443)),
            cert_file: None,
            key_file: None,
            reload_check_secs: 60,
            http2: true,
        }
    }
}

impl TlsConfig {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) | (None, Some(_)) => Err("[tls] needs both cert_file and key_file".into()),
            _ if self.reload_check_secs == 0 => Err("[tls] reload_check_secs must be at least 1".into()),
            _ => Ok(()),
        }
    }

    /// The two files, if TLS is on.
    pub fn files(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.cert_file.clone()?, self.key_file.clone()?))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{0}: holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the key does not fit the certificate, or cannot sign: {0}")]
    Key(rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// What identifies a file's version: a change of any of these is a new file.
type Stamp = Option<(i64, i64, u64, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = fs::metadata(path).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.len(), m.ino(), m.dev()))
}

/// The certificate in use and where it comes from. Shared by the acceptor (which asks it for
/// the certificate at every handshake) and the reloader.
pub struct Certificates {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when `current` was loaded from them.
    loaded: Mutex<(Stamp, Stamp)>,
    expiry: IntGauge,
    reloads: IntCounterVec,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("cert_file", &self.cert_file).finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock poisoned").clone())
    }
}

impl Certificates {
    /// Load the pair once; a failure here stops the server from starting. Registers
    /// `cairn_tls_certificate_expiry_timestamp_seconds` and `cairn_tls_reloads_total`.
    pub fn load(cert_file: &Path, key_file: &Path, registry: &Registry) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = (stamp(cert_file), stamp(key_file));
        let (key, not_after) = load_pair(cert_file, key_file, &provider)?;
        let expiry = IntGauge::new(
            "cairn_tls_certificate_expiry_timestamp_seconds",
            "When the served certificate expires (unix seconds)",
        )
        .expect("valid metric");
        let reloads =
            IntCounterVec::new(Opts::new("cairn_tls_reloads_total", "Certificate reloads, by result"), &["result"])
                .expect("valid metric");
        // A second registration (tests that build several servers on one registry) is harmless.
        let _ = registry.register(Box::new(expiry.clone()));
        let _ = registry.register(Box::new(reloads.clone()));
        expiry.set(not_after.unwrap_or(0));
        Ok(Arc::new(Certificates {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new(stamps),
            expiry,
            reloads,
        }))
    }

    /// Load the files again if either changed since the pair in use was loaded (`force`: in any
    /// case). On failure the pair in use stays, and the same files are tried again next time.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let stamps = (stamp(&self.cert_file), stamp(&self.key_file));
        if !force && *self.loaded.lock().expect("stamps poisoned") == stamps {
            return Ok(false);
        }
        match load_pair(&self.cert_file, &self.key_file, &self.provider) {
            Ok((key, not_after)) => {
                *self.current.write().expect("certificate lock poisoned") = Arc::new(key);
                *self.loaded.lock().expect("stamps poisoned") = stamps;
                self.expiry.set(not_after.unwrap_or(0));
                self.reloads.with_label_values(&["ok"]).inc();
                Ok(true)
            }
            Err(e) => {
                self.reloads.with_label_values(&["failed"]).inc();
                Err(e)
            }
        }
    }

    /// The acceptor of the TLS listener: TLS 1.2 and 1.3 with rustls's safe defaults, ALPN
    /// `h2` (if `http2`) and `http/1.1`.
    pub fn acceptor(self: &Arc<Self>, http2: bool) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = if http2 { vec![b"h2".to_vec()] } else { Vec::new() };
        config.alpn_protocols.push(b"http/1.1".to_vec());
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Check the files every `every`, and reload at once on SIGHUP. Runs until aborted.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let certs = self.clone();
        Ok(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    _ = hup.recv() => true,
                };
                let c = certs.clone();
                match tokio::task::spawn_blocking(move || c.reload(force)).await {
                    Ok(Ok(true)) => tracing::info!(cert = %certs.cert_file.display(), "TLS certificate reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "TLS certificate reload failed; the old one stays"),
                    Err(e) => tracing::error!(error = %e, "TLS certificate reload task failed"),
                }
            }
        }))
    }
}

fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Option<i64>), TlsError> {
    let read = |path: &Path| fs::read(path).map_err(|source| TlsError::Io { path: path.into(), source });
    let pem_err =
        |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem { path: path.into(), message: e.to_string() };
    let cert_pem = read(cert_file)?;
    let chain =
        CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| pem_err(cert_file, e))?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate(cert_file.into()))?;
    let not_after = not_after(leaf.as_ref());
    let key_pem = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(key_file, e))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Key)?;
    Ok((certified, not_after))
}

/// The `notAfter` of an X.509 certificate (unix seconds), read by walking its DER far enough
/// to reach the validity: the one field the expiry metric needs, without an X.509 library.
/// `None` for anything that is not a certificate of the usual shape.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (cert, _) = tlv(der, 0x30)?;
    let (mut tbs, _) = tlv(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs, 0xa0)?.1; // [0] version
    }
    let tbs = tlv(tbs, 0x02)?.1; // serialNumber
    let tbs = tlv(tbs, 0x30)?.1; // signature algorithm
    let tbs = tlv(tbs, 0x30)?.1; // issuer
    let (validity, _) = tlv(tbs, 0x30)?;
    let after_not_before = skip_any(validity)?;
    let tag = *after_not_before.first()?;
    let (time, _) = tlv(after_not_before, tag)?;
    parse_time(tag, time)
}

/// One DER element of tag `tag` at the start of `b`: its contents and what follows.
fn tlv(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *b.first()? != tag {
        return None;
    }
    let (len, head) = match *b.get(1)? {
        n if n < 0x80 => (usize::from(n), 2),
        n => {
            let count = usize::from(n & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let mut len = 0usize;
            for &byte in b.get(2..2 + count)? {
                len = len << 8 | usize::from(byte);
            }
            (len, 2 + count)
        }
    };
    let end = head.checked_add(len)?;
    Some((b.get(head..end)?, b.get(end..)?))
}

fn skip_any(b: &[u8]) -> Option<&[u8]> {
    Some(tlv(b, *b.first()?)?.1)
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950 to 2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, s: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?.strip_suffix('Z')?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i32 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<u8>().ok();
    let month = time::Month::try_from(n(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, n(2)?).ok()?;
    let t = time::Time::from_hms(n(4)?, n(6)?, n(8)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_both_forms() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2524607999));
        assert_eq!(parse_time(0x18, b"20500101000000Z"), Some(2524608000));
        for bad in [&b"7001010000Z"[..], b"700101000000", b"701301000000Z", b"70010100000aZ"] {
            assert_eq!(parse_time(0x17, bad), None);
        }
    }

    #[test]
    fn der_walk_refuses_what_is_not_a_certificate() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }

    #[test]
    fn half_a_pair_is_refused() {
        let c = TlsConfig { cert_file: Some("c.pem".into()), ..TlsConfig::default() };
        assert!(c.validate().is_err());
        assert!(TlsConfig::default().validate().is_ok());
    }
}
