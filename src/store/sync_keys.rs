//! Key and value encodings of the `sync` and `sync_log` column families.
//!
//! ```text
//! sync      A ++ C ++ 0x00 ++ ID     -> record (version, seq, deleted, time, payload)
//! sync      A ++ C ++ 0x01           -> collection meta (count, bytes, newest seq, purged seq)
//! sync      A ++ 0xFF                -> account meta (last seq handed out)
//! sync_log  A ++ C ++ 0x00 ++ SEQ    -> ID   (the feed: one entry per record, at its latest seq)
//! ```
//! A is the 16-byte account id, C the collection name (`[a-z][a-z0-9_]{0,31}`), SEQ big-endian
//! so that byte order is seq order. Names and ids never contain 0x00, 0x01 or 0xFF.

use super::keys::AccountId;

fn reader_u64(v: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(v.get(at..at + 8)?.try_into().ok()?))
}

pub fn record_key(a: &AccountId, collection: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + collection.len() + 1 + id.len());
    k.extend_from_slice(&a.0);
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn collection_meta_key(a: &AccountId, collection: &str) -> Vec<u8> {
    let mut k = a.0.to_vec();
    k.extend_from_slice(collection.as_bytes());
    k.push(1);
    k
}

pub fn account_meta_key(a: &AccountId) -> [u8; 17] {
    let mut k = [0xFF; 17];
    k[..16].copy_from_slice(&a.0);
    k
}

pub fn log_prefix(a: &AccountId, collection: &str) -> Vec<u8> {
    let mut k = a.0.to_vec();
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k
}

pub fn log_key(a: &AccountId, collection: &str, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(a, collection);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Split any `sync` key of an account into the collection name and what follows the marker.
pub fn split_sync_key(k: &[u8]) -> Option<(&str, u8, &[u8])> {
    let rest = k.get(16..)?;
    let at = rest.iter().position(|b| *b == 0 || *b == 1)?;
    Some((std::str::from_utf8(&rest[..at]).ok()?, rest[at], &rest[at + 1..]))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRecord {
    pub version: u64,
    pub seq: u64,
    pub deleted: bool,
    /// Unix milliseconds of the write (a tombstone's purge clock).
    pub at: i64,
    /// The payload's JSON text as received; empty for a tombstone.
    pub payload: Vec<u8>,
}

const V1: u8 = 1;

pub fn encode_record(r: &SyncRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(26 + r.payload.len());
    b.push(V1);
    b.extend_from_slice(&r.version.to_le_bytes());
    b.extend_from_slice(&r.seq.to_le_bytes());
    b.push(u8::from(r.deleted));
    b.extend_from_slice(&r.at.to_le_bytes());
    b.extend_from_slice(&r.payload);
    b
}

pub fn decode_record(v: &[u8]) -> Option<SyncRecord> {
    if *v.first()? != V1 {
        return None;
    }
    let deleted = match *v.get(17)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some(SyncRecord {
        version: reader_u64(v, 1)?,
        seq: reader_u64(v, 9)?,
        deleted,
        at: reader_u64(v, 18)? as i64,
        payload: v.get(26..)?.to_vec(),
    })
}

/// Per collection: what the summary shows, and the purge horizon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectionMeta {
    pub count: u64,
    pub bytes: u64,
    pub seq: u64,
    /// Highest seq of a tombstone purged from this collection: a feed from before it may
    /// have missed a deletion.
    pub purged_seq: u64,
}

pub fn encode_collection_meta(m: &CollectionMeta) -> Vec<u8> {
    let mut b = vec![V1];
    for v in [m.count, m.bytes, m.seq, m.purged_seq] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

pub fn decode_collection_meta(v: &[u8]) -> Option<CollectionMeta> {
    if v.len() != 33 || v[0] != V1 {
        return None;
    }
    Some(CollectionMeta {
        count: reader_u64(v, 1)?,
        bytes: reader_u64(v, 9)?,
        seq: reader_u64(v, 17)?,
        purged_seq: reader_u64(v, 25)?,
    })
}

/// A sync record's name, for its item charge: collection and id.
pub fn item_name_len(collection: &str, id: &[u8]) -> usize {
    collection.len() + id.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = SyncRecord { version: 3, seq: 3, deleted: false, at: 17, payload: b"{\"a\":1}".to_vec() };
        assert_eq!(decode_record(&encode_record(&r)), Some(r));
        let m = CollectionMeta { count: 1, bytes: 2, seq: 3, purged_seq: 4 };
        assert_eq!(decode_collection_meta(&encode_collection_meta(&m)), Some(m));
        let a = AccountId([9; 16]);
        assert_eq!(split_sync_key(&record_key(&a, "notes", "x1")), Some(("notes", 0, &b"x1"[..])));
        assert_eq!(split_sync_key(&collection_meta_key(&a, "notes")), Some(("notes", 1, &b""[..])));
        assert!(log_key(&a, "notes", 2) < log_key(&a, "notes", 256));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(decode_record(&[]).is_none());
        assert!(decode_record(&[1, 2, 3]).is_none());
        assert!(decode_collection_meta(&[1; 32]).is_none());
    }
}
