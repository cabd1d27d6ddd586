//! The tokio client connector: the byte-moving half of Postfix's
//! `smtp(8)` and `lmtp(8)` for one connection. It opens the TCP
//! connection, runs the TLS handshake after `STARTTLS`, and drives a
//! sans-IO [`ClientSession`] through the greeting, `EHLO`, `STARTTLS`
//! and any number of mail transactions; it decides nothing the session
//! decides.
//!
//! [`Connector`] holds what every connection shares (the session
//! settings, the rustls client configuration, `smtp_connect_timeout`,
//! `smtp_bind_address`); [`Connector::connect`] returns a [`Connection`]
//! that is ready for mail, and [`Connection::deliver`] sends one message
//! on it, as often as the caller likes (connection reuse), until
//! [`Connection::quit`].
//!
//! What it does not do: MX lookups, the choice among several addresses,
//! the connection cache, SASL. Those belong to the caller (a later
//! routing layer).
//!
//! # Writes, reads and deadlines
//!
//! Everything the session has to say at one point (a pipelined
//! `MAIL`/`RCPT`/`DATA` group, a `BDAT` chunk with its command) goes out
//! in one write. While a write is in progress the connector also reads,
//! so a server that answers early (a `421`, `BDAT` chunk replies) never
//! deadlocks against a client that only writes. Message content is read
//! from the caller's [`AsyncRead`] only when everything before it has
//! been written, so memory stays bounded whatever the message size.
//! The session's deadline ([`ClientSession::poll_timeout`]) is always
//! armed, also during writes: a server that stops reading or stops
//! answering ends the session with Postfix's `conversation with HOST
//! timed out while ...`.
//!
//! # Failures never lose mail
//!
//! A read or write error, the server closing the connection, a timeout,
//! or an error reading the caller's content all end in a
//! [`TransactionResult`] in which every recipient that the server did
//! not decide is [`Verdict::Deferred`] (never bounced because of a
//! problem on our side or in the network). After such a failure the
//! connection is closed; further [`Connection::deliver`] calls defer
//! every recipient at once.
//!
//! # STARTTLS
//!
//! With [`TlsMode::Offer`] or [`TlsMode::Require`] and a rustls client
//! configuration, the connector runs the handshake with tokio-rustls
//! when the server accepts `STARTTLS`, with the `server_name` given to
//! [`Connector::connect`] for SNI and certificate checks. Which
//! certificates are accepted is the rustls configuration's business; the
//! connector only reports the outcome as Postfix logs it: `Verified`,
//! `Untrusted` or `Anonymous TLS connection established to HOST[IP]:PORT:
//! TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`.
//!
//! When the handshake fails:
//! - under [`TlsMode::Require`], [`Connector::connect`] fails with
//!   [`ConnectError::TlsHandshake`] (`Cannot start TLS: handshake
//!   failure`, 4.7.5);
//! - under [`TlsMode::Offer`], it does what Postfix does at
//!   `smtp_tls_security_level = may`: it connects to the same address
//!   again and carries on in plaintext on the new connection, without
//!   `STARTTLS` (one retry; a failure of that one is reported as usual).
//!
//! Without a rustls configuration TLS is impossible: [`TlsMode::Offer`]
//! acts as [`TlsMode::Never`], and [`TlsMode::Require`] fails before any
//! connection is made with [`ConnectError::TlsUnavailable`].
//!
//! # Example
//!
//! ```no_run
//! use mta_core::address::ReversePath;
//! use mta_smtp::client::{ClientConfig, Transaction};
//! use mta_smtp::connector::Connector;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let connector = Connector::new(ClientConfig::new("client.example.org"));
//! let mut conn = connector
//!     .connect("192.0.2.1:25".parse()?, "mx.example.com")
//!     .await?;
//! let tx = Transaction::new(
//!     ReversePath::Mailbox("sender@example.org".parse()?),
//!     vec!["rcpt@example.com".parse()?],
//! );
//! let result = conn.deliver(tx, &b"Subject: hi\r\n\r\nHello\r\n"[..]).await;
//! for r in &result.recipients {
//!     println!("to=<{}>, status={} ({})", r.address, r.verdict.status_word(), r.reply);
//! }
//! conn.quit().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::client::{
    Capabilities, ClientConfig, ClientEvent, ClientSession, FailureKind, RecipientOutcome,
    SessionFailure, TlsMode, Transaction, TransactionResult, Verdict,
};
use crate::transport::TlsInfo;
use mta_core::address::MailAddress;
use mta_core::config::{Config, ConfigError};
use mta_core::reply::{Reply, ReplyClass, ReplyCode};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Postfix's `smtp_connect_timeout` default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The read buffer for replies: an `EHLO` reply or a group of pipelined
/// replies fits, longer ones arrive in several reads.
const READ_BUFFER: usize = 4 * 1024;

/// How much message content is read from the caller's source at once.
/// The session turns it into at most about this much output (plus
/// dot-stuffing), which is written before the next read.
const CONTENT_CHUNK: usize = 64 * 1024;

/// How long the last words (a `QUIT` after a refusal) and the TLS
/// close may take once the session is over.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the rustls client configuration given to
/// [`Connector::with_tls`] checks, which decides the word Postfix logs
/// for an established TLS session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateVerification {
    /// The configuration checks the chain against trust anchors and the
    /// server name (rustls' WebPKI verifier): sessions are `Verified`.
    Verifies,
    /// The configuration accepts any certificate (opportunistic TLS, as
    /// Postfix's `may` without trust anchors): sessions are `Untrusted`.
    AcceptsAny,
}

/// How far the server's identity was checked, in Postfix's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsTrust {
    /// The server presented no certificate.
    Anonymous,
    /// A certificate was presented and not checked.
    Untrusted,
    /// The certificate chain and the server name were verified.
    Verified,
}

impl fmt::Display for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsTrust::Anonymous => "Anonymous",
            TlsTrust::Untrusted => "Untrusted",
            TlsTrust::Verified => "Verified",
        })
    }
}

/// An established TLS session on a [`Connection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// How far the server's identity was checked.
    pub trust: TlsTrust,
    /// The protocol, the cipher and the server name sent (SNI).
    pub info: TlsInfo,
    /// The symmetric key length of the cipher, for Postfix's `(256/256
    /// bits)`; `None` for a cipher this module does not know.
    pub cipher_bits: Option<u16>,
}

impl fmt::Display for TlsSession {
    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.info)?;
        if let Some(bits) = self.cipher_bits {
            write!(f, " ({bits}/{bits} bits)")?;
        }
        Ok(())
    }
}

/// Why [`Connector::connect`] produced no ready connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TCP connection could not be made (refused, timed out, no
    /// route, the bind address unusable). Postfix tries the next address.
    Connect {
        /// `connect to mx.example.com[192.0.2.1]:25: Connection refused`.
        message: String,
        /// The error's kind (`ConnectionRefused`, `TimedOut`, ...).
        kind: io::ErrorKind,
    },
    /// The TLS handshake after `STARTTLS` failed or timed out under
    /// [`TlsMode::Require`] (under [`TlsMode::Offer`] the connector went
    /// on in plaintext instead).
    TlsHandshake {
        /// The peer, as `host[ip]:port`.
        peer_name: String,
        /// What rustls (or the timer) said, for the log.
        reason: String,
    },
    /// TLS is required but the connector has no rustls configuration;
    /// no connection was made.
    TlsUnavailable,
    /// The session failed before it was ready: a refused greeting or
    /// `EHLO`, no `STARTTLS` where TLS is required, a timeout, a lost
    /// connection.
    Session(SessionFailure),
}

impl ConnectError {
    /// The text for the log and the delivery status, worded as Postfix
    /// words it.
    pub fn message(&self) -> String {
        match self {
            ConnectError::Connect { message, .. } => message.clone(),
            ConnectError::TlsHandshake { .. } => "Cannot start TLS: handshake failure".to_owned(),
            ConnectError::TlsUnavailable => {
                "TLS is required, but our TLS engine is unavailable".to_owned()
            }
            ConnectError::Session(failure) => failure.message.clone(),
        }
    }

    /// The reply that stands for the error in a delivery status: the
    /// server's for a session failure with one, otherwise one made by
    /// this client (`4.4.1` for connection failures, `4.7.5` for TLS,
    /// as Postfix).
    pub fn reply(&self) -> Reply {
        let (code, subject, detail) = match self {
            ConnectError::Session(failure) => return failure.reply.clone(),
            ConnectError::Connect { .. } => (ReplyCode::SERVICE_NOT_AVAILABLE, 4, 1),
            ConnectError::TlsHandshake { .. } | ConnectError::TlsUnavailable => {
                (ReplyCode::MAILBOX_BUSY, 7, 5)
            }
        };
        local_reply(code, subject, detail, &self.message())
    }

    /// Whether the reply was made by this client rather than received.
    pub fn by_client(&self) -> bool {
        match self {
            ConnectError::Session(failure) => failure.by_client,
            _ => true,
        }
    }
}

/// Why [`Connection::authenticate`] did not log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The server offers none of the allowed mechanisms.
    NoMechanism {
        /// What it offers, space-separated.
        offered: String,
    },
    /// The server refused the credentials or the mechanism.
    Refused {
        /// `SASL authentication failed; server HOST said: REPLY`.
        message: String,
        /// The server's reply.
        reply: Reply,
    },
    /// The session failed (timeout, lost connection); the text says how.
    Session(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::NoMechanism { offered } => write!(
                f,
                "SASL authentication failed: server offered no compatible authentication mechanism (offered: {offered})"
            ),
            AuthError::Refused { message, .. } | AuthError::Session(message) => {
                f.write_str(message)
            }
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for ConnectError {}

/// Opens client connections with shared settings: one per `smtp` or
/// `lmtp` transport of `master.cf`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    session: ClientConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    verification: CertificateVerification,
    connect_timeout: Duration,
    bind_v4: Option<Ipv4Addr>,
    bind_v6: Option<Ipv6Addr>,
}

impl Connector {
    /// A connector with these session settings, no TLS configuration,
    /// Postfix's 30-second connect timeout and no bind address.
    pub fn new(session: ClientConfig) -> Connector {
        Connector {
            session,
            tls: None,
            verification: CertificateVerification::Verifies,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            bind_v4: None,
            bind_v6: None,
        }
    }

    /// The settings Postfix's `smtp` (or, with `lmtp`, `lmtp`) client
    /// takes from `config`: those of [`ClientConfig::from_config`], plus
    /// `smtp_connect_timeout`, `smtp_bind_address` and
    /// `smtp_bind_address6` (`lmtp_*` for LMTP). The TLS configuration
    /// (certificates, trust anchors) is added with
    /// [`Connector::with_tls`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the parameter for a value of the wrong
    /// kind, such as a bind address that is not an address of its family.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use mta_core::config::{Config, HostFacts};
    /// use mta_smtp::connector::Connector;
    ///
    /// let main_cf = "smtp_connect_timeout = 10s\nsmtp_bind_address = 127.0.0.1\n";
    /// let config = Config::parse(main_cf, "main.cf", HostFacts::default()).unwrap();
    /// let connector = Connector::from_config(&config, false).unwrap();
    /// assert_eq!(connector.connect_timeout(), Duration::from_secs(10));
    /// ```
    pub fn from_config(config: &Config, lmtp: bool) -> Result<Connector, ConfigError> {
        let p = if lmtp { "lmtp" } else { "smtp" };
        let session = ClientConfig::from_config(config, lmtp)?;
        let mut connector = Connector::new(session)
            .with_connect_timeout(config.time(&format!("{p}_connect_timeout"))?);
        for (suffix, v6) in [("bind_address", false), ("bind_address6", true)] {
            let name = format!("{p}_{suffix}");
            let value = config.expanded(&name)?;
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match value.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv6() == v6 => connector = connector.with_bind_address(ip),
                _ => {
                    let expected = if v6 {
                        "an IPv6 address"
                    } else {
                        "an IPv4 address"
                    };
                    return Err(config.bad_value(&name, value, expected));
                }
            }
        }
        Ok(connector)
    }

    /// Uses `tls` for `STARTTLS`, reporting established sessions
    /// according to what it checks.
    pub fn with_tls(
        mut self,
        tls: Arc<rustls::ClientConfig>,
        verification: CertificateVerification,
    ) -> Connector {
        self.tls = Some(tls);
        self.verification = verification;
        self
    }

    /// Sets `smtp_connect_timeout`; zero leaves the limit to the
    /// operating system, as Postfix does.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Connector {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the local address connections come from: `smtp_bind_address`
    /// for an IPv4 address, `smtp_bind_address6` for an IPv6 one. A
    /// destination of the other family is reached from any address.
    pub fn with_bind_address(mut self, ip: IpAddr) -> Connector {
        match ip {
            IpAddr::V4(v4) => self.bind_v4 = Some(v4),
            IpAddr::V6(v6) => self.bind_v6 = Some(v6),
        }
        self
    }

    /// The session settings.
    pub fn session_config(&self) -> &ClientConfig {
        &self.session
    }

    /// The connect timeout in force.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Connects to `addr`, which belongs to the host `server_name` (the
    /// MX host name, used for SNI, certificate checks and the peer name
    /// `server_name[ip]:port` in every message), and drives the session
    /// through the greeting, `EHLO`/`HELO` and `STARTTLS` until it is
    /// ready for mail.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`]: the TCP connection failed, TLS is required and
    /// could not be had, or the session failed before it was ready (the
    /// session said `QUIT` where the connection still worked).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, ConnectError> {
        let mut config = self.session.clone();
        config.peer_name = format!("{server_name}[{}]:{}", addr.ip(), addr.port());
        let tls = match (config.tls, &self.tls) {
            (TlsMode::Never, _) => None,
            (_, Some(tls)) => Some(tls.clone()),
            (TlsMode::Offer, None) => {
                config.tls = TlsMode::Never;
                None
            }
            (TlsMode::Require, None) => return Err(ConnectError::TlsUnavailable),
        };
        let offer = config.tls == TlsMode::Offer;
        match self.attempt(addr, server_name, config.clone(), tls).await {
            Err(ConnectError::TlsHandshake { peer_name, reason }) if offer => {
                tracing::warn!(
                    "TLS handshake with {peer_name} failed ({reason}): trying plaintext on a new connection"
                );
                config.tls = TlsMode::Never;
                self.attempt(addr, server_name, config, None).await
            }
            other => other,
        }
    }

    /// One connection attempt with `config` (its peer name set).
    async fn attempt(
        &self,
        addr: SocketAddr,
        server_name: &str,
        config: ClientConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Connection, ConnectError> {
        let stream = self.tcp_connect(addr, &config.peer_name).await?;
        let local = stream.local_addr().map_err(|e| ConnectError::Connect {
            message: format!("connect to {}: {}", config.peer_name, describe(&e)),
            kind: e.kind(),
        })?;
        tracing::debug!("connected to {} from {local}", config.peer_name);
        self.open_session(
            Stream::Plain(stream),
            Some(addr),
            Some(local),
            server_name,
            config,
            tls,
        )
        .await
    }

    /// Connects to the LMTP (or SMTP) server on the UNIX-domain socket
    /// `path` (Postfix's `lmtp:unix:/path`), which Postfix names
    /// `server_name[path]` in messages, and drives the session until it is
    /// ready. No TLS is used on a local socket.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`], as for [`Connector::connect`].
    pub async fn connect_unix(
        &self,
        path: &std::path::Path,
        server_name: &str,
    ) -> Result<Connection, ConnectError> {
        let mut config = self.session.clone();
        config.peer_name = format!("{server_name}[{}]", path.display());
        config.tls = TlsMode::Never;
        let connecting = UnixStream::connect(path);
        let stream = match self.connect_timeout {
            t if t.is_zero() => connecting.await,
            t => tokio::time::timeout(t, connecting)
                .await
                .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut))),
        }
        .map_err(|e| ConnectError::Connect {
            message: format!("connect to {}: {}", config.peer_name, describe(&e)),
            kind: e.kind(),
        })?;
        self.open_session(Stream::Unix(stream), None, None, server_name, config, None)
            .await
    }

    /// Runs the greeting, EHLO and STARTTLS on a connected socket.
    async fn open_session(
        &self,
        io: Stream,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        server_name: &str,
        config: ClientConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Connection, ConnectError> {
        let peer_name = config.peer_name.clone();
        let starttls_timeout = config.timeouts.starttls;
        let mut conn = Connection {
            io,
            session: ClientSession::new(config, Instant::now()),
            peer,
            local,
            peer_name,
            capabilities: Capabilities::default(),
            greeting: None,
            tls: None,
            failure: None,
            read_buf: vec![0; READ_BUFFER],
            content_buf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            needs_flush: false,
            eof: false,
            content_wanted: false,
            content_error: None,
            starttls_timeout,
        };
        let handshake = Handshake {
            tls,
            verification: self.verification,
            server_name,
        };
        conn.open(handshake).await?;
        Ok(conn)
    }

    /// The TCP connection, within the connect timeout.
    async fn tcp_connect(
        &self,
        addr: SocketAddr,
        peer_name: &str,
    ) -> Result<TcpStream, ConnectError> {
        let fail = |e: io::Error| {
            let message = format!("connect to {peer_name}: {}", describe(&e));
            tracing::debug!("{message}");
            ConnectError::Connect {
                message,
                kind: e.kind(),
            }
        };
        let (socket, bind) = match addr {
            SocketAddr::V4(_) => (TcpSocket::new_v4(), self.bind_v4.map(IpAddr::V4)),
            SocketAddr::V6(_) => (TcpSocket::new_v6(), self.bind_v6.map(IpAddr::V6)),
        };
        let socket = socket.map_err(fail)?;
        if let Some(ip) = bind {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| {
                let message = format!("connect to {peer_name}: bind {ip}: {}", describe(&e));
                ConnectError::Connect {
                    message,
                    kind: e.kind(),
                }
            })?;
        }
        let connecting = socket.connect(addr);
        let result = if self.connect_timeout.is_zero() {
            connecting.await
        } else {
            match tokio::time::timeout(self.connect_timeout, connecting).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
            }
        };
        let stream = result.map_err(fail)?;
        // Commands leave in batches already; don't let Nagle hold the
        // last bit of one back waiting for an acknowledgement.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// An error as Postfix's `%m` prints it: `Connection refused`, without
/// Rust's `(os error 111)`.
fn describe(e: &io::Error) -> String {
    if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::TimedOut {
        return "Connection timed out".to_owned();
    }
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

/// What the TLS handshake of one connection needs.
struct Handshake<'a> {
    tls: Option<Arc<rustls::ClientConfig>>,
    verification: CertificateVerification,
    server_name: &'a str,
}

/// The socket before and after TLS.
type Stream = crate::stream::Stream<TlsStream<TcpStream>>;

/// What woke a waiting connection.
enum Wake {
    Input(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Content(io::Result<usize>),
    Timer,
}

/// A connection ready for mail: the result of [`Connector::connect`].
///
/// Dropping it closes the socket without `QUIT`; [`Connection::quit`]
/// ends it politely.
pub struct Connection {
    io: Stream,
    session: ClientSession,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    peer_name: String,
    capabilities: Capabilities,
    greeting: Option<Reply>,
    tls: Option<TlsSession>,
    failure: Option<SessionFailure>,
    read_buf: Vec<u8>,
    /// Message content read from the caller, allocated for the first
    /// message.
    content_buf: Vec<u8>,
    /// Bytes to send; `out[out_pos..]` is not written yet.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes were written that a TLS layer may still hold.
    needs_flush: bool,
    /// The server closed the connection, or reading failed.
    eof: bool,
    /// The session asked for content and the source is not exhausted.
    content_wanted: bool,
    /// Reading the caller's content failed.
    content_error: Option<io::Error>,
    /// `smtp_starttls_timeout`, which Postfix also applies to the TLS
    /// handshake.
    starttls_timeout: Duration,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer_name", &self.peer_name)
            .field("local", &self.local)
            .field("tls", &self.tls)
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The server's address; `None` for a UNIX-domain socket.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Our end of the connection; `None` for a UNIX-domain socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The server as Postfix names it: `mx.example.com[192.0.2.1]:25`.
    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }

    /// What the server offered in its last `EHLO` reply (after TLS, the
    /// one over TLS).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The server's `220` greeting.
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// The TLS session, if `STARTTLS` succeeded.
    pub fn tls(&self) -> Option<&TlsSession> {
        self.tls.as_ref()
    }

    /// Why the session ended, if it failed (a timeout, a lost connection,
    /// a `421`): for the log, and to stop reusing the connection.
    pub fn failure(&self) -> Option<&SessionFailure> {
        self.failure.as_ref()
    }

    /// Whether the connection can carry another transaction.
    pub fn is_open(&self) -> bool {
        !self.session.is_closed()
    }

    /// Sends one message: the envelope `tx` and its `content`, read
    /// from the source in chunks while the session wants it (line ends
    /// may be CR LF or bare LF; dot-stuffing and `BDAT` framing are the
    /// session's). Returns a result for every recipient.
    ///
    /// Never fails: an I/O error, a timeout, or an error reading
    /// `content` defers every recipient the server had not decided, and
    /// closes the connection. On a connection that is already closed
    /// every recipient is deferred at once.
    pub async fn deliver<R>(&mut self, tx: Transaction, content: R) -> TransactionResult
    where
        R: AsyncRead + Unpin,
    {
        let mut content = content;
        // Kept only to answer for every recipient should the session
        // ever end a transaction without a result.
        let recipients: Vec<MailAddress> =
            tx.recipients.iter().map(|r| r.address.clone()).collect();
        self.content_wanted = false;
        self.content_error = None;
        self.session.start_transaction(tx, Instant::now());
        let mut result = None;
        while let Some(event) = self.next_event(Some(&mut content)).await {
            match event {
                ClientEvent::WantContent => {
                    self.content_wanted = true;
                    if self.content_buf.len() < CONTENT_CHUNK {
                        self.content_buf.resize(CONTENT_CHUNK, 0);
                    }
                }
                ClientEvent::TransactionDone(r) => {
                    result = Some(r);
                    // A failure that ended the transaction is reported
                    // with it; take it and close before returning.
                    while let Some(event) = self.session.poll_event() {
                        self.note(&event);
                    }
                    if self.session.is_closed() {
                        self.finish().await;
                    }
                    break;
                }
                _ => {}
            }
        }
        self.content_wanted = false;
        let mut result = result.unwrap_or_else(|| self.deferred_result(recipients));
        if let Some(e) = self.content_error.take() {
            // The session says "session ended by the client"; say why.
            let text = format!("error reading message content: {e}");
            let reply = local_reply(ReplyCode::LOCAL_ERROR, 3, 0, &text);
            for r in result.recipients.iter_mut().filter(|r| r.by_client) {
                r.verdict = Verdict::Deferred;
                r.reply = reply.clone();
            }
        }
        if self.content_buf.capacity() > CONTENT_CHUNK {
            self.content_buf = Vec::new();
        }
        result
    }

    /// Logs in with `PLAIN` (preferred) or `LOGIN`, whichever of
    /// `allowed` the server offers, as Postfix's `smtp_sasl_*` client
    /// does. Returns the mechanism used.
    ///
    /// # Errors
    ///
    /// An [`AuthError`]: no usable mechanism (the caller sends without
    /// AUTH or defers, as its policy says), or the server's refusal, or
    /// the session's failure.
    pub async fn authenticate(
        &mut self,
        username: &str,
        password: &str,
        allowed: &[&str],
    ) -> Result<&'static str, AuthError> {
        let offered = &self.capabilities.auth;
        let usable = |m: &str| {
            offered.iter().any(|o| o == m) && allowed.iter().any(|a| a.eq_ignore_ascii_case(m))
        };
        let mechanism = if usable("PLAIN") {
            "PLAIN"
        } else if usable("LOGIN") {
            "LOGIN"
        } else {
            return Err(AuthError::NoMechanism {
                offered: offered.join(" "),
            });
        };
        let now = Instant::now();
        if mechanism == "PLAIN" {
            let mut initial = Vec::with_capacity(username.len() + password.len() + 2);
            initial.push(0);
            initial.extend_from_slice(username.as_bytes());
            initial.push(0);
            initial.extend_from_slice(password.as_bytes());
            self.session.auth("PLAIN", Some(&initial), now);
        } else {
            self.session.auth("LOGIN", None, now);
        }
        let mut step = 0;
        while let Some(event) = self.next_event(None::<&mut tokio::io::Empty>).await {
            match event {
                ClientEvent::AuthChallenge(_) if mechanism == "LOGIN" && step < 2 => {
                    let answer = if step == 0 { username } else { password };
                    step += 1;
                    self.session
                        .auth_response(answer.as_bytes(), Instant::now());
                }
                // Not a challenge LOGIN or PLAIN should see: an empty
                // answer, which the server refuses.
                ClientEvent::AuthChallenge(_) => {
                    self.session.auth_response(b"", Instant::now());
                }
                ClientEvent::AuthDone(reply) => {
                    return if reply.code().class() == ReplyClass::PositiveCompletion {
                        Ok(mechanism)
                    } else {
                        Err(AuthError::Refused {
                            message: format!(
                                "SASL authentication failed; server {} said: {reply}",
                                self.peer_name
                            ),
                            reply,
                        })
                    };
                }
                _ => {}
            }
        }
        let failure = self.failure.clone();
        Err(AuthError::Session(failure.map_or_else(
            || {
                format!(
                    "lost connection with {} while performing SASL authentication",
                    self.peer_name
                )
            },
            |f| f.message,
        )))
    }

    /// Ends the session politely: `QUIT`, its reply (or its timeout),
    /// then the TLS close and the TCP close.
    pub async fn quit(mut self) {
        self.session.quit(Instant::now());
        while self
            .next_event(None::<&mut tokio::io::Empty>)
            .await
            .is_some()
        {}
    }

    /// Every recipient deferred with the session's failure, or a reply
    /// saying the transaction had no result.
    fn deferred_result(&self, recipients: Vec<MailAddress>) -> TransactionResult {
        let reply = match &self.failure {
            Some(f) => f.reply.clone(),
            None => local_reply(
                ReplyCode::MAILBOX_BUSY,
                5,
                0,
                "transaction ended without a result",
            ),
        };
        TransactionResult {
            mail_reply: None,
            recipients: recipients
                .into_iter()
                .map(|address| RecipientOutcome {
                    address,
                    rcpt_reply: None,
                    verdict: Verdict::Deferred,
                    reply: reply.clone(),
                    by_client: true,
                    in_reply_to: None,
                })
                .collect(),
            data_reply: None,
        }
    }

    /// Drives the session through greeting, `EHLO` and `STARTTLS` until
    /// it is ready.
    async fn open(&mut self, handshake: Handshake<'_>) -> Result<(), ConnectError> {
        while let Some(event) = self.next_event(None::<&mut tokio::io::Empty>).await {
            match event {
                ClientEvent::Ready { .. } => return Ok(()),
                ClientEvent::StartTls => {
                    self.start_tls(&handshake).await?;
                    self.session.tls_established(Instant::now());
                }
                _ => {}
            }
        }
        let failure = self.failure.clone().unwrap_or_else(|| {
            // The session always reports why it closed; this only keeps
            // the error meaningful should it not.
            let message = format!("lost connection with {}", self.peer_name);
            SessionFailure {
                kind: FailureKind::ConnectionLost,
                reply: local_reply(ReplyCode::SERVICE_NOT_AVAILABLE, 4, 2, &message),
                by_client: true,
                message,
            }
        });
        Err(ConnectError::Session(failure))
    }

    /// The TLS handshake on the plain socket, within
    /// `smtp_starttls_timeout`.
    async fn start_tls(&mut self, handshake: &Handshake<'_>) -> Result<(), ConnectError> {
        let fail = |reason: String| ConnectError::TlsHandshake {
            peer_name: self.peer_name.clone(),
            reason,
        };
        let Some(config) = handshake.tls.clone() else {
            // The session sends STARTTLS only when TLS is wanted, and it
            // is wanted only with a configuration.
            return Err(fail("no TLS configuration".to_owned()));
        };
        let server_name = match ServerName::try_from(handshake.server_name.to_owned()) {
            Ok(name) => name,
            Err(e) => return Err(fail(format!("invalid server name: {e}"))),
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.io, Stream::Gone) else {
            return Err(fail("TLS is already active".to_owned()));
        };
        let limit = self.starttls_timeout;
        let connecting = TlsConnector::from(config).connect(server_name, tcp);
        let tls = match tokio::time::timeout(limit, connecting).await {
            Err(_) => return Err(fail("timed out".to_owned())),
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Ok(Ok(tls)) => tls,
        };
        let session = tls_session(tls.get_ref().1, handshake);
        tracing::info!(
            "{} TLS connection established to {}: {session}",
            session.trust,
            self.peer_name
        );
        self.tls = Some(session);
        self.io = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// The next event of the session, moving bytes (and `content`, when
    /// the session wants it) until there is one. `None` once the session
    /// is over and the connection closed.
    async fn next_event<R>(&mut self, mut content: Option<&mut R>) -> Option<ClientEvent>
    where
        R: AsyncRead + Unpin,
    {
        loop {
            if let Some(event) = self.session.poll_event() {
                self.note(&event);
                return Some(event);
            }
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            }
            self.session.poll_transmit(&mut self.out);
            if self.session.is_closed() {
                self.finish().await;
                return None;
            }
            let wake = self.wait(content.as_deref_mut()).await;
            self.handle(wake, content.is_some());
        }
    }

    /// Bookkeeping on an event before the caller sees it.
    fn note(&mut self, event: &ClientEvent) {
        match event {
            ClientEvent::Greeting(reply) => self.greeting = Some(reply.clone()),
            ClientEvent::Ready { capabilities } => self.capabilities = capabilities.clone(),
            ClientEvent::Failed(failure) => {
                tracing::debug!("{}", failure.message);
                self.failure = Some(failure.clone());
            }
            _ => {}
        }
    }

    /// Waits for whichever comes first: input from the server, progress
    /// of the pending write, a piece of content (when nothing is left to
    /// write and the session wants it), or the session's deadline.
    async fn wait<R>(&mut self, content: Option<&mut R>) -> Wake
    where
        R: AsyncRead + Unpin,
    {
        let deadline = self.session.poll_timeout();
        let mut sleep = pin!(deadline.map(|d| tokio::time::sleep_until(d.into())));
        let writing = self.out_pos < self.out.len();
        let flushing = !writing && self.needs_flush;
        let mut content = content.filter(|_| !writing && self.content_wanted);
        let reading = !self.eof;
        let Connection {
            io,
            read_buf,
            content_buf,
            out,
            out_pos,
            ..
        } = self;
        poll_fn(|cx| {
            if reading {
                let mut buf = ReadBuf::new(read_buf);
                if let Poll::Ready(r) = Pin::new(&mut *io).poll_read(cx, &mut buf) {
                    return Poll::Ready(Wake::Input(r.map(|()| buf.filled().len())));
                }
            }
            if writing {
                if let Poll::Ready(r) = Pin::new(&mut *io).poll_write(cx, &out[*out_pos..]) {
                    return Poll::Ready(Wake::Wrote(r));
                }
            } else if flushing {
                let flushed = Pin::new(&mut *io).poll_flush(cx);
                if let Poll::Ready(r) = flushed {
                    return Poll::Ready(Wake::Flushed(r));
                }
            }
            if let Some(source) = content.as_deref_mut() {
                let mut buf = ReadBuf::new(content_buf);
                if let Poll::Ready(r) = Pin::new(source).poll_read(cx, &mut buf) {
                    return Poll::Ready(Wake::Content(r.map(|()| buf.filled().len())));
                }
            }
            let timer = sleep.as_mut().as_pin_mut().map(|s| s.poll(cx));
            if let Some(Poll::Ready(())) = timer {
                return Poll::Ready(Wake::Timer);
            }
            Poll::Pending
        })
        .await
    }

    /// Hands what woke the connection to the session.
    fn handle(&mut self, wake: Wake, has_content: bool) {
        let now = Instant::now();
        match wake {
            Wake::Input(Ok(0)) => {
                self.eof = true;
                self.session.connection_closed();
            }
            Wake::Input(Ok(n)) => self.session.handle_input(&self.read_buf[..n], now),
            Wake::Input(Err(e)) => {
                tracing::debug!("read from {}: {e}", self.peer_name);
                self.eof = true;
                self.session.connection_closed();
            }
            Wake::Wrote(Ok(0)) => self.write_failed(io::ErrorKind::WriteZero.into()),
            Wake::Wrote(Ok(n)) => {
                self.out_pos += n;
                self.needs_flush = true;
            }
            Wake::Wrote(Err(e)) | Wake::Flushed(Err(e)) => self.write_failed(e),
            Wake::Flushed(Ok(())) => self.needs_flush = false,
            Wake::Content(Ok(0)) => {
                self.content_wanted = false;
                self.session.end_content(now);
            }
            Wake::Content(Ok(n)) => self.session.send_content(&self.content_buf[..n]),
            Wake::Content(Err(e)) => {
                tracing::warn!("error reading message content for {}: {e}", self.peer_name);
                self.content_wanted = false;
                self.content_error = Some(e);
                // Neither DATA nor BDAT can be taken back half way: end
                // the session; the transaction's recipients are deferred.
                self.session.quit(now);
            }
            Wake::Timer => self.session.handle_timeout(now),
        }
        debug_assert!(has_content || !self.content_wanted);
    }

    /// A write failed: the connection is gone for the session.
    fn write_failed(&mut self, e: io::Error) {
        tracing::debug!("write to {}: {e}", self.peer_name);
        self.eof = true;
        self.out.clear();
        self.out_pos = 0;
        self.needs_flush = false;
        self.session.connection_closed();
    }

    /// The session is over: send its last words if the connection still
    /// works (the `QUIT` after a refusal), close TLS and TCP.
    async fn finish(&mut self) {
        if matches!(self.io, Stream::Gone) {
            return;
        }
        let broken = self.eof
            || self.failure.as_ref().is_some_and(|f| {
                matches!(f.kind, FailureKind::Timeout | FailureKind::ConnectionLost)
            });
        if !broken {
            let io = &mut self.io;
            let rest = &self.out[self.out_pos..];
            let last_words = async {
                io.write_all(rest).await?;
                io.flush().await?;
                io.shutdown().await
            };
            let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, last_words).await;
        }
        self.out = Vec::new();
        self.out_pos = 0;
        self.needs_flush = false;
        self.io = Stream::Gone;
        tracing::debug!("disconnected from {}", self.peer_name);
    }
}

/// What the handshake negotiated, in Postfix's terms.
fn tls_session(conn: &rustls::ClientConnection, handshake: &Handshake<'_>) -> TlsSession {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let cipher = match conn.negotiated_cipher_suite() {
        // rustls says `TLS13_AES_256_GCM_SHA384`; IANA, OpenSSL and
        // Postfix say `TLS_AES_256_GCM_SHA384`.
        Some(suite) => match suite.suite().as_str() {
            Some(name) => name.replacen("TLS13_", "TLS_", 1),
            None => format!("{:?}", suite.suite()),
        },
        None => "unknown".to_owned(),
    };
    let cipher_bits = if cipher.contains("AES_256") || cipher.contains("CHACHA20") {
        Some(256)
    } else if cipher.contains("AES_128") {
        Some(128)
    } else {
        None
    };
    let certified = conn.peer_certificates().is_some_and(|c| !c.is_empty());
    let trust = match (certified, handshake.verification) {
        (false, _) => TlsTrust::Anonymous,
        (true, CertificateVerification::Verifies) => TlsTrust::Verified,
        (true, CertificateVerification::AcceptsAny) => TlsTrust::Untrusted,
    };
    TlsSession {
        trust,
        info: TlsInfo {
            protocol,
            cipher,
            server_name: Some(handshake.server_name.to_owned()),
            peer_fingerprint: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::transport::fingerprint_sha256(c.as_ref())),
        },
        cipher_bits,
    }
}

/// A reply made by this client: `code`, the enhanced status of its
/// class with `subject.detail`, and `text` cleaned to fit a reply line.
fn local_reply(code: ReplyCode, subject: u16, detail: u16, text: &str) -> Reply {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    // Room for the code and status within RFC 5321's 512 octets.
    const MAX_TEXT: usize = 400;
    if clean.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    Reply::reject(code, subject, detail, clean).unwrap_or_else(|_| Reply::shutting_down())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_drops_the_os_error_number() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(describe(&refused), "Connection refused");
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(describe(&timed_out), "Connection timed out");
    }

    #[test]
    fn connect_errors_have_postfix_status_codes() {
        let e = ConnectError::Connect {
            message: "connect to mx.example.com[192.0.2.1]:25: Connection refused".to_owned(),
            kind: io::ErrorKind::ConnectionRefused,
        };
        assert_eq!(
            e.reply().to_string(),
            "421 4.4.1 connect to mx.example.com[192.0.2.1]:25: Connection refused"
        );
        assert_eq!(
            ConnectError::TlsUnavailable.reply().to_string(),
            "450 4.7.5 TLS is required, but our TLS engine is unavailable"
        );
        let tls = ConnectError::TlsHandshake {
            peer_name: "mx.example.com[192.0.2.1]:25".to_owned(),
            reason: "invalid peer certificate".to_owned(),
        };
        assert_eq!(tls.to_string(), "Cannot start TLS: handshake failure");
        assert!(tls.by_client());
    }

    #[test]
    fn from_config_reads_timeout_and_bind_addresses() {
        use mta_core::config::HostFacts;
        let main_cf = "lmtp_connect_timeout = 7s\nlmtp_bind_address6 = ::1\n";
        let config = Config::parse(main_cf, "main.cf", HostFacts::default()).unwrap();
        let c = Connector::from_config(&config, true).unwrap();
        assert_eq!(c.connect_timeout(), Duration::from_secs(7));
        assert_eq!(c.bind_v6, Some(Ipv6Addr::LOCALHOST));
        assert_eq!(c.bind_v4, None);
        assert!(c.session_config().lmtp);

        let config = Config::parse("", "main.cf", HostFacts::default()).unwrap();
        let c = Connector::from_config(&config, false).unwrap();
        assert_eq!(c.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);

        let bad = "smtp_bind_address = ::1\n";
        let config = Config::parse(bad, "main.cf", HostFacts::default()).unwrap();
        assert!(Connector::from_config(&config, false).is_err());
    }
}
