//! Decoders of the records that sync, backups and identity keep in RocksDB, on arbitrary bytes (a damaged
//! database is untrusted): nothing may panic, and what decodes re-encodes to something that
//! decodes to the same thing.
#![no_main]

use cairn::store::backup_keys as bk;
use cairn::store::identity_keys as ik;
use cairn::store::prop_keys as pk;
use cairn::store::sync_keys as sk;
use cairn::store::upload_keys as uk;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = pk::decode_props(data) {
        assert_eq!(pk::encode_props(&p), data);
    }
    if let Some(u) = uk::decode_upload(data) {
        assert_eq!(uk::decode_upload(&uk::encode_upload(&u)).as_ref(), Some(&u));
    }
    if let Some(r) = sk::decode_record(data) {
        assert_eq!(sk::encode_record(&r), data);
    }
    if let Some(m) = sk::decode_collection_meta(data) {
        assert_eq!(sk::encode_collection_meta(&m), data);
    }
    if let Some((name, marker, rest)) = sk::split_sync_key(data) {
        assert!(marker <= 1 && !name.contains('\0'));
        let _ = rest;
    }
    if let Some(a) = ik::decode_account(data) {
        assert_eq!(ik::decode_account(&ik::encode_account(&a)).as_ref(), Some(&a));
    }
    if let Some(c) = ik::decode_code(data) {
        assert_eq!(ik::decode_code(&ik::encode_code(&c)).as_ref(), Some(&c));
    }
    if let Some(s) = ik::decode_session(data) {
        assert_eq!(ik::decode_session(&ik::encode_session(&s)).as_ref(), Some(&s));
    }
    if let Some(d) = ik::decode_device(data) {
        assert_eq!(ik::decode_device(&ik::encode_device(&d)).as_ref(), Some(&d));
    }
    if let Some(e) = ik::decode_event(data) {
        assert_eq!(ik::decode_event(&ik::encode_event(&e)).as_ref(), Some(&e));
    }
    if let Some(h) = bk::decode_head(data) {
        assert_eq!(bk::encode_head(&h), data);
    }
    if let Some(e) = bk::decode_entry(data) {
        assert_eq!(bk::encode_entry(&e), data);
    }
    let _ = bk::id_from_head_key(data);
    let _ = ik::decode_account_id(data);
    let _ = ik::device_id_from_key(data);
    if let Some((kind, subject, at_ms)) = ik::parse_limit_key(data) {
        let again = ik::limit_key(kind, subject, at_ms);
        assert_eq!(again[..again.len() - 4], data[..data.len() - 4]);
    }
    if let Some(ip) = ik::ip_from_bytes(data) {
        assert_eq!(ik::ip_from_bytes(&ik::ip_bytes(ip)), Some(ip));
    }
});
