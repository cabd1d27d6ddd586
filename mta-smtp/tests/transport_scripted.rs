//! Scripted clients over real loopback sockets: BDAT, pipelined
//! batches, STARTTLS injection, wrapper mode, timeouts, connection
//! limits, shutdown, and a misbehaving client beside a good one.

#[path = "transport_common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, HOST, Options, Recording, TestServer, localhost, tls_connector};
use mta_smtp::server::ServerConfig;
use mta_smtp::transport::ConnectionLimits;
use tokio::net::TcpStream;

fn starttls_session(forbid_unauth_pipelining: bool) -> ServerConfig {
    let mut session = ServerConfig::new(HOST);
    session.starttls = true;
    session.forbid_unauth_pipelining = forbid_unauth_pipelining;
    session
}

async fn greeted(server: &TestServer) -> Client<TcpStream> {
    let mut c = server.connect().await;
    assert_eq!(c.reply().await, format!("220 {HOST} ESMTP\r\n"));
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn bdat_chunks_are_taken_by_count() {
    let server = TestServer::start(Options::default()).await;
    let mut c = greeted(&server).await;
    let ehlo = c.command("EHLO raw.example.org").await;
    assert!(
        ehlo.contains("250-CHUNKING\r\n") || ehlo.ends_with("250 CHUNKING\r\n"),
        "{ehlo}"
    );
    assert_eq!(
        c.command("MAIL FROM:<a@example.org>").await,
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        c.command("RCPT TO:<b@example.net>").await,
        "250 2.1.5 Ok\r\n"
    );
    // A chunk that holds what would end DATA: with BDAT it is content.
    let first = "Subject: bdat\r\n\r\nline\r\n.\r\n";
    c.send(&format!("BDAT {}\r\n{first}", first.len())).await;
    assert_eq!(
        c.reply().await,
        format!("250 2.0.0 Ok: {} bytes\r\n", first.len())
    );
    let last = "tail\r\n";
    c.send(&format!("BDAT {} LAST\r\n{last}", last.len())).await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued as 1\r\n");
    assert_eq!(c.command("QUIT").await, "221 2.0.0 Bye\r\n");
    c.expect_close().await;
    let messages = server.recording.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].text(), format!("{first}{last}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_to_a_pipelined_group_leave_in_one_write() {
    // Each decision takes a while, so a transport that wrote after each
    // one would let the client's first read see only the first reply.
    let recording = Recording {
        decision_delay: Duration::from_millis(30),
        ..Recording::default()
    };
    let server = TestServer::start(Options {
        recording,
        ..Options::default()
    })
    .await;
    let mut c = greeted(&server).await;
    c.command("EHLO raw.example.org").await;
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n")
        .await;
    assert_eq!(
        c.read_once().await,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    c.send("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n").await;
    assert_eq!(
        c.read_once().await,
        "250 2.0.0 Ok: queued as 1\r\n221 2.0.0 Bye\r\n"
    );
    c.expect_close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_injected_before_starttls_is_discarded() {
    // smtpd_forbid_unauth_pipelining off: the session throws the
    // injected command away, and it must not come back after TLS.
    let server = TestServer::start(Options {
        session: starttls_session(false),
        tls: true,
        ..Options::default()
    })
    .await;
    let mut c = greeted(&server).await;
    assert!(
        c.command("EHLO raw.example.org")
            .await
            .contains("250-STARTTLS\r\n")
    );
    c.send("STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
        .await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS\r\n");
    let tcp = c.into_inner();
    let tls = tls_connector(server.cert.as_ref().unwrap())
        .connect(localhost(), tcp)
        .await
        .expect("handshake");
    let mut c = Client::new(tls);
    // Had the MAIL been kept, its reply (or an error for MAIL before
    // EHLO) would come first. The first reply is EHLO's.
    let ehlo = c.command("EHLO raw.example.org").await;
    assert!(ehlo.starts_with(&format!("250-{HOST}\r\n")), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    // A transaction can start: nothing of the injected one is left.
    assert_eq!(
        c.command("MAIL FROM:<real@example.org>").await,
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(c.command("QUIT").await, "221 2.0.0 Bye\r\n");
    let events = server.recording.events();
    assert_eq!(
        events.iter().filter(|e| *e == "Mail").count(),
        1,
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_injected_before_starttls_ends_the_session_when_forbidden() {
    let server = TestServer::start(Options {
        session: starttls_session(true),
        tls: true,
        ..Options::default()
    })
    .await;
    let mut c = greeted(&server).await;
    c.command("EHLO raw.example.org").await;
    c.send("STARTTLS\r\nRSET\r\n").await;
    assert_eq!(
        c.reply().await,
        "554 5.5.0 Error: SMTP protocol synchronization\r\n"
    );
    c.expect_close().await;
    // No TLS is offered any more.
    let tcp = c.into_inner();
    let handshake = tls_connector(server.cert.as_ref().unwrap())
        .connect(localhost(), tcp)
        .await;
    assert!(handshake.is_err());
    let events = server.recording.events();
    assert!(
        !events.iter().any(|e| e == "Rset" || e == "StartTls"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e == "Closed(Pipelining)"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrapper_mode_does_tls_before_the_greeting() {
    let mut session = ServerConfig::new(HOST);
    // Would be offered on a plain port; never on a wrapper-mode one.
    session.starttls = true;
    session.auth_mechanisms = vec!["PLAIN".into()];
    session.auth_requires_tls = true;
    let server = TestServer::start(Options {
        session,
        tls: true,
        wrapper: true,
        ..Options::default()
    })
    .await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = tls_connector(server.cert.as_ref().unwrap())
        .connect(localhost(), tcp)
        .await
        .expect("TLS first");
    let mut c = Client::new(tls);
    assert_eq!(c.reply().await, format!("220 {HOST} ESMTP\r\n"));
    let ehlo = c.command("EHLO raw.example.org").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("250-AUTH PLAIN\r\n"), "{ehlo}");
    c.command("MAIL FROM:<a@example.org>").await;
    c.command("RCPT TO:<b@example.net>").await;
    assert!(c.command("DATA").await.starts_with("354 "));
    assert_eq!(
        c.command("Subject: 465\r\n\r\nhi\r\n.").await,
        "250 2.0.0 Ok: queued as 1\r\n"
    );
    let m = &server.recording.messages()[0];
    assert!(m.wrapper_mode);
    assert!(m.tls.is_some());
    assert_eq!(m.text(), "Subject: 465\r\n\r\nhi\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_client_on_a_wrapper_port_gets_nothing() {
    let server = TestServer::start(Options {
        tls: true,
        wrapper: true,
        ..Options::default()
    })
    .await;
    let mut c = server.connect().await;
    c.send("EHLO plain.example.org\r\n").await;
    // The server expects a ClientHello: it answers with a TLS alert
    // record (content type 21), never with SMTP, and closes.
    let alert = c.read_once().await.into_bytes();
    assert_eq!(alert.first(), Some(&21), "{alert:?}");
    c.expect_close().await;
    assert!(server.recording.events().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_times_out() {
    let mut session = ServerConfig::new(HOST);
    session.timeout = Duration::from_millis(300);
    let server = TestServer::start(Options {
        session,
        ..Options::default()
    })
    .await;
    let start = Instant::now();
    let mut c = greeted(&server).await;
    assert_eq!(
        c.reply().await,
        format!("421 4.4.2 {HOST} Error: timeout exceeded\r\n")
    );
    c.expect_close().await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(
        server
            .recording
            .events()
            .contains(&"Closed(Timeout)".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_client_connection_limit() {
    let server = TestServer::start(Options {
        limits: ConnectionLimits {
            client_connection_count_limit: 2,
            ..ConnectionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut first = greeted(&server).await;
    let _second = greeted(&server).await;
    let mut third = server.connect().await;
    assert_eq!(
        third.reply().await,
        format!("421 4.7.0 {HOST} Error: too many connections from 127.0.0.1\r\n")
    );
    third.expect_close().await;
    // The refused client never reached the policy.
    assert_eq!(
        server
            .recording
            .events()
            .iter()
            .filter(|e| *e == "Connect")
            .count(),
        2
    );
    // A closed connection gives its place back.
    assert_eq!(first.command("QUIT").await, "221 2.0.0 Bye\r\n");
    first.expect_close().await;
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let mut c = server.connect().await;
        let reply = c.reply().await;
        if reply.starts_with("220 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place was never given back: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exempt_clients_are_not_limited() {
    let server = TestServer::start(Options {
        limits: ConnectionLimits {
            client_connection_count_limit: 1,
            exempt: Some(Arc::new(|ip: std::net::IpAddr| ip.is_loopback())),
            ..ConnectionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let _a = greeted(&server).await;
    let _b = greeted(&server).await;
    let _c = greeted(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn global_limit_leaves_clients_waiting() {
    let server = TestServer::start(Options {
        limits: ConnectionLimits {
            max_connections: 2,
            ..ConnectionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut a = greeted(&server).await;
    let _b = greeted(&server).await;
    // Connected (the listen queue takes it) but not served.
    let mut waiting = server.connect().await;
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.reply()).await;
    assert!(early.is_err(), "served beyond the limit: {early:?}");
    a.command("QUIT").await;
    a.expect_close().await;
    assert_eq!(waiting.reply().await, format!("220 {HOST} ESMTP\r\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_idle_sessions_and_lets_a_message_finish() {
    let mut server = TestServer::start(Options {
        limits: ConnectionLimits {
            shutdown_timeout: Duration::from_secs(5),
            ..ConnectionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut idle = greeted(&server).await;
    idle.command("EHLO idle.example.org").await;
    let mut busy = greeted(&server).await;
    busy.command("EHLO busy.example.org").await;
    busy.command("MAIL FROM:<a@example.org>").await;
    busy.command("RCPT TO:<b@example.net>").await;
    assert!(busy.command("DATA").await.starts_with("354 "));
    busy.send("Subject: almost\r\n\r\nfirst part\r\n").await;

    let start = Instant::now();
    let addr = server.addr;
    let stopped = server.shutdown();
    assert_eq!(
        idle.reply().await,
        format!("421 4.3.2 {HOST} Service shutting down\r\n")
    );
    idle.expect_close().await;
    assert!(start.elapsed() < Duration::from_secs(2));
    // New clients are no longer accepted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err());

    // The message in progress may finish, then that session closes too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.send("second part\r\n.\r\n").await;
    assert_eq!(busy.reply().await, "250 2.0.0 Ok: queued as 1\r\n");
    assert_eq!(
        busy.reply().await,
        format!("421 4.3.2 {HOST} Service shutting down\r\n")
    );
    busy.expect_close().await;
    tokio::time::timeout(Duration::from_secs(2), stopped)
        .await
        .expect("run returns once the sessions are gone")
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(4));
    let messages = server.recording.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].text(),
        "Subject: almost\r\n\r\nfirst part\r\nsecond part\r\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_deadline_ends_an_unfinished_message() {
    let mut server = TestServer::start(Options {
        limits: ConnectionLimits {
            shutdown_timeout: Duration::from_millis(500),
            ..ConnectionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut slow = greeted(&server).await;
    slow.command("HELO slow.example.org").await;
    slow.command("MAIL FROM:<a@example.org>").await;
    slow.command("RCPT TO:<b@example.net>").await;
    assert!(slow.command("DATA").await.starts_with("354 "));
    slow.send("Subject: never finished\r\n").await;
    let start = Instant::now();
    let stopped = server.shutdown();
    assert_eq!(
        slow.reply().await,
        format!("421 4.3.2 {HOST} Service shutting down\r\n")
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    slow.expect_close().await;
    tokio::time::timeout(Duration::from_secs(2), stopped)
        .await
        .expect("run returns")
        .unwrap();
    assert!(server.recording.messages().is_empty());
    let events = server.recording.events();
    assert!(
        events.iter().any(|e| e.starts_with("DataAborted")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_client_that_resets_does_not_disturb_another() {
    let server = TestServer::start(Options::default()).await;
    let mut good = greeted(&server).await;
    good.command("EHLO good.example.org").await;
    good.command("MAIL FROM:<good@example.org>").await;
    good.command("RCPT TO:<b@example.net>").await;
    assert!(good.command("DATA").await.starts_with("354 "));

    // Another client sends binary junk and resets.
    let mut junk_client = greeted(&server).await;
    let junk: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
    junk_client.send_bytes(&junk).await;
    let _ = junk_client.read_once().await;
    let junk_client = junk_client.into_inner_lossy();
    junk_client.set_zero_linger().unwrap();
    drop(junk_client);

    // A third abandons a message with a reset in the middle of DATA.
    let mut quitter = greeted(&server).await;
    quitter.command("EHLO quitter.example.org").await;
    quitter.command("MAIL FROM:<quitter@example.org>").await;
    quitter.command("RCPT TO:<b@example.net>").await;
    assert!(quitter.command("DATA").await.starts_with("354 "));
    quitter
        .send("Subject: half\r\n\r\nhalf a message\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quitter = quitter.into_inner();
    quitter.set_zero_linger().unwrap();
    drop(quitter);
    tokio::time::sleep(Duration::from_millis(50)).await;

    good.send("Subject: fine\r\n\r\nstill here\r\n.\r\n").await;
    assert_eq!(good.reply().await, "250 2.0.0 Ok: queued as 1\r\n");
    assert_eq!(good.command("QUIT").await, "221 2.0.0 Bye\r\n");
    let messages = server.recording.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].from, "<good@example.org>");
    assert_eq!(messages[0].text(), "Subject: fine\r\n\r\nstill here\r\n");
    let events = server.recording.events();
    assert!(
        events.iter().any(|e| e == "DataAborted(Disconnected)"),
        "{events:?}"
    );
    // The server still serves new clients.
    let mut later = greeted(&server).await;
    assert_eq!(later.command("NOOP").await, "250 2.0.0 Ok\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn lmtp_gets_one_reply_per_recipient() {
    let mut session = ServerConfig::new(HOST);
    session.lmtp = true;
    let server = TestServer::start(Options {
        session,
        recording: Recording {
            lmtp_refuse_second: true,
            ..Recording::default()
        },
        ..Options::default()
    })
    .await;
    let mut c = greeted(&server).await;
    c.command("LHLO raw.example.org").await;
    c.command("MAIL FROM:<a@example.org>").await;
    c.command("RCPT TO:<b@example.net>").await;
    c.command("RCPT TO:<c@example.net>").await;
    c.command("RCPT TO:<d@example.net>").await;
    assert!(c.command("DATA").await.starts_with("354 "));
    c.send("Subject: lmtp\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued as 1\r\n");
    assert_eq!(c.reply().await, "452 4.2.2 Mailbox full\r\n");
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued as 1\r\n");
}
