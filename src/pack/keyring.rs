//! The keys that seal pack contents: data keys, each wrapped by one master key.
//!
//! Invariants: the master key never touches a pack; it only wraps data keys, which live in
//! `DIR/datakeys` (harmless without the master key). A data key id is random (32 bits, never 0),
//! so a keys file recreated by mistake cannot reuse an id that old packs name. New entries and
//! packs are sealed under the current key; older keys stay readable until `retire` drops them,
//! which the pack store calls only with every key a pack still uses. The master key file is
//! created (mode 0600) only when there is no keys file yet: a data directory whose master key
//! went missing refuses to start rather than sealing new data under a key that cannot read
//! the old.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use super::sealed::DataKey;

pub const MASTER_KEY_FILE: &str = "master.key";
pub const DATA_KEYS_FILE: &str = "datakeys";
const KEYS_MAGIC: &[u8; 8] = b"CAIRNDK1";
const NONCE_LEN: usize = 24;
/// One wrapped data key: nonce, then the 32-byte key sealed (plus its 16-byte tag).
const WRAPPED_LEN: usize = NONCE_LEN + 32 + 16;
/// The keys file's contents: the current id, and each key wrapped.
type Wrapped = (u32, BTreeMap<u32, [u8; WRAPPED_LEN]>);

/// Where the master key comes from, and whether new data is sealed.
#[derive(Clone, Debug, Default)]
pub struct KeySource {
    /// Seal new entries and pack tables. Off: new packs are written in the plaintext format
    /// (version 1); sealed packs stay readable as long as their keys are.
    pub encrypt: bool,
    /// The master key itself (64 hex digits), from the configuration or `CAIRN_MASTER_KEY`.
    pub master_key: Option<String>,
    /// A file holding it (a secrets manager's mount); default `DIR/master.key`, created on first
    /// start.
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, KeyError>;

/// The data keys at one moment: what readers and sealers use, cheap to hand around.
pub struct KeySet {
    current: Option<u32>,
    ciphers: HashMap<u32, DataKey>,
}

impl KeySet {
    /// No keys: everything new is plaintext, and a sealed pack cannot be read.
    pub fn none() -> Self {
        KeySet { current: None, ciphers: HashMap::new() }
    }

    /// One key, current (tests and the fuzz targets).
    pub fn single(id: u32, key: [u8; 32]) -> Self {
        KeySet { current: Some(id), ciphers: HashMap::from([(id, DataKey::new(key))]) }
    }

    /// The key new data is sealed under, if sealing is on.
    pub fn current(&self) -> Option<u32> {
        self.current
    }

    pub fn cipher(&self, id: u32) -> Option<&DataKey> {
        self.ciphers.get(&id)
    }

    pub fn ids(&self) -> BTreeSet<u32> {
        self.ciphers.keys().copied().collect()
    }
}

pub struct Keyring {
    file: PathBuf,
    /// Wraps and unwraps data keys; `None` when sealing is off and no keys file exists.
    master: Option<XChaCha20Poly1305>,
    encrypt: bool,
    set: RwLock<Arc<KeySet>>,
    /// The keys file's contents: current id and each key wrapped. Serializes rotations.
    wrapped: Mutex<Wrapped>,
}

impl Keyring {
    /// Load the keys of `data_dir`, creating the master key and a first data key when sealing
    /// is on and there are none yet.
    pub fn open(data_dir: &Path, source: &KeySource) -> Result<Arc<Self>> {
        let file = data_dir.join(DATA_KEYS_FILE);
        let stored = read_keys_file(&file)?;
        let master = match (&stored, source.encrypt) {
            (None, false) => None,
            (Some(_), _) => Some(load_master(data_dir, source, false)?),
            (None, true) => Some(load_master(data_dir, source, true)?),
        };
        let ring = Keyring {
            file,
            master: master.map(|m| XChaCha20Poly1305::new(&blake3::derive_key(WRAP_CONTEXT, &m).into())),
            encrypt: source.encrypt,
            set: RwLock::new(Arc::new(KeySet::none())),
            wrapped: Mutex::new(stored.unwrap_or_default()),
        };
        if ring.encrypt && ring.wrapped.lock().expect("keys poisoned").1.is_empty() {
            ring.rotate()?;
        }
        ring.publish()?;
        Ok(Arc::new(ring))
    }

    /// A keyring that seals nothing and reads no sealed pack (offline tools' tests, benches).
    pub fn plaintext() -> Arc<Self> {
        Arc::new(Keyring {
            file: PathBuf::new(),
            master: None,
            encrypt: false,
            set: RwLock::new(Arc::new(KeySet::none())),
            wrapped: Mutex::new(Default::default()),
        })
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.set.read().expect("keyring poisoned").clone()
    }

    /// Make a new data key and seal new data under it from now on. Returns its id.
    pub fn rotate(&self) -> Result<u32> {
        let master = self.master.as_ref().ok_or_else(|| KeyError::Invalid("encryption is off".into()))?;
        let mut wrapped = self.wrapped.lock().expect("keys poisoned");
        let mut id = 0;
        while id == 0 || wrapped.1.contains_key(&id) {
            id = rand::rngs::OsRng.next_u32();
        }
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        wrapped.1.insert(id, wrap(master, id, &key));
        wrapped.0 = id;
        write_keys_file(&self.file, &wrapped)?;
        drop(wrapped);
        self.publish()?;
        tracing::info!(key = format_args!("{id:08x}"), "new data key; new packs are sealed under it");
        Ok(id)
    }

    /// Drop every key but the current one that is not in `in_use`. Returns the ids dropped.
    pub fn retire(&self, in_use: &BTreeSet<u32>) -> Result<Vec<u32>> {
        let mut wrapped = self.wrapped.lock().expect("keys poisoned");
        let current = wrapped.0;
        let gone: Vec<u32> = wrapped.1.keys().copied().filter(|id| *id != current && !in_use.contains(id)).collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        for id in &gone {
            wrapped.1.remove(id);
        }
        write_keys_file(&self.file, &wrapped)?;
        drop(wrapped);
        self.publish()?;
        tracing::info!(?gone, "retired data keys no pack uses");
        Ok(gone)
    }

    /// Unwrap the keys file's keys into the set readers see.
    fn publish(&self) -> Result<()> {
        let wrapped = self.wrapped.lock().expect("keys poisoned");
        let mut ciphers = HashMap::new();
        if let Some(master) = &self.master {
            for (id, w) in &wrapped.1 {
                let key = unwrap(master, *id, w).ok_or_else(|| {
                    KeyError::Invalid(format!(
                        "data key {id:08x} does not open with this master key: wrong master key, or a damaged {DATA_KEYS_FILE}"
                    ))
                })?;
                ciphers.insert(*id, DataKey::new(key));
            }
        }
        let current = (self.encrypt && wrapped.1.contains_key(&wrapped.0)).then_some(wrapped.0);
        *self.set.write().expect("keyring poisoned") = Arc::new(KeySet { current, ciphers });
        Ok(())
    }
}

const WRAP_CONTEXT: &str = "cairn 2026-12 data key wrapping";

fn wrap(master: &XChaCha20Poly1305, id: u32, key: &[u8; 32]) -> [u8; WRAPPED_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = id.to_le_bytes();
    let ct = master
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: key, aad: &aad })
        .expect("XChaCha20-Poly1305 seals 32 bytes");
    let mut out = [0u8; WRAPPED_LEN];
    out[..NONCE_LEN].copy_from_slice(&nonce);
    out[NONCE_LEN..].copy_from_slice(&ct);
    out
}

fn unwrap(master: &XChaCha20Poly1305, id: u32, w: &[u8; WRAPPED_LEN]) -> Option<[u8; 32]> {
    let aad = id.to_le_bytes();
    let plain =
        master.decrypt(XNonce::from_slice(&w[..NONCE_LEN]), Payload { msg: &w[NONCE_LEN..], aad: &aad }).ok()?;
    plain.try_into().ok()
}

/// `datakeys`: magic, current id, count, then (id, wrapped key) per key. `None` if absent.
fn read_keys_file(path: &Path) -> Result<Option<Wrapped>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KeyError::Io { path: path.into(), source }),
    };
    parse_keys(&bytes).map(Some).ok_or_else(|| KeyError::Invalid(format!("{} is damaged", path.display())))
}

pub(crate) fn parse_keys(b: &[u8]) -> Option<Wrapped> {
    let head = b.get(..16)?;
    if &head[..8] != KEYS_MAGIC {
        return None;
    }
    let current = u32::from_le_bytes(head[8..12].try_into().ok()?);
    let count = u32::from_le_bytes(head[12..16].try_into().ok()?) as usize;
    let body = &b[16..];
    if body.len() != count.checked_mul(4 + WRAPPED_LEN)? {
        return None;
    }
    let mut keys = BTreeMap::new();
    for rec in body.chunks_exact(4 + WRAPPED_LEN) {
        let id = u32::from_le_bytes(rec[..4].try_into().ok()?);
        keys.insert(id, rec[4..].try_into().ok()?);
    }
    (keys.len() == count).then_some((current, keys))
}

/// Written under a temporary name, synced, renamed and the directory synced: a crash leaves
/// the old file or the new one, never half of either.
fn write_keys_file(path: &Path, (current, keys): &Wrapped) -> Result<()> {
    let io = |source| KeyError::Io { path: path.into(), source };
    let mut out = KEYS_MAGIC.to_vec();
    out.extend_from_slice(&current.to_le_bytes());
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for (id, w) in keys {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(w);
    }
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(&out).and_then(|_| f.sync_all()).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path).map_err(io)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    path.parent().map_or(Ok(()), |d| File::open(d)?.sync_all())
}

fn parse_hex_key(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

/// The configured master key, else the key file (created only if `may_create`).
fn load_master(data_dir: &Path, source: &KeySource, may_create: bool) -> Result<[u8; 32]> {
    if let Some(hex_key) = &source.master_key {
        return parse_hex_key(hex_key).ok_or_else(|| KeyError::Invalid("master_key must be 64 hex digits".into()));
    }
    let path = source.master_key_file.clone().unwrap_or_else(|| data_dir.join(MASTER_KEY_FILE));
    let io = |source| KeyError::Io { path: path.clone(), source };
    match fs::read_to_string(&path) {
        Ok(text) => parse_hex_key(&text).ok_or_else(|| KeyError::Invalid(format!("{} is not 64 hex digits", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound && may_create => {
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            // create_new: two processes starting at once must not each write their own key.
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
            f.write_all(format!("{}\n", hex::encode(key)).as_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
            sync_dir(&path).map_err(io)?;
            tracing::info!(path = %path.display(), "generated the master key; without it the packs cannot be read: back it up");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(KeyError::Invalid(format!(
            "{} is missing but {DATA_KEYS_FILE} exists: the packs are sealed under a master key this server does not have",
            path.display()
        ))),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn on() -> KeySource {
        KeySource { encrypt: true, ..Default::default() }
    }

    #[test]
    fn first_start_creates_a_private_master_key_and_one_data_key() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path(), &on()).unwrap();
        let mode = fs::metadata(dir.path().join(MASTER_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = ring.keys().current().expect("a current key");
        let again = Keyring::open(dir.path(), &on()).unwrap();
        assert_eq!(again.keys().current(), Some(first), "reopened, same key");
    }

    #[test]
    fn rotation_keeps_old_keys_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path(), &on()).unwrap();
        let old = ring.keys().current().unwrap();
        let new = ring.rotate().unwrap();
        assert_ne!(old, new);
        assert!(ring.keys().cipher(old).is_some());
        assert_eq!(ring.retire(&BTreeSet::from([old])).unwrap(), Vec::<u32>::new());
        assert_eq!(ring.retire(&BTreeSet::new()).unwrap(), vec![old]);
        let reopened = Keyring::open(dir.path(), &on()).unwrap();
        assert_eq!(reopened.keys().ids(), BTreeSet::from([new]));
        assert_eq!(reopened.keys().current(), Some(new));
    }

    #[test]
    fn a_lost_master_key_or_a_wrong_one_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        Keyring::open(dir.path(), &on()).unwrap();
        fs::remove_file(dir.path().join(MASTER_KEY_FILE)).unwrap();
        assert!(Keyring::open(dir.path(), &on()).is_err());
        let wrong = KeySource { master_key: Some("11".repeat(32)), ..on() };
        assert!(Keyring::open(dir.path(), &wrong).is_err());
    }

    #[test]
    fn sealing_off_reads_old_keys_but_seals_nothing_new() {
        let dir = tempfile::tempdir().unwrap();
        let id = Keyring::open(dir.path(), &on()).unwrap().keys().current().unwrap();
        let off = Keyring::open(dir.path(), &KeySource::default()).unwrap();
        assert_eq!(off.keys().current(), None);
        assert!(off.keys().cipher(id).is_some());
        let fresh = tempfile::tempdir().unwrap();
        Keyring::open(fresh.path(), &KeySource::default()).unwrap();
        assert!(!fresh.path().join(MASTER_KEY_FILE).exists());
    }

    #[test]
    fn damaged_keys_files_are_refused() {
        assert!(parse_keys(b"").is_none());
        assert!(parse_keys(b"CAIRNDK1\x01\0\0\0\x01\0\0\0").is_none());
    }
}
