//! Keys and values of dead properties (WebDAV PROPPATCH): the `props` column family holds, at
//! `account ++ path`, every property a client stored on that file or folder, in one value.
//!
//! One value per path, not one key per property, because every read wants them all (PROPFIND
//! `allprop`) and a path has few. The value's size is bounded (`MAX_PROPS_BYTES`) and charged
//! to the account's metadata. Decoders take untrusted bytes and return `None`, never panic
//! (fuzz target `stored_records`).

use super::keys::{AccountId, Reader};

/// Most bytes of properties one path may hold, encoded: a client's tags, colours and the like
/// take tens of bytes; this leaves room for many without letting one path hold a file's worth.
pub const MAX_PROPS_BYTES: usize = 16 * 1024;

/// One dead property: an XML element's namespace and local name, and its content as XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadProp {
    pub namespace: String,
    pub name: String,
    /// The element as the client sent it; `None` for an empty element.
    pub xml: Option<Vec<u8>>,
}

pub fn props_key(a: &AccountId, path: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + path.len());
    k.extend_from_slice(&a.0);
    k.extend_from_slice(path);
    k
}

pub fn encode_props(props: &[DeadProp]) -> Vec<u8> {
    let mut v = vec![1u8];
    let field = |v: &mut Vec<u8>, b: &[u8]| {
        v.extend_from_slice(&(b.len() as u32).to_le_bytes());
        v.extend_from_slice(b);
    };
    for p in props {
        field(&mut v, p.namespace.as_bytes());
        field(&mut v, p.name.as_bytes());
        match &p.xml {
            Some(x) => {
                v.push(1);
                field(&mut v, x);
            }
            None => v.push(0),
        }
    }
    v
}

pub fn decode_props(v: &[u8]) -> Option<Vec<DeadProp>> {
    let mut r = Reader(v);
    if r.u8()? != 1 {
        return None;
    }
    let mut out = Vec::new();
    while !r.done() {
        let namespace = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let name = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let xml = match r.u8()? {
            0 => None,
            1 => Some(r.bytes()?.to_vec()),
            _ => return None,
        };
        out.push(DeadProp { namespace, name, xml });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_round_trip_and_garbage_is_none() {
        let props = vec![
            DeadProp {
                namespace: "http://example.com/ns".into(),
                name: "colour".into(),
                xml: Some(b"<c>red</c>".to_vec()),
            },
            DeadProp { namespace: String::new(), name: "flag".into(), xml: None },
        ];
        let v = encode_props(&props);
        assert_eq!(decode_props(&v), Some(props));
        assert_eq!(decode_props(&v[..v.len() - 1]), None);
        assert_eq!(decode_props(&[2]), None);
        assert_eq!(decode_props(&[1]), Some(vec![]));
    }
}
