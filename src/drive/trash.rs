//! The trash: how a deleted file is named there.
//!
//! Deleting a drive file moves it (record, version and chunks unchanged) into the `Trash`
//! namespace under `!id ++ device ++ path`: `id` is a fresh store version taken at deletion
//! (unique, growing with time, so it also says when), stored inverted so that a listing in key
//! order shows the newest deletion first; `device` is the 16-byte id of the signed-in device
//! that deleted it (zeros when none). The trash costs only the chunks live files do not hold.

use crate::store::identity_keys::DeviceId;

/// One file in the trash, as its name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashName {
    pub id: u64,
    pub device: [u8; 16],
    pub path: String,
}

const HEAD: usize = 8 + 16;

impl TrashName {
    pub fn new(id: u64, device: Option<&DeviceId>, path: &str) -> Self {
        TrashName { id, device: device.map_or([0; 16], |d| d.0), path: path.to_string() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut n = Vec::with_capacity(HEAD + self.path.len());
        n.extend_from_slice(&id_prefix(self.id));
        n.extend_from_slice(&self.device);
        n.extend_from_slice(self.path.as_bytes());
        n
    }

    pub fn decode(name: &[u8]) -> Option<Self> {
        if name.len() <= HEAD {
            return None;
        }
        let id = !u64::from_be_bytes(name[..8].try_into().ok()?);
        let device = name[8..HEAD].try_into().ok()?;
        let path = std::str::from_utf8(&name[HEAD..]).ok()?.to_string();
        Some(TrashName { id, device, path })
    }

    /// The deleting device, if one was signed in.
    pub fn device(&self) -> Option<DeviceId> {
        (self.device != [0; 16]).then_some(DeviceId(self.device))
    }

    /// Unix milliseconds of the deletion: ids are store versions, wall-clock microseconds.
    pub fn deleted_at_ms(&self) -> i64 {
        (self.id / 1000) as i64
    }
}

/// Every trash name of the item `id` starts with this.
pub fn id_prefix(id: u64) -> [u8; 8] {
    (!id).to_be_bytes()
}

/// Trash ids are spelled as backup ids are: 16 lowercase hex digits.
pub use crate::store::keys::{format_hex_id as format_id, parse_hex_id as parse_id};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_newest_sorts_first() {
        let n = TrashName::new(1_700_000_000_000_000, Some(&DeviceId([7; 16])), "photos/a.jpg");
        assert_eq!(TrashName::decode(&n.encode()), Some(n.clone()));
        assert_eq!(n.deleted_at_ms(), 1_700_000_000_000);
        let later = TrashName::new(n.id + 1, None, "b");
        assert!(later.encode() < n.encode());
        assert_eq!(later.device(), None);
        assert!(n.encode().starts_with(&id_prefix(n.id)));
        assert_eq!(TrashName::decode(&[0; 24]), None, "a name has a path");
    }

    #[test]
    fn ids_are_sixteen_hex_digits() {
        assert_eq!(parse_id(&format_id(42)), Some(42));
        assert_eq!(parse_id("2a"), None);
        assert_eq!(parse_id("zzzzzzzzzzzzzzzz"), None);
        assert_eq!(parse_id("+00000000000002a"), None, "no sign");
    }
}
