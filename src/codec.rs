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
//!
//! With a dictionary (`seal_with`, tag `ZstdDict`), a chunk is compressed against the pack's
//! dictionary (see `dictionary`): its frame carries zstd's content checksum, so that a frame
//! decompressed against any other dictionary fails instead of yielding other bytes, whatever
//! `verify_reads` says.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use zstd::zstd_safe::{CCtx, CParameter, DCtx};

use crate::chunk::ChunkId;
use crate::dictionary::Dictionary;

/// On-disk compression tag of a pack entry. The numbers are part of the pack format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    Raw = 0,
    Zstd = 1,
    /// zstd against the dictionary of the pack the entry is in (its first entry).
    ZstdDict = 2,
    /// Not a chunk: the pack's dictionary, stored raw, always its first entry, never indexed.
    Dictionary = 3,
}

impl Compression {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Compression::Raw),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::ZstdDict),
            3 => Some(Compression::Dictionary),
            _ => None,
        }
    }

    /// Whether stored bytes of this kind are smaller than the raw ones (zstd either way).
    pub fn is_compressed(self) -> bool {
        matches!(self, Compression::Zstd | Compression::ZstdDict)
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
    /// `ZstdDict`: the dictionary `stored` was compressed against; `None` otherwise.
    pub dict: Option<Arc<Dictionary>>,
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
    #[error("compressed against the pack's dictionary, which is missing")]
    NoDictionary,
}

struct Worker {
    level: i32,
    zstd: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
    /// A context with the current dictionary referenced, kept while the dictionary stays.
    dict: Option<DictWorker>,
}

/// Field order matters: the context refers to the dictionary's prepared form, so it is
/// dropped first.
struct DictWorker {
    cctx: CCtx<'static>,
    dict: Arc<Dictionary>,
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static DICT_DECOMPRESSOR: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
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
    seal_with(raw, level, None)
}

/// `seal`, against `dict` if one is given (tag `ZstdDict`; plain zstd if the dictionary cannot
/// be used at this level). The sampling that spares incompressible chunks is the same.
pub fn seal_with(raw: Bytes, level: i32, dict: Option<&Arc<Dictionary>>) -> SealedChunk {
    let id = ChunkId::of(&raw);
    let dict = dict.filter(|d| d.cdict(level).is_some());
    let compressed = WORKER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|w| w.level != level) {
            let zstd = zstd::bulk::Compressor::new(level).ok()?;
            *slot = Some(Worker { level, zstd, out: Vec::new(), dict: None });
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
        let n = match dict {
            Some(d) => compress_against(w, d, &raw, limit),
            None => w.zstd.compress_to_buffer(&raw[..], &mut w.out[..limit]).ok(),
        };
        match n {
            Some(n) if n < raw.len() => Some(Bytes::copy_from_slice(&w.out[..n])),
            _ => None,
        }
    });
    match (compressed, dict) {
        (Some(stored), Some(d)) => {
            SealedChunk { id, raw, compression: Compression::ZstdDict, stored, cipher: None, dict: Some(d.clone()) }
        }
        (Some(stored), None) => {
            SealedChunk { id, raw, compression: Compression::Zstd, stored, cipher: None, dict: None }
        }
        (None, _) => {
            SealedChunk { id, stored: raw.clone(), raw, compression: Compression::Raw, cipher: None, dict: None }
        }
    }
}

/// Compress `raw` against `dict` into the worker's buffer, at most `limit` bytes. The context
/// is made once per worker and dictionary (referencing the prepared dictionary costs nothing
/// per chunk; loading it did, ~0.1 ms).
fn compress_against(w: &mut Worker, dict: &Arc<Dictionary>, raw: &[u8], limit: usize) -> Option<usize> {
    if w.dict.as_ref().is_none_or(|d| d.dict.id() != dict.id()) {
        w.dict = None; // the old context lets go of its dictionary first
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::ChecksumFlag(true)).ok()?;
        cctx.ref_cdict(dict.cdict(w.level)?).ok()?;
        w.dict = Some(DictWorker { cctx, dict: dict.clone() });
    }
    let d = w.dict.as_mut()?;
    d.cctx.compress2(&mut w.out[..limit], raw).ok()
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
/// `dict` is the pack's dictionary, needed for `ZstdDict` only. A `Dictionary` entry is stored
/// raw, and comes back as it is.
pub fn unseal(
    compression: Compression,
    stored: Vec<u8>,
    raw_len: usize,
    dict: Option<&Dictionary>,
) -> Result<Vec<u8>, CodecError> {
    match compression {
        Compression::Raw | Compression::Dictionary if stored.len() == raw_len => Ok(stored),
        Compression::Raw | Compression::Dictionary => Err(CodecError::Length { got: stored.len(), want: raw_len }),
        Compression::Zstd => decompress(&stored, raw_len),
        Compression::ZstdDict => decompress_against(&stored, raw_len, dict.ok_or(CodecError::NoDictionary)?),
    }
}

/// `unseal` for bytes that are a view of a larger read buffer (reads take an entry's header
/// and bytes, or a run of entries, in one positioned read): raw chunks come back as that very
/// view, compressed ones are decompressed from it.
pub fn unseal_bytes(
    compression: Compression,
    stored: Bytes,
    raw_len: usize,
    dict: Option<&Dictionary>,
) -> Result<Bytes, CodecError> {
    match compression {
        Compression::Raw | Compression::Dictionary if stored.len() == raw_len => Ok(stored),
        Compression::Raw | Compression::Dictionary => Err(CodecError::Length { got: stored.len(), want: raw_len }),
        Compression::Zstd => decompress(&stored, raw_len).map(Bytes::from),
        Compression::ZstdDict => {
            decompress_against(&stored, raw_len, dict.ok_or(CodecError::NoDictionary)?).map(Bytes::from)
        }
    }
}

fn decompress_against(stored: &[u8], raw_len: usize, dict: &Dictionary) -> Result<Vec<u8>, CodecError> {
    DICT_DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(DCtx::create);
        let mut out = Vec::with_capacity(raw_len);
        let n = d
            .decompress_using_ddict(&mut out, stored, dict.ddict())
            .map_err(|code| CodecError::Zstd(std::io::Error::other(zstd::zstd_safe::get_error_name(code))))?;
        if n != raw_len {
            return Err(CodecError::Length { got: n, want: raw_len });
        }
        Ok(out)
    })
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
        assert_eq!(unseal(s.compression, s.stored.to_vec(), raw.len(), None).unwrap(), raw);
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
        assert_eq!(unseal(s.compression, s.stored.to_vec(), raw.len(), None).unwrap(), raw);
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
        assert!(unseal(s.compression, s.stored.to_vec(), 9_999, None).is_err());
        assert!(unseal(Compression::Zstd, b"not zstd".to_vec(), 10, None).is_err());
    }

    /// Lines of words from a vocabulary of 2000 (the same for every seed).
    fn text(n: usize, seed: u64) -> Vec<u8> {
        let vocabulary = noise(2000 * 8, 5);
        let word = |i: usize| vocabulary[i * 8..i * 8 + 2 + i % 7].iter().map(|b| b'a' + b % 26).collect::<Vec<u8>>();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&word((x % 2000) as usize));
            out.push(if x.is_multiple_of(12) { b'\n' } else { b' ' });
        }
        out.truncate(n);
        out
    }

    #[test]
    fn a_dictionary_shrinks_text_and_round_trips_only_with_itself() {
        let dict = Dictionary::new(Bytes::from(text(crate::dictionary::DICT_LEN, 1))).unwrap();
        let raw = Bytes::from(text(64 << 10, 2));
        let plain = seal(raw.clone(), 3);
        let with = seal_with(raw.clone(), 3, Some(&dict));
        assert_eq!(with.compression, Compression::ZstdDict);
        assert!(with.stored.len() < plain.stored.len(), "{} vs {}", with.stored.len(), plain.stored.len());
        assert_eq!(with.id, plain.id);
        assert_eq!(unseal(with.compression, with.stored.to_vec(), raw.len(), Some(&dict)).unwrap(), raw);
        assert!(matches!(
            unseal(with.compression, with.stored.to_vec(), raw.len(), None),
            Err(CodecError::NoDictionary)
        ));
        // Another dictionary never yields other bytes: the frame's checksum refuses them.
        let other = Dictionary::new(Bytes::from(text(crate::dictionary::DICT_LEN, 3))).unwrap();
        assert!(unseal_bytes(with.compression, with.stored.clone(), raw.len(), Some(&other)).is_err());
        // Noise stays raw with a dictionary too.
        let noise = Bytes::from(noise(70_000, 9));
        assert_eq!(seal_with(noise, 3, Some(&dict)).compression, Compression::Raw);
    }

    /// What a worker's compression of text costs with a dictionary against without, in one
    /// process, rounds interleaved (docs/benchmarks.md, "Text stored: per-pack dictionaries").
    #[test]
    #[ignore = "a measurement: cargo test --lib -- --ignored --nocapture dictionary_compression_cost"]
    fn dictionary_compression_cost() {
        let dict = Dictionary::new(Bytes::from(text(crate::dictionary::DICT_LEN, 1))).unwrap();
        let pieces: Vec<Bytes> = (0..512).map(|s| Bytes::from(text(64 << 10, s + 2))).collect();
        let mut ratios = Vec::new();
        for round in 0..5 {
            let t = std::time::Instant::now();
            let plain: usize = pieces.iter().map(|p| seal(p.clone(), 3).stored.len()).sum();
            let plain_secs = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let with: usize = pieces.iter().map(|p| seal_with(p.clone(), 3, Some(&dict)).stored.len()).sum();
            let with_secs = t.elapsed().as_secs_f64();
            ratios.push(with_secs / plain_secs);
            eprintln!(
                "round {round}: plain {plain} B in {plain_secs:.3} s, with the dictionary {with} B in {with_secs:.3} s: \
                 time {:.2}x, bytes {:.3}",
                with_secs / plain_secs,
                with as f64 / plain as f64
            );
        }
        ratios.sort_by(f64::total_cmp);
        eprintln!("median time with / without: {:.2}x", ratios[2]);
    }
}
