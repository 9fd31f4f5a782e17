//! The backup manifest a phone posts (`POST /v1/backups`), on arbitrary bytes: nothing may
//! panic, and what is accepted keeps every rule the commit relies on.
#![no_main]

use cairn::backup::manifest::{self, MAX_PATH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(posted) = manifest::parse(data) else { return };
    let mut paths = std::collections::HashSet::new();
    for e in &posted.entries {
        assert!(!e.meta.path.is_empty() && e.meta.path.len() <= MAX_PATH && !e.meta.path.contains('\0'));
        assert!(paths.insert(e.meta.path.clone()), "duplicate path accepted");
        assert_eq!(e.chunks.iter().map(|(_, n)| u64::from(*n)).sum::<u64>(), e.size);
        assert!(e.chunks.iter().all(|(_, n)| *n > 0));
    }
    assert!(posted.distinct_chunks().len() <= posted.entries.iter().map(|e| e.chunks.len()).sum());
});
