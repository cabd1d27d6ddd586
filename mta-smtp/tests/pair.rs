//! Our client against our server, in memory, on a virtual clock: the two
//! state machines are joined by byte queues, in the manner of
//! quinn-proto's `Pair`. Each test asserts what a user of both would
//! check: what the server received, and what the client learnt for each
//! recipient.

use std::time::{Duration, Instant};

use mta_core::address::{MailAddress, ParseOptions, ReversePath};
use mta_core::reply::{ParseStatus, Reply, parse_reply};
use mta_smtp::client::{
    Body, ClientConfig, ClientEvent, ClientSession, FailureKind, TlsMode, Transaction,
    TransactionResult, Verdict,
};
use mta_smtp::server::{Event, ServerConfig, ServerSession};

fn reply(text: &str) -> Reply {
    let wire = format!("{text}\r\n");
    match parse_reply(wire.as_bytes()).unwrap() {
        ParseStatus::Complete(view, _) => view.to_reply(),
        ParseStatus::Partial => unreachable!(),
    }
}

fn addr(a: &str) -> MailAddress {
    MailAddress::parse(a, ParseOptions::LENIENT).unwrap()
}

/// What the server side saw.
#[derive(Default, Debug)]
struct Received {
    mail: Vec<String>,
    rcpt: Vec<String>,
    content: Vec<u8>,
    messages: u32,
    events: Vec<String>,
}

/// The server's policy: refuse the recipients whose local part starts
/// with `no`, defer those starting with `later`, accept the rest; queue
/// every message.
fn decide(server: &mut ServerSession, now: Instant, got: &mut Received, lmtp_refuse: &[&str]) {
    while let Some(event) = server.poll_event() {
        got.events
            .push(format!("{event:?}").chars().take(40).collect());
        match &event {
            Event::Mail { from, .. } => got.mail.push(from.to_string()),
            Event::Rcpt { to, .. } => {
                let local = to.local_part().as_str().to_string();
                if local.starts_with("no") {
                    server.respond(reply(&format!("550 5.1.1 <{to}>: User unknown")), now);
                    continue;
                }
                if local.starts_with("later") {
                    server.respond(reply(&format!("450 4.2.0 <{to}>: try later")), now);
                    continue;
                }
                got.rcpt.push(to.to_string());
            }
            Event::Content(bytes) => got.content.extend_from_slice(bytes),
            Event::DataEnd { .. } => {
                got.messages += 1;
                if !lmtp_refuse.is_empty() {
                    let replies = got
                        .rcpt
                        .iter()
                        .map(|r| {
                            if lmtp_refuse.contains(&r.as_str()) {
                                reply("552 5.2.2 <x>: mailbox full")
                            } else {
                                reply("250 2.0.0 delivered")
                            }
                        })
                        .collect();
                    server.respond_per_recipient(replies, now);
                } else {
                    let text = format!("250 2.0.0 Ok: queued as Q{}", got.messages);
                    server.respond(reply(&text), now);
                }
                continue;
            }
            _ => {}
        }
        if event.needs_decision() {
            server.accept(now);
        }
    }
}

struct Pair {
    client: ClientSession,
    server: ServerSession,
    now: Instant,
    got: Received,
    results: Vec<TransactionResult>,
    failures: Vec<FailureKind>,
    content: Vec<u8>,
    lmtp_refuse: Vec<&'static str>,
    ready: bool,
    starttls_seen: bool,
}

impl Pair {
    fn new(client: ClientConfig, server: ServerConfig) -> Pair {
        let now = Instant::now();
        Pair {
            client: ClientSession::new(client, now),
            server: ServerSession::new(server, now),
            now,
            got: Received::default(),
            results: Vec::new(),
            failures: Vec::new(),
            content: Vec::new(),
            lmtp_refuse: Vec::new(),
            ready: false,
            starttls_seen: false,
        }
    }

    /// Moves bytes and answers events until neither side has anything to
    /// do.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            decide(&mut self.server, self.now, &mut self.got, &self.lmtp_refuse);
            let mut bytes = Vec::new();
            self.server.poll_transmit(&mut bytes);
            if !bytes.is_empty() {
                moved = true;
                self.client.handle_input(&bytes, self.now);
            }
            if self.server.is_closed() && bytes.is_empty() && !self.client.is_closed() {
                self.client.connection_closed();
            }
            while let Some(event) = self.client.poll_event() {
                moved = true;
                match event {
                    ClientEvent::Ready { .. } => self.ready = true,
                    ClientEvent::StartTls => {
                        // Both ends "finish the handshake" in memory.
                        self.starttls_seen = true;
                        self.server.tls_established(self.now);
                        self.client.tls_established(self.now);
                    }
                    ClientEvent::WantContent => {
                        // Sent in awkward pieces.
                        for piece in self.content.chunks(7) {
                            self.client.send_content(piece);
                        }
                        self.client.end_content(self.now);
                    }
                    ClientEvent::TransactionDone(r) => self.results.push(r),
                    ClientEvent::Failed(f) => self.failures.push(f.kind),
                    _ => {}
                }
            }
            let mut bytes = Vec::new();
            self.client.poll_transmit(&mut bytes);
            if !bytes.is_empty() {
                moved = true;
                self.server.handle_input(&bytes, self.now);
            }
            if !moved {
                return;
            }
        }
        panic!("the pair never settled");
    }

    fn send(&mut self, from: &str, rcpts: &[&str], content: &[u8], body: Body) {
        self.content = content.to_vec();
        let mut tx = Transaction::new(
            ReversePath::parse(from, ParseOptions::LENIENT).unwrap(),
            rcpts.iter().map(|r| addr(r)).collect(),
        );
        tx.body = body;
        tx.size = Some(content.len() as u64);
        self.client.start_transaction(tx, self.now);
        self.drive();
    }
}

fn verdicts(r: &TransactionResult) -> Vec<(String, Verdict)> {
    r.recipients
        .iter()
        .map(|o| (o.address.to_string(), o.verdict))
        .collect()
}

const MESSAGE: &[u8] = b"Subject: pair\r\n\r\n.leading dot\r\nbare LF line\nlast line without end";

#[test]
fn pipelined_data_with_mixed_recipients() {
    let mut config = ServerConfig::new("mx.example.com");
    config.chunking = false;
    let mut p = Pair::new(ClientConfig::new("client.example.org"), config);
    p.drive();
    assert!(p.ready);
    p.send(
        "<a@example.org>",
        &["b@example.com", "nobody@example.com", "later@example.com"],
        MESSAGE,
        Body::SevenBit,
    );
    assert_eq!(p.got.mail, ["<a@example.org>"]);
    assert_eq!(p.got.rcpt, ["b@example.com"]);
    // Dot-stuffed by the client, unstuffed by the server; line ends made
    // CR LF and a final line end added.
    assert_eq!(
        String::from_utf8(p.got.content.clone()).unwrap(),
        "Subject: pair\r\n\r\n.leading dot\r\nbare LF line\r\nlast line without end\r\n"
    );
    let r = &p.results[0];
    assert_eq!(
        verdicts(r),
        [
            ("b@example.com".to_string(), Verdict::Delivered),
            ("nobody@example.com".to_string(), Verdict::Bounced),
            ("later@example.com".to_string(), Verdict::Deferred),
        ]
    );
    assert_eq!(
        r.data_reply.as_ref().unwrap().to_string(),
        "250 2.0.0 Ok: queued as Q1"
    );
    // MAIL, three RCPTs and DATA went as one pipelined group, which the
    // server (smtpd_forbid_unauth_pipelining on) accepted as legal.
    assert!(p.failures.is_empty(), "{:?}", p.failures);
}

#[test]
fn bdat_when_chunking_is_offered() {
    let mut p = Pair::new(
        ClientConfig::new("client.example.org"),
        ServerConfig::new("mx.example.com"),
    );
    p.drive();
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| if i % 80 == 79 { b'\n' } else { b'.' })
        .collect();
    p.send(
        "<a@example.org>",
        &["b@example.com"],
        &big,
        Body::EightBitMime,
    );
    // Every LF becomes CR LF; the content already ends with a line end.
    let mut expected = Vec::new();
    for &b in &big {
        if b == b'\n' {
            expected.push(b'\r');
        }
        expected.push(b);
    }
    assert_eq!(p.got.content.len(), expected.len());
    assert!(p.got.content == expected, "content differs");
    assert_eq!(
        verdicts(&p.results[0]),
        [("b@example.com".to_string(), Verdict::Delivered)]
    );
    assert!(p.got.events.iter().any(|e| e.starts_with("DataStart")));
}

#[test]
fn several_transactions_on_one_connection() {
    let mut p = Pair::new(
        ClientConfig::new("client.example.org"),
        ServerConfig::new("mx.example.com"),
    );
    p.drive();
    for i in 0..5 {
        p.send(
            &format!("<s{i}@example.org>"),
            &["b@example.com"],
            b"hello\r\n",
            Body::SevenBit,
        );
    }
    assert_eq!(p.got.messages, 5);
    assert_eq!(p.results.len(), 5);
    p.client.quit(p.now);
    p.drive();
    assert!(p.server.is_closed());
    assert!(p.client.is_closed());
}

#[test]
fn lmtp_gives_a_reply_per_recipient() {
    let mut server = ServerConfig::new("mailstore.example.com");
    server.lmtp = true;
    let mut p = Pair::new(ClientConfig::lmtp("mx.example.com"), server);
    p.lmtp_refuse = vec!["carol@example.com"];
    p.drive();
    p.send(
        "<a@example.org>",
        &["bob@example.com", "carol@example.com"],
        b"hi\r\n",
        Body::SevenBit,
    );
    assert_eq!(
        verdicts(&p.results[0]),
        [
            ("bob@example.com".to_string(), Verdict::Delivered),
            ("carol@example.com".to_string(), Verdict::Bounced),
        ]
    );
}

#[test]
fn starttls_required_and_offered() {
    let mut server = ServerConfig::new("mx.example.com");
    server.starttls = true;
    let mut client = ClientConfig::new("client.example.org");
    client.tls = TlsMode::Require;
    let mut p = Pair::new(client, server);
    p.drive();
    assert!(p.starttls_seen);
    assert!(p.server.is_tls());
    p.send(
        "<a@example.org>",
        &["b@example.com"],
        b"secret\r\n",
        Body::SevenBit,
    );
    assert_eq!(p.got.messages, 1);
}

#[test]
fn starttls_required_but_not_offered_fails_without_mail() {
    let mut client = ClientConfig::new("client.example.org");
    client.tls = TlsMode::Require;
    let mut p = Pair::new(client, ServerConfig::new("mx.example.com"));
    p.drive();
    assert_eq!(p.failures, [FailureKind::TlsUnavailable]);
    assert!(p.got.mail.is_empty());
}

#[test]
fn server_size_limit_is_honoured_before_sending() {
    let mut server = ServerConfig::new("mx.example.com");
    server.message_size_limit = 100;
    let mut p = Pair::new(ClientConfig::new("client.example.org"), server);
    p.drive();
    p.send(
        "<a@example.org>",
        &["b@example.com"],
        &[b'x'; 500],
        Body::SevenBit,
    );
    let r = &p.results[0];
    assert_eq!(r.recipients[0].verdict, Verdict::Bounced);
    assert_eq!(r.recipients[0].reply.code().get(), 552);
    // Nothing was sent: the server never saw MAIL.
    assert!(p.got.mail.is_empty());
}

#[test]
fn silent_server_times_out_on_the_virtual_clock() {
    let mut p = Pair::new(
        ClientConfig::new("client.example.org"),
        ServerConfig::new("mx.example.com"),
    );
    p.drive();
    // The server now stops answering: the client's MAIL goes nowhere.
    let tx = Transaction::new(
        ReversePath::parse("<a@example.org>", ParseOptions::LENIENT).unwrap(),
        vec![addr("b@example.com")],
    );
    p.client.start_transaction(tx, p.now);
    let mut sent = Vec::new();
    p.client.poll_transmit(&mut sent);
    assert!(sent.starts_with(b"MAIL FROM:<a@example.org>"));
    let deadline = p.client.poll_timeout().expect("a deadline while waiting");
    assert_eq!(deadline - p.now, Duration::from_secs(300));
    p.now = deadline;
    p.client.handle_timeout(p.now);
    let mut failed = None;
    while let Some(e) = p.client.poll_event() {
        if let ClientEvent::Failed(f) = e {
            failed = Some(f);
        }
    }
    let f = failed.expect("a timeout failure");
    assert_eq!(f.kind, FailureKind::Timeout);
    assert!(
        f.message.contains("timed out while sending MAIL FROM"),
        "{}",
        f.message
    );
}
