//! Chunk compression: zstd when it shrinks the chunk, raw bytes when it does not.
//!
//! Whether zstd is worth running is decided first on a sample (`worth_compressing`): on
//! incompressible data (photos, video, archives: most of a drive's bytes) zstd's match finder
//! cost as much as BLAKE3 and AES together, only to give up. A chunk whose sample does not
//! shrink is stored raw without a full attempt. The price is a chunk that is incompressible at
//! its start and in its middle but compressible elsewhere: stored raw (see docs/decisions.md).
//!
//! Each rayon worker keeps one zstd context and one output buffer for its whole life: a fresh
//! `Vec` per chunk cost zstd two thirds of its speed on incompressible data (page faults), see
//! DESIGN.md. Only output that is kept is copied out, and it is smaller than the input.

use std::cell::RefCell;

use bytes::Bytes;

use crate::chunk::ChunkId;

/// On-disk compression tag of a pack entry. The numbers are part of the pack format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    Raw = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Compression::Raw),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// A chunk ready for a pack: named, and in its stored form. `raw` stays alive (it is a cheap
/// `Bytes` view of the upload buffer) so that the writer can fold it into the whole-content hash.
#[derive(Clone, Debug)]
pub struct SealedChunk {
    pub id: ChunkId,
    pub raw: Bytes,
    pub compression: Compression,
    pub stored: Bytes,
    /// The entry already encrypted (on a worker thread, off the writer's serial path), under
    /// the data key named; `None` until the pack layer seals it (`pack::encrypt`).
    pub cipher: Option<Ciphered>,
}

/// An entry as it goes into a version 2 pack: its 48-byte frame and its sealed bytes.
#[derive(Clone, Debug)]
pub struct Ciphered {
    pub key_id: u32,
    pub header: [u8; 48],
    pub body: Bytes,
}

impl SealedChunk {
    pub fn raw_len(&self) -> u32 {
        self.raw.len() as u32
    }

    /// Bytes its entry takes after the entry header: sealed if it is, else stored.
    pub fn body_len(&self) -> usize {
        self.cipher.as_ref().map_or(self.stored.len(), |c| c.body.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("zstd: {0}")]
    Zstd(std::io::Error),
    #[error("decompressed to {got} bytes where the index says {want}")]
    Length { got: usize, want: usize },
}

struct Worker {
    level: i32,
    zstd: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Bytes in one compressibility sample; a chunk takes up to two (its start and its middle).
const SAMPLE: usize = 4096;
/// A sample's byte entropy under this many bits per byte means Huffman coding alone saves at
/// least an eighth: compress without trying the sample.
const LOW_ENTROPY_BITS: f64 = 7.0;
/// A sample that zstd cannot shrink by at least 1/32 marks the chunk incompressible.
const SAMPLE_GAIN_DIVISOR: usize = 32;

/// Hash and compress one chunk. CPU-bound: call it from a worker thread, never from the runtime.
pub fn seal(raw: Bytes, level: i32) -> SealedChunk {
    let id = ChunkId::of(&raw);
    let compressed = WORKER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|w| w.level != level) {
            let zstd = zstd::bulk::Compressor::new(level).ok()?;
            *slot = Some(Worker { level, zstd, out: Vec::new() });
        }
        let w = slot.as_mut()?;
        if !worth_compressing(w, &raw) {
            return None;
        }
        // Output only helps if it is smaller than the input; a window of that size makes zstd
        // stop (with an error) as soon as it cannot win, which is also the cheapest outcome.
        // The buffer is zero-filled once and then reused, so no `unsafe` is needed.
        let limit = raw.len().saturating_sub(1);
        if w.out.len() < limit {
            w.out.resize(limit, 0);
        }
        match w.zstd.compress_to_buffer(&raw[..], &mut w.out[..limit]) {
            Ok(n) if n < raw.len() => Some(Bytes::copy_from_slice(&w.out[..n])),
            _ => None,
        }
    });
    match compressed {
        Some(stored) => SealedChunk { id, raw, compression: Compression::Zstd, stored, cipher: None },
        None => SealedChunk { id, stored: raw.clone(), raw, compression: Compression::Raw, cipher: None },
    }
}

/// Whether a full zstd attempt on `raw` can pay: a sample of low byte entropy says yes at once;
/// otherwise the sample at its start, then the one at its middle, must shrink under zstd. Chunks
/// under three samples long are always tried (the attempt costs little more than the probe).
fn worth_compressing(w: &mut Worker, raw: &[u8]) -> bool {
    if raw.len() < 3 * SAMPLE {
        return true;
    }
    let middle = raw.len() / 2;
    for sample in [&raw[..SAMPLE], &raw[middle..middle + SAMPLE]] {
        if entropy_bits(sample) < LOW_ENTROPY_BITS {
            return true;
        }
        let limit = SAMPLE - SAMPLE / SAMPLE_GAIN_DIVISOR;
        if w.out.len() < limit {
            w.out.resize(limit, 0);
        }
        if matches!(w.zstd.compress_to_buffer(sample, &mut w.out[..limit]), Ok(n) if n < limit) {
            return true;
        }
    }
    false
}

/// Shannon entropy of the bytes of `sample`, in bits per byte (0 to 8).
fn entropy_bits(sample: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in sample {
        counts[usize::from(b)] += 1;
    }
    let n = sample.len() as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| f64::from(c) / n).map(|p| -p * p.log2()).sum()
}

/// Turn stored bytes back into the raw chunk, checking the length the index promised.
/// Raw chunks come back as the very buffer that was read: no copy.
pub fn unseal(compression: Compression, stored: Vec<u8>, raw_len: usize) -> Result<Vec<u8>, CodecError> {
    match compression {
        Compression::Raw if stored.len() == raw_len => Ok(stored),
        Compression::Raw => Err(CodecError::Length { got: stored.len(), want: raw_len }),
        Compression::Zstd => decompress(&stored, raw_len),
    }
}

/// `unseal` for bytes that are a view of a larger read buffer (reads take an entry's header
/// and bytes, or a run of entries, in one positioned read): raw chunks come back as that very
/// view, compressed ones are decompressed from it.
pub fn unseal_bytes(compression: Compression, stored: Bytes, raw_len: usize) -> Result<Bytes, CodecError> {
    match compression {
        Compression::Raw if stored.len() == raw_len => Ok(stored),
        Compression::Raw => Err(CodecError::Length { got: stored.len(), want: raw_len }),
        Compression::Zstd => decompress(&stored, raw_len).map(Bytes::from),
    }
}

fn decompress(stored: &[u8], raw_len: usize) -> Result<Vec<u8>, CodecError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(CodecError::Zstd)?);
        }
        let d = slot.as_mut().expect("just set");
        let mut out = Vec::with_capacity(raw_len);
        let n = d.decompress_to_buffer(stored, &mut out).map_err(CodecError::Zstd)?;
        if n != raw_len {
            return Err(CodecError::Length { got: n, want: raw_len });
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_and_round_trips() {
        let raw = Bytes::from("the quick brown fox ".repeat(4000));
        let s = seal(raw.clone(), 3);
        assert_eq!(s.compression, Compression::Zstd);
        assert!(s.stored.len() < raw.len() / 4);
        assert_eq!(unseal(s.compression, s.stored.to_vec(), raw.len()).unwrap(), raw);
        assert_eq!(s.id, ChunkId::of(&raw));
    }

    #[test]
    fn noise_is_stored_raw() {
        let mut x = 0x2545F4914F6CDD1Du64;
        let raw: Bytes = (0..70_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let s = seal(raw.clone(), 3);
        assert_eq!(s.compression, Compression::Raw);
        assert_eq!(s.stored, raw);
    }

    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn a_chunk_compressible_only_in_its_middle_is_compressed() {
        let mut raw = noise(64 << 10, 7);
        let middle = raw.len() / 2;
        raw[middle - 8192..middle + 8192].copy_from_slice(&b"abcdefgh".repeat(2048));
        let s = seal(Bytes::from(raw.clone()), 3);
        assert_eq!(s.compression, Compression::Zstd);
        assert_eq!(unseal(s.compression, s.stored.to_vec(), raw.len()).unwrap(), raw);
    }

    #[test]
    fn uniform_bytes_that_repeat_are_compressed() {
        // Every byte value equally often (entropy 8 bits), yet one 256-byte run repeated.
        let raw: Vec<u8> = (0..64 << 10).map(|i| (i % 256) as u8).collect();
        assert!(entropy_bits(&raw[..SAMPLE]) > 7.99);
        let s = seal(Bytes::from(raw.clone()), 3);
        assert_eq!(s.compression, Compression::Zstd);
        assert!(s.stored.len() < raw.len() / 16);
    }

    #[test]
    fn entropy_of_noise_and_of_text() {
        assert!(entropy_bits(&noise(SAMPLE, 3)) > 7.9);
        assert!(entropy_bits("the quick brown fox ".repeat(300).as_bytes()) < 4.0);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let raw = Bytes::from(vec![0u8; 10_000]);
        let s = seal(raw, 3);
        assert!(unseal(s.compression, s.stored.to_vec(), 9_999).is_err());
        assert!(unseal(Compression::Zstd, b"not zstd".to_vec(), 10).is_err());
    }
}
