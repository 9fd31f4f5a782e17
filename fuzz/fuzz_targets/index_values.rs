//! Every decoder of `cairn::store::keys` on arbitrary bytes (a damaged database is untrusted):
//! nothing may panic, and whatever a decoder accepts must re-encode to the same bytes and decode
//! again to the same value.
#![no_main]

use cairn::chunk::ChunkId;
use cairn::store::keys::{
    account_chunk_key, apply_op, chunk_id_from_key, chunk_key, decode_chunk, decode_count, decode_dict, decode_object,
    decode_op, decode_pack, decode_usage, encode_chunk, encode_count, encode_dict, encode_object, encode_op, encode_pack, encode_usage,
    split_account_chunk_key, usage_lacks_metadata, AccountId,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = ChunkId([0xA5; 32]);

    if let Some(r) = decode_chunk(id, data) {
        assert_eq!(r.entry.id, id, "the key supplies the id");
        assert_eq!(encode_chunk(&r), data);
        assert_eq!(decode_chunk(id, &encode_chunk(&r)), Some(r));
    }
    if let Some(op) = decode_op(id, data) {
        assert_eq!(encode_op(&op), data);
        assert_eq!(decode_op(id, &encode_op(&op)), Some(op));
    }
    if let Some(p) = decode_pack(data) {
        assert_eq!(encode_pack(&p), data);
        assert_eq!(decode_pack(&encode_pack(&p)), Some(p));
    }
    if let Some(d) = decode_dict(data) {
        assert_eq!(encode_dict(&d), data);
        assert_eq!(decode_dict(&encode_dict(&d)), Some(d));
    }
    if let Some(u) = decode_usage(data) {
        // Older records (version 1 without item charges, 2 without trash and versions) are
        // written back in the current version.
        if !usage_lacks_metadata(data) && data[0] == encode_usage(&u)[0] {
            assert_eq!(encode_usage(&u), data);
        }
        assert_eq!(decode_usage(&encode_usage(&u)), Some(u));
    }
    if let Some(o) = decode_object(data) {
        assert_eq!(encode_object(&o), data);
        assert_eq!(decode_object(&encode_object(&o)).as_ref(), Some(&o));
        let _ = o.tail_segments(); // any record the decoder accepts has a countable tail
    }
    if let Some(n) = cairn::drive::trash::TrashName::decode(data) {
        assert_eq!(n.encode(), data);
    }
    if let Some((path, version)) = cairn::drive::versions::parse(data) {
        assert_eq!(cairn::drive::versions::name(path, version), data);
    }
    if let Some(n) = decode_count(data) {
        assert_eq!(encode_count(n), data);
    }
    if let Some((a, c)) = split_account_chunk_key(data) {
        assert_eq!(account_chunk_key(&a, &c), data);
    }
    if let Some(c) = chunk_id_from_key(data) {
        assert_eq!(chunk_key(&c), data);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(a) = s.parse::<AccountId>() {
            assert_eq!(a.to_string(), s, "one account has one spelling");
        }
    }

    // The `chunks` merge operator's fold: a base value, then operands, separated by 0xFE bytes
    // in the input. Bad operands are skipped, as the operator does; the fold must be total.
    let mut parts = data.split(|&b| b == 0xFE);
    let mut rec = parts.next().and_then(|v| decode_chunk(id, v));
    for op in parts.filter_map(|v| decode_op(id, v)) {
        rec = apply_op(rec, op);
        if let Some(r) = rec {
            assert_eq!(decode_chunk(id, &encode_chunk(&r)), Some(r));
        }
    }
});
