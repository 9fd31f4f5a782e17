//! Reading accounts, and the password change of a signed-in user.

use std::net::IpAddr;

use rocksdb::WriteBatch;

use super::activity::EventKind;
use super::codes::{self, Purpose};
use super::error::{IdentityError, Result};
use super::identifiers::Identifier;
use super::password;
use super::sessions::Session;
use super::{id_hash_of, Identity, Inner};
use crate::store::identity_keys::{self as ik, AccountRecord};
use crate::store::keys::AccountId;
use crate::store::{CF_ACCOUNTS, CF_IDENTIFIERS};

impl Inner {
    pub(super) fn account(&self, a: &AccountId) -> Result<Option<AccountRecord>> {
        match self.db().get(CF_ACCOUNTS, &ik::account_key(a))? {
            None => Ok(None),
            Some(v) => ik::decode_account(&v)
                .map(Some)
                .ok_or_else(|| crate::error::Error::corrupt(format!("account record of {a} is unreadable")).into()),
        }
    }

    /// The account that signs in with this identifier, if any.
    pub(super) fn account_by_hash(&self, id_hash: &[u8; 32]) -> Result<Option<(AccountId, AccountRecord)>> {
        let Some(v) = self.db().get(CF_IDENTIFIERS, &ik::identifier_key(id_hash))? else {
            return Ok(None);
        };
        let a = ik::decode_account_id(&v)
            .ok_or_else(|| crate::error::Error::corrupt("an identifier index entry is unreadable"))?;
        Ok(self.account(&a)?.map(|r| (a, r)))
    }

    /// The account and its identifier in the clear (for sending it a code, or showing it).
    pub(super) fn account_with_identifier(&self, a: &AccountId) -> Result<(AccountRecord, Identifier)> {
        let rec = self.account(a)?.ok_or(IdentityError::NotFound)?;
        let id = self
            .secrets
            .open(&rec.identifier.0)
            .ok_or_else(|| IdentityError::Internal(format!("the identifier of account {a} does not unseal")))?;
        Ok((rec, id))
    }
}

pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
    pub code: String,
}

impl Identity {
    /// Needs the current password (a wrong one counts as a failed login, and is counted before
    /// it is checked), a `change_details` code, and a new password of the allowed length. Ends
    /// every other session.
    pub async fn change_password(&self, s: &Session, change: PasswordChange, ip: IpAddr) -> Result<()> {
        let account = s.account;
        let (rec, _) = self.blocking(move |i| i.account_with_identifier(&account)).await?;
        let id_hash = id_hash_of(&rec.id_hash.0)?;
        let attempt = self.inner.login_failures.begin(&id_hash, ip)?;
        let verified = rec.password;
        if !self.inner.hashers.verify(change.current_password, Some(verified.clone())).await? {
            return self
                .blocking(move |i| {
                    let mut batch = WriteBatch::default();
                    i.login_failures.failed(i.db(), &mut batch, attempt);
                    i.db().write_unsynced(batch)?;
                    Err(IdentityError::WrongPassword)
                })
                .await;
        }
        self.inner.login_failures.succeeded(attempt);
        password::check_strength(&change.new_password)?;
        let phc = self.inner.hashers.hash(change.new_password).await?;
        let session = s.clone();
        self.blocking(move |i| i.finish_password_change(&session, &id_hash, &verified, phc, &change.code, ip)).await
    }
}

impl Inner {
    /// The end of a password change, under the identifier's lock. The password proven at its
    /// start (`verified`, the PHC string it was checked against) must still be the account's:
    /// a reset or another change meanwhile ended this session, and must not be overwritten by
    /// it. Then the code, then the new hash (`new_phc`) replaces the old one.
    fn finish_password_change(
        &self,
        session: &Session,
        id_hash: &[u8; 32],
        verified: &str,
        new_phc: String,
        code: &str,
        ip: IpAddr,
    ) -> Result<()> {
        let _held = self.lock(id_hash);
        let mut rec = self.account(&session.account)?.ok_or(IdentityError::NotFound)?;
        if rec.password != verified {
            return Err(IdentityError::WrongPassword);
        }
        self.verify_code(id_hash, Purpose::ChangeDetails, code, ip)?;
        rec.password = new_phc;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db().cf(CF_ACCOUNTS), ik::account_key(&session.account), ik::encode_account(&rec));
        codes::consume(self.db(), &mut batch, id_hash, Purpose::ChangeDetails);
        self.revoke_devices(&mut batch, &session.account, Some(session.device_id))?;
        let device = self.event_device(&session.account, &session.device_id)?;
        self.record_event(&mut batch, &session.account, EventKind::PasswordChanged, ip, device)?;
        self.db().commit(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{identity_in, registered, EMAIL};
    use super::*;
    use crate::clock::Clock;
    use crate::identity::DeviceInfo;

    /// Issue 11, the same race as a sign-in's: a password change whose current password was
    /// verified before a reset must not overwrite the password the reset set (its session
    /// was ended by the reset). The reset runs between the verification and the change.
    #[tokio::test]
    async fn a_reset_while_a_password_change_verifies_wins() {
        let dir = tempfile::tempdir().unwrap();
        let identity = identity_in(dir.path(), Clock::system());
        let i = &identity.inner;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (email, (_, id_hash)) = (EMAIL, registered(&identity).await);
        let device = DeviceInfo { name: "phone".into(), model: String::new(), os: String::new() };
        let signed_in = identity.login(email, "correct horse".into(), device, ip).await.unwrap();
        let session = identity.authenticate(&signed_in.token).await.unwrap().unwrap();

        let verified = i.account(&session.account).unwrap().unwrap().password;
        let code = i.codes().issue(&id_hash, Purpose::ResetPassword, 600, 5).unwrap();
        identity.reset_password(email, code, "battery staple".into(), ip).await.unwrap();
        let code = i.codes().issue(&id_hash, Purpose::ChangeDetails, 600, 5).unwrap();
        let new_phc = password::hash_blocking("attacker's choice").unwrap();
        let late = i.finish_password_change(&session, &id_hash, &verified, new_phc, &code, ip);
        assert!(matches!(late, Err(IdentityError::WrongPassword)), "{late:?}");
        let now = i.account(&session.account).unwrap().unwrap().password;
        assert!(password::verify_blocking("battery staple", &now), "the reset's password stands");
    }
}
