//! The server key and what it protects: identifiers sealed at rest (XChaCha20-Poly1305, a
//! random 192-bit nonce per value, so no nonce bookkeeping), lookups by a keyed BLAKE3 hash, and
//! codes kept only as keyed hashes.
//!
//! One 256-bit master key, from the configuration or generated once into `DIR/identity.key`
//! (mode 0600); the working keys are derived from it with BLAKE3's KDF, one per purpose, so
//! that a hash can never be confused with a ciphertext key.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use super::error::{IdentityError, Result};
use super::identifiers::Identifier;

pub const KEY_FILE: &str = "identity.key";
const NONCE_LEN: usize = 24;
/// Bound into every ciphertext, so that a sealed identifier cannot be replayed as another
/// kind of sealed value later.
const SEAL_AAD: &[u8] = b"cairn identifier v1";

pub struct Secrets {
    cipher: XChaCha20Poly1305,
    lookup: [u8; 32],
    codes: [u8; 32],
}

impl Secrets {
    pub fn from_master(master: &[u8; 32]) -> Self {
        let seal = blake3::derive_key("cairn 2026-01 identifier sealing", master);
        Secrets {
            cipher: XChaCha20Poly1305::new(&seal.into()),
            lookup: blake3::derive_key("cairn 2026-01 identifier lookup", master),
            codes: blake3::derive_key("cairn 2026-01 verification codes", master),
        }
    }

    /// The configured key (64 hex digits) if there is one; otherwise the key file in the data
    /// directory, created on first start.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<Self> {
        let master = match configured {
            Some(hex_key) => parse_key(hex_key.trim())
                .ok_or_else(|| IdentityError::Internal("identity.key must be 64 hex digits (32 bytes)".into()))?,
            None => load_or_create_key_file(&data_dir.join(KEY_FILE))?,
        };
        Ok(Secrets::from_master(&master))
    }

    /// The `identifiers` key of an identifier.
    pub fn lookup(&self, id: &Identifier) -> [u8; 32] {
        *blake3::keyed_hash(&self.lookup, id.canonical().as_bytes()).as_bytes()
    }

    pub fn seal(&self, id: &Identifier) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let plain = id.canonical();
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: SEAL_AAD })
            .expect("XChaCha20-Poly1305 encrypts any message of this size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// `None` for bytes this key did not seal (damage, or a different key).
    pub fn open(&self, sealed: &[u8]) -> Option<Identifier> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: SEAL_AAD }).ok()?;
        Identifier::from_canonical(std::str::from_utf8(&plain).ok()?)
    }

    /// What the `codes` record keeps of a code: bound to the identifier and the purpose, so a
    /// code cannot be moved to another identifier or purpose even by someone who edits the
    /// database.
    pub fn code_hash(&self, id_hash: &[u8; 32], purpose: u8, code: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.codes);
        h.update(id_hash);
        h.update(&[purpose]);
        h.update(code.as_bytes());
        *h.finalize().as_bytes()
    }
}

fn parse_key(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn load_or_create_key_file(path: &Path) -> Result<[u8; 32]> {
    let io = |what: &str, e: std::io::Error| IdentityError::Internal(format!("{what} {}: {e}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path).map_err(|e| io("reading", e))?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the identity key file is readable by others; chmod 600 it");
            }
            parse_key(text.trim())
                .ok_or_else(|| IdentityError::Internal(format!("{} is not 64 hex digits", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            // create_new: two processes starting at once must not each write their own key.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| io("creating", e))?;
            f.write_all(format!("{}\n", hex::encode(key)).as_bytes()).map_err(|e| io("writing", e))?;
            f.sync_all().map_err(|e| io("syncing", e))?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the directory of", e))?;
            }
            tracing::info!(path = %path.display(), "generated the identity key; back it up with the database");
            Ok(key)
        }
        Err(e) => Err(io("reading", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_hides_the_identifier() {
        let s = Secrets::from_master(&[9; 32]);
        let id = Identifier::parse("i", "ada@example.com").unwrap();
        let sealed = s.seal(&id);
        assert!(!sealed.windows(7).any(|w| w == b"example"));
        assert_eq!(s.open(&sealed), Some(id.clone()));
        assert_ne!(s.seal(&id), sealed, "fresh nonce every time");
        let other = Secrets::from_master(&[8; 32]);
        assert_eq!(other.open(&sealed), None);
        assert_eq!(s.open(&sealed[..10]), None);
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(s.open(&flipped), None);
    }

    #[test]
    fn lookups_are_keyed_and_stable() {
        let s = Secrets::from_master(&[9; 32]);
        let a = Identifier::parse("i", "Ada@Example.com").unwrap();
        let b = Identifier::parse("i", "ada@example.com").unwrap();
        assert_eq!(s.lookup(&a), s.lookup(&b));
        assert_ne!(s.lookup(&a), Secrets::from_master(&[8; 32]).lookup(&a));
        assert_ne!(s.code_hash(&[0; 32], 1, "123456"), s.code_hash(&[0; 32], 2, "123456"));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identifier::parse("i", "+4915112345678").unwrap();
        let sealed = Secrets::load(None, dir.path()).unwrap().seal(&id);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Secrets::load(None, dir.path()).unwrap().open(&sealed), Some(id));
        assert!(Secrets::load(Some("abc"), dir.path()).is_err());
        assert!(Secrets::load(Some(&"ab".repeat(32)), dir.path()).is_ok());
    }
}
