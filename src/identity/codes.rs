//! Verification codes: 6 digits, single use, dead after their TTL or after too many wrong tries;
//! a new code for the same identifier and purpose replaces the older one (same key).
//!
//! Callers hold the identifier's lock stripe around `check` and the batch that `consume`s, so
//! that two requests can never both spend one code or both spend the last try.
//!
//! Flows check codes through `Inner::verify_code`, never `Codes::check` alone: besides the
//! tries of one code, wrong codes count toward the identifier's and the address's limits
//! (`code_failures_*`), which outlive the code, its replacements and a restart. Without them
//! an identifier could be guessed at 25 times per send window, every window, all day.

use std::net::IpAddr;

use rand::Rng;
use rocksdb::WriteBatch;
use subtle::ConstantTimeEq;

use super::error::{IdentityError, Result};
use super::secrets::Secrets;
use super::Inner;
use crate::store::identity_keys::{self as ik, CodeRecord, HexBytes};
use crate::store::{Db, CF_CODES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Register,
    ResetPassword,
    ChangeDetails,
    DeleteAccount,
}

impl Purpose {
    pub const ALL: [Purpose; 4] =
        [Purpose::Register, Purpose::ResetPassword, Purpose::ChangeDetails, Purpose::DeleteAccount];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::ResetPassword => "reset_password",
            Purpose::ChangeDetails => "change_details",
            Purpose::DeleteAccount => "delete_account",
        }
    }

    /// Its byte in the `codes` key. Stable: stored.
    pub fn tag(self) -> u8 {
        match self {
            Purpose::Register => 1,
            Purpose::ResetPassword => 2,
            Purpose::ChangeDetails => 3,
            Purpose::DeleteAccount => 4,
        }
    }

    /// Purposes that prove an identifier nobody has signed in with yet; the others are asked
    /// for by a signed-in account and go to its own identifier.
    pub fn is_anonymous(self) -> bool {
        matches!(self, Purpose::Register | Purpose::ResetPassword)
    }
}

/// Uniform over 000000..=999999, from the OS generator.
pub fn generate() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
}

pub struct Codes<'a> {
    pub db: &'a Db,
    pub secrets: &'a Secrets,
    /// Unix milliseconds: a 10-minute code lives 10 minutes, not 9 and a fraction.
    pub now_ms: u64,
}

impl Codes<'_> {
    /// Store a fresh code (replacing any older one) durably, and return it for sending.
    pub fn issue(&self, id_hash: &[u8; 32], purpose: Purpose, ttl_secs: u64, tries: u32) -> Result<String> {
        let code = generate();
        let rec = CodeRecord {
            hash: HexBytes(self.secrets.code_hash(id_hash, purpose.tag(), &code).to_vec()),
            expires_at_ms: self.now_ms.saturating_add(ttl_secs.saturating_mul(1000)),
            tries_left: tries,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_CODES), ik::code_key(id_hash, purpose.tag()), ik::encode_code(&rec));
        self.db.commit(batch)?;
        Ok(code)
    }

    /// Whether `code` is the live code. A wrong guess uses up a try (durably, before the
    /// answer); a dead code is removed. A right code is left in place: the caller consumes it
    /// in the same batch as the change it authorizes, or leaves it for a retry if the request
    /// fails for another reason.
    pub fn check(&self, id_hash: &[u8; 32], purpose: Purpose, code: &str) -> Result<bool> {
        let key = ik::code_key(id_hash, purpose.tag());
        let Some(raw) = self.db.get(CF_CODES, &key)? else {
            return Ok(false);
        };
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_CODES);
        let rec = match ik::decode_code(&raw) {
            Some(r) if r.expires_at_ms > self.now_ms && r.tries_left > 0 => r,
            _ => {
                batch.delete_cf(cf, key);
                self.db.commit(batch)?;
                return Ok(false);
            }
        };
        let given = self.secrets.code_hash(id_hash, purpose.tag(), code);
        if bool::from(given.as_slice().ct_eq(&rec.hash.0)) {
            return Ok(true);
        }
        let tries_left = rec.tries_left - 1;
        if tries_left == 0 {
            batch.delete_cf(cf, key);
        } else {
            batch.put_cf(cf, key, ik::encode_code(&CodeRecord { tries_left, ..rec }));
        }
        self.db.commit(batch)?;
        Ok(false)
    }
}

impl Inner {
    /// `BadCode` unless `code` is the identifier's live code for `purpose`; `RateLimited`,
    /// without looking at the code, once the identifier or the address has used up its wrong
    /// codes. The check is counted before it is made and given back if the code is right.
    /// The caller holds the identifier's lock stripe; the code is not spent.
    pub(super) fn verify_code(&self, id_hash: &[u8; 32], purpose: Purpose, code: &str, ip: IpAddr) -> Result<()> {
        let attempt = self.code_failures.begin(id_hash, ip)?;
        if self.codes().check(id_hash, purpose, code)? {
            self.code_failures.succeeded(attempt);
            return Ok(());
        }
        // Unsynced, like every stored failure: a crash of the process keeps it (the WAL is
        // written before this returns), a power loss may not (docs/decisions.md, "Rate limits").
        let mut batch = WriteBatch::default();
        self.code_failures.failed(self.db(), &mut batch, attempt);
        self.db().write_unsynced(batch)?;
        Err(IdentityError::BadCode)
    }
}

pub fn consume(db: &Db, batch: &mut WriteBatch, id_hash: &[u8; 32], purpose: Purpose) {
    batch.delete_cf(db.cf(CF_CODES), ik::code_key(id_hash, purpose.tag()));
}

/// Every code of an identifier, whatever its purpose (account deletion).
pub fn forget_all(db: &Db, batch: &mut WriteBatch, id_hash: &[u8; 32]) {
    for p in Purpose::ALL {
        consume(db, batch, id_hash, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..200 {
            let c = generate();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn purposes_parse_back() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(Purpose::parse("Register"), None);
    }
}
