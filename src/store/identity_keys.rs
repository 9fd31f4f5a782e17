//! Keys and values of the identity column families: `accounts`, `identifiers`, `codes`,
//! `sessions`, `events`, `limits`.
//!
//! Values are a format byte then JSON: these records are small, read a few times per request,
//! and gain fields over time, so readability and `serde(default)` beat a hand-rolled layout.
//! Nothing here is ever a plaintext email address, phone number, password, token or code:
//! identifiers are sealed (AEAD) and found by a keyed hash, passwords are Argon2id strings,
//! tokens and codes are kept as hashes. Decoders take untrusted bytes and return `None`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keys::AccountId;

const IDENTITY_V1: u8 = 1;

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = vec![IDENTITY_V1];
    serde_json::to_writer(&mut b, v).expect("records of plain fields always serialize");
    b
}

fn decode<T: DeserializeOwned>(v: &[u8]) -> Option<T> {
    match v.split_first()? {
        (&IDENTITY_V1, rest) => serde_json::from_slice(rest).ok(),
        _ => None,
    }
}

/// Bytes that are shown and stored as lowercase hex (sealed identifiers, hashes).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexBytes({})", hex::encode(&self.0))
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map(HexBytes).map_err(serde::de::Error::custom)
    }
}

/// Ids shown as hex in JSON and in records: accounts and devices.
fn ser_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn de_from_str<'de, T: FromStr, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom("not an id"))
}

super::keys::hex_id!(
    /// A device's id, chosen by the server at sign-in.
    DeviceId
);

// ---- accounts: account id -> the account ---------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Profile {
    pub nickname: Option<String>,
    pub gender: Option<String>,
    pub region: Option<String>,
    pub locale: Option<String>,
    /// Sealed, like the identifier.
    pub recovery_email: Option<HexBytes>,
    pub recovery_phone: Option<HexBytes>,
}

/// The plan of an account whose record names none (and of every new account).
pub const FREE_PLAN: &str = "free";

fn free_plan() -> String {
    FREE_PLAN.to_string()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Keyed hash of the identifier: the `identifiers` key, and the account's lock stripe.
    pub id_hash: HexBytes,
    /// The normalized identifier, sealed.
    pub identifier: HexBytes,
    /// Argon2id PHC string.
    pub password: String,
    #[serde(default = "free_plan")]
    pub plan: String,
    /// Unix seconds.
    pub created_at: i64,
    #[serde(default)]
    pub profile: Profile,
}

pub fn account_key(a: &AccountId) -> [u8; 16] {
    a.0
}

pub fn encode_account(r: &AccountRecord) -> Vec<u8> {
    encode(r)
}

pub fn decode_account(v: &[u8]) -> Option<AccountRecord> {
    decode(v)
}

// ---- identifiers: keyed hash of the identifier -> account id -------------------------------------

pub fn identifier_key(id_hash: &[u8; 32]) -> [u8; 32] {
    *id_hash
}

pub fn decode_account_id(v: &[u8]) -> Option<AccountId> {
    Some(AccountId(v.try_into().ok()?))
}

// ---- codes: keyed hash of the identifier ++ purpose -> the code's hash and its state ------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// Keyed hash of the code, bound to identifier and purpose.
    pub hash: HexBytes,
    /// Unix milliseconds from which the code is dead.
    pub expires_at_ms: u64,
    pub tries_left: u32,
}

pub fn code_key(id_hash: &[u8; 32], purpose: u8) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..32].copy_from_slice(id_hash);
    k[32] = purpose;
    k
}

pub fn encode_code(r: &CodeRecord) -> Vec<u8> {
    encode(r)
}

pub fn decode_code(v: &[u8]) -> Option<CodeRecord> {
    decode(v)
}

// ---- sessions: two kinds of key, told apart by their first byte ----------------------------------
// `t` ++ BLAKE3(token) -> SessionRecord: what a bearer token opens.
// `d` ++ account ++ device -> DeviceRecord: the account's signed-in devices, listable by prefix.

const SESSION_TAG: u8 = b't';
const DEVICE_TAG: u8 = b'd';

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(serialize_with = "ser_display", deserialize_with = "de_from_str")]
    pub account: AccountId,
    #[serde(serialize_with = "ser_display", deserialize_with = "de_from_str")]
    pub device: DeviceId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub name: String,
    pub model: String,
    pub os: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last authenticated request; the session expires a TTL after it.
    pub last_seen: u64,
    /// BLAKE3 of the session token, to find the session when the device is signed out.
    pub token_hash: HexBytes,
    /// An app password (for a DAV client): never expires from disuse, opens only Basic
    /// authentication, and is named by the user rather than by the client.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub app_password: bool,
}

pub fn session_key(token_hash: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = SESSION_TAG;
    k[1..].copy_from_slice(token_hash);
    k
}

pub fn device_key(a: &AccountId, d: &DeviceId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = DEVICE_TAG;
    k[1..17].copy_from_slice(&a.0);
    k[17..].copy_from_slice(&d.0);
    k
}

pub fn device_prefix(a: &AccountId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = DEVICE_TAG;
    k[1..].copy_from_slice(&a.0);
    k
}

pub fn device_id_from_key(k: &[u8]) -> Option<DeviceId> {
    if k.len() != 33 || k[0] != DEVICE_TAG {
        return None;
    }
    Some(DeviceId(k[17..].try_into().ok()?))
}

pub fn encode_session(r: &SessionRecord) -> Vec<u8> {
    encode(r)
}

pub fn decode_session(v: &[u8]) -> Option<SessionRecord> {
    decode(v)
}

pub fn encode_device(r: &DeviceRecord) -> Vec<u8> {
    encode(r)
}

pub fn decode_device(v: &[u8]) -> Option<DeviceRecord> {
    decode(v)
}

// ---- events: account ++ (MAX - unix micros) ++ random -> activity event --------------------------
// The inverted time makes a forward scan of the account's prefix newest first.

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDevice {
    pub device_id: String,
    pub name: String,
    pub model: String,
    pub os: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unix microseconds.
    pub at: i64,
    pub kind: String,
    pub ip: String,
    pub device: Option<EventDevice>,
}

pub fn event_key(a: &AccountId, at_micros: i64) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..16].copy_from_slice(&a.0);
    let inverted = u64::MAX - at_micros.max(0) as u64;
    k[16..24].copy_from_slice(&inverted.to_be_bytes());
    k[24..].copy_from_slice(&rand::random::<[u8; 4]>());
    k
}

pub fn event_prefix(a: &AccountId) -> [u8; 16] {
    a.0
}

pub fn encode_event(r: &EventRecord) -> Vec<u8> {
    encode(r)
}

pub fn decode_event(v: &[u8]) -> Option<EventRecord> {
    decode(v)
}

// ---- limits: kind ++ subject ++ unix ms ++ random -> empty -------------------------------------
// One key per counted failure, so that recording one is a blind put (no read, no ordering
// between writers). The subject is a 32-byte identifier hash or a 16-byte address (IPv4 as
// IPv4-mapped IPv6); the kind says which. Big-endian time keeps a subject's failures in order.

/// Bytes after the subject: the time and a random tail that keeps equal instants apart.
const LIMIT_TAIL: usize = 12;

pub fn limit_key(kind: u8, subject: &[u8], at_ms: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + subject.len() + LIMIT_TAIL);
    k.push(kind);
    k.extend_from_slice(subject);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(&rand::random::<[u8; 4]>());
    k
}

/// Kind, subject and unix milliseconds of a `limits` key.
pub fn parse_limit_key(k: &[u8]) -> Option<(u8, &[u8], u64)> {
    let (&kind, rest) = k.split_first()?;
    let subject_len = rest.len().checked_sub(LIMIT_TAIL)?;
    let (subject, tail) = rest.split_at(subject_len);
    let at_ms = u64::from_be_bytes(tail[..8].try_into().ok()?);
    Some((kind, subject, at_ms))
}

pub fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    Some(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountRecord {
        AccountRecord {
            id_hash: HexBytes(vec![1; 32]),
            identifier: HexBytes(vec![2; 40]),
            password: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            plan: "free".into(),
            created_at: 1_700_000_000,
            profile: Profile { nickname: Some("Ada".into()), ..Profile::default() },
        }
    }

    #[test]
    fn records_round_trip() {
        let a = account();
        assert_eq!(decode_account(&encode_account(&a)), Some(a));
        let s = SessionRecord { account: AccountId([3; 16]), device: DeviceId([4; 16]) };
        assert_eq!(decode_session(&encode_session(&s)), Some(s));
        let c = CodeRecord { hash: HexBytes(vec![5; 32]), expires_at_ms: 9, tries_left: 5 };
        assert_eq!(decode_code(&encode_code(&c)), Some(c));
        let k = device_key(&AccountId([3; 16]), &DeviceId([4; 16]));
        assert_eq!(device_id_from_key(&k), Some(DeviceId([4; 16])));
        assert!(k.starts_with(&device_prefix(&AccountId([3; 16]))));
    }

    #[test]
    fn plan_defaults_to_free_for_older_records() {
        let json = br#"{"id_hash":"00","identifier":"00","password":"x","created_at":1}"#;
        let mut v = vec![IDENTITY_V1];
        v.extend_from_slice(json);
        assert_eq!(decode_account(&v).unwrap().plan, "free");
    }

    #[test]
    fn newer_events_sort_first() {
        let a = AccountId([7; 16]);
        assert!(event_key(&a, 2_000) < event_key(&a, 1_000));
    }

    #[test]
    fn garbage_decodes_to_none() {
        let good = encode_account(&account());
        for n in 0..good.len() {
            assert!(decode_account(&good[..n]).is_none());
        }
        for junk in [&b""[..], b"\x00", b"\x01{", b"\x02{}", b"\x01\xff\xfe", b"\x01null"] {
            assert!(decode_account(junk).is_none());
            assert!(decode_session(junk).is_none());
            assert!(decode_device(junk).is_none());
            assert!(decode_code(junk).is_none());
            assert!(decode_event(junk).is_none());
        }
        assert!(decode_account_id(b"short").is_none());
        for junk in [&b""[..], b"\x01", &[1u8; 12]] {
            assert!(parse_limit_key(junk).is_none());
        }
        assert!(ip_from_bytes(b"short").is_none());
    }

    #[test]
    fn limit_keys_round_trip_and_sort_by_time() {
        let k = limit_key(3, &[9; 32], 1_700_000_000_123);
        assert_eq!(parse_limit_key(&k), Some((3, &[9u8; 32][..], 1_700_000_000_123)));
        assert!(limit_key(3, &[9; 32], 1) < limit_key(3, &[9; 32], 256));
        for ip in ["192.0.2.7", "2001:db8:1:2::"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_from_bytes(&ip_bytes(ip)), Some(ip));
        }
    }
}
