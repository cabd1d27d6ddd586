//! `cidr:` tables: any text reads into a table without panicking, and the
//! interval index answers every key exactly as trying the rules one by one
//! does (Postfix's way), for fixed keys and for keys taken from the input.
//!
//! Input: table text, optionally followed by a NUL byte and one key per
//! line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_maps::cidr::CidrTable;

/// Keys at the edges of both address spaces and of common networks.
const KEYS: &[&str] = &[
    "0.0.0.0",
    "0.0.0.1",
    "1.2.3.4",
    "10.0.0.0",
    "10.255.255.255",
    "127.0.0.1",
    "192.0.2.1",
    "255.255.255.255",
    "::",
    "::1",
    "::ffff:1.2.3.4",
    "2001:db8::",
    "2001:db8::1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "not-an-address",
];

fuzz_target!(|data: &[u8]| {
    let (table_bytes, key_bytes) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(table_bytes);
    let table = CidrTable::parse(&text, "fuzz.cidr");
    for warning in table.warnings() {
        assert!(warning.line >= 1);
        let _ = warning.to_string();
    }
    let keys = String::from_utf8_lossy(key_bytes);
    for key in KEYS.iter().copied().chain(keys.split('\n')) {
        assert_eq!(table.find(key), table.find_linear(key), "key {key:?}");
    }
});
