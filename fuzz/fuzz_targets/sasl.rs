//! The SASL mechanism decoders: a client's initial response and further
//! lines, as PLAIN and LOGIN read them, never panic, and what they accept
//! keeps its limits; stored password hashes of any shape give an answer
//! or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_smtp::sasl::{verify_password, Exchange, Mechanism, ScramCredentials, ScramServer, Step};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let first = lines.next();
        let (mut x, mut step) = Exchange::start(mechanism, first);
        for line in lines.by_ref().take(4) {
            match step {
                Step::Challenge(_) => step = x.step(line),
                _ => break,
            }
        }
        if let Step::Done(c) = &step {
            assert!(!c.username.is_empty());
            assert!(c.username.len() <= 1024 && c.password.len() <= 1024);
            assert!(!c.username.contains('\0') && !c.password.contains('\0'));
        }
    }
    // SCRAM-SHA-256: any client-first and client-final message, against
    // keys with a cheap iteration count.
    let creds = ScramCredentials::derive("pencil", b"salt", 1);
    let (first, last) = data.split_at(data.len() / 2);
    if let Ok((mut server, user)) = ScramServer::client_first(first) {
        assert!(!user.is_empty());
        let _ = server.server_first(Some(&creds), &user);
        // Not the nonce just made: the proof can never hold.
        assert!(server.client_final(last).is_err());
    }
    let _ = ScramCredentials::parse(&text);
    // Only the cheap schemes: a fuzzer-made $2y$ or $argon2 hash could ask
    // for any cost.
    if !text.contains("$2") && !text.contains("argon") && !text.contains("rounds=") && !text.contains("SCRAM") {
        let _ = verify_password(&text, "password");
    }
});
