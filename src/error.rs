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
    /// The data directory's file system is (nearly) full: uploads stop until space is given
    /// back, while reads, deletes and GC go on.
    #[error("the disk is full (uploads keep {reserve} bytes free)")]
    DiskFull { reserve: u64 },
    /// A bug or a panic inside the server (a blocking task that died, say): not the data's
    /// fault, so not `Corrupt`, which sends operators to fsck.
    #[error("internal: {0}")]
    Internal(String),
    /// The object store holding the packs did not answer, or answered with an error (5xx,
    /// throttling, a timeout, refused credentials), after its retries: nothing is wrong with
    /// the data, and the same request may succeed later.
    #[error("the object store is unavailable: {0}")]
    Unavailable(String),
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

    /// Out of disk space, said by our own reserve or by the kernel (ENOSPC, EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::Io(e) => matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
            Error::Db(e) => e.to_string().contains("No space left on device"),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
