//! The postmap source format and inline tables: any text parses into
//! entries and warnings without panicking; every entry has a non-empty key
//! and a non-empty value trimmed of white space.
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
        // Trimmed of C white space (as Postfix trims), not of Unicode
        // white space such as U+0085, which Postfix keeps.
        let c_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
        assert_eq!(e.value, e.value.trim_matches(c_space));
    }
    if let Ok(map) = InlineMap::parse(text) {
        let _ = map.get("x");
    }
});
