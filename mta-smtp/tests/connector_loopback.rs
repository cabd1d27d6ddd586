//! The connector against the in-repo tokio server and scripted servers,
//! all on 127.0.0.1.

#[path = "connector_support/mod.rs"]
mod support;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use mta_smtp::client::{ClientConfig, FailureKind, TlsMode, TransactionResult, Verdict};
use mta_smtp::connector::{CertificateVerification, ConnectError, Connector, TlsTrust};
use mta_smtp::server::ServerConfig;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const CONTENT: &[u8] = b"Subject: test\n\n.leading dot\nbare LF\r\n..two dots\r\n.\nlast line";
/// What the server passes on: CR LF line ends, dots unstuffed, a final
/// line end added.
const RECEIVED: &[u8] =
    b"Subject: test\r\n\r\n.leading dot\r\nbare LF\r\n..two dots\r\n.\r\nlast line\r\n";

fn verdicts(r: &TransactionResult) -> Vec<(Verdict, String)> {
    r.recipients.iter().map(|o| (o.verdict, o.dsn())).collect()
}

fn client() -> Connector {
    Connector::new(ClientConfig::new("client.example"))
}

/// A loopback relay that records what the client sent.
async fn recording_proxy(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let outbound = TcpStream::connect(to).await.unwrap();
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.into_split();
                let up = async {
                    let mut buf = vec![0; 65536];
                    loop {
                        let n = ri.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            let _ = wo.shutdown().await;
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if wo.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut ro, &mut wi).await;
                    let _ = wi.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, sent)
}

#[tokio::test]
async fn plain_data_several_transactions_on_one_connection() {
    let mut session = ServerConfig::new("mx.test");
    session.chunking = false;
    let server = TestServer::start(session, None, Policy::new()).await;
    let (proxy, sent) = recording_proxy(server.addr).await;
    let mut conn = client().connect(proxy, "localhost").await.unwrap();
    assert_eq!(
        conn.peer_name(),
        format!("localhost[127.0.0.1]:{}", proxy.port())
    );
    assert!(conn.capabilities().pipelining && !conn.capabilities().chunking);
    assert!(conn.tls().is_none());
    assert!(
        conn.greeting()
            .unwrap()
            .to_string()
            .starts_with("220 mx.test")
    );

    let r1 = conn
        .deliver(tx(&["a@example.com", "b@example.com"]), CONTENT)
        .await;
    assert_eq!(
        verdicts(&r1),
        vec![(Verdict::Delivered, "2.0.0".to_owned()); 2]
    );
    let r2 = conn
        .deliver(
            tx(&["bad@example.com", "c@example.com", "later@example.com"]),
            CONTENT,
        )
        .await;
    assert_eq!(
        verdicts(&r2),
        [
            (Verdict::Bounced, "5.1.1".into()),
            (Verdict::Delivered, "2.0.0".into()),
            (Verdict::Deferred, "4.2.0".into()),
        ]
    );
    assert_eq!(r2.recipients[0].reply.to_string(), "550 5.1.1 no such user");
    assert!(!r2.recipients[0].by_client);
    // Nobody accepted: no content, RSET, and the connection stays usable.
    let r3 = conn.deliver(tx(&["bad@example.com"]), CONTENT).await;
    assert_eq!(verdicts(&r3), [(Verdict::Bounced, "5.1.1".into())]);
    let r4 = conn.deliver(tx(&["d@example.com"]), &b""[..]).await;
    assert_eq!(verdicts(&r4), [(Verdict::Delivered, "2.0.0".into())]);
    assert!(conn.is_open());
    conn.quit().await;

    let policy = &server.policy;
    assert_eq!(policy.connections(), 1);
    let messages = policy.messages();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0].content, RECEIVED);
    assert_eq!(messages[0].helo, "client.example");
    assert_eq!(messages[0].rcpts, ["a@example.com", "b@example.com"]);
    assert_eq!(messages[1].rcpts, ["c@example.com"]);
    assert!(messages[2].content.is_empty());
    // Pipelined: the envelope and DATA left together, the content
    // dot-stuffed.
    let wire = String::from_utf8(sent.lock().unwrap().clone()).unwrap();
    assert!(
        wire.contains(
            "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        ),
        "{wire}"
    );
    assert!(wire.contains("\r\n..leading dot\r\n"), "{wire}");
    assert!(
        wire.contains("RSET\r\n") && wire.ends_with("QUIT\r\n"),
        "{wire}"
    );
    assert!(!wire.contains("BDAT"));
}

#[tokio::test]
async fn bdat_when_the_server_offers_chunking() {
    let server = TestServer::start(ServerConfig::new("mx.test"), None, Policy::new()).await;
    let (proxy, sent) = recording_proxy(server.addr).await;
    let mut conn = client().connect(proxy, "localhost").await.unwrap();
    assert!(conn.capabilities().chunking);
    // Big enough for several BDAT chunks and several content reads.
    let mut big = Vec::new();
    for i in 0..20_000 {
        big.extend_from_slice(format!(".line {i} of the message\n").as_bytes());
    }
    let r = conn
        .deliver(tx(&["a@example.com", "later@example.com"]), &big[..])
        .await;
    assert_eq!(
        verdicts(&r),
        [
            (Verdict::Delivered, "2.0.0".into()),
            (Verdict::Deferred, "4.2.0".into())
        ]
    );
    let r = conn.deliver(tx(&["b@example.com"]), CONTENT).await;
    assert_eq!(verdicts(&r), [(Verdict::Delivered, "2.0.0".into())]);
    conn.quit().await;
    let messages = server.policy.messages();
    assert_eq!(
        messages[0].content,
        String::from_utf8(big)
            .unwrap()
            .replace('\n', "\r\n")
            .as_bytes()
    );
    assert_eq!(messages[1].content, RECEIVED);
    let wire = String::from_utf8_lossy(&sent.lock().unwrap()).into_owned();
    assert!(wire.matches("BDAT ").count() >= 3, "several chunks");
    assert!(wire.contains(" LAST\r\n"));
    assert!(!wire.contains("DATA\r\n"));
}

#[tokio::test]
async fn starttls_verified_with_several_transactions() {
    let cert = self_signed();
    let mut session = ServerConfig::new("mx.test");
    session.starttls = true;
    let server = TestServer::start(session, Some(server_tls(&cert)), Policy::new()).await;
    let mut config = ClientConfig::new("client.example");
    config.tls = TlsMode::Require;
    let connector =
        Connector::new(config).with_tls(client_tls(&cert.der), CertificateVerification::Verifies);
    let mut conn = connector.connect(server.addr, "localhost").await.unwrap();
    let tls = conn.tls().expect("TLS").clone();
    assert_eq!(tls.trust, TlsTrust::Verified);
    assert_eq!(tls.info.protocol, "TLSv1.3");
    assert!(tls.info.cipher.starts_with("TLS_"), "{tls}");
    assert!(tls.to_string().contains(" bits)"), "{tls}");
    // The EHLO after TLS: STARTTLS no longer offered.
    assert!(!conn.capabilities().starttls);
    for rcpt in ["a@example.com", "b@example.com"] {
        let r = conn.deliver(tx(&[rcpt]), CONTENT).await;
        assert_eq!(verdicts(&r), [(Verdict::Delivered, "2.0.0".into())]);
    }
    conn.quit().await;
    let messages = server.policy.messages();
    assert_eq!(messages.len(), 2);
    for m in &messages {
        let info = m.tls.as_ref().expect("the server saw TLS");
        assert_eq!(info.protocol, "TLSv1.3");
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
        assert_eq!(m.content, RECEIVED);
    }
    assert_eq!(server.policy.connections(), 1);
}

#[tokio::test]
async fn failed_handshake_falls_back_to_plaintext_under_offer_only() {
    let cert = self_signed();
    let stranger = self_signed();
    let mut session = ServerConfig::new("mx.test");
    session.starttls = true;
    let server = TestServer::start(session, Some(server_tls(&cert)), Policy::new()).await;

    // Offer: the client trusts another certificate, the handshake fails,
    // and the message goes over a new plaintext connection.
    let mut config = ClientConfig::new("client.example");
    config.tls = TlsMode::Offer;
    let connector = Connector::new(config.clone())
        .with_tls(client_tls(&stranger.der), CertificateVerification::Verifies);
    let mut conn = connector.connect(server.addr, "localhost").await.unwrap();
    assert!(conn.tls().is_none());
    let r = conn.deliver(tx(&["a@example.com"]), CONTENT).await;
    assert_eq!(verdicts(&r), [(Verdict::Delivered, "2.0.0".into())]);
    conn.quit().await;
    assert_eq!(server.policy.connections(), 2);
    assert!(server.policy.messages()[0].tls.is_none());

    // Require: the failure is the answer.
    config.tls = TlsMode::Require;
    let connector = Connector::new(config)
        .with_tls(client_tls(&stranger.der), CertificateVerification::Verifies);
    let e = connector
        .connect(server.addr, "localhost")
        .await
        .unwrap_err();
    let ConnectError::TlsHandshake { peer_name, reason } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        peer_name,
        &format!("localhost[127.0.0.1]:{}", server.addr.port())
    );
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(
        e.reply().to_string(),
        "450 4.7.5 Cannot start TLS: handshake failure"
    );
    assert_eq!(server.policy.connections(), 3);
}

#[tokio::test]
async fn tls_required_without_configuration_or_offer() {
    let server = TestServer::start(ServerConfig::new("mx.test"), None, Policy::new()).await;
    let mut config = ClientConfig::new("client.example");
    config.tls = TlsMode::Require;
    // No rustls configuration: nothing is even tried.
    let e = Connector::new(config.clone())
        .connect(server.addr, "localhost")
        .await
        .unwrap_err();
    assert_eq!(e, ConnectError::TlsUnavailable);
    assert_eq!(server.policy.connections(), 0);

    // A configuration, but the server offers no STARTTLS.
    let cert = self_signed();
    let connector =
        Connector::new(config).with_tls(client_tls(&cert.der), CertificateVerification::Verifies);
    let e = connector
        .connect(server.addr, "localhost")
        .await
        .unwrap_err();
    let ConnectError::Session(f) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(f.kind, FailureKind::TlsUnavailable);
    assert_eq!(
        f.message,
        format!(
            "TLS is required, but was not offered by host localhost[127.0.0.1]:{}",
            server.addr.port()
        )
    );

    // Offer without a configuration: plaintext, no STARTTLS sent.
    let mut config = ClientConfig::new("client.example");
    config.tls = TlsMode::Offer;
    let mut session = ServerConfig::new("mx.test");
    session.starttls = true;
    let tls_server = TestServer::start(session, Some(server_tls(&cert)), Policy::new()).await;
    let mut conn = Connector::new(config)
        .connect(tls_server.addr, "localhost")
        .await
        .unwrap();
    assert!(conn.capabilities().starttls && conn.tls().is_none());
    let r = conn.deliver(tx(&["a@example.com"]), CONTENT).await;
    assert_eq!(verdicts(&r), [(Verdict::Delivered, "2.0.0".into())]);
    assert_eq!(tls_server.policy.connections(), 1);
}

#[tokio::test]
async fn a_server_that_stops_answering_defers_everyone() {
    let mut policy = Policy::new();
    policy.slow = Duration::from_secs(5);
    let server = TestServer::start(ServerConfig::new("mx.test"), None, policy).await;
    let mut config = ClientConfig::new("client.example");
    config.timeouts.rcpt = Duration::from_millis(300);
    // Lockstep, so the first RCPT's reply arrives on its own: the
    // in-repo server holds a pipelined group's replies until it has
    // decided them all.
    config.use_pipelining = false;
    let mut conn = Connector::new(config)
        .connect(server.addr, "localhost")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let r = conn
        .deliver(
            tx(&["a@example.com", "slow@example.com", "bad@example.com"]),
            CONTENT,
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let expected = format!(
        "conversation with localhost[127.0.0.1]:{} timed out while sending RCPT TO",
        server.addr.port()
    );
    // The first RCPT was answered (accepted, but the message never
    // went), the others were not: all deferred, none bounced.
    for o in &r.recipients {
        assert_eq!(o.verdict, Verdict::Deferred, "{o:?}");
        assert!(o.by_client);
        assert_eq!(o.reply.lines()[0], expected);
        assert_eq!(o.dsn(), "4.4.2");
    }
    assert!(!conn.is_open());
    assert_eq!(conn.failure().unwrap().kind, FailureKind::Timeout);
    // A closed connection defers at once.
    let r = conn.deliver(tx(&["b@example.com"]), CONTENT).await;
    assert_eq!(r.recipients[0].verdict, Verdict::Deferred);
    assert!(server.policy.messages().is_empty());
}

/// A scripted server: greets, answers EHLO with PIPELINING, MAIL and
/// RCPT with 250, DATA with 354, then does `after_data` with the socket.
async fn scripted<F, Fut>(after_data: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        let mut answered = 0;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            let lines: Vec<&str> = text
                .split_inclusive("\r\n")
                .filter(|l| l.ends_with("\r\n"))
                .collect();
            for line in &lines[answered..] {
                let reply: &[u8] = if line.starts_with("EHLO") {
                    b"250-scripted\r\n250 PIPELINING\r\n"
                } else if line.starts_with("DATA") {
                    b"354 go ahead\r\n"
                } else {
                    b"250 2.0.0 Ok\r\n"
                };
                s.write_all(reply).await.unwrap();
                answered += 1;
                if line.starts_with("DATA") {
                    after_data(s).await;
                    return;
                }
            }
        }
    });
    addr
}

#[tokio::test]
async fn no_reply_after_the_end_of_data_defers() {
    let addr = scripted(|mut s| async move {
        // Read everything, answer nothing.
        let mut buf = [0u8; 4096];
        while s.read(&mut buf).await.unwrap_or(0) > 0 {}
    })
    .await;
    let mut config = ClientConfig::new("client.example");
    config.timeouts.data_done = Duration::from_millis(300);
    let mut conn = Connector::new(config)
        .connect(addr, "scripted.test")
        .await
        .unwrap();
    let r = conn.deliver(tx(&["a@example.com"]), CONTENT).await;
    let o = &r.recipients[0];
    assert_eq!(o.verdict, Verdict::Deferred);
    assert_eq!(
        o.reply.lines()[0],
        format!(
            "conversation with scripted.test[127.0.0.1]:{} timed out while sending end of data -- message may be sent more than once",
            addr.port()
        )
    );
}

/// Endless message content, produced as it is read.
struct Endless {
    produced: usize,
}

impl AsyncRead for Endless {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let line = b"a line of message content that goes on and on\r\n";
        while buf.remaining() >= line.len() {
            buf.put_slice(line);
            me.produced += line.len();
        }
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_server_that_stops_reading_content_times_out() {
    let addr = scripted(|s| async move {
        // Hold the socket open without reading.
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    })
    .await;
    let mut config = ClientConfig::new("client.example");
    config.timeouts.data_xfer = Duration::from_millis(300);
    let mut conn = Connector::new(config)
        .connect(addr, "scripted.test")
        .await
        .unwrap();
    let mut content = Endless { produced: 0 };
    let started = std::time::Instant::now();
    let r = conn.deliver(tx(&["a@example.com"]), &mut content).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The kernel's buffers filled, then the write stalled.
    assert!(content.produced > 64 * 1024, "{}", content.produced);
    let o = &r.recipients[0];
    assert_eq!(o.verdict, Verdict::Deferred);
    assert_eq!(
        o.reply.lines()[0],
        format!(
            "conversation with scripted.test[127.0.0.1]:{} timed out while sending message body",
            addr.port()
        )
    );
}

#[tokio::test]
async fn a_server_that_goes_away_mid_content_defers() {
    let addr = scripted(|mut s| async move {
        let mut buf = [0u8; 10];
        let _ = s.read(&mut buf).await;
        // Closing with unread data makes the kernel send a reset.
        drop(s);
    })
    .await;
    let mut conn = client().connect(addr, "scripted.test").await.unwrap();
    let r = conn
        .deliver(tx(&["a@example.com"]), Endless { produced: 0 })
        .await;
    let o = &r.recipients[0];
    assert_eq!(o.verdict, Verdict::Deferred, "{o:?}");
    assert!(
        o.reply.lines()[0].starts_with(&format!(
            "lost connection with scripted.test[127.0.0.1]:{} while",
            addr.port()
        )),
        "{}",
        o.reply
    );
    assert_eq!(conn.failure().unwrap().kind, FailureKind::ConnectionLost);
}

/// Content that fails after a while.
struct Broken(usize);

impl AsyncRead for Broken {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.0 == 0 {
            return Poll::Ready(Err(io::Error::other("disk on fire")));
        }
        me.0 -= 1;
        buf.put_slice(b"some content\r\n");
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_error_reading_content_defers_and_keeps_nothing() {
    let server = TestServer::start(ServerConfig::new("mx.test"), None, Policy::new()).await;
    let mut conn = client().connect(server.addr, "localhost").await.unwrap();
    let r = conn
        .deliver(tx(&["a@example.com", "bad@example.com"]), Broken(3))
        .await;
    assert_eq!(
        verdicts(&r),
        [
            (Verdict::Deferred, "4.3.0".into()),
            (Verdict::Bounced, "5.1.1".into())
        ]
    );
    assert_eq!(
        r.recipients[0].reply.to_string(),
        "451 4.3.0 error reading message content: disk on fire"
    );
    assert!(!conn.is_open());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.policy.messages().is_empty());
}

#[tokio::test]
async fn connection_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = client().connect(addr, "mx.example.com").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "connect to mx.example.com[127.0.0.1]:{}: Connection refused",
            addr.port()
        )
    );
    assert!(matches!(
        e,
        ConnectError::Connect {
            kind: io::ErrorKind::ConnectionRefused,
            ..
        }
    ));
    assert_eq!(e.reply().to_string(), format!("421 4.4.1 {e}"));
}

#[tokio::test]
async fn connect_timeout_on_a_full_listen_queue() {
    // A listener with a backlog of 0 that never accepts: once its queue
    // holds a connection, Linux drops further SYNs, so a connect hangs
    // until our timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let connector = client().with_connect_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let e = connector.connect(addr, "mx.example.com").await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        e.to_string(),
        format!(
            "connect to mx.example.com[127.0.0.1]:{}: Connection timed out",
            addr.port()
        )
    );
    drop(listener);
}

#[tokio::test]
async fn bind_address_is_the_source() {
    let server = TestServer::start(ServerConfig::new("mx.test"), None, Policy::new()).await;
    let connector = client().with_bind_address("127.0.0.2".parse().unwrap());
    let mut conn = connector.connect(server.addr, "localhost").await.unwrap();
    assert_eq!(conn.local_addr().unwrap().ip().to_string(), "127.0.0.2");
    let r = conn.deliver(tx(&["a@example.com"]), CONTENT).await;
    assert_eq!(r.recipients[0].verdict, Verdict::Delivered);
    conn.quit().await;
    let peer = server.policy.messages()[0].peer.unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.2");
}
