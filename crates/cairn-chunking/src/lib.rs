//! Content-defined chunking (FastCDC 2020) and chunk identity (BLAKE3), shared by the `cairn`
//! server and the `cairn-drive` client.
//!
//! Clients that chunk on their side must cut exactly where the server cuts, or nothing dedups;
//! so the cutter here is a thin, deterministic layer over `fastcdc::v2020::cut` with the
//! parameters served by `GET /v1/chunking`, and both sides compile this one crate.
//!
//! Invariants: a cut depends only on the bytes and the parameters (never on how the input was
//! split into reads); a chunk's id is BLAKE3-256 of its raw bytes.

mod stream;

pub use stream::{ChunkStream, StreamChunk};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The name `GET /v1/chunking` gives this cutter; a client refuses a server that names another.
pub const ALGORITHM: &str = "fastcdc-2020";

/// BLAKE3-256 of a chunk's raw (uncompressed) bytes: its name everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

/// The API spells hashes as 64 lowercase hex digits; uppercase is refused so that one chunk has
/// exactly one spelling in URLs and JSON.
#[derive(Debug, thiserror::Error)]
#[error("a hash is 64 lowercase hex digits")]
pub struct BadHash;

impl FromStr for ChunkId {
    type Err = BadHash;
    fn from_str(s: &str) -> Result<Self, BadHash> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(BadHash);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadHash)?;
        Ok(ChunkId(out))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// FastCDC bounds. Defaults follow DESIGN.md (16/64/256 KiB); the benches decide the final ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkingParams {
    fn default() -> Self {
        ChunkingParams { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("chunking parameters must satisfy 64 <= min <= avg <= max <= 16 MiB, with avg >= 256 and max >= 1024: {0:?}")]
pub struct BadParams(pub ChunkingParams);

impl ChunkingParams {
    pub fn validate(&self) -> Result<(), BadParams> {
        use fastcdc::v2020 as f;
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&self.min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&self.avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(BadParams(*self))
        }
    }
}

/// Finds cut points in a growing buffer. Masks are computed once; the gear tables are the
/// crate's statics, so a cut allocates nothing.
#[derive(Clone, Debug)]
pub struct Cutter {
    params: ChunkingParams,
    mask_s: u64,
    mask_l: u64,
}

impl Cutter {
    /// Normalization level 1, as `fastcdc::v2020::FastCDC::new` uses: a client using that crate's
    /// defaults with the same bounds gets the same chunks.
    pub fn new(params: ChunkingParams) -> Result<Self, BadParams> {
        use fastcdc::v2020 as f;
        params.validate()?;
        let bits = f::logarithm2(params.avg);
        Ok(Cutter { params, mask_s: f::MASKS[(bits + 1) as usize], mask_l: f::MASKS[(bits - 1) as usize] })
    }

    pub fn params(&self) -> ChunkingParams {
        self.params
    }

    /// Length of the next chunk at the front of `buf`, or `None` when more input could still move
    /// the cut. A cut never depends on bytes past `max`, so a full `max` window is decisive; at the
    /// end of input whatever remains is decisive.
    pub fn next_cut(&self, buf: &[u8], at_end: bool) -> Option<usize> {
        let max = self.params.max as usize;
        if buf.is_empty() || (buf.len() < max && !at_end) {
            return None;
        }
        let window = &buf[..buf.len().min(max)];
        let (_, len) = fastcdc::v2020::cut(
            window,
            self.params.min as usize,
            self.params.avg as usize,
            max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        Some(len)
    }

    /// Cut points of a whole in-memory buffer (benches, tests, and clients of the library).
    pub fn chunks<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = data;
        std::iter::from_fn(move || {
            let n = self.next_cut(rest, true)?;
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Some(head)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn matches_the_reference_iterator() {
        let data = noise(3 << 20, 7);
        let p = ChunkingParams::default();
        let ours: Vec<usize> = Cutter::new(p).unwrap().chunks(&data).map(|c| c.len()).collect();
        let theirs: Vec<usize> = fastcdc::v2020::FastCDC::new(&data, p.min, p.avg, p.max).map(|c| c.length).collect();
        assert_eq!(ours, theirs);
        assert!(ours.len() > 10);
    }

    #[test]
    fn sizes_stay_within_bounds() {
        let data = noise(4 << 20, 3);
        let p = ChunkingParams::default();
        let lens: Vec<usize> = Cutter::new(p).unwrap().chunks(&data).map(|c| c.len()).collect();
        let (last, body) = lens.split_last().unwrap();
        assert!(body.iter().all(|&l| l >= p.min as usize && l <= p.max as usize));
        assert!(*last <= p.max as usize);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
    }

    #[test]
    fn hex_round_trip_and_rejects_uppercase() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
        assert!(id.to_hex().to_uppercase().parse::<ChunkId>().is_err());
        assert!("abc".parse::<ChunkId>().is_err());
    }

    #[test]
    fn bad_params_are_refused() {
        assert!(Cutter::new(ChunkingParams { min: 100, avg: 50, max: 2000 }).is_err());
        assert!(Cutter::new(ChunkingParams { min: 16, avg: 64, max: 256 }).is_err());
    }
}
