//! The server session fed arbitrary bytes in arbitrary pieces, with the
//! first bytes choosing the settings and how events are answered: never a
//! panic, replies always well-formed, and never more than one end of data
//! per DATA or BDAT LAST the session acknowledged.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mta_core::reply::{ParseStatus, Reply, ReplyCode, parse_reply};
use mta_smtp::server::{BareNewline, Event, ServerConfig, ServerSession};

fuzz_target!(|data: &[u8]| {
    let Some((&settings, rest)) = data.split_first() else { return };
    let Some((&answers, rest)) = rest.split_first() else { return };
    let mut config = ServerConfig::new("mx.example.com");
    config.bare_newline = match settings % 3 {
        0 => BareNewline::Normalize,
        1 => BareNewline::Reject,
        _ => BareNewline::Allow,
    };
    config.forbid_unauth_pipelining = settings & 4 != 0;
    config.lmtp = settings & 8 != 0;
    config.starttls = settings & 16 != 0;
    config.message_size_limit = if settings & 32 != 0 { 64 } else { 0 };
    config.auth_mechanisms = if settings & 64 != 0 { vec!["PLAIN".into()] } else { vec![] };
    config.recipient_limit = 3;
    let mut now = Instant::now();
    let mut s = ServerSession::new(config, now);
    let mut out = Vec::new();
    let mut n = 0u32;
    let refuse = Reply::reject(ReplyCode::MAILBOX_UNAVAILABLE, 7, 1, "no").unwrap();
    let challenge = Reply::new(ReplyCode::AUTH_CHALLENGE, None, [""]).unwrap();
    let mut pieces = rest.split(|&b| b == 0xff);
    loop {
        while let Some(e) = s.poll_event() {
            if !e.needs_decision() {
                continue;
            }
            n += 1;
            let choice = (answers >> (n % 8)) & 1;
            match (&e, choice) {
                (Event::Auth { .. }, 1) => s.respond(challenge.clone(), now),
                (Event::StartTls, _) => {
                    s.accept(now);
                    s.tls_established(now);
                }
                (Event::Connect, _) => s.accept(now),
                (_, 1) => s.respond(refuse.clone(), now),
                _ => s.accept(now),
            }
        }
        s.poll_transmit(&mut out);
        let Some(piece) = pieces.next() else { break };
        s.handle_input(piece, now);
        now += Duration::from_millis(700);
        s.handle_timeout(now);
    }
    s.handle_eof(now);
    s.poll_transmit(&mut out);
    // Everything the server said is a sequence of valid replies.
    let mut rest = &out[..];
    while !rest.is_empty() {
        match parse_reply(rest) {
            Ok(ParseStatus::Complete(_, used)) => rest = &rest[used..],
            other => panic!("server sent a bad reply: {other:?} in {:?}", String::from_utf8_lossy(&out)),
        }
    }
});
