//! Content-defined chunking (FastCDC 2020) and chunk identity (BLAKE3).
//!
//! The code lives in the workspace crate `cairn-chunking` so that the `cairn-drive` client cuts
//! exactly where the server cuts without compiling the server; this module re-exports it under
//! the path the rest of the server has always used.

pub use cairn_chunking::{BadHash, BadParams, ChunkId, ChunkingParams, Cutter, ALGORITHM};
