//! Chunking parameters and the cutter: any (min, avg, max) is either refused by `validate` or
//! cuts any input into chunks that cover it exactly, each at most `max`, exactly where the
//! reference `fastcdc::v2020::FastCDC` iterator cuts (clients chunk with that crate and must
//! dedup against us), and the same whether the input arrives whole or in arbitrary frames (as
//! the ingest pipeline feeds it).
//!
//! Input: 12 bytes of parameters, 1 byte choosing raw or scaled-down parameters, 1 byte of
//! frame size, then the data.
#![no_main]

use cairn::chunk::{ChunkingParams, Cutter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 14 {
        return;
    }
    let word = |i: usize| u32::from_le_bytes(data[i * 4..i * 4 + 4].try_into().unwrap());
    let (a, b, c) = (word(0), word(1), word(2));
    let scale = data[12];
    let frame = usize::from(data[13]) * 16 + 1;
    let body = &data[14..];

    // Raw words exercise `validate` over the whole u32 range; most of them are refused. Scaled
    // ones land in the smallest legal sizes, so small inputs are cut many times.
    let params = if scale & 1 == 0 {
        ChunkingParams { min: a, avg: b, max: c }
    } else {
        let min = 64 + a % 512;
        let avg = min.max(256) + b % 1024;
        let max = avg.max(1024) + c % 4096;
        ChunkingParams { min, avg, max }
    };
    let Ok(cutter) = Cutter::new(params) else {
        assert!(params.validate().is_err());
        return;
    };
    params.validate().expect("Cutter::new accepted it");

    let ours: Vec<usize> = cutter.chunks(body).map(<[u8]>::len).collect();
    assert_eq!(ours.iter().sum::<usize>(), body.len(), "chunks cover the input exactly");
    assert!(ours.iter().all(|&n| n > 0 && n <= params.max as usize), "{ours:?} with {params:?}");

    let theirs: Vec<usize> =
        fastcdc::v2020::FastCDC::new(body, params.min, params.avg, params.max).map(|c| c.length).collect();
    assert_eq!(ours, theirs, "same cuts as the reference crate with {params:?}");

    // Streaming, as the ingest cutter does: frames appended to a buffer, cut whenever decisive.
    let mut streamed = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = body.chunks(frame);
    loop {
        let next = frames.next();
        let at_end = next.is_none();
        if let Some(f) = next {
            buf.extend_from_slice(f);
        }
        while let Some(n) = cutter.next_cut(&buf, at_end) {
            assert!(n > 0 && n <= buf.len());
            streamed.push(n);
            buf.drain(..n);
        }
        if at_end {
            break;
        }
    }
    assert!(buf.is_empty());
    assert_eq!(streamed, ours, "frame size {frame} changes the cuts with {params:?}");
});
