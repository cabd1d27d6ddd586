//! The postmap source format and inline tables: any text parses into
//! entries and warnings without panicking; every entry has a key without
//! unquoted white space and a non-empty value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_maps::inline::InlineMap;
use mta_maps::source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (entries, _warnings) = source::parse(text, "fuzz");
    for e in &entries {
        assert!(!e.key.is_empty() && !e.value.is_empty());
        assert_eq!(e.value, e.value.trim());
    }
    if let Ok(map) = InlineMap::parse(text) {
        let _ = map.get("x");
    }
});
