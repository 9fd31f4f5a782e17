//! Codes, sign-up and password reset: the flows that start from an identifier alone.
//!
//! None of them may tell a stranger whether an account exists. Sending a code never looks the
//! identifier up (a register code is sent also to an existing account, a reset code also to
//! an identifier without one), and sign-up and reset do the same Argon2 work whether or not
//! the account exists; only the owner of the identifier, holding a valid code, learns the
//! difference (`409` on sign-up, `403` on reset).

use std::net::IpAddr;

use rocksdb::WriteBatch;
use time::OffsetDateTime;

use super::activity::EventKind;
use super::codes::{self, Purpose};
use super::error::{IdentityError, Result};
use super::identifiers::Identifier;
use super::limits::ip_key;
use super::notify::Message;
use super::password;
use super::profile::check_nickname;
use super::sessions::Session;
use super::Identity;
use crate::quota::FREE_PLAN;
use crate::store::identity_keys::{self as ik, AccountRecord, HexBytes, Profile};
use crate::store::keys::AccountId;
use crate::store::{CF_ACCOUNTS, CF_IDENTIFIERS};

pub struct Registration {
    pub identifier: String,
    pub password: String,
    pub code: String,
    pub nickname: Option<String>,
}

impl Identity {
    /// `register` or `reset_password`, to an identifier given in the clear.
    pub async fn send_code(&self, identifier: &str, purpose: Purpose, ip: IpAddr) -> Result<()> {
        if !purpose.is_anonymous() {
            return Err(IdentityError::BadPurpose("a signed-in session"));
        }
        let id = Identifier::parse("identifier", identifier)?;
        self.issue_and_send(id, purpose, ip).await
    }

    /// `change_details` or `delete_account`, to the signed-in account's own identifier.
    pub async fn send_account_code(&self, s: &Session, purpose: Purpose, ip: IpAddr) -> Result<()> {
        if purpose.is_anonymous() {
            return Err(IdentityError::BadPurpose("an identifier"));
        }
        let account = s.account;
        let (_, id) = self.blocking(move |i| i.account_with_identifier(&account)).await?;
        self.issue_and_send(id, purpose, ip).await
    }

    /// Every send counts toward the identifier's and the address's limits, whatever its
    /// purpose; a refused send counts toward neither.
    async fn issue_and_send(&self, id: Identifier, purpose: Purpose, ip: IpAddr) -> Result<()> {
        let i = &self.inner;
        let id_hash = i.secrets.lookup(&id);
        let ip_key = ip_key(ip);
        // Counted on the address first, in the check's own lock (a check here and a count
        // after let parallel sends pass together), and given back if the identifier refuses.
        let by_ip = i.sends_by_ip.reserve(&ip_key).map_err(|w| IdentityError::RateLimited { retry_after: w.0 })?;
        if let Err(w) = i.sends_by_identifier.acquire(&id_hash) {
            i.sends_by_ip.release(by_ip);
            return Err(IdentityError::RateLimited { retry_after: w.0 });
        }
        drop(by_ip);
        let (ttl, tries) = (i.config.code_ttl_secs, i.config.code_max_tries);
        let code = self
            .blocking(move |i| {
                let _held = i.lock(&id_hash);
                i.codes().issue(&id_hash, purpose, ttl, tries)
            })
            .await?;
        let at = OffsetDateTime::from_unix_timestamp(i.now_secs() as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let msg = Message { to: id, purpose, code, at, valid_minutes: ttl.div_ceil(60) };
        i.notifier.send(msg).await
    }

    /// A wrong code first (`403`), then the password (`400`, the code stays usable), then a
    /// taken identifier (`409`).
    pub async fn register(&self, r: Registration, ip: IpAddr) -> Result<AccountId> {
        let id = Identifier::parse("identifier", &r.identifier)?;
        let id_hash = self.inner.secrets.lookup(&id);
        self.check_code(id_hash, Purpose::Register, r.code.clone(), ip).await?;
        password::check_strength(&r.password)?;
        let nickname = r.nickname.as_deref().map(check_nickname).transpose()?;
        let phc = self.inner.hashers.hash(r.password).await?;
        self.blocking(move |i| {
            let _held = i.lock(&id_hash);
            // Again under the lock: between the checks a concurrent request may have spent it.
            i.verify_code(&id_hash, Purpose::Register, &r.code, ip)?;
            if i.account_by_hash(&id_hash)?.is_some() {
                return Err(IdentityError::IdentifierTaken);
            }
            let account = AccountId::random();
            let rec = AccountRecord {
                id_hash: HexBytes(id_hash.to_vec()),
                identifier: HexBytes(i.secrets.seal(&id)),
                password: phc,
                plan: FREE_PLAN.to_string(),
                created_at: i.now_secs() as i64,
                profile: Profile { nickname, ..Profile::default() },
            };
            let mut batch = WriteBatch::default();
            batch.put_cf(i.db().cf(CF_ACCOUNTS), ik::account_key(&account), ik::encode_account(&rec));
            batch.put_cf(i.db().cf(CF_IDENTIFIERS), ik::identifier_key(&id_hash), account.0);
            codes::consume(i.db(), &mut batch, &id_hash, Purpose::Register);
            i.record_event(&mut batch, &account, EventKind::AccountCreated, ip, None)?;
            i.db().commit(batch)?;
            Ok(account)
        })
        .await
    }

    /// A valid code and a new password end every session of the account. Without an account
    /// the same work is done and the code answers as wrong.
    pub async fn reset_password(&self, identifier: &str, code: String, new_password: String, ip: IpAddr) -> Result<()> {
        let id = Identifier::parse("identifier", identifier)?;
        let id_hash = self.inner.secrets.lookup(&id);
        self.check_code(id_hash, Purpose::ResetPassword, code.clone(), ip).await?;
        password::check_strength(&new_password)?;
        let phc = self.inner.hashers.hash(new_password).await?;
        self.blocking(move |i| {
            let _held = i.lock(&id_hash);
            i.verify_code(&id_hash, Purpose::ResetPassword, &code, ip)?;
            let mut batch = WriteBatch::default();
            codes::consume(i.db(), &mut batch, &id_hash, Purpose::ResetPassword);
            let Some((account, mut rec)) = i.account_by_hash(&id_hash)? else {
                i.db().commit(batch)?;
                return Err(IdentityError::BadCode);
            };
            rec.password = phc;
            batch.put_cf(i.db().cf(CF_ACCOUNTS), ik::account_key(&account), ik::encode_account(&rec));
            i.revoke_devices(&mut batch, &account, None)?;
            i.record_event(&mut batch, &account, EventKind::PasswordReset, ip, None)?;
            i.db().commit(batch)?;
            Ok(())
        })
        .await
    }

    /// `BadCode` unless `code` is the identifier's live code for `purpose` (a wrong one uses
    /// up a try, and counts toward the wrong-code limits). Does not spend it.
    async fn check_code(&self, id_hash: [u8; 32], purpose: Purpose, code: String, ip: IpAddr) -> Result<()> {
        self.blocking(move |i| {
            let _held = i.lock(&id_hash);
            i.verify_code(&id_hash, purpose, &code, ip)
        })
        .await
    }
}
