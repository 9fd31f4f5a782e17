//! Where the client keeps its sign-in: `credentials.json` in the config directory, readable by
//! the user alone (mode 0600, written whole then renamed, so never half a file).
//!
//! The directory is `--config-dir` / `CAIRN_DRIVE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/cairn-drive`,
//! else `~/.config/cairn-drive`: tests point it at a temporary directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub token: String,
    pub identifier: String,
    pub account_id: String,
    pub device_id: String,
    /// The device name given at login: conflict copies and default backup names use it.
    pub device_name: String,
}

pub fn default_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("cairn-drive"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config").join("cairn-drive"))
}

fn file(dir: &Path) -> PathBuf {
    dir.join("credentials.json")
}

pub fn load(dir: &Path) -> std::io::Result<Option<Credentials>> {
    match fs::read(file(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn save(dir: &Path, c: &Credentials) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let tmp = dir.join(".credentials.json.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(c).expect("serializable"))?;
    f.sync_all()?;
    fs::rename(&tmp, file(dir))
}

pub fn remove(dir: &Path) -> std::io::Result<()> {
    match fs::remove_file(file(dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
