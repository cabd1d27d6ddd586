//! The client session fed arbitrary server replies through a whole
//! session (greeting, EHLO, STARTTLS, AUTH, a transaction, content,
//! QUIT): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mta_smtp::client::fuzz_client_replies(data);
});
