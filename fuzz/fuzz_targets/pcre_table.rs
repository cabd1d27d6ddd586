//! `pcre:` tables: any text reads into a table without panicking, every
//! warning names a line, and lookups answer (a value, nothing, or an
//! error for a value that is not UTF-8) for fixed keys and for keys taken
//! from the input. PCRE2 itself compiles and matches the patterns; what
//! is ours is the file syntax, the flags (`A`, `E`, `U` are done by
//! rewriting or checking) and the substitution.
//!
//! Input: table text, optionally followed by a NUL byte and one key per
//! line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_maps::Map;
use mta_maps::pcre::PcreTable;

const KEYS: &[&str] = &[
    "",
    "a",
    "ab",
    "ABC",
    "user@example.com",
    "friend@my.domain",
    "list-outgoing@example.org",
    "1.2.3.4",
    "a\nb",
    "a\n",
];

fuzz_target!(|data: &[u8]| {
    let (table_bytes, key_bytes) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(table_bytes);
    let (table, warnings) = PcreTable::parse(&text, "pcre:fuzz");
    for warning in &warnings {
        assert!(warning.line.is_some_and(|n| n >= 1));
        assert!(warning.to_string().starts_with("fuzz, line "));
    }
    let keys = String::from_utf8_lossy(key_bytes);
    for key in KEYS.iter().copied().chain(keys.split('\n').take(16)) {
        if let Ok(Some(value)) = table.lookup(key).now("pcre:fuzz") {
            // A value is the rule's text with groups of the key put in.
            assert!(value.len() <= text.len() + 64 * key.len() + 64);
        }
    }
});
