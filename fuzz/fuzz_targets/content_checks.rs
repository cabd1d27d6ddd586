//! The content-check classifier on arbitrary bytes in arbitrary chunks:
//! never a panic, and with no tables the output is the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mta_restrictions::content::fuzz_content(data);
});
