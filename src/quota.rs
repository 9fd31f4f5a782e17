//! Quota: plans, and the charges of uploads still in progress.
//!
//! `used` in the database is what committed writes hold. An upload in progress also holds a
//! reservation for each new chunk it has brought (one the account does not hold yet), taken
//! before the chunk is stored; the first chunk that would take `used + reserved` past the limit
//! ends the upload with 507. The commit then checks `used` again under the account's lock,
//! so however many uploads run at once, `used` never passes the limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::chunk::ChunkId;
use crate::engine::{Admit, Engine};
use crate::error::Refusal;
use crate::store::keys::AccountId;

/// What one item costs besides its content: kept with the account transaction that charges it.
pub use crate::engine::{item_cost, ITEM_BYTES, MAX_ITEM_COST};

pub use crate::store::identity_keys::FREE_PLAN;
/// The free plan's quota unless configuration says otherwise: 5 GiB.
pub const FREE_BYTES: u64 = 5 * (1 << 30);

/// An account's new plan and its limit: `PUT /admin/accounts/{id}/plan`'s answer and
/// `cairn plan`'s report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanChange {
    pub plan: String,
    pub limit: u64,
}

/// Plan names to limits, from configuration.
#[derive(Clone, Debug)]
pub struct Plans(pub BTreeMap<String, u64>);

impl Plans {
    pub fn limit(&self, plan: &str) -> Option<u64> {
        self.0.get(plan).copied()
    }

    /// An account on a plan that configuration no longer lists keeps working read-only-free:
    /// it gets the free plan's limit rather than none.
    pub fn limit_or_free(&self, plan: &str) -> u64 {
        self.limit(plan).or_else(|| self.limit(FREE_PLAN)).unwrap_or(FREE_BYTES)
    }
}

/// Bytes reserved by uploads in progress, per account. std Mutex: held for a map update only.
#[derive(Default)]
pub struct Reservations {
    held: Mutex<HashMap<AccountId, u64>>,
}

impl Reservations {
    fn try_reserve(&self, account: AccountId, bytes: u64, used: u64, limit: u64) -> Result<(), Refusal> {
        let mut held = self.held.lock().expect("reservations poisoned");
        let reserved = held.entry(account).or_insert(0);
        if used.saturating_add(*reserved).saturating_add(bytes) > limit {
            let used_now = used.saturating_add(*reserved);
            if *reserved == 0 {
                held.remove(&account);
            }
            return Err(Refusal::Quota { used: used_now, limit });
        }
        *reserved += bytes;
        Ok(())
    }

    fn release(&self, account: AccountId, bytes: u64) {
        let mut held = self.held.lock().expect("reservations poisoned");
        if let Some(r) = held.get_mut(&account) {
            *r = r.saturating_sub(bytes);
            if *r == 0 {
                held.remove(&account);
            }
        }
    }

    pub fn reserved(&self, account: &AccountId) -> u64 {
        self.held.lock().expect("reservations poisoned").get(account).copied().unwrap_or(0)
    }
}

/// Gives room back to an account that would otherwise be refused: the drive purges the
/// trash and old versions (`drive::history::Room`). Returns the bytes freed. Blocking.
pub trait Reclaim: Send + Sync {
    fn reclaim(&self, account: &AccountId, need: u64) -> crate::error::Result<u64>;
}

/// The quota side of one upload. Clone it into the ingest and keep one until the commit: the
/// reservation is released when the last clone goes.
#[derive(Clone)]
pub struct Charge(Arc<ChargeState>);

struct ChargeState {
    engine: Engine,
    reservations: Arc<Reservations>,
    account: AccountId,
    limit: u64,
    held: Mutex<u64>,
    /// Asked for room before a chunk is refused; `None`: refuse at once.
    reclaim: Option<Arc<dyn Reclaim>>,
}

impl Charge {
    pub fn new(engine: Engine, reservations: Arc<Reservations>, account: AccountId, limit: u64) -> Self {
        Charge(Arc::new(ChargeState { engine, reservations, account, limit, held: Mutex::new(0), reclaim: None }))
    }

    /// A charge that asks `reclaim` for room before it refuses.
    pub fn reclaiming(
        engine: Engine,
        reservations: Arc<Reservations>,
        account: AccountId,
        limit: u64,
        reclaim: Arc<dyn Reclaim>,
    ) -> Self {
        let held = Mutex::new(0);
        Charge(Arc::new(ChargeState { engine, reservations, account, limit, held, reclaim: Some(reclaim) }))
    }
}

impl Admit for Charge {
    fn admit(&mut self, id: &ChunkId, raw_len: u32) -> crate::error::Result<()> {
        let s = &self.0;
        if s.engine.holds(&s.account, &[*id])?[0] {
            return Ok(()); // a chunk the account already holds costs nothing
        }
        let used = s.engine.usage(&s.account)?.used;
        let bytes = u64::from(raw_len);
        match s.reservations.try_reserve(s.account, bytes, used, s.limit) {
            Ok(()) => {}
            Err(Refusal::Quota { used: held_now, limit }) => {
                let need = (held_now + bytes).saturating_sub(limit);
                let freed = match &s.reclaim {
                    Some(r) => r.reclaim(&s.account, need)?,
                    None => 0,
                };
                if freed == 0 {
                    return Err(Refusal::Quota { used: held_now, limit }.into());
                }
                let used = s.engine.usage(&s.account)?.used;
                s.reservations.try_reserve(s.account, bytes, used, s.limit)?;
            }
            Err(other) => return Err(other.into()),
        }
        *s.held.lock().expect("charge poisoned") += u64::from(raw_len);
        Ok(())
    }
}

impl Drop for ChargeState {
    fn drop(&mut self) {
        let held = *self.held.get_mut().expect("charge poisoned");
        self.reservations.release(self.account, held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_release() {
        let r = Reservations::default();
        let a = AccountId([1; 16]);
        r.try_reserve(a, 60, 30, 100).unwrap();
        assert_eq!(r.try_reserve(a, 11, 30, 100), Err(Refusal::Quota { used: 90, limit: 100 }));
        r.try_reserve(a, 10, 30, 100).unwrap();
        r.release(a, 70);
        assert_eq!(r.reserved(&a), 0);
    }

    #[test]
    fn unknown_plans_fall_back_to_free() {
        let plans = Plans([("free".to_string(), 5), ("pro".to_string(), 50)].into());
        assert_eq!(plans.limit_or_free("pro"), 50);
        assert_eq!(plans.limit_or_free("gone"), 5);
    }
}
