//! The account's details as the user sees and changes them. Every change needs a fresh
//! `change_details` code sent to the account's identifier.

use std::net::IpAddr;

use rocksdb::WriteBatch;
use serde::Serialize;

use super::activity::EventKind;
use super::codes::{self, Purpose};
use super::error::{IdentityError, Result};
use super::identifiers::Identifier;
use super::sessions::Session;
use super::{id_hash_of, rfc3339_secs, Identity, Inner};
use crate::store::identity_keys::{self as ik, AccountRecord, HexBytes, Profile};
use crate::store::keys::AccountId;
use crate::store::CF_ACCOUNTS;

pub const GENDERS: [&str; 4] = ["female", "male", "other", "unspecified"];

/// ISO 3166-1 alpha-2: the officially assigned codes.
const REGIONS: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR \
BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ \
FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE \
JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR \
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU \
RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG \
UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// A field of a PATCH: absent (leave it), `null` (clear it), or a new value.
pub type Patch = Option<Option<String>>;

#[derive(Clone, Debug, Default)]
pub struct ProfileChanges {
    pub nickname: Patch,
    pub gender: Patch,
    pub region: Patch,
    pub locale: Patch,
    pub recovery_email: Patch,
    pub recovery_phone: Patch,
}

impl ProfileChanges {
    pub fn is_empty(&self) -> bool {
        [&self.nickname, &self.gender, &self.region, &self.locale, &self.recovery_email, &self.recovery_phone]
            .iter()
            .all(|p| p.is_none())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileView {
    pub account_id: String,
    pub identifier: String,
    pub nickname: Option<String>,
    pub gender: Option<String>,
    pub region: Option<String>,
    pub locale: Option<String>,
    pub recovery_email: Option<String>,
    pub recovery_phone: Option<String>,
    pub plan: String,
    pub created_at: String,
}

pub fn check_nickname(s: &str) -> Result<String> {
    let n = s.chars().count();
    if !(1..=64).contains(&n) || s.chars().any(char::is_control) || s.trim().is_empty() {
        return Err(IdentityError::field("nickname", "1 to 64 characters, not only spaces, no control characters"));
    }
    Ok(s.to_string())
}

fn check_gender(s: &str) -> Result<String> {
    GENDERS
        .contains(&s)
        .then(|| s.to_string())
        .ok_or_else(|| IdentityError::field("gender", "one of female, male, other, unspecified"))
}

/// Upper-cased: `de` and `DE` are the same region.
fn check_region(s: &str) -> Result<String> {
    let up = s.to_ascii_uppercase();
    if s.len() == 2 && s.is_ascii() && REGIONS.split(' ').any(|r| r == up) {
        Ok(up)
    } else {
        Err(IdentityError::field("region", "an ISO 3166-1 alpha-2 country code such as DE or US"))
    }
}

/// A well-formed BCP 47 language tag (RFC 5646 "langtag" or private use), in its canonical
/// case: language lower, script title, region upper (`zh-hant-tw` becomes `zh-Hant-TW`).
pub fn check_locale(s: &str) -> Result<String> {
    canonical_locale(s)
        .ok_or_else(|| IdentityError::field("locale", "a BCP 47 language tag such as en-US or zh-Hant-TW"))
}

fn canonical_locale(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    let parts: Vec<&str> = s.split('-').collect();
    if parts.iter().any(|p| p.is_empty() || p.len() > 8) {
        return None;
    }
    let alpha = |p: &str| p.bytes().all(|b| b.is_ascii_alphabetic());
    let digit = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    // Private use only: x-whatever.
    if parts[0].eq_ignore_ascii_case("x") {
        return private_use(&parts[1..]).then(|| s.to_ascii_lowercase());
    }
    // language: 2-3 letters (+ up to 3 extlangs of 3 letters), or 4, or 5-8 letters.
    let lang = parts[0];
    if !alpha(lang) || !(2..=8).contains(&lang.len()) {
        return None;
    }
    out.push(lang.to_ascii_lowercase());
    i += 1;
    if lang.len() <= 3 {
        let mut ext = 0;
        while ext < 3 && i < parts.len() && parts[i].len() == 3 && alpha(parts[i]) {
            out.push(parts[i].to_ascii_lowercase());
            i += 1;
            ext += 1;
        }
    }
    if i < parts.len() && parts[i].len() == 4 && alpha(parts[i]) {
        let p = parts[i].to_ascii_lowercase();
        out.push(p[..1].to_ascii_uppercase() + &p[1..]);
        i += 1;
    }
    if i < parts.len() && ((parts[i].len() == 2 && alpha(parts[i])) || (parts[i].len() == 3 && digit(parts[i]))) {
        out.push(parts[i].to_ascii_uppercase());
        i += 1;
    }
    let variant = |p: &str| (5..=8).contains(&p.len()) || (p.len() == 4 && p.as_bytes()[0].is_ascii_digit());
    while i < parts.len() && variant(parts[i]) {
        out.push(parts[i].to_ascii_lowercase());
        i += 1;
    }
    // extensions: a singleton (not x) then one or more 2-8 character subtags.
    while i < parts.len() && parts[i].len() == 1 && !parts[i].eq_ignore_ascii_case("x") {
        out.push(parts[i].to_ascii_lowercase());
        i += 1;
        let start = i;
        while i < parts.len() && parts[i].len() >= 2 {
            out.push(parts[i].to_ascii_lowercase());
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i < parts.len() && parts[i].eq_ignore_ascii_case("x") {
        if !private_use(&parts[i + 1..]) {
            return None;
        }
        out.extend(parts[i..].iter().map(|p| p.to_ascii_lowercase()));
        i = parts.len();
    }
    (i == parts.len()).then(|| out.join("-"))
}

fn private_use(rest: &[&str]) -> bool {
    !rest.is_empty() && rest.iter().all(|p| (1..=8).contains(&p.len()))
}

/// Apply one field's patch, validating a new value with `check`.
fn apply(slot: &mut Option<String>, patch: Patch, check: impl Fn(&str) -> Result<String>) -> Result<()> {
    match patch {
        None => {}
        Some(None) => *slot = None,
        Some(Some(v)) => *slot = Some(check(&v)?),
    }
    Ok(())
}

impl Inner {
    fn seal_patch(
        &self,
        slot: &mut Option<HexBytes>,
        patch: Patch,
        parse: fn(&'static str, &str) -> Result<Identifier>,
        field: &'static str,
    ) -> Result<()> {
        match patch {
            None => {}
            Some(None) => *slot = None,
            Some(Some(v)) => *slot = Some(HexBytes(self.secrets.seal(&parse(field, &v)?))),
        }
        Ok(())
    }

    /// The profile after the changes, or the first field that is not in its format.
    fn patched(&self, p: &Profile, c: ProfileChanges) -> Result<Profile> {
        let mut p = p.clone();
        apply(&mut p.nickname, c.nickname, check_nickname)?;
        apply(&mut p.gender, c.gender, check_gender)?;
        apply(&mut p.region, c.region, check_region)?;
        apply(&mut p.locale, c.locale, check_locale)?;
        self.seal_patch(&mut p.recovery_email, c.recovery_email, Identifier::email, "recovery_email")?;
        self.seal_patch(&mut p.recovery_phone, c.recovery_phone, Identifier::phone, "recovery_phone")?;
        Ok(p)
    }

    fn view(&self, a: &AccountId, rec: &AccountRecord) -> Result<ProfileView> {
        let unseal =
            |v: &Option<HexBytes>| v.as_ref().and_then(|b| self.secrets.open(&b.0)).map(|i| i.as_str().to_string());
        let id = self
            .secrets
            .open(&rec.identifier.0)
            .ok_or_else(|| IdentityError::Internal(format!("the identifier of account {a} does not unseal")))?;
        let p = &rec.profile;
        Ok(ProfileView {
            account_id: a.to_string(),
            identifier: id.as_str().to_string(),
            nickname: p.nickname.clone(),
            gender: p.gender.clone(),
            region: p.region.clone(),
            locale: p.locale.clone(),
            recovery_email: unseal(&p.recovery_email),
            recovery_phone: unseal(&p.recovery_phone),
            plan: rec.plan.clone(),
            created_at: rfc3339_secs(rec.created_at),
        })
    }
}

impl Identity {
    pub async fn profile(&self, account: AccountId) -> Result<ProfileView> {
        self.blocking(move |i| {
            let rec = i.account(&account)?.ok_or(IdentityError::NotFound)?;
            i.view(&account, &rec)
        })
        .await
    }

    /// Checks the code first (`403`), then the fields (`400`, the code stays usable).
    pub async fn update_profile(
        &self,
        s: &Session,
        code: String,
        changes: ProfileChanges,
        ip: IpAddr,
    ) -> Result<ProfileView> {
        if changes.is_empty() {
            return Err(IdentityError::field("body", "name at least one field to change"));
        }
        let s = s.clone();
        self.blocking(move |i| {
            let rec = i.account(&s.account)?.ok_or(IdentityError::NotFound)?;
            let id_hash = id_hash_of(&rec.id_hash.0)?;
            let _held = i.lock(&id_hash);
            i.verify_code(&id_hash, Purpose::ChangeDetails, &code, ip)?;
            let mut rec = i.account(&s.account)?.ok_or(IdentityError::NotFound)?;
            rec.profile = i.patched(&rec.profile, changes)?;
            let mut batch = WriteBatch::default();
            batch.put_cf(i.db().cf(CF_ACCOUNTS), ik::account_key(&s.account), ik::encode_account(&rec));
            codes::consume(i.db(), &mut batch, &id_hash, Purpose::ChangeDetails);
            let device = i.event_device(&s.account, &s.device_id)?;
            i.record_event(&mut batch, &s.account, EventKind::DetailsChanged, ip, device)?;
            i.db().commit(batch)?;
            i.view(&s.account, &rec)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_bcp47_in_canonical_case() {
        for (given, want) in [
            ("en", "en"),
            ("en-US", "en-US"),
            ("EN-us", "en-US"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("sl-rozaj-biske", "sl-rozaj-biske"),
            ("de-CH-1996", "de-CH-1996"),
            ("en-US-u-ca-gregory", "en-US-u-ca-gregory"),
            ("x-private", "x-private"),
            ("en-x-twain", "en-x-twain"),
            ("zh-yue-HK", "zh-yue-HK"),
        ] {
            assert_eq!(check_locale(given).unwrap(), want, "{given}");
        }
        for bad in [
            "",
            "e",
            "englishlanguage",
            "en_US",
            "en-",
            "-en",
            "en--US",
            "en-US-u",
            "123",
            "en-x",
            "a b",
            "en-US-abcdefghi",
        ] {
            assert!(check_locale(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regions_are_assigned_alpha2_codes() {
        assert_eq!(check_region("de").unwrap(), "DE");
        assert_eq!(check_region("US").unwrap(), "US");
        for bad in ["XX", "ZZ", "USA", "D", "", "1A", "Dé"] {
            assert!(check_region(bad).is_err(), "{bad:?}");
        }
        assert_eq!(REGIONS.split(' ').count(), 249);
    }

    #[test]
    fn nicknames_and_genders() {
        assert!(check_nickname("Ada").is_ok());
        assert!(check_nickname(&"é".repeat(64)).is_ok());
        assert!(check_nickname(&"é".repeat(65)).is_err());
        assert!(check_nickname("").is_err());
        assert!(check_nickname("   ").is_err());
        assert!(check_nickname("a\u{0}b").is_err());
        assert!(check_gender("other").is_ok());
        assert!(check_gender("Other").is_err());
    }
}
