//! Keys and values of resumable uploads (`uploads` column family, and the pieces' object names).
//!
//! An unfinished upload is one `UploadRecord` at `account ++ upload id`, plus one object per
//! piece in `Namespace::Upload`, named `upload id ++ piece number` (big-endian, so they list in
//! order). The record and the piece a request adds are written in one account transaction, so
//! `offset` always equals the pieces' sizes plus the tail's length.
//!
//! Decoders take untrusted bytes and return `None`, never panic (fuzz target `stored_records`).

use super::keys::{hex_id, AccountId, Reader};
use crate::engine::Precondition;

hex_id!(
    /// A resumable upload's id, chosen by the server at creation.
    UploadId
);

/// What the server keeps of an unfinished (or just finished) upload between requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    /// The drive path the upload becomes.
    pub path: String,
    /// The total length, once the client has said it (`Upload-Defer-Length` leaves it open).
    pub length: Option<u64>,
    /// Bytes received and durable: the pieces' chunks plus `tail`.
    pub offset: u64,
    /// The number the next piece's object gets.
    pub pieces: u32,
    /// Unix milliseconds after which housekeeping removes the upload.
    pub expires_ms: i64,
    /// Checked at creation and again when the last byte commits the file.
    pub pre: Precondition,
    /// The `Upload-Metadata` header as the client sent it, echoed by `HEAD`.
    pub metadata: String,
    /// The version of the drive file, once the upload has completed.
    pub done: Option<u64>,
    /// Bytes after the last content-defined cut, shorter than the largest chunk.
    pub tail: Vec<u8>,
}

const UPLOAD_V1: u8 = 1;

pub fn upload_key(account: &AccountId, id: &UploadId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&account.0);
    k[16..].copy_from_slice(&id.0);
    k
}

/// Split an `uploads` key into account and upload id.
pub fn split_upload_key(k: &[u8]) -> Option<(AccountId, UploadId)> {
    if k.len() != 32 {
        return None;
    }
    Some((AccountId(k[..16].try_into().ok()?), UploadId(k[16..].try_into().ok()?)))
}

/// The object name of piece `n` of upload `id`.
pub fn piece_name(id: &UploadId, n: u32) -> Vec<u8> {
    let mut name = id.0.to_vec();
    name.extend_from_slice(&n.to_be_bytes());
    name
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}

fn put_opt(b: &mut Vec<u8>, v: Option<u64>) {
    b.push(u8::from(v.is_some()));
    b.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
}

fn encode_pre(p: Precondition) -> (u8, u64) {
    match p {
        Precondition::None => (0, 0),
        Precondition::IfVersion(v) => (1, v),
        Precondition::IfExists => (2, 0),
        Precondition::IfAbsent => (3, 0),
    }
}

fn decode_pre(tag: u8, v: u64) -> Option<Precondition> {
    Some(match tag {
        0 => Precondition::None,
        1 => Precondition::IfVersion(v),
        2 => Precondition::IfExists,
        3 => Precondition::IfAbsent,
        _ => return None,
    })
}

pub fn encode_upload(r: &UploadRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + r.path.len() + r.metadata.len() + r.tail.len());
    b.push(UPLOAD_V1);
    put_bytes(&mut b, r.path.as_bytes());
    put_opt(&mut b, r.length);
    b.extend_from_slice(&r.offset.to_le_bytes());
    b.extend_from_slice(&r.pieces.to_le_bytes());
    b.extend_from_slice(&r.expires_ms.to_le_bytes());
    let (tag, v) = encode_pre(r.pre);
    b.push(tag);
    b.extend_from_slice(&v.to_le_bytes());
    put_bytes(&mut b, r.metadata.as_bytes());
    put_opt(&mut b, r.done);
    put_bytes(&mut b, &r.tail);
    b
}

fn text(r: &mut Reader<'_>) -> Option<String> {
    String::from_utf8(r.bytes()?.to_vec()).ok()
}

fn opt(r: &mut Reader<'_>) -> Option<Option<u64>> {
    let flag = r.u8()?;
    let v = r.u64()?;
    match flag {
        0 => Some(None),
        1 => Some(Some(v)),
        _ => None,
    }
}

pub fn decode_upload(v: &[u8]) -> Option<UploadRecord> {
    let mut r = Reader(v);
    if r.u8()? != UPLOAD_V1 {
        return None;
    }
    let path = text(&mut r)?;
    let length = opt(&mut r)?;
    let offset = r.u64()?;
    let pieces = r.u32()?;
    let expires_ms = r.u64()? as i64;
    let pre = decode_pre(r.u8()?, r.u64()?)?;
    let metadata = text(&mut r)?;
    let done = opt(&mut r)?;
    let tail = r.bytes()?.to_vec();
    r.0.is_empty().then_some(UploadRecord { path, length, offset, pieces, expires_ms, pre, metadata, done, tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let r = UploadRecord {
            path: "videos/a.mp4".into(),
            length: Some(1 << 40),
            offset: 12345,
            pieces: 7,
            expires_ms: 1_700_000_000_000,
            pre: Precondition::IfVersion(42),
            metadata: "path dmlkZW9zL2EubXA0".into(),
            done: None,
            tail: vec![1, 2, 3],
        };
        let b = encode_upload(&r);
        assert_eq!(decode_upload(&b), Some(r));
        for cut in 0..b.len() {
            assert_eq!(decode_upload(&b[..cut]), None);
        }
        let id = UploadId([9; 16]);
        let a = AccountId([3; 16]);
        assert_eq!(split_upload_key(&upload_key(&a, &id)), Some((a, id)));
        assert!(piece_name(&id, 1) < piece_name(&id, 256));
    }
}
