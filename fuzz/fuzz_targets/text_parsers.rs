//! Parsers of untrusted text: chunk ids as they appear in URLs and JSON, byte sizes as they
//! appear in the config file, flags and environment, and the config file itself. Nothing may
//! panic, and what parses must print back to a spelling that parses to the same value.
#![no_main]

use cairn::chunk::{ChunkId, ChunkingParams};
use cairn::config::{ByteSize, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };

    if let Ok(id) = s.parse::<ChunkId>() {
        assert_eq!(id.to_hex(), s, "one chunk has one spelling");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
    }
    let _ = serde_json::from_str::<ChunkId>(s);

    if let Ok(size) = s.parse::<ByteSize>() {
        assert_eq!(size.to_string().parse::<ByteSize>().unwrap(), size);
    }

    // What a client reads from GET /v1/chunking, and the `[chunking]` table of the config.
    if let Ok(p) = serde_json::from_str::<ChunkingParams>(s) {
        let _ = p.validate();
    }
    if let Ok(c) = toml::from_str::<Config>(s) {
        if let Ok(c) = c.finish() {
            c.chunking.validate().expect("finish validated the chunking parameters");
            let _ = c.engine();
        }
    }
});
