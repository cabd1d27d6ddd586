//! `regexp:` tables: any text reads into a table without panicking, every
//! warning names a line, and the fast lookup (the patterns combined into
//! `RegexSet`s, the rules walked with their bits) answers every key
//! exactly as trying the rules one by one with the POSIX matcher does
//! (Postfix's way), for fixed keys and for keys taken from the input.
//!
//! Input: table text, optionally followed by a NUL byte and one key per
//! line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_maps::Map;
use mta_maps::regexp::RegexpTable;

/// Keys of the shapes regexp tables see: addresses, host names, header
/// lines, and a few that test case and line breaks.
const KEYS: &[&str] = &[
    "",
    "a",
    "ab",
    "ABC",
    "user@example.com",
    "Postmaster@Example.COM",
    "list-outgoing@example.org",
    "host-1-2-3-4.dyn.example.net",
    "1.2.3.4",
    "Subject: make money fast",
    "a\nb",
    "x y\tz",
];

fuzz_target!(|data: &[u8]| {
    let (table_bytes, key_bytes) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(table_bytes);
    let (table, warnings) = RegexpTable::parse(&text, "regexp:fuzz");
    for warning in &warnings {
        assert!(warning.line.is_some_and(|n| n >= 1));
        assert!(warning.to_string().starts_with("fuzz, line "));
    }
    let keys = String::from_utf8_lossy(key_bytes);
    for key in KEYS.iter().copied().chain(keys.split('\n').take(16)) {
        let fast = table.lookup(key).now("regexp:fuzz");
        // The one-by-one matcher may run out of budget on
        // back-references; then there is nothing to compare.
        if let Ok(slow) = table.lookup_linear(key) {
            assert_eq!(fast, Ok(slow), "key {key:?}");
        }
    }
});
