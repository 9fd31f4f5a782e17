//! Pure parsers of the tus headers that carry client data: `Upload-Metadata` and
//! `Upload-Checksum`. They take untrusted text and return an error, never panic (fuzz target
//! `tus_headers`).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::Digest as _;

/// The checksum algorithms offered, as `Tus-Checksum-Algorithm` lists them.
pub const ALGORITHMS: &str = "sha1,blake3";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("Upload-Metadata is not a list of `key base64value` pairs: {0}")]
    Metadata(&'static str),
    #[error("the checksum algorithm {0:?} is not supported (use one of {ALGORITHMS})")]
    UnsupportedAlgorithm(String),
    #[error("Upload-Checksum is not `algorithm base64digest`")]
    Checksum,
}

/// `Upload-Metadata`: comma-separated pairs of a key (no spaces or commas, unique) and an
/// optional base64 value. Values are bytes; the caller decides which must be text.
pub fn parse_metadata(header: &str) -> Result<BTreeMap<String, Vec<u8>>, HeaderError> {
    let mut out = BTreeMap::new();
    if header.trim().is_empty() {
        return Ok(out);
    }
    for pair in header.split(',') {
        let mut parts = pair.trim().split(' ');
        let key = parts.next().unwrap_or_default();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HeaderError::Metadata("a key is empty or not printable ASCII"));
        }
        let value = match parts.next() {
            None => Vec::new(),
            Some(v) => STANDARD.decode(v).map_err(|_| HeaderError::Metadata("a value is not base64"))?,
        };
        if parts.next().is_some() {
            return Err(HeaderError::Metadata("a pair has more than a key and a value"));
        }
        if out.insert(key.to_string(), value).is_some() {
            return Err(HeaderError::Metadata("a key appears twice"));
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Blake3,
}

impl Algorithm {
    fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Blake3 => 32,
        }
    }
}

/// A checksum a client sent for one request's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

/// `Upload-Checksum: sha1 BASE64`.
pub fn parse_checksum(header: &str) -> Result<Checksum, HeaderError> {
    let (name, digest) = header.trim().split_once(' ').ok_or(HeaderError::Checksum)?;
    let algorithm = match name {
        "sha1" => Algorithm::Sha1,
        "blake3" => Algorithm::Blake3,
        other => return Err(HeaderError::UnsupportedAlgorithm(other.chars().take(32).collect())),
    };
    let digest = STANDARD.decode(digest.trim()).map_err(|_| HeaderError::Checksum)?;
    if digest.len() != algorithm.digest_len() {
        return Err(HeaderError::Checksum);
    }
    Ok(Checksum { algorithm, digest })
}

/// A running checksum of a body, to compare with the client's at its end.
pub enum Hasher {
    Sha1(Box<sha1::Sha1>),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => Hasher::Sha1(Box::default()),
            Algorithm::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    pub fn matches(self, expected: &[u8]) -> bool {
        match self {
            Hasher::Sha1(h) => h.finalize().as_slice() == expected,
            Hasher::Blake3(h) => h.finalize().as_bytes() == expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs() {
        let m = parse_metadata("path ZG9jcy9hLnR4dA==,is_confidential, filetype dGV4dC9wbGFpbg==").unwrap();
        assert_eq!(m["path"], b"docs/a.txt");
        assert_eq!(m["is_confidential"], b"");
        assert_eq!(m["filetype"], b"text/plain");
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(parse_metadata("path ***").is_err());
        assert!(parse_metadata("path YQ==,path YQ==").is_err());
        assert!(parse_metadata("path YQ== YQ==").is_err());
        assert!(parse_metadata(",").is_err());
    }

    #[test]
    fn checksums() {
        let c = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha1);
        let mut h = Hasher::new(Algorithm::Sha1);
        h.update(b"hello world");
        assert!(h.matches(&c.digest));
        assert_eq!(parse_checksum("md5 AAAA"), Err(HeaderError::UnsupportedAlgorithm("md5".into())));
        assert_eq!(parse_checksum("sha1 AAAA"), Err(HeaderError::Checksum));
        assert_eq!(parse_checksum("sha1"), Err(HeaderError::Checksum));
    }
}
