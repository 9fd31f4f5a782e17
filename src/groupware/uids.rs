//! Which object of a collection holds which UID, for `no-uid-conflict`: kept in memory, built
//! from the collection's change feed and brought up to date from it before each DAV write, so
//! it never needs its own storage and cannot disagree with the records for long.
//!
//! Owned by `Groupware`; one mutex per collection, held across a write's check and commit.
//! Bounded: at most `MAX_COLLECTIONS` collections are kept; past that the cache starts over
//! (each index rebuilds from its feed on next use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{card, Collection, GroupwareError, Kind};
use crate::store::keys::AccountId;
use crate::sync::{Sync, SyncError, MAX_FEED};

const MAX_COLLECTIONS: usize = 4096;

/// Each collection's UIDs, by account and sync collection name.
type ByCollection = HashMap<(AccountId, String), Arc<Mutex<Uids>>>;

#[derive(Clone, Default)]
pub struct UidIndex {
    collections: Arc<Mutex<ByCollection>>,
}

impl UidIndex {
    pub fn of(&self, account: AccountId, sync_name: &str) -> Arc<Mutex<Uids>> {
        let mut all = self.collections.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= MAX_COLLECTIONS && !all.contains_key(&(account, sync_name.to_string())) {
            all.clear();
        }
        all.entry((account, sync_name.to_string())).or_default().clone()
    }
}

/// One collection's UIDs as of feed position `seq`.
#[derive(Default)]
pub struct Uids {
    seq: u64,
    holder: HashMap<String, String>,
    uid_of: HashMap<String, String>,
}

impl Uids {
    pub fn holder(&self, uid: &str) -> Option<&str> {
        self.holder.get(uid).map(String::as_str)
    }

    /// Read the feed since the last look. A purge since then (the feed answers "resync")
    /// starts the index over.
    pub fn refresh(&mut self, sync: &Sync, account: &AccountId, c: &Collection) -> Result<(), GroupwareError> {
        loop {
            let feed = match sync.feed(account, &c.sync_name, self.seq, MAX_FEED) {
                Err(SyncError::ResyncRequired) => {
                    *self = Uids::default();
                    continue;
                }
                other => other?,
            };
            for v in &feed.records {
                if let Some(old) = self.uid_of.remove(&v.id) {
                    self.holder.remove(&old);
                }
                let text = v.payload.as_deref().and_then(|p| super::object_text(c.kind, p));
                if let Some(uid) = text.as_deref().and_then(|t| uid_in(c.kind, t)) {
                    self.holder.insert(uid.clone(), v.id.clone());
                    self.uid_of.insert(v.id.clone(), uid);
                }
            }
            self.seq = feed.next.max(self.seq);
            if !feed.more {
                return Ok(());
            }
        }
    }
}

fn uid_in(kind: Kind, text: &str) -> Option<String> {
    match kind {
        Kind::Contacts => card::parse(text).ok()?.uid,
        Kind::Calendar => super::event::parse(text).ok().map(|o| o.uid),
    }
}
