//! The engine's error type. The HTTP layer maps each variant to a status and JSON body in one
//! place (`http::error`); nothing below it knows about HTTP.

use crate::chunk::ChunkId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] rocksdb::Error),
    /// Stored bytes or records that fail their checks. Never returned as data.
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("chunk {0} is not in the index")]
    MissingChunk(ChunkId),
    /// The client's body ended with an error (disconnect, bad chunked encoding).
    #[error("request body: {0}")]
    Body(String),
    /// A chunk was refused by the caller's admission check (quota, size).
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("the body hashes to {actual}, not {expected}")]
    HashMismatch { expected: ChunkId, actual: ChunkId },
    /// The account was deleted while this write was under way.
    #[error("the account no longer exists")]
    AccountGone,
}

/// Why the caller of an ingest stopped it at a chunk; carried back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("quota exceeded: {used} of {limit} bytes used")]
    Quota { used: u64, limit: u64 },
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

impl Error {
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt(what.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
