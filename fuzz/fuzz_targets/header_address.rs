//! Header address lists (`sendmail -t`): any text gives a list, never a
//! panic; the list is bounded by the token limit; each mailbox's span
//! is a valid, non-empty range of the value; and no mailbox holds
//! white space outside a quoted string or a domain literal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_core::header::{address_list, address_spans};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for limit in [5, 10240] {
        // Each span is a valid range of the value (slicing checks it).
        for (_, span) in address_spans(text, limit) {
            assert!(!text[span].is_empty());
        }
        let list = address_list(text, limit);
        assert!(list.len() <= limit);
        for mailbox in &list {
            assert!(!mailbox.is_empty());
            let (mut quoted, mut literal, mut escaped) = (false, false, false);
            for c in mailbox.chars() {
                if escaped {
                    escaped = false;
                    continue;
                }
                match c {
                    '\\' if quoted => escaped = true,
                    '"' if !literal => quoted = !quoted,
                    '[' if !quoted => literal = true,
                    ']' if !quoted => literal = false,
                    c if c.is_whitespace() => assert!(quoted || literal, "{mailbox:?}"),
                    _ => {}
                }
            }
        }
    }
});
