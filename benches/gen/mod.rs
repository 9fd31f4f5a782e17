//! Deterministic input generators shared by the criterion benches and `examples/ingest_rss.rs`
//! (which includes this file by path): incompressible noise and compressible text-like bytes.
//!
//! Both generate in pieces, so a caller can stream gigabytes without holding them, and both are
//! fast (about 2 GB/s for noise, 600 MB/s for text) so that generation does not hide the
//! pipeline's own speed.

#![allow(dead_code)] // each includer uses a different part

/// What the bytes look like to zstd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// xorshift64 output: zstd cannot shrink it, so every chunk is stored raw.
    Noise,
    /// Words from a skewed 512-word vocabulary with punctuation and line breaks: zstd-3 on 64 KiB
    /// chunks shrinks it 3.7 times, close to the text-like data of DESIGN.md (3.6).
    Text,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Noise => "noise",
            Kind::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "noise" => Some(Kind::Noise),
            "text" => Some(Kind::Text),
            _ => None,
        }
    }
}

/// Vocabulary size, and the shift that maps a product of three 16-bit uniforms onto it.
const VOCAB: usize = 512;
const SHIFT: u32 = 39;

/// An endless deterministic byte source of one kind.
pub struct Gen {
    kind: Kind,
    x: u64,
    /// All words, back to back, each followed by its separator; `bounds[i]..bounds[i + 1]`.
    words: Vec<u8>,
    bounds: Vec<usize>,
    /// Text generated past the end of the last request, handed out first next time.
    carry: Vec<u8>,
}

fn step(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

impl Gen {
    pub fn new(kind: Kind, seed: u64) -> Self {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let (mut words, mut bounds) = (Vec::new(), vec![0]);
        if kind == Kind::Text {
            // English-ish letter frequencies, word lengths 1..=10, a few separators.
            const LETTERS: &[u8] = b"eeeeeeeeeeeetttttttttaaaaaaaaoooooooiiiiiiinnnnnnnsssssshhhhhhrrrrrrddddlllluuucccmmmwwffggyyppbbvkjxqz";
            for _ in 0..VOCAB {
                let len = 1 + (step(&mut x) % 10) as usize;
                for _ in 0..len {
                    words.push(LETTERS[(step(&mut x) % LETTERS.len() as u64) as usize]);
                }
                words.extend_from_slice(match step(&mut x) % 16 {
                    0 => b", ",
                    1 => b".\n",
                    2 => b". ",
                    _ => b" ",
                });
                bounds.push(words.len());
            }
        }
        Gen { kind, x, words, bounds, carry: Vec::new() }
    }

    /// Append exactly `n` more bytes of the stream to `out`.
    pub fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        let target = out.len() + n;
        match self.kind {
            Kind::Noise => {
                let start = out.len();
                out.resize(target, 0);
                let mut words = out[start..].chunks_exact_mut(8);
                for word in &mut words {
                    word.copy_from_slice(&step(&mut self.x).to_le_bytes());
                }
                let tail = words.into_remainder();
                tail.copy_from_slice(&step(&mut self.x).to_le_bytes()[..tail.len()]);
            }
            Kind::Text => {
                let take = self.carry.len().min(n);
                out.extend_from_slice(&self.carry[..take]);
                self.carry.drain(..take);
                let words = self.bounds.len() - 1;
                while out.len() < target {
                    // A product of uniforms: a few words are common, most are rare (Zipf-like).
                    let r = step(&mut self.x);
                    let i = (((r & 0xffff) * ((r >> 16) & 0xffff) * ((r >> 32) & 0xffff)) >> SHIFT) as usize % words;
                    out.extend_from_slice(&self.words[self.bounds[i]..self.bounds[i + 1]]);
                }
                self.carry.extend_from_slice(&out[target..]);
                out.truncate(target);
            }
        }
    }

    /// The next `n` bytes as a fresh vector.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 16);
        self.fill(&mut v, n);
        v
    }
}

/// `n` bytes of `kind`, always the same for the same seed.
pub fn generate(kind: Kind, n: usize, seed: u64) -> Vec<u8> {
    Gen::new(kind, seed).take(n)
}
