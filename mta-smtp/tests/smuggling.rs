//! SMTP smuggling (SEC Consult, December 2023) and DATA integrity.
//!
//! Each false end-of-data sequence from the research is sent inside a
//! message, followed by a smuggled second transaction; the server must
//! treat all of it as content of the one message and end the data only
//! at the real `CR LF . CR LF`. One test per sequence, named after it.

use std::time::Instant;

use mta_smtp::server::{BareNewline, Event, ServerConfig, ServerSession};
use proptest::prelude::*;

/// Drives a session that accepts everything through a transaction whose
/// DATA content is `content` (sent as is, in `chunks` pieces), then
/// QUIT. Returns the content received and every event.
fn transaction(policy: BareNewline, content: &[u8], chunks: &[usize]) -> (Vec<u8>, Vec<Event>) {
    let mut config = ServerConfig::new("mx.example.com");
    config.bare_newline = policy;
    let now = Instant::now();
    let mut s = ServerSession::new(config, now);
    let mut events = Vec::new();
    let mut received = Vec::new();
    let mut drain = |s: &mut ServerSession, events: &mut Vec<Event>| {
        while let Some(e) = s.poll_event() {
            if let Event::Content(b) = &e {
                received.extend_from_slice(b);
            }
            if e.needs_decision() {
                s.accept(now);
            }
            events.push(e);
        }
    };
    drain(&mut s, &mut events);
    for line in [
        &b"EHLO c.example\r\n"[..],
        b"MAIL FROM:<a@example.org>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
    ] {
        s.handle_input(line, now);
        drain(&mut s, &mut events);
    }
    let mut rest = content;
    for &n in chunks {
        let n = n.min(rest.len());
        s.handle_input(&rest[..n], now);
        drain(&mut s, &mut events);
        rest = &rest[n..];
    }
    s.handle_input(rest, now);
    drain(&mut s, &mut events);
    s.handle_input(b"QUIT\r\n", now);
    drain(&mut s, &mut events);
    (received, events)
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

/// The smuggled transaction after `sequence` is content, and exactly
/// one message ends, at the real end of data.
fn not_an_end(sequence: &[u8]) {
    for policy in [BareNewline::Normalize, BareNewline::Reject] {
        let mut content = b"Subject: test\r\n\r\nhello".to_vec();
        content.extend_from_slice(sequence);
        content.extend_from_slice(
            b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n",
        );
        let (received, events) = transaction(policy, &content, &[]);
        let ends = count(&events, |e| matches!(e, Event::DataEnd { .. }));
        let aborted = count(&events, |e| matches!(e, Event::DataAborted(_)));
        assert_eq!(
            ends + aborted,
            1,
            "{policy:?} {sequence:?}: one message, got {events:?}"
        );
        assert_eq!(
            count(&events, |e| matches!(e, Event::Mail { .. })),
            1,
            "{policy:?} {sequence:?}: a second MAIL was read"
        );
        assert_eq!(count(&events, |e| matches!(e, Event::Rcpt { .. })), 1);
        if ends == 1 {
            let text = String::from_utf8_lossy(&received);
            assert!(
                text.contains("MAIL FROM:<evil@example.org>"),
                "{sequence:?}: smuggled text not in content: {text:?}"
            );
            assert!(text.ends_with("smuggled\r\n"), "{text:?}");
        }
        // QUIT was read as a command after the one real end.
        assert!(matches!(events.last(), Some(Event::Quit)), "{events:?}");
    }
}

#[test]
fn lf_dot_lf() {
    not_an_end(b"\n.\n");
}

#[test]
fn lf_dot_crlf() {
    not_an_end(b"\n.\r\n");
}

#[test]
fn crlf_dot_lf() {
    not_an_end(b"\r\n.\n");
}

#[test]
fn cr_dot_crlf() {
    not_an_end(b"\r.\r\n");
}

#[test]
fn cr_dot_cr() {
    not_an_end(b"\r.\r");
}

#[test]
fn crlf_dot_cr() {
    not_an_end(b"\r\n.\r");
}

#[test]
fn crlf_dot_cr_crlf() {
    not_an_end(b"\r\n.\r\r\n");
}

#[test]
fn cr_crlf_dot_cr_crlf() {
    not_an_end(b"\r\r\n.\r\r\n");
}

#[test]
fn crlf_dot_nul_crlf() {
    not_an_end(b"\r\n.\0\r\n");
}

#[test]
fn crlf_nul_dot_crlf() {
    not_an_end(b"\r\n\0.\r\n");
}

#[test]
fn lf_cr_dot_crlf() {
    not_an_end(b"\n\r.\r\n");
}

#[test]
fn crlf_space_dot_crlf() {
    not_an_end(b"\r\n .\r\n");
}

#[test]
fn crlf_dot_space_crlf() {
    not_an_end(b"\r\n. \r\n");
}

#[test]
fn crlf_dot_dot_crlf_is_a_stuffed_dot() {
    // ".." is a stuffed "."; it must come out as "." and not end.
    let (received, events) = transaction(BareNewline::Normalize, b"a\r\n..\r\nb\r\n.\r\n", &[]);
    assert_eq!(received, b"a\r\n.\r\nb\r\n");
    assert_eq!(count(&events, |e| matches!(e, Event::DataEnd { .. })), 1);
}

#[test]
fn bare_lf_end_is_accepted_only_with_no() {
    // Postfix's old "no": `\n.\n` ends the data (vulnerable, explicit).
    let (received, events) = transaction(BareNewline::Allow, b"hello\n.\nQUIT\r\n", &[]);
    assert_eq!(received, b"hello\r\n");
    assert_eq!(count(&events, |e| matches!(e, Event::DataEnd { .. })), 1);
}

/// What a client sends for `lines` (CR LF line ends, dot-stuffed), and
/// what the server must pass on.
fn stuffed(lines: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for line in lines {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"\r\n");
        expected.extend_from_slice(line);
        expected.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    (wire, expected)
}

proptest! {
    /// Any content, dot-stuffed and split anywhere, comes out exactly as
    /// it went in, in one message.
    #[test]
    fn content_survives_any_split(
        lines in prop::collection::vec(
            prop::collection::vec(prop::sample::select(vec![b'a', b'.', b' ', b'\r', 0u8, 0xc3, b'x']), 0..12),
            0..20),
        chunks in prop::collection::vec(1usize..9, 0..40),
    ) {
        let (wire, expected) = stuffed(&lines);
        let (received, events) = transaction(BareNewline::Normalize, &wire, &chunks);
        prop_assert_eq!(count(&events, |e| matches!(e, Event::DataEnd { .. })), 1);
        prop_assert_eq!(received, expected);
        let ended_with_quit = matches!(events.last(), Some(Event::Quit));
        prop_assert!(ended_with_quit);
    }

    /// Arbitrary bytes at the session, with every event accepted, never
    /// panic, and the session never reads commands out of the data.
    #[test]
    fn arbitrary_input_never_panics(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..20),
        policy in prop::sample::select(vec![BareNewline::Normalize, BareNewline::Reject, BareNewline::Allow]),
    ) {
        let mut config = ServerConfig::new("mx.example.com");
        config.bare_newline = policy;
        config.forbid_unauth_pipelining = false;
        let mut now = Instant::now();
        let mut s = ServerSession::new(config, now);
        let mut out = Vec::new();
        for piece in &pieces {
            while let Some(e) = s.poll_event() {
                if e.needs_decision() {
                    s.accept(now);
                }
            }
            s.handle_input(piece, now);
            now += std::time::Duration::from_millis(10);
            s.handle_timeout(now);
            s.poll_transmit(&mut out);
        }
    }
}
