//! Where packs live, as the engine, GC and fsck see them: the one interface they use, so that
//! another home for sealed packs (object storage, where a server keeps its open packs and a
//! cache of ranges on local disk) is a new implementation, not a change to GC or fsck.
//! `Packs` keeps them on local disk. Nothing outside `pack/` names a pack file or computes a
//! pack's layout from format constants.
//!
//! Invariants every implementation keeps: a pack is immutable once sealed; an append is
//! readable at once and durable once `sync` returns; `quiet` packs take no more appends and
//! have no entry waiting to be indexed, so GC and fsck may judge them from the index; `table`
//! and `verify` read a pack without the index (the index can be rebuilt from them).
//!
//! Sealing (encryption at rest) happens below this interface: what goes in and comes out is
//! a chunk's stored (compressed) form in the clear; a store seals entries and tables under its
//! current data key and opens them on the way out. A sealed entry that fails authentication
//! is a `Corrupt` error like any other damage, never data.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::format::{EntryInfo, ENTRY_HEADER_LEN, HEADER_LEN, TABLE_RECORD_LEN, TRAILER_LEN};
use super::{Appended, Lane, LaneDicts, SealedPack};
use crate::codec::SealedChunk;
use crate::dictionary::Dictionary;
use crate::error::Result;

pub trait PackStore: Send + Sync {
    /// Append one chunk to the lane's open pack (rolling to a new one past the target size).
    /// Returns the pack this sealed, if any, for the caller to record.
    fn append(&self, lane: Lane, chunk: &SealedChunk) -> Result<(Appended, Option<SealedPack>)>;
    /// Make an append durable.
    fn sync(&self, a: &Appended) -> Result<()>;
    /// The appender is done with these entries: indexed, or abandoned as dead bytes.
    fn settle(&self, done: &[Appended]);
    /// Sealed packs with no entry waiting to be indexed.
    fn quiet(&self) -> Result<Vec<u64>>;
    /// Seal one lane's open pack now, if it has one.
    fn seal_lane(&self, lane: Lane) -> Result<Option<SealedPack>>;
    /// Seal the open packs idle for `idle`; what was sealed comes back with the first error.
    fn seal_if_idle(&self, idle: Duration) -> (Vec<SealedPack>, Result<()>);
    /// Seal everything open and drop what is not needed (clean shutdown).
    fn close(&self) -> (Vec<SealedPack>, Result<()>);
    /// Every pack there is, sealed or not, by id.
    fn list(&self) -> Result<Vec<u64>>;
    /// Bytes a pack takes where it is stored.
    fn size(&self, pack_id: u64) -> Result<u64>;
    /// A sealed pack's own table of entries (its seal checked), without reading the entries.
    fn table(&self, pack_id: u64) -> Result<Vec<EntryInfo>>;
    /// Read every entry of a pack and check it; entries that fail go to `bad` with the reason.
    /// Returns the entries that verify and where the verified prefix ends.
    fn verify(&self, pack_id: u64, bad: &mut dyn FnMut(EntryInfo, String)) -> Result<(Vec<EntryInfo>, u64)>;
    /// One entry's stored (compressed) bytes, checked against its entry header.
    fn read_stored(&self, pack_id: u64, want: &EntryInfo) -> Result<Bytes>;
    /// Entries that lie back to back in one pack, in one read.
    fn read_stored_run(&self, pack_id: u64, run: &[EntryInfo]) -> Result<Vec<Bytes>>;
    /// One chunk, decompressed and (if `verify`) checked against its id.
    fn read_chunk(&self, pack_id: u64, want: &EntryInfo, verify: bool) -> Result<Bytes>;
    /// Delete a pack (compaction moved its live entries out first).
    fn remove(&self, pack_id: u64) -> Result<()>;
    /// Which data keys a sealed pack uses (its table says).
    fn keys_of(&self, pack_id: u64) -> Result<PackKeys>;
    /// Whether a sealed pack should be rewritten for its keys' sake: plaintext, or sealed
    /// under a key that is no longer current (never, while sealing is off).
    fn stale(&self, pack_id: u64) -> Result<bool>;
    /// An entry read out for compaction: opened, verified, in a form `append` takes.
    fn copy_out(&self, pack_id: u64, e: &EntryInfo) -> Result<SealedChunk>;
    /// Make a new data key current at once; returns its id and the packs sealed to that end.
    fn rotate_key(&self) -> Result<(u32, Vec<SealedPack>)>;
    /// Drop every data key no pack uses (but the current one); returns those dropped.
    fn retire_keys(&self) -> Result<Vec<u32>>;
    /// The pack's dictionary (its first entry), checked against its id; loaded once and kept
    /// in a bounded cache. Tag 2 entries need it.
    fn dictionary(&self, pack_id: u64) -> Result<Arc<Dictionary>>;
    /// The lanes' dictionaries, which ingest's workers compress against (`pack::dicts`).
    fn dictionaries(&self) -> Arc<LaneDicts>;
}

/// The data keys of one pack. `table: None` is a plaintext (version 1) pack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackKeys {
    pub table: Option<u32>,
    pub entries: BTreeSet<u32>,
}

/// Bytes an entry takes in its pack: its header and stored bytes.
pub fn stored_cost(e: &EntryInfo) -> u64 {
    ENTRY_HEADER_LEN as u64 + u64::from(e.stored_len)
}

/// Bytes of a sealed pack of `entries` entries that are not entries: header, table, trailer,
/// and the table's authentication tag. A plaintext (version 1) table has no tag, so this is 16
/// bytes high for it: a whole plaintext pack then has a live share just over 1, which is as
/// good as 1 (no entry is as small as 16 bytes, so no dead entry can hide in them).
pub fn overhead(entries: u32) -> u64 {
    (HEADER_LEN + TRAILER_LEN + super::sealed::TAG_LEN) as u64 + u64::from(entries) * TABLE_RECORD_LEN as u64
}
