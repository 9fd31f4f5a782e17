//! Figures for operators: how much users store, and what it costs on disk.

use rocksdb::IteratorMode;
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::error::Result;
use crate::store::keys;
use crate::store::{CF_ACCOUNTS, CF_CHUNKS, CF_USAGE};

/// `GET /admin/stats`'s answer and `cairn stats`'s report, either way.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub accounts: u64,
    pub chunks: u64,
    pub packs: u64,
    /// Sum of every account's `used`: what users are charged for.
    pub logical_bytes: u64,
    /// Bytes of pack files on disk: what it costs after dedup and compression.
    pub stored_bytes: u64,
}

impl Engine {
    /// Counts by full scans of small column families; fine at operator frequency. Blocking.
    pub fn stats(&self) -> Result<Stats> {
        let db = self.db();
        let count = |cf| -> Result<u64> {
            let mut n = 0;
            for item in db.raw().iterator_cf(db.cf(cf), IteratorMode::Start) {
                if !item?.1.is_empty() {
                    n += 1;
                }
            }
            Ok(n)
        };
        let mut logical = 0;
        for item in db.raw().iterator_cf(db.cf(CF_USAGE), IteratorMode::Start) {
            logical += keys::decode_usage(&item?.1).map_or(0, |u| u.used);
        }
        let packs = self.packs().list()?;
        let mut stored = 0;
        for p in &packs {
            stored += self.packs().size(*p).unwrap_or(0);
        }
        Ok(Stats {
            accounts: count(CF_ACCOUNTS)?,
            chunks: count(CF_CHUNKS)?,
            packs: packs.len() as u64,
            logical_bytes: logical,
            stored_bytes: stored,
        })
    }
}
