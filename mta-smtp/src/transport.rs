//! The tokio transport for the server side: it moves bytes between a
//! socket and a sans-IO [`ServerSession`], and decides nothing.
//!
//! The session says what to send, when it wants input and when its next
//! deadline is; an embedding program's [`SessionHandler`] answers its
//! events with [`Decision`]s. This module does the rest: it reads when
//! the session wants input, writes each batch of replies in one write (a
//! pipelined group's replies leave together), sleeps until
//! [`ServerSession::poll_timeout`], does the TLS handshake after an
//! accepted STARTTLS or first thing on a wrapper-mode port (465), and
//! ends sessions when the server stops.
//!
//! [`serve_connection`] drives one connection; [`Server`] accepts
//! connections on a [`TcpListener`] with Postfix's connection limits and
//! shuts down gracefully.
//!
//! # STARTTLS and injected plaintext
//!
//! Every read is handed to the session at once, so the transport never
//! holds plaintext of its own. After the session accepts STARTTLS it
//! throws away what it already has (CVE-2011-0411), the transport stops
//! reading, flushes `220 2.0.0 Ready to start TLS`, and hands the socket
//! to rustls: plaintext still in the socket is read as TLS records and
//! fails the handshake. Nothing sent before the handshake is fed to the
//! session after it.
//!
//! # Shutdown
//!
//! A [`ShutdownTrigger`] tells sessions to stop and until when. A session
//! that is between commands answers `421 4.3.2 HOST Service shutting
//! down` at once and closes; one in the middle of DATA or BDAT may finish
//! the message until the deadline, and gets the same `421` then. A
//! handler's pending decision is never interrupted: it is awaited, and
//! the session stops after it. Postfix's `smtpd` itself says nothing when
//! it is stopped (the master kills it); the `421` is RFC 5321's
//! "service not available, closing transmission channel", which a client
//! retries later.
//!
//! # Errors
//!
//! An error on one connection (a reset, a failed handshake, a client
//! that stops reading) is logged through `tracing` and ends that
//! connection only. Before it returns, the handler always sees the
//! session's closing events ([`Event::DataAborted`], [`Event::Closed`]),
//! so a message half received is never taken for a whole one.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use crate::server::{Event, ServerConfig, ServerSession};
use mta_core::reply::{Reply, ReplyClass, ReplyCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The answer to an event that needs a decision
/// ([`Event::needs_decision`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The usual positive reply ([`ServerSession::accept`]).
    Accept,
    /// This reply: 2xx and 3xx accept, 4xx and 5xx refuse
    /// ([`ServerSession::respond`]).
    Reply(Reply),
    /// One reply per accepted recipient, in RCPT order, for the end of
    /// data under LMTP ([`ServerSession::respond_per_recipient`]).
    PerRecipient(Vec<Reply>),
}

/// The future a [`SessionHandler`] returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Option<Decision>> + Send + 'a>>;

/// The embedding program's policy for one connection: restrictions,
/// queueing, authentication. One handler serves one connection, so it
/// may keep per-session state (the envelope, the queue file being
/// written).
///
/// The transport awaits each call before it reads further, so a slow
/// answer (a DNS lookup, an fsync) holds back only this session.
///
/// # Example
///
/// ```
/// use mta_smtp::transport::{ConnectionInfo, Decision, HandlerFuture, SessionHandler};
/// use mta_smtp::server::Event;
///
/// /// Accepts everything and throws the mail away.
/// struct Discard;
///
/// impl SessionHandler for Discard {
///     fn on_event<'a>(&'a mut self, event: &'a Event, _: &'a ConnectionInfo) -> HandlerFuture<'a> {
///         Box::pin(async move { event.needs_decision().then_some(Decision::Accept) })
///     }
/// }
/// ```
pub trait SessionHandler: Send + 'static {
    /// Handles one event of the session. For an event that needs a
    /// decision, return `Some`; for an informational one (content, RSET,
    /// QUIT, the end of the session) the result is ignored, so return
    /// `None`. `None` for an event that needs a decision is a bug in the
    /// handler: it is logged and answered with a temporary error (`451
    /// 4.3.5 Server configuration problem`, or `421` for the greeting),
    /// never accepted.
    fn on_event<'a>(&'a mut self, event: &'a Event, conn: &'a ConnectionInfo) -> HandlerFuture<'a>;
}

/// What a handler knows of the connection, for logs and `Received:`
/// headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's address the client connected to.
    pub local: SocketAddr,
    /// The TLS session, once one is established (by STARTTLS or in
    /// wrapper mode).
    pub tls: Option<TlsInfo>,
    /// The connection came in on a wrapper-mode (implicit TLS) port, as
    /// Postfix's `smtpd_tls_wrappermode`.
    pub wrapper_mode: bool,
}

impl ConnectionInfo {
    /// The client as Postfix names it in logs, `unknown[ADDR]` (this
    /// layer does no reverse DNS lookup).
    pub fn client(&self) -> String {
        format!("unknown[{}]", self.peer.ip())
    }
}

/// The negotiated TLS parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol, as OpenSSL and Postfix name it: `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    /// The cipher suite's IANA name, such as `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The server name the client asked for (SNI), if any.
    pub server_name: Option<String>,
    /// The SHA-256 fingerprint of the peer's certificate, as Postfix
    /// writes it (`AB:CD:...`), when the peer showed one (a client only
    /// when asked, `smtpd_tls_ask_ccert`).
    pub peer_fingerprint: Option<String>,
}

/// The SHA-256 fingerprint of a DER certificate in Postfix's form:
/// upper-case hex bytes joined by colons, as `relay_clientcerts` and
/// `check_ccert_access` tables key them (`smtpd_tls_fingerprint_digest =
/// sha256`).
pub fn fingerprint_sha256(der: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

impl fmt::Display for TlsInfo {
    /// Postfix's log form: `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} with cipher {}", self.protocol, self.cipher)
    }
}

/// Why a [`TransportConfig`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportConfigError {
    /// Wrapper mode (`smtpd_tls_wrappermode`) was asked for without a
    /// TLS server configuration.
    WrapperModeWithoutTls,
}

impl fmt::Display for TransportConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportConfigError::WrapperModeWithoutTls => {
                f.write_str("wrapper mode (smtpd_tls_wrappermode) needs a TLS configuration")
            }
        }
    }
}

impl std::error::Error for TransportConfigError {}

/// Postfix's `smtpd_starttls_timeout` default (outside stress).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(300);

/// How one port serves its connections: the session settings and TLS.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    session: Arc<ServerConfig>,
    tls: Option<Arc<rustls::ServerConfig>>,
    wrapper_mode: bool,
    tls_handshake_timeout: Duration,
    trace: Option<Trace>,
}

/// A [`TraceSelector`] that a derived `Debug` can show.
#[derive(Clone)]
struct Trace(TraceSelector);

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Trace")
    }
}

/// Which clients' sessions are traced (Postfix's `debug_peer_list`, or
/// every client for a service with `-v`).
pub type TraceSelector = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

impl TransportConfig {
    /// A port with these session settings, TLS settings and mode.
    ///
    /// Without `tls`, STARTTLS is not offered whatever
    /// `session.starttls` says. In wrapper mode the session is told that
    /// TLS is already active: STARTTLS is not offered and
    /// `smtpd_tls_auth_only` is satisfied.
    ///
    /// # Errors
    ///
    /// [`TransportConfigError::WrapperModeWithoutTls`].
    pub fn new(
        session: ServerConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        wrapper_mode: bool,
    ) -> Result<TransportConfig, TransportConfigError> {
        let mut session = session;
        if tls.is_none() {
            if wrapper_mode {
                return Err(TransportConfigError::WrapperModeWithoutTls);
            }
            session.starttls = false;
        }
        Ok(TransportConfig {
            session: Arc::new(session),
            tls,
            wrapper_mode,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            trace: None,
        })
    }

    /// Logs the protocol of the sessions of clients `select` picks, as
    /// Postfix logs a `debug_peer_list` peer: each command line the
    /// client sends (`< host[addr]: EHLO ...`; message content is not
    /// logged) and each reply line (`> host[addr]: 250 ...`), through
    /// `tracing` at info level.
    pub fn with_trace(mut self, select: TraceSelector) -> TransportConfig {
        self.trace = Some(Trace(select));
        self
    }

    /// Sets `smtpd_starttls_timeout`: how long a TLS handshake may take.
    pub fn with_tls_handshake_timeout(mut self, timeout: Duration) -> TransportConfig {
        self.tls_handshake_timeout = timeout;
        self
    }

    /// The session settings in force (after the adjustments of
    /// [`TransportConfig::new`]).
    pub fn session(&self) -> &Arc<ServerConfig> {
        &self.session
    }

    /// Whether this port is in wrapper mode.
    pub fn wrapper_mode(&self) -> bool {
        self.wrapper_mode
    }
}

/// Tells sessions to stop; see [`shutdown_channel`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<Option<Instant>>,
}

impl ShutdownTrigger {
    /// Asks every session to stop: those between commands at once, those
    /// receiving a message by `deadline`.
    pub fn shutdown(&self, deadline: Instant) {
        self.tx.send_replace(Some(deadline));
    }

    /// Another signal for a new session.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }
}

/// The receiving side of a [`ShutdownTrigger`], one per session.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<Option<Instant>>,
}

/// A trigger and a first signal; clone the signal (or call
/// [`ShutdownTrigger::signal`]) for each session.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(None);
    (ShutdownTrigger { tx }, ShutdownSignal { rx })
}

impl ShutdownSignal {
    /// A signal that never fires, for a session nobody stops.
    pub fn never() -> ShutdownSignal {
        // A dropped sender means no shutdown will ever come.
        shutdown_channel().1
    }

    /// The deadline, once shutdown has been asked for.
    pub fn deadline(&self) -> Option<Instant> {
        *self.rx.borrow()
    }

    /// Waits for shutdown and returns its deadline; pends forever if the
    /// trigger is dropped without firing.
    pub async fn requested(&mut self) -> Instant {
        loop {
            if let Some(deadline) = *self.rx.borrow_and_update() {
                return deadline;
            }
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The first read buffer of a connection. Small, because most
/// connections are idle most of the time; it grows while a client sends
/// more at once (message content) and shrinks back after the message.
const INITIAL_READ_BUFFER: usize = 2 * 1024;

/// The largest read buffer.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// How long the last words (the shutdown `421`, a refusal) and the TLS
/// close may take.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one connection until the session ends, the client goes, or
/// shutdown. Never fails: errors are logged through `tracing` and close
/// this connection only.
pub async fn serve_connection<H: SessionHandler>(
    stream: TcpStream,
    config: Arc<TransportConfig>,
    handler: H,
    shutdown: ShutdownSignal,
) {
    let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(p), Ok(l)) => (p, l),
        (Err(e), _) | (_, Err(e)) => {
            tracing::info!("connection lost before it was served: {e}");
            return;
        }
    };
    let info = ConnectionInfo {
        peer,
        local,
        tls: None,
        wrapper_mode: config.wrapper_mode,
    };
    let client = info.client();
    // The handler, which knows the client's verified name, logs connect
    // and disconnect as Postfix's smtpd does; these are for debugging.
    tracing::debug!("connect from {client}");
    let mut conn = Connection {
        io: Stream::Plain(stream),
        session: None,
        handler,
        info,
        config,
        shutdown,
        read_buf: Vec::new(),
        out: Vec::new(),
        in_data: false,
        recipients: 0,
        drain_deadline: None,
        start_tls: false,
        stage: "CONNECT",
        trace: None,
    };
    if let Some(Trace(select)) = &conn.config.trace
        && select(conn.info.peer.ip())
    {
        conn.trace = Some(client.clone());
    }
    if let Err(e) = conn.run().await {
        tracing::info!("{e} after {} from {client}", conn.stage);
    }
    tracing::debug!("disconnect from {client}");
}

/// Why a connection ended early; logged, never returned to callers.
#[derive(Debug)]
enum ConnectionError {
    Io(io::Error),
    Timeout(&'static str),
    Tls(io::Error),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Io(e) => write!(f, "lost connection ({e})"),
            ConnectionError::Timeout(what) => write!(f, "timeout during {what}"),
            ConnectionError::Tls(e) => write!(f, "TLS handshake failed ({e})"),
        }
    }
}

/// The socket before and after TLS.
type Stream = crate::stream::Stream<TlsStream<TcpStream>>;

/// What woke a waiting connection.
enum Wake {
    Read(io::Result<usize>),
    /// The plain socket has something to read (see `Connection::wait`).
    Readable,
    Timer,
    Shutdown(Instant),
    Drain,
}

/// One connection's state around its session.
struct Connection<H> {
    io: Stream,
    /// `None` only before a wrapper-mode handshake.
    session: Option<ServerSession>,
    handler: H,
    info: ConnectionInfo,
    config: Arc<TransportConfig>,
    shutdown: ShutdownSignal,
    read_buf: Vec<u8>,
    out: Vec<u8>,
    /// Message content is being received (DATA accepted, or BDAT started).
    in_data: bool,
    /// The client's name for the protocol trace, when it is traced.
    trace: Option<String>,
    /// Recipients accepted in the current transaction, for LMTP's
    /// per-recipient replies.
    recipients: usize,
    /// Set once shutdown is asked for.
    drain_deadline: Option<Instant>,
    /// STARTTLS was accepted: handshake once the `220` is out.
    start_tls: bool,
    /// The last command, as Postfix names it in "lost connection after".
    stage: &'static str,
}

impl<H: SessionHandler> Connection<H> {
    async fn run(&mut self) -> Result<(), ConnectionError> {
        if self.config.wrapper_mode {
            self.handshake().await?;
        }
        self.session = Some(if self.config.wrapper_mode {
            ServerSession::new_tls(self.config.session.clone(), Instant::now())
        } else {
            ServerSession::new(self.config.session.clone(), Instant::now())
        });
        let result = self.serve().await;
        if result.is_err() {
            // Whatever went wrong, the handler learns that the session is
            // over (and a message in progress is not whole).
            let session = self.session_mut();
            if !session.is_closed() {
                session.handle_eof(Instant::now());
                self.dispatch_events().await;
            }
        }
        result
    }

    fn session_mut(&mut self) -> &mut ServerSession {
        self.session.as_mut().expect("session created")
    }

    async fn serve(&mut self) -> Result<(), ConnectionError> {
        loop {
            self.dispatch_events().await;
            self.flush().await?;
            if self.session_mut().is_closed() {
                self.close().await;
                return Ok(());
            }
            if self.start_tls {
                self.start_tls = false;
                self.stage = "STARTTLS";
                self.handshake().await?;
                self.session_mut().tls_established(Instant::now());
                continue;
            }
            if let Some(deadline) = self.drain_deadline
                && (!self.in_data || Instant::now() >= deadline)
            {
                return self.stop_for_shutdown().await;
            }
            match self.wait().await {
                Wake::Read(Ok(n)) => self.take_input(n),
                Wake::Readable => {
                    let Stream::Plain(tcp) = &self.io else {
                        unreachable!("readiness is awaited on plain sockets only")
                    };
                    self.read_buf.resize(INITIAL_READ_BUFFER, 0);
                    match tcp.try_read(&mut self.read_buf) {
                        Ok(n) => self.take_input(n),
                        // A spurious wake-up.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(ConnectionError::Io(e)),
                    }
                }
                Wake::Read(Err(e)) => return Err(ConnectionError::Io(e)),
                Wake::Timer => self.session_mut().handle_timeout(Instant::now()),
                Wake::Shutdown(deadline) => self.drain_deadline = Some(deadline),
                Wake::Drain => {}
            }
        }
    }

    /// Waits for input (if the session wants it), its deadline, or
    /// shutdown.
    async fn wait(&mut self) -> Wake {
        let session = self.session.as_ref().expect("session created");
        let wants_input = session.wants_input();
        let timer = session.poll_timeout();
        let drain = self.drain_deadline;
        // Between commands on a plain socket, hold no read buffer: wait
        // until the socket is readable and read into a fresh one. Most
        // sessions are idle most of the time, and this is most of what
        // an idle one would cost.
        let idle_plain = !self.in_data && matches!(self.io, Stream::Plain(_));
        if idle_plain {
            self.read_buf = Vec::new();
        } else if wants_input && self.read_buf.is_empty() {
            self.read_buf.resize(INITIAL_READ_BUFFER, 0);
        }
        let Connection {
            io,
            read_buf,
            shutdown,
            ..
        } = self;
        tokio::select! {
            w = next_input(io, read_buf, idle_plain), if wants_input => w,
            () = sleep_until(timer), if timer.is_some() => Wake::Timer,
            d = shutdown.requested(), if drain.is_none() => Wake::Shutdown(d),
            () = sleep_until(drain), if drain.is_some() => Wake::Drain,
        }
    }

    /// Hands `n` bytes just read to the session.
    fn take_input(&mut self, n: usize) {
        if n == 0 {
            self.session_mut().handle_eof(Instant::now());
            return;
        }
        if let (Some(client), false) = (&self.trace, self.in_data) {
            for line in self.read_buf[..n].split(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(line);
                let line = line.trim_end_matches('\r');
                if !line.is_empty() {
                    tracing::info!("< {client}: {}", printable(line));
                }
            }
        }
        let session = self.session.as_mut().expect("session created");
        session.handle_input(&self.read_buf[..n], Instant::now());
        if n == self.read_buf.len() && n < MAX_READ_BUFFER {
            // A full buffer: the client has more to say.
            self.read_buf.resize(n * 2, 0);
        }
    }

    /// Hands every pending event to the handler and applies its
    /// decisions.
    async fn dispatch_events(&mut self) {
        loop {
            let Some(event) = self.session_mut().poll_event() else {
                return;
            };
            self.note(&event);
            let decision = self.handler.on_event(&event, &self.info).await;
            if !event.needs_decision() {
                if decision.is_some() {
                    tracing::debug!("decision for informational event {event:?} ignored");
                }
                continue;
            }
            let positive = self.apply(&event, decision);
            match event {
                Event::StartTls if positive && !self.session_mut().is_closed() => {
                    self.start_tls = true;
                }
                Event::DataStart if positive => self.in_data = true,
                Event::Rcpt { .. } if positive => self.recipients += 1,
                _ => {}
            }
        }
    }

    /// Bookkeeping before the handler sees an event.
    fn note(&mut self, event: &Event) {
        match event {
            Event::Connect => self.stage = "CONNECT",
            Event::Helo { extended, .. } => {
                self.stage = if !extended {
                    "HELO"
                } else if self.config.session.lmtp {
                    "LHLO"
                } else {
                    "EHLO"
                };
            }
            Event::Mail { .. } => {
                self.stage = "MAIL";
                self.recipients = 0;
            }
            Event::Rcpt { .. } => self.stage = "RCPT",
            Event::DataStart => self.stage = "DATA",
            Event::DataEnd { .. } | Event::DataAborted(_) => {
                self.stage = "END-OF-MESSAGE";
                self.in_data = false;
                // Message content is over: give back a grown buffer.
                if self.read_buf.len() > INITIAL_READ_BUFFER {
                    self.read_buf = Vec::new();
                }
            }
            Event::Rset => self.stage = "RSET",
            Event::Vrfy(_) => self.stage = "VRFY",
            Event::Etrn(_) => self.stage = "ETRN",
            Event::Auth { .. } | Event::AuthResponse(_) => self.stage = "AUTH",
            Event::StartTls => self.stage = "STARTTLS",
            Event::Quit => self.stage = "QUIT",
            Event::Closed(_) => self.in_data = false,
            _ => {}
        }
    }

    /// Applies a decision; true when it accepted the event.
    fn apply(&mut self, event: &Event, decision: Option<Decision>) -> bool {
        let now = Instant::now();
        let lmtp_end = self.config.session.lmtp && matches!(event, Event::DataEnd { .. });
        let recipients = self.recipients;
        let fallback = |why: &str| {
            tracing::error!("handler bug: {why} for {event:?}; answering with a temporary error");
            configuration_problem(event)
        };
        let decision = match decision {
            Some(Decision::PerRecipient(replies)) if !lmtp_end || replies.len() != recipients => {
                Decision::Reply(fallback("wrong per-recipient replies"))
            }
            Some(d) => d,
            None => Decision::Reply(fallback("no decision")),
        };
        let session = self.session_mut();
        match decision {
            Decision::Accept => {
                session.accept(now);
                true
            }
            Decision::Reply(reply) => {
                let positive = matches!(
                    reply.code().class(),
                    ReplyClass::PositiveCompletion | ReplyClass::PositiveIntermediate
                );
                session.respond(reply, now);
                positive
            }
            Decision::PerRecipient(replies) => {
                let positive = replies
                    .iter()
                    .any(|r| r.code().class() == ReplyClass::PositiveCompletion);
                session.respond_per_recipient(replies, now);
                positive
            }
        }
    }

    /// Sends what the session has to send, in one write.
    async fn flush(&mut self) -> Result<(), ConnectionError> {
        let session = self.session.as_mut().expect("session created");
        if !session.has_output() {
            return Ok(());
        }
        self.out.clear();
        session.poll_transmit(&mut self.out);
        if let Some(client) = &self.trace {
            for line in String::from_utf8_lossy(&self.out).lines() {
                tracing::info!("> {client}: {}", printable(line));
            }
        }
        let timeout = self.config.session.timeout;
        write_all(&mut self.io, &self.out, timeout).await?;
        if self.out.capacity() > INITIAL_READ_BUFFER {
            // A long EHLO list or many LMTP replies: don't keep the room.
            self.out = Vec::new();
        }
        Ok(())
    }

    /// The TLS handshake, after STARTTLS or first thing in wrapper mode.
    async fn handshake(&mut self) -> Result<(), ConnectionError> {
        let acceptor = TlsAcceptor::from(
            self.config
                .tls
                .clone()
                .expect("TLS offered only with a TLS configuration"),
        );
        let Stream::Plain(tcp) = std::mem::replace(&mut self.io, Stream::Gone) else {
            unreachable!("TLS is started once, on the plain socket")
        };
        let limit = self.config.tls_handshake_timeout;
        let tls = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
            Err(_) => return Err(ConnectionError::Timeout("TLS handshake")),
            Ok(Err(e)) => return Err(ConnectionError::Tls(e)),
            Ok(Ok(tls)) => tls,
        };
        let info = tls_info(tls.get_ref().1);
        tracing::info!(
            "Anonymous TLS connection established from {}: {info}",
            self.info.client()
        );
        self.info.tls = Some(info);
        self.io = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Says `421` and closes; a message in progress is aborted.
    async fn stop_for_shutdown(&mut self) -> Result<(), ConnectionError> {
        let reply = shutting_down(&self.config.session.hostname);
        self.out.clear();
        reply.write_to(&mut self.out);
        let result = write_all(&mut self.io, &self.out, FINAL_WRITE_TIMEOUT).await;
        // The session ends as if the client had gone: the handler gets
        // `DataAborted` for a message in progress, then `Closed`.
        self.session_mut().handle_eof(Instant::now());
        self.dispatch_events().await;
        if result.is_ok() {
            self.close().await;
        }
        result
    }

    /// Ends the connection cleanly (TLS close_notify, TCP FIN).
    async fn close(&mut self) {
        let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, self.io.shutdown()).await;
    }
}

/// Writes and flushes `bytes` within `timeout`.
async fn write_all(
    io: &mut Stream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), ConnectionError> {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Err(_) => Err(ConnectionError::Timeout("write")),
        Ok(Err(e)) => Err(ConnectionError::Io(e)),
        Ok(Ok(())) => Ok(()),
    }
}

/// Waits for input: readiness of an idle plain socket (no buffer held),
/// or a read into `buf`.
async fn next_input(io: &mut Stream, buf: &mut [u8], idle_plain: bool) -> Wake {
    match io {
        Stream::Plain(tcp) if idle_plain => match tcp.readable().await {
            Ok(()) => Wake::Readable,
            Err(e) => Wake::Read(Err(e)),
        },
        _ => Wake::Read(io.read(buf).await),
    }
}

/// Sleeps until `deadline`; the caller only polls this when it is `Some`.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// What a handler that gave no (usable) decision gets: a temporary
/// error, as Postfix answers a configuration problem.
fn configuration_problem(event: &Event) -> Reply {
    let (code, text) = if matches!(event, Event::Connect) {
        (
            ReplyCode::SERVICE_NOT_AVAILABLE,
            "Server configuration error",
        )
    } else {
        (ReplyCode::LOCAL_ERROR, "Server configuration problem")
    };
    Reply::reject(code, 3, 5, text).expect("a valid 4xx reply")
}

/// `421 4.3.2 HOST Service shutting down`.
fn shutting_down(hostname: &str) -> Reply {
    let text = format!("{hostname} Service shutting down");
    Reply::reject(ReplyCode::SERVICE_NOT_AVAILABLE, 3, 2, text)
        .unwrap_or_else(|_| Reply::shutting_down())
}

/// Postfix's `421 4.7.0 HOST Error: too many connections from ADDR`.
fn too_many_connections(hostname: &str, ip: IpAddr) -> Reply {
    let text = format!("{hostname} Error: too many connections from {ip}");
    Reply::reject(ReplyCode::SERVICE_NOT_AVAILABLE, 7, 0, text)
        .unwrap_or_else(|_| Reply::shutting_down())
}

fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_string(),
    };
    let cipher = match conn.negotiated_cipher_suite() {
        // rustls names TLS 1.3 suites `TLS13_...`; IANA and OpenSSL say
        // `TLS_...`.
        Some(suite) => match suite.suite().as_str() {
            Some(name) => name.replacen("TLS13_", "TLS_", 1),
            None => format!("{:?}", suite.suite()),
        },
        None => "unknown".to_string(),
    };
    TlsInfo {
        protocol,
        cipher,
        server_name: conn.server_name().map(str::to_string),
        peer_fingerprint: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| fingerprint_sha256(c.as_ref())),
    }
}

/// `text` for a log line: control characters shown as `?`, and at most
/// 500 characters, so that a client cannot forge or flood log lines.
fn printable(text: &str) -> String {
    text.chars()
        .take(500)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Says `reply` to a connection that will not get a session, and closes
/// it (after the handshake on a wrapper-mode port, so the client can read
/// it).
async fn refuse_connection(stream: TcpStream, config: Arc<TransportConfig>, reply: Reply) {
    let mut io = match (config.wrapper_mode, config.tls.clone()) {
        (true, Some(tls)) => {
            let handshake = TlsAcceptor::from(tls).accept(stream);
            match tokio::time::timeout(FINAL_WRITE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                _ => return,
            }
        }
        _ => Stream::Plain(stream),
    };
    let mut bytes = Vec::new();
    reply.write_to(&mut bytes);
    if write_all(&mut io, &bytes, FINAL_WRITE_TIMEOUT)
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, io.shutdown()).await;
    }
}

/// The connection limits of a [`Server`].
#[derive(Clone)]
pub struct ConnectionLimits {
    /// The most connections served at once: `master.cf`'s `maxproc`
    /// column (Postfix's `default_process_limit`, 100). Further clients
    /// wait in the listen queue, as they wait for a free `smtpd`.
    pub max_connections: usize,
    /// `smtpd_client_connection_count_limit`: the most connections one
    /// client address may have at once (0: no limit). Over it a client
    /// gets `421 4.7.0 HOST Error: too many connections from ADDR`.
    pub client_connection_count_limit: usize,
    /// Clients the per-client limit does not apply to
    /// (`smtpd_client_event_limit_exceptions`, by default Postfix's
    /// `$mynetworks`); `None`: none.
    pub exempt: Option<Arc<dyn Fn(IpAddr) -> bool + Send + Sync>>,
    /// How long, after shutdown is asked for, a session may still finish
    /// the message it is receiving.
    pub shutdown_timeout: Duration,
}

impl fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("max_connections", &self.max_connections)
            .field(
                "client_connection_count_limit",
                &self.client_connection_count_limit,
            )
            .field(
                "exempt",
                &self.exempt.as_ref().map(|_| "Fn(IpAddr) -> bool"),
            )
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl Default for ConnectionLimits {
    /// Postfix's defaults: 100 connections, 50 per client, no
    /// exceptions; 30 seconds to finish a message at shutdown.
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 100,
            client_connection_count_limit: 50,
            exempt: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// The number of open connections per client address.
#[derive(Debug, Default)]
struct ClientCounts(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`ClientCounts`], given back on drop.
struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl ClientCounts {
    /// Counts a new connection; returns its slot and the client's count
    /// including it.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> (ClientSlot, usize) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        *count += 1;
        let n = *count;
        (
            ClientSlot {
                counts: self.clone(),
                ip,
            },
            n,
        )
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on one listening socket and serves each in its
/// own task: an `smtpd` service of `master.cf`.
///
/// # Example
///
/// ```no_run
/// # use std::sync::Arc;
/// # use mta_smtp::transport::*;
/// # use mta_smtp::server::{Event, ServerConfig};
/// # struct Discard;
/// # impl SessionHandler for Discard {
/// #     fn on_event<'a>(&'a mut self, e: &'a Event, _: &'a ConnectionInfo) -> HandlerFuture<'a> {
/// #         Box::pin(async move { e.needs_decision().then_some(Decision::Accept) })
/// #     }
/// # }
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
/// let transport = TransportConfig::new(ServerConfig::new("mx.example.com"), None, false)?;
/// let server = Server::new(listener, transport, ConnectionLimits::default());
/// server
///     .run(|| Discard, async { tokio::signal::ctrl_c().await.ok(); })
///     .await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    transport: TransportHandle,
    limits: ConnectionLimits,
}

/// The settings a [`Server`] gives the connections it accepts, replaceable
/// while it runs (a configuration reload): connections accepted after
/// [`replace`](TransportHandle::replace) get the new settings, those
/// already open keep theirs.
#[derive(Debug, Clone)]
pub struct TransportHandle(Arc<std::sync::RwLock<Arc<TransportConfig>>>);

impl TransportHandle {
    /// Connections accepted from now on use `transport`.
    pub fn replace(&self, transport: TransportConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(transport);
    }

    fn current(&self) -> Arc<TransportConfig> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// How long stragglers get past the shutdown deadline to say their last
/// words before they are aborted.
const SHUTDOWN_GRACE: Duration = FINAL_WRITE_TIMEOUT;

impl Server {
    /// A server on `listener`.
    pub fn new(
        listener: TcpListener,
        transport: TransportConfig,
        limits: ConnectionLimits,
    ) -> Server {
        Server {
            listener,
            transport: TransportHandle(Arc::new(std::sync::RwLock::new(Arc::new(transport)))),
            limits,
        }
    }

    /// The handle that replaces the settings of connections accepted
    /// later (certificates, session parameters), for a reload.
    pub fn transport_handle(&self) -> TransportHandle {
        self.transport.clone()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections, each with a handler from `factory`, until
    /// `shutdown` completes; then stops accepting, tells every session to
    /// stop (see the [module documentation](self)), waits for them until
    /// [`ConnectionLimits::shutdown_timeout`] (plus a few seconds for
    /// their last words) and returns. Sessions still running then
    /// (stuck in a handler) are aborted.
    pub async fn run<F, H>(self, mut factory: F, shutdown: impl Future<Output = ()>)
    where
        F: FnMut() -> H,
        H: SessionHandler,
    {
        let Server {
            listener,
            transport,
            limits,
        } = self;
        // mini-redis's pattern, with a JoinSet in place of the completion
        // channel: it also reports a task's panic and can abort stragglers.
        let (trigger, _) = shutdown_channel();
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let counts = Arc::new(ClientCounts::default());
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer, permit) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    report_task(done);
                    continue;
                }
                accepted = accept(&listener, &permits) => accepted,
            };
            let (slot, count) = counts.enter(peer.ip());
            let limit = limits.client_connection_count_limit;
            let exempt = limits.exempt.as_ref().is_some_and(|f| f(peer.ip()));
            let config = transport.current();
            if limit > 0 && count > limit && !exempt {
                tracing::warn!(
                    "Connection concurrency limit exceeded: {count} from unknown[{}]",
                    peer.ip()
                );
                let reply = too_many_connections(&config.session.hostname, peer.ip());
                tasks.spawn(async move {
                    refuse_connection(stream, config, reply).await;
                    drop((permit, slot));
                });
                continue;
            }
            let handler = factory();
            let signal = trigger.signal();
            tasks.spawn(async move {
                serve_connection(stream, config, handler, signal).await;
                // The permit and slot are given back only when the
                // connection is closed.
                drop((permit, slot));
            });
        }
        // Stop accepting: clients still in the listen queue are refused
        // by the kernel rather than left waiting.
        drop(listener);
        let deadline = Instant::now() + limits.shutdown_timeout;
        tracing::info!("shutting down: {} sessions open", tasks.len());
        trigger.shutdown(deadline);
        let all_done = async {
            while let Some(done) = tasks.join_next().await {
                report_task(done);
            }
        };
        let give_up = tokio::time::Instant::from_std(deadline + SHUTDOWN_GRACE);
        if tokio::time::timeout_at(give_up, all_done).await.is_err() {
            tracing::warn!(
                "{} sessions still open after the shutdown deadline: aborted",
                tasks.len()
            );
            tasks.shutdown().await;
        }
    }
}

/// A connection permit and an accepted connection. Accept errors (out of
/// file descriptors, a connection reset while queued) are logged and
/// retried after a pause, never returned: one bad moment must not stop
/// the service.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    // The permit is taken before accepting, so a full server leaves
    // clients in the listen queue (mini-redis, and Postfix's maxproc).
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let mut pause = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, permit),
            Err(e) => {
                tracing::error!("accept: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn report_task(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("a session task panicked: {e}");
    }
}
