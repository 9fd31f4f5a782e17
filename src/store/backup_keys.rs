//! Key and value encodings of the `backups` column family.
//!
//! ```text
//! backups  A ++ 0x00 ++ ID                -> head (device id, label, created at, size, files)
//! backups  A ++ 0x01 ++ ID ++ IDX         -> entry (path, mode, mtime as posted)
//! objects  A ++ Backup ++ ID ++ PATH      -> the entry's chunk list (an ordinary object record)
//! ```
//! A is the 16-byte account id, ID the backup id and IDX the entry's position in the posted
//! manifest, both big-endian so that byte order is id order and posting order. Heads sort
//! apart from entries, so listing an account's backups reads only heads. The chunk lists are
//! ordinary objects so that references, usage, fsck, GC and account deletion treat backups
//! exactly as they treat drive files.

use super::keys::AccountId;

const HEAD: u8 = 0;
const ENTRY: u8 = 1;

pub fn head_prefix(a: &AccountId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..16].copy_from_slice(&a.0);
    k[16] = HEAD;
    k
}

pub fn head_key(a: &AccountId, id: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..17].copy_from_slice(&head_prefix(a));
    k[17..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The backup id of a head key under `head_prefix`.
pub fn id_from_head_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(17..25)?.try_into().ok()?)).filter(|_| k.len() == 25)
}

pub fn entry_prefix(a: &AccountId, id: u64) -> [u8; 25] {
    let mut k = head_key(a, id);
    k[16] = ENTRY;
    k
}

pub fn entry_key(a: &AccountId, id: u64, index: u32) -> [u8; 29] {
    let mut k = [0u8; 29];
    k[..25].copy_from_slice(&entry_prefix(a, id));
    k[25..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The object name of an entry's chunk list: the backup id, then the path.
pub fn object_name(id: u64, path: &str) -> Vec<u8> {
    let mut n = Vec::with_capacity(8 + path.len());
    n.extend_from_slice(&id.to_be_bytes());
    n.extend_from_slice(path.as_bytes());
    n
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHead {
    pub device_id: String,
    pub label: String,
    /// Unix milliseconds of the commit.
    pub created_at: i64,
    /// Sum of the entries' sizes.
    pub size: u64,
    pub files: u64,
}

/// What an entry keeps besides its chunk list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub path: String,
    pub mode: u32,
    /// RFC 3339, exactly as posted.
    pub mtime: String,
}

const V1: u8 = 1;

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn version(&mut self) -> Option<()> {
        (self.take(1)? == [V1]).then_some(())
    }
}

pub fn encode_head(h: &BackupHead) -> Vec<u8> {
    let mut b = vec![V1];
    put_str(&mut b, &h.device_id);
    put_str(&mut b, &h.label);
    b.extend_from_slice(&h.created_at.to_le_bytes());
    b.extend_from_slice(&h.size.to_le_bytes());
    b.extend_from_slice(&h.files.to_le_bytes());
    b
}

pub fn decode_head(v: &[u8]) -> Option<BackupHead> {
    let mut r = Reader(v);
    r.version()?;
    let h = BackupHead {
        device_id: r.str()?,
        label: r.str()?,
        created_at: r.u64()? as i64,
        size: r.u64()?,
        files: r.u64()?,
    };
    r.0.is_empty().then_some(h)
}

pub fn encode_entry(e: &EntryMeta) -> Vec<u8> {
    let mut b = vec![V1];
    put_str(&mut b, &e.path);
    b.extend_from_slice(&e.mode.to_le_bytes());
    put_str(&mut b, &e.mtime);
    b
}

pub fn decode_entry(v: &[u8]) -> Option<EntryMeta> {
    let mut r = Reader(v);
    r.version()?;
    let e = EntryMeta { path: r.str()?, mode: r.u32()?, mtime: r.str()? };
    r.0.is_empty().then_some(e)
}

/// A backup head's name, for its item charge: device and label.
pub fn head_name_len(head: &BackupHead) -> usize {
    head.device_id.len() + head.label.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_any_truncation() {
        let h = BackupHead {
            device_id: "phone".into(),
            label: "nightly".into(),
            created_at: 1_700_000_000_123,
            size: 9,
            files: 2,
        };
        let e = EntryMeta { path: "/sdcard/DCIM/a.jpg".into(), mode: 0o100644, mtime: "2026-11-27T10:00:00Z".into() };
        let (hv, ev) = (encode_head(&h), encode_entry(&e));
        assert_eq!(decode_head(&hv), Some(h));
        assert_eq!(decode_entry(&ev), Some(e));
        for n in 0..hv.len() {
            assert_eq!(decode_head(&hv[..n]), None);
        }
        for n in 0..ev.len() {
            assert_eq!(decode_entry(&ev[..n]), None);
        }
        assert_eq!(decode_head(&[hv.clone(), vec![0]].concat()), None, "trailing bytes");
    }

    #[test]
    fn heads_sort_by_id_and_apart_from_entries() {
        let a = AccountId([7; 16]);
        assert!(head_key(&a, 1) < head_key(&a, 2));
        assert!(head_key(&a, u64::MAX).as_slice() < entry_key(&a, 0, 0).as_slice());
        assert!(entry_key(&a, 5, 1) < entry_key(&a, 5, 2));
        assert_eq!(id_from_head_key(&head_key(&a, 42)), Some(42));
        assert!(entry_key(&a, 5, 0).starts_with(&entry_prefix(&a, 5)));
    }
}
