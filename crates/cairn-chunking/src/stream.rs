//! Cutting a byte stream of any length with memory bounded by one read window plus one largest
//! chunk: how a client chunks a file it must never hold whole.

use std::io::{self, Read};

use crate::{ChunkId, Cutter};

/// Bytes read from the source at a time, beyond the largest chunk kept in the window.
const READ_SIZE: usize = 1 << 20;

/// One chunk of a stream: where it starts and its bytes (borrowed until the next call).
pub struct StreamChunk<'a> {
    pub offset: u64,
    pub data: &'a [u8],
}

impl StreamChunk<'_> {
    pub fn id(&self) -> ChunkId {
        ChunkId::of(self.data)
    }
}

/// Yields the chunks of `reader` exactly as [`Cutter::chunks`] would cut the whole input.
pub struct ChunkStream<R> {
    reader: R,
    cutter: Cutter,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    offset: u64,
}

impl<R: Read> ChunkStream<R> {
    pub fn new(reader: R, cutter: Cutter) -> Self {
        let cap = cutter.params().max as usize + READ_SIZE;
        ChunkStream { reader, cutter, buf: vec![0; cap], start: 0, end: 0, eof: false, offset: 0 }
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> io::Result<Option<StreamChunk<'_>>> {
        loop {
            if let Some(n) = self.cutter.next_cut(&self.buf[self.start..self.end], self.eof) {
                let at = self.start;
                self.start += n;
                let offset = self.offset;
                self.offset += n as u64;
                return Ok(Some(StreamChunk { offset, data: &self.buf[at..at + n] }));
            }
            if self.eof {
                return Ok(None);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkingParams;

    /// A reader that hands out at most `step` bytes per call, to prove reads never move a cut.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn cuts_like_the_whole_buffer_whatever_the_reads() {
        let mut x = 99u64;
        let data: Vec<u8> = (0..(5 << 20) + 123)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let cutter = Cutter::new(ChunkingParams::default()).unwrap();
        let whole: Vec<(usize, ChunkId)> = cutter.chunks(&data).map(|c| (c.len(), ChunkId::of(c))).collect();
        for step in [1000, 65_536, 3 << 20] {
            let mut s = ChunkStream::new(Trickle { data: &data, step }, cutter.clone());
            let mut got = Vec::new();
            let mut expect_offset = 0u64;
            while let Some(c) = s.next_chunk().unwrap() {
                assert_eq!(c.offset, expect_offset);
                expect_offset += c.data.len() as u64;
                got.push((c.data.len(), c.id()));
            }
            assert_eq!(got, whole, "step {step}");
        }
        let mut empty = ChunkStream::new(&[][..], cutter);
        assert!(empty.next_chunk().unwrap().is_none());
    }
}
