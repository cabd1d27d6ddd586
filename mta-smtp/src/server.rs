//! The SMTP and LMTP server session: RFC 5321's state machine, sans I/O.
//!
//! A [`ServerSession`] is fed the bytes a client sent
//! ([`ServerSession::handle_input`]) and the current time; it gives back
//! [`Event`]s, one per command, and bytes to send
//! ([`ServerSession::poll_transmit`]). An event that needs a decision
//! (see [`Event::needs_decision`]) is answered with
//! [`ServerSession::accept`] (the usual positive reply) or
//! [`ServerSession::respond`] (any reply; a 2xx or 3xx one accepts, a
//! 4xx or 5xx one refuses); until then the session reads no further
//! command, so a pipelining client's commands wait in order. Deadlines
//! come from [`ServerSession::poll_timeout`] and are handled by
//! [`ServerSession::handle_timeout`]; nothing here reads a clock.
//!
//! # What the session decides itself
//!
//! Everything RFC 5321 and Postfix's `smtpd` fix regardless of policy,
//! with Postfix's replies: command syntax ([`crate::command`]), command
//! order (`503 5.5.1 Error: need MAIL command`...), `smtpd_helo_required`,
//! `smtpd_recipient_limit`, `message_size_limit` (a `SIZE=` above it is
//! refused at MAIL; content beyond it is drained, not passed on, and
//! answered `552 5.3.4 Error: message file too big`), `disable_vrfy_command`,
//! the error counters (`smtpd_soft_error_limit` slows replies by
//! `smtpd_error_sleep_time`, `smtpd_hard_error_limit` disconnects with
//! `421 4.7.0`; `smtpd_junk_command_limit`), `smtpd_timeout`,
//! `smtpd_forbid_unauth_pipelining` and `smtpd_forbid_bare_newline`, and
//! the EHLO keyword list with `smtpd_discard_ehlo_keywords`.
//!
//! # DATA, BDAT, and smuggling
//!
//! DATA content is dot-unstuffed and passed on in [`Event::Content`]
//! chunks with CR LF line ends, without a heap allocation per line. Only
//! CR LF `.` CR LF ends it: a `.` line ends the data only when the line
//! before it ended in CR LF too (or it is the first line) and it ends in
//! CR LF itself. So none of the false end-of-data sequences of the 2023
//! "SMTP smuggling" research (`\n.\n`, `\n.\r\n`, `\r\n.\n`, `\r.\r\n`,
//! `\r\n.\r\r\n`, NUL variants) ends a message or starts a second
//! transaction. A bare LF is handled as [`BareNewline`] says: `Normalize`
//! (Postfix 3.9's default, and this crate's) takes it as a line end but
//! never as part of the end-of-data sequence; `Reject` refuses the
//! message (or the command) with `550 5.5.2 Error: bare <LF> received`;
//! `Allow` is Postfix's old `no`, which lets `\n.\n` end the data. A bare
//! CR is an ordinary byte. BDAT chunks are taken by count, not unstuffed.
//!
//! # STARTTLS
//!
//! When STARTTLS is accepted, the session sends `220 2.0.0 Ready to start
//! TLS` and throws away whatever the client sent after the command
//! (CVE-2011-0411: plaintext injected before the handshake must not be
//! read as if it came through TLS); with `smtpd_forbid_unauth_pipelining`
//! such input is a protocol violation and ends the session instead. The
//! transport then does the handshake and calls
//! [`ServerSession::tls_established`], which starts the session afresh
//! (no HELO, no transaction), as RFC 3207 requires.
//!
//! # LMTP
//!
//! With [`ServerConfig::lmtp`], the session speaks RFC 2033: `LHLO`
//! instead of `HELO`/`EHLO`, and after the data one reply per accepted
//! recipient, given by [`ServerSession::respond_per_recipient`].
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use mta_smtp::server::{Event, ServerConfig, ServerSession};
//!
//! let now = Instant::now();
//! let mut s = ServerSession::new(ServerConfig::new("mx.example.com"), now);
//! let mut out = Vec::new();
//! assert!(matches!(s.poll_event(), Some(Event::Connect)));
//! s.accept(now);
//! s.handle_input(b"HELO client.example.org\r\n", now);
//! assert!(matches!(s.poll_event(), Some(Event::Helo { .. })));
//! s.accept(now);
//! s.handle_input(b"MAIL FROM:<a@example.org>\r\n", now);
//! let Some(Event::Mail { from, .. }) = s.poll_event() else { panic!() };
//! assert_eq!(from.to_string(), "<a@example.org>");
//! s.accept(now);
//! s.poll_transmit(&mut out);
//! assert_eq!(
//!     String::from_utf8(out).unwrap(),
//!     "220 mx.example.com ESMTP\r\n250 mx.example.com\r\n250 2.1.0 Ok\r\n"
//! );
//! ```
//!
//! A HELO client (no PIPELINING) that had sent both lines at once would
//! have been disconnected: `smtpd_forbid_unauth_pipelining` is on by
//! default.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mta_core::address::{MailAddress, ParseOptions, ReversePath};
use mta_core::config::{Config, ConfigError};
use mta_core::reply::{Reply, ReplyClass, sanitize_echo};

use crate::command::{Body, Command, MailParameters, RcptParameters, build, parse_command};

/// How the server treats a line that ends in a bare LF: Postfix's
/// `smtpd_forbid_bare_newline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// `normalize` (also `yes`): a bare LF ends a line, as CR LF would,
    /// but never takes part in the end-of-data sequence.
    #[default]
    Normalize,
    /// `reject`: a command or message with a bare LF is refused.
    Reject,
    /// `no`: a bare LF is a line end everywhere, end of data included
    /// (vulnerable to SMTP smuggling; Postfix before 3.9).
    Allow,
}

/// The session's settings: Postfix's `smtpd_*` parameters, resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `myhostname`: named in EHLO, HELO and `421` replies.
    pub hostname: String,
    /// `smtpd_banner`, expanded: the greeting text after `220 `.
    pub banner: String,
    /// Speak LMTP (RFC 2033) instead of SMTP.
    pub lmtp: bool,
    /// `smtpd_helo_required`.
    pub helo_required: bool,
    /// `disable_vrfy_command`.
    pub disable_vrfy: bool,
    /// `smtpd_recipient_limit` (0: none).
    pub recipient_limit: usize,
    /// `message_size_limit` in bytes (0: none).
    pub message_size_limit: u64,
    /// `smtpd_error_sleep_time`.
    pub error_sleep_time: Duration,
    /// `smtpd_soft_error_limit`.
    pub soft_error_limit: u32,
    /// `smtpd_hard_error_limit`.
    pub hard_error_limit: u32,
    /// `smtpd_junk_command_limit`.
    pub junk_command_limit: u32,
    /// `smtpd_timeout`: how long the client may take to send a command
    /// or the next piece of data.
    pub timeout: Duration,
    /// `smtpd_forbid_unauth_pipelining`.
    pub forbid_unauth_pipelining: bool,
    /// `smtpd_forbid_bare_newline`.
    pub bare_newline: BareNewline,
    /// `smtpd_forbid_bare_newline_reject_code`.
    pub bare_newline_reject_code: u16,
    /// `smtpd_discard_ehlo_keywords`, lower-cased.
    pub discard_ehlo_keywords: Vec<String>,
    /// `line_length_limit`: the longest command line accepted.
    pub line_length_limit: usize,
    /// `strict_rfc821_envelopes` as address parsing options.
    pub envelope: ParseOptions,
    /// `smtputf8_enable`: offer SMTPUTF8 and accept UTF-8 addresses
    /// with it.
    pub smtputf8: bool,
    /// Offer STARTTLS (a certificate is configured and
    /// `smtpd_tls_security_level` is `may` or `encrypt`).
    pub starttls: bool,
    /// `smtpd_tls_security_level = encrypt`: MAIL, AUTH, VRFY, EXPN and
    /// ETRN only after STARTTLS (`530 5.7.0 Must issue a STARTTLS
    /// command first`).
    pub tls_required: bool,
    /// SASL mechanisms to offer (empty: no AUTH).
    pub auth_mechanisms: Vec<String>,
    /// `smtpd_tls_auth_only`: offer AUTH only over TLS.
    pub auth_requires_tls: bool,
    /// `broken_sasl_auth_clients`: also announce `AUTH=...`.
    pub broken_sasl_auth_clients: bool,
    /// Offer CHUNKING (BDAT).
    pub chunking: bool,
}

impl ServerConfig {
    /// Postfix's defaults, with `hostname` as `myhostname` and the banner
    /// `$myhostname ESMTP` (Postfix adds `$mail_name`; callers that
    /// expand `smtpd_banner` set [`ServerConfig::banner`]).
    pub fn new(hostname: &str) -> ServerConfig {
        ServerConfig {
            hostname: hostname.to_string(),
            banner: format!("{hostname} ESMTP"),
            lmtp: false,
            helo_required: false,
            disable_vrfy: false,
            recipient_limit: 1000,
            message_size_limit: 10_240_000,
            error_sleep_time: Duration::from_secs(1),
            soft_error_limit: 10,
            hard_error_limit: 20,
            junk_command_limit: 100,
            timeout: Duration::from_secs(300),
            forbid_unauth_pipelining: true,
            bare_newline: BareNewline::Normalize,
            bare_newline_reject_code: 550,
            discard_ehlo_keywords: Vec::new(),
            line_length_limit: 2048,
            envelope: ParseOptions::LENIENT,
            smtputf8: true,
            starttls: false,
            tls_required: false,
            auth_mechanisms: Vec::new(),
            auth_requires_tls: false,
            broken_sasl_auth_clients: false,
            chunking: true,
        }
    }
}

impl ServerConfig {
    /// The settings a Postfix `smtpd` (or, with `lmtp`, an LMTP server)
    /// would take from `config`: `main.cf` with the service's `-o`
    /// overrides already applied ([`Config::with_overrides`]).
    ///
    /// STARTTLS is offered when `smtpd_tls_security_level` is `may` or
    /// `encrypt` (or the obsolete `smtpd_use_tls`/`smtpd_enforce_tls` say
    /// so); whether a certificate is there is the transport's business.
    /// AUTH mechanisms are left empty: the SASL layer fills them in.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the parameter, its file and line, for a
    /// value of the wrong kind (`smtpd_timeout = soon`,
    /// `smtpd_forbid_bare_newline = maybe`).
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::config::{Config, HostFacts};
    /// use mta_smtp::server::{BareNewline, ServerConfig};
    ///
    /// let main_cf = "myhostname = mx.example.com\nsmtpd_helo_required = yes\n";
    /// let config = Config::parse(main_cf, "main.cf", HostFacts::default()).unwrap();
    /// let smtpd = ServerConfig::from_config(&config, false).unwrap();
    /// assert_eq!(smtpd.banner, "mx.example.com ESMTP mtad");
    /// assert!(smtpd.helo_required);
    /// assert_eq!(smtpd.bare_newline, BareNewline::Normalize);
    /// assert_eq!(smtpd.timeout.as_secs(), 300);
    /// ```
    ///
    /// [`Config::with_overrides`]: mta_core::config::Config::with_overrides
    pub fn from_config(config: &Config, lmtp: bool) -> Result<ServerConfig, ConfigError> {
        let count = |name: &str| -> Result<u32, ConfigError> {
            let n = config.integer(name)?;
            u32::try_from(n.max(0)).map_err(|_| config.bad_value(name, &n.to_string(), "too large"))
        };
        let bare = config.expanded("smtpd_forbid_bare_newline")?;
        let bare_newline = match bare.trim().to_ascii_lowercase().as_str() {
            "normalize" | "yes" => BareNewline::Normalize,
            "reject" => BareNewline::Reject,
            "no" => BareNewline::Allow,
            _ => {
                return Err(config.bad_value(
                    "smtpd_forbid_bare_newline",
                    &bare,
                    "expected normalize, yes, reject or no",
                ));
            }
        };
        let level = config
            .expanded("smtpd_tls_security_level")?
            .trim()
            .to_ascii_lowercase();
        let tls_required =
            level == "encrypt" || (level.is_empty() && config.boolean("smtpd_enforce_tls")?);
        let starttls = match level.as_str() {
            "may" | "encrypt" => true,
            "" | "none" => {
                config.boolean("smtpd_use_tls")? || config.boolean("smtpd_enforce_tls")?
            }
            _ => {
                return Err(config.bad_value(
                    "smtpd_tls_security_level",
                    &level,
                    "expected none, may or encrypt",
                ));
            }
        };
        let size = config.integer("message_size_limit")?;
        let reject_code = config.integer("smtpd_forbid_bare_newline_reject_code")?;
        Ok(ServerConfig {
            hostname: config.expanded("myhostname")?,
            banner: config.expanded("smtpd_banner")?,
            lmtp,
            helo_required: config.boolean("smtpd_helo_required")?,
            disable_vrfy: config.boolean("disable_vrfy_command")?,
            recipient_limit: count("smtpd_recipient_limit")? as usize,
            message_size_limit: u64::try_from(size.max(0)).unwrap_or(0),
            error_sleep_time: config.time("smtpd_error_sleep_time")?,
            soft_error_limit: count("smtpd_soft_error_limit")?,
            hard_error_limit: count("smtpd_hard_error_limit")?,
            junk_command_limit: count("smtpd_junk_command_limit")?,
            timeout: config.time("smtpd_timeout")?,
            forbid_unauth_pipelining: config.boolean("smtpd_forbid_unauth_pipelining")?,
            bare_newline,
            bare_newline_reject_code: u16::try_from(reject_code)
                .ok()
                .filter(|c| (400..600).contains(c))
                .ok_or_else(|| {
                    config.bad_value(
                        "smtpd_forbid_bare_newline_reject_code",
                        &reject_code.to_string(),
                        "expected a 4xx or 5xx code",
                    )
                })?,
            discard_ehlo_keywords: config
                .list("smtpd_discard_ehlo_keywords")?
                .into_iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
            line_length_limit: count("line_length_limit")? as usize,
            envelope: ParseOptions::from_strict_rfc821_envelopes(
                config.boolean("strict_rfc821_envelopes")?,
            ),
            smtputf8: config.boolean("smtputf8_enable")?,
            starttls,
            tls_required,
            auth_mechanisms: Vec::new(),
            // "smtpd_tls_security_level = encrypt implies
            // smtpd_tls_auth_only = yes" (postconf(5)).
            auth_requires_tls: config.boolean("smtpd_tls_auth_only")? || tls_required,
            broken_sasl_auth_clients: config.boolean("broken_sasl_auth_clients")?,
            chunking: true,
        })
    }
}

/// Why a session ended, or a message was dropped, without the caller
/// deciding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Abort {
    /// The content exceeded `message_size_limit` (`552 5.3.4`).
    TooBig,
    /// A bare LF with [`BareNewline::Reject`].
    BareNewline,
    /// The client sent nothing for `smtpd_timeout` (`421 4.4.2`).
    Timeout,
    /// The client made `smtpd_hard_error_limit` errors (`421 4.7.0`).
    TooManyErrors,
    /// The client talked out of turn with `smtpd_forbid_unauth_pipelining`
    /// (`554 5.5.0 Error: SMTP protocol synchronization`).
    Pipelining,
    /// The client closed the connection.
    Disconnected,
}

/// What happened in the session. Those for which
/// [`needs_decision`](Event::needs_decision) is true wait for
/// [`ServerSession::accept`] or [`ServerSession::respond`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A client connected. Accepting sends the `220` greeting; a `4xx`
    /// reply is sent and the session closes; a `5xx` reply is sent and
    /// every command but QUIT then gets `503` (RFC 5321 section 3.1).
    Connect,
    /// HELO, EHLO or LHLO. Accepting sends the usual reply (the EHLO
    /// keyword list for EHLO and LHLO).
    Helo {
        /// The name the client gave, as sent (cleaned of control
        /// characters).
        name: String,
        /// EHLO or LHLO rather than HELO.
        extended: bool,
    },
    /// MAIL FROM, after the session's own checks.
    Mail {
        /// The sender.
        from: ReversePath,
        /// Its parameters.
        params: MailParameters<'static>,
    },
    /// RCPT TO, after the session's own checks.
    Rcpt {
        /// The recipient.
        to: MailAddress,
        /// Its parameters.
        params: RcptParameters<'static>,
    },
    /// DATA, or the first BDAT of a transaction. Accepting sends `354`
    /// for DATA and lets BDAT content through.
    DataStart,
    /// A piece of message content, unstuffed, with CR LF line ends.
    Content(Bytes),
    /// The end of the content: the caller queues the message and
    /// responds (`250 2.0.0 Ok: queued as ID`), or with
    /// [`ServerSession::respond_per_recipient`] under LMTP.
    DataEnd {
        /// The content size in bytes, as passed on.
        size: u64,
    },
    /// The message was dropped by the session, which replied itself; the
    /// caller throws away the content it has.
    DataAborted(Abort),
    /// RSET: the transaction is gone (informational).
    Rset,
    /// VRFY with its argument. Accepting sends `252 2.0.0 ARG`, as
    /// Postfix does without a recipient check.
    Vrfy(String),
    /// ETRN with its argument. Accepting sends `250 Queuing started`.
    Etrn(String),
    /// AUTH with its mechanism and initial response (base64, as sent).
    /// The caller responds with `334 challenge` to continue, `235` for
    /// success, or an error.
    Auth {
        /// The mechanism, upper-cased.
        mechanism: String,
        /// The initial response, if any.
        initial_response: Option<String>,
    },
    /// A client's line in an AUTH exchange (base64, as sent), after a
    /// `334`.
    AuthResponse(String),
    /// STARTTLS. Accepting sends `220 2.0.0 Ready to start TLS`; the
    /// transport then does the handshake and calls
    /// [`ServerSession::tls_established`].
    StartTls,
    /// QUIT: `221 2.0.0 Bye` has been queued, the session closes.
    Quit,
    /// The session ended on its own (timeout, errors, protocol
    /// violation, disconnect); any final reply is queued.
    Closed(Abort),
}

impl Event {
    /// Whether the session waits for the caller's answer to this event.
    pub fn needs_decision(&self) -> bool {
        matches!(
            self,
            Event::Connect
                | Event::Helo { .. }
                | Event::Mail { .. }
                | Event::Rcpt { .. }
                | Event::DataStart
                | Event::DataEnd { .. }
                | Event::Vrfy(_)
                | Event::Etrn(_)
                | Event::Auth { .. }
                | Event::AuthResponse(_)
                | Event::StartTls
        )
    }
}

/// Which event awaits a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Connect,
    Helo { extended: bool },
    Mail,
    Rcpt,
    DataStart { bdat: Option<(u64, bool)> },
    DataEnd,
    Vrfy,
    Etrn,
    Auth,
    StartTls,
}

/// What the bytes after a command line are.
#[derive(Debug)]
enum Phase {
    /// Command lines.
    Command,
    /// DATA content.
    Data(DataReader),
    /// `remaining` bytes of a BDAT chunk; `last` for BDAT LAST.
    Bdat {
        /// The chunk's size.
        size: u64,
        remaining: u64,
        last: bool,
        /// Pass the content on (false: drain it).
        keep: bool,
        /// The previous chunk byte was a CR (for bare-LF handling
        /// across chunks).
        after_cr: bool,
    },
    /// The client's next line answers an AUTH challenge.
    AuthResponse,
    /// Waiting for the TLS handshake.
    Tls,
    /// Nothing more is read.
    Closed,
}

/// The dot-unstuffing reader of DATA content.
#[derive(Debug, Default)]
struct DataReader {
    /// Inside a line (bytes of it were already passed on).
    mid_line: bool,
    /// The previous line ended in CR LF (or there was none yet).
    prev_crlf: bool,
    /// A bare LF was seen.
    bare_lf: bool,
}

/// The state of a mail transaction.
#[derive(Debug, Default)]
struct Transaction {
    active: bool,
    /// Recipients accepted.
    recipients: usize,
    /// Recipients refused because of the limit (not errors).
    body: Option<Body>,
    size: u64,
    too_big: bool,
    /// A BDAT in this transaction was refused: the rest are drained.
    bdat_failed: Option<Reply>,
    /// DATA or BDAT has started.
    content_started: bool,
}

/// The server side of one SMTP or LMTP connection. See the [module
/// documentation](self).
#[derive(Debug)]
pub struct ServerSession {
    config: std::sync::Arc<ServerConfig>,
    input: BytesMut,
    output: Vec<u8>,
    content: BytesMut,
    events: VecDeque<Event>,
    pending: Option<Pending>,
    phase: Phase,
    /// HELO/EHLO/LHLO was accepted; `Some(true)` for EHLO/LHLO.
    helo: Option<bool>,
    tls: bool,
    authenticated: bool,
    /// A 5xx greeting was sent: only QUIT is served.
    refused: bool,
    transaction: Transaction,
    errors: u32,
    junk: u32,
    /// Replies are held until this instant (`smtpd_error_sleep_time`).
    hold_until: Option<Instant>,
    /// When the client must have sent something by.
    deadline: Option<Instant>,
    /// Input arrived while the greeting was not yet decided.
    pregreet: bool,
    /// Skipping the rest of an over-long command line.
    skipping_long_line: bool,
    /// Bytes thrown away after STARTTLS.
    discarded_after_starttls: usize,
    close_after_output: bool,
    /// The argument of the pending VRFY, for the default answer.
    vrfy_argument: String,
    /// The answer to the BDAT chunk being drained.
    refused_chunk: Option<Reply>,
}

/// Content is passed on in chunks of about this size (or whatever one
/// read brought).
const CONTENT_CHUNK: usize = 64 * 1024;

/// Postfix's replies that the session sends on its own.
fn reply(code: u16, status: Option<(u16, u16)>, text: &str) -> Reply {
    build(code, status, text.to_string())
}

/// The replies of every transaction, built once: a pipelined transaction
/// then costs no reply allocation.
struct CommonReplies {
    mail_ok: Reply,
    rcpt_ok: Reply,
    data_go: Reply,
    ok: Reply,
    bye: Reply,
}

static COMMON: std::sync::LazyLock<CommonReplies> = std::sync::LazyLock::new(|| CommonReplies {
    mail_ok: reply(250, Some((1, 0)), "Ok"),
    rcpt_ok: reply(250, Some((1, 5)), "Ok"),
    data_go: reply(354, None, "End data with <CR><LF>.<CR><LF>"),
    ok: reply(250, Some((0, 0)), "Ok"),
    bye: reply(221, Some((0, 0)), "Bye"),
});

impl ServerSession {
    /// A new session for a client that just connected; the first event
    /// is [`Event::Connect`].
    pub fn new(config: impl Into<std::sync::Arc<ServerConfig>>, now: Instant) -> ServerSession {
        let _ = now;
        let mut events = VecDeque::new();
        events.push_back(Event::Connect);
        ServerSession {
            config: config.into(),
            input: BytesMut::new(),
            output: Vec::new(),
            content: BytesMut::new(),
            events,
            pending: Some(Pending::Connect),
            phase: Phase::Command,
            helo: None,
            tls: false,
            authenticated: false,
            refused: false,
            transaction: Transaction::default(),
            errors: 0,
            junk: 0,
            hold_until: None,
            deadline: None,
            pregreet: false,
            skipping_long_line: false,
            discarded_after_starttls: 0,
            close_after_output: false,
            vrfy_argument: String::new(),
            refused_chunk: None,
        }
    }

    /// A new session on a connection that is TLS from its first byte
    /// (wrapper mode, port 465): STARTTLS is never offered, and AUTH
    /// counts as over TLS.
    pub fn new_tls(config: impl Into<std::sync::Arc<ServerConfig>>, now: Instant) -> ServerSession {
        let mut session = ServerSession::new(config, now);
        session.tls = true;
        session
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Appends the bytes to send to `out`. Nothing is given while replies
    /// are held back by `smtpd_error_sleep_time`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        if self.hold_until.is_none() {
            // Copied rather than moved: the session keeps its buffer's
            // capacity for the next replies.
            out.extend_from_slice(&self.output);
            self.output.clear();
        }
    }

    /// Whether there is something to send now.
    pub fn has_output(&self) -> bool {
        self.hold_until.is_none() && !self.output.is_empty()
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.hold_until, self.deadline) {
            (Some(h), Some(d)) => Some(h.min(d)),
            (h, d) => h.or(d),
        }
    }

    /// Handles the passing of time: releases held replies, and ends the
    /// session when the client has been silent for `smtpd_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.hold_until.is_some_and(|h| now >= h) {
            self.hold_until = None;
            self.arm_deadline(now);
            self.process(now);
        }
        if self.deadline.is_some_and(|d| now >= d) && self.pending.is_none() {
            let text = format!("{} Error: timeout exceeded", self.config.hostname);
            self.abort_session(Abort::Timeout, build(421, Some((4, 2)), text));
        }
    }

    /// Whether the session has ended: once the output is sent, close the
    /// connection.
    pub fn is_closed(&self) -> bool {
        self.close_after_output
    }

    /// Whether the session wants more input now (false while a decision
    /// is pending, during the TLS handshake, or once closed).
    pub fn wants_input(&self) -> bool {
        self.pending.is_none() && !matches!(self.phase, Phase::Tls | Phase::Closed)
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether AUTH succeeded in this session.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The number of errors counted so far.
    pub fn error_count(&self) -> u32 {
        self.errors
    }

    /// The number of plaintext bytes thrown away after STARTTLS.
    pub fn discarded_after_starttls(&self) -> usize {
        self.discarded_after_starttls
    }

    /// Takes bytes the client sent.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        match self.phase {
            Phase::Tls | Phase::Closed => {
                // Plaintext during the handshake never reaches the
                // session after it; input after the end is ignored.
                if matches!(self.phase, Phase::Tls) {
                    self.discarded_after_starttls += data.len();
                }
                return;
            }
            _ => {}
        }
        if self.pending == Some(Pending::Connect) {
            self.pregreet = true;
        }
        self.input.extend_from_slice(data);
        self.arm_deadline(now);
        self.process(now);
    }

    /// The client closed its side of the connection.
    pub fn handle_eof(&mut self, now: Instant) {
        let _ = now;
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if matches!(self.phase, Phase::Data(_) | Phase::Bdat { .. }) {
            self.content.clear();
            self.events
                .push_back(Event::DataAborted(Abort::Disconnected));
        }
        self.phase = Phase::Closed;
        self.pending = None;
        self.deadline = None;
        self.events.push_back(Event::Closed(Abort::Disconnected));
        self.close_after_output = true;
    }

    /// Accepts the pending event with the usual positive reply.
    ///
    /// # Panics
    ///
    /// When no event awaits a decision: that is a bug in the caller.
    pub fn accept(&mut self, now: Instant) {
        let pending = self.pending.expect("accept() without a pending event");
        let common = &*COMMON;
        let fixed = match pending {
            Pending::Mail => Some(&common.mail_ok),
            Pending::Rcpt => Some(&common.rcpt_ok),
            Pending::DataStart { .. } => Some(&common.data_go),
            Pending::DataEnd if !self.config.lmtp => Some(&common.ok),
            _ => None,
        };
        if let Some(r) = fixed {
            self.respond_with(r, now);
            return;
        }
        let r = match pending {
            Pending::Connect => reply(220, None, &self.config.banner),
            Pending::Helo { extended } => {
                if extended {
                    self.ehlo_reply()
                } else {
                    reply(250, None, &self.config.hostname)
                }
            }
            Pending::Mail => reply(250, Some((1, 0)), "Ok"),
            Pending::Rcpt => reply(250, Some((1, 5)), "Ok"),
            Pending::DataStart { .. } => reply(354, None, "End data with <CR><LF>.<CR><LF>"),
            Pending::DataEnd => {
                let ok = reply(250, Some((0, 0)), "Ok");
                if self.config.lmtp {
                    let replies = vec![ok; self.transaction.recipients];
                    self.respond_per_recipient(replies, now);
                    return;
                }
                ok
            }
            // Postfix's answer without a recipient check.
            Pending::Vrfy => build(252, Some((0, 0)), self.vrfy_argument.clone()),
            Pending::Etrn => reply(250, None, "Queuing started"),
            Pending::Auth => reply(235, Some((7, 0)), "Authentication successful"),
            Pending::StartTls => reply(220, Some((0, 0)), "Ready to start TLS"),
        };
        self.respond(r, now);
    }

    /// Answers the pending event with `reply`: 2xx and 3xx accept, 4xx
    /// and 5xx refuse (and count as errors, as in Postfix).
    ///
    /// # Panics
    ///
    /// When no event awaits a decision.
    pub fn respond(&mut self, reply: Reply, now: Instant) {
        self.respond_with(&reply, now);
    }

    fn respond_with(&mut self, reply: &Reply, now: Instant) {
        let pending = self
            .pending
            .take()
            .expect("respond() without a pending event");
        self.arm_deadline(now);
        let ok = matches!(
            reply.code().class(),
            ReplyClass::PositiveCompletion | ReplyClass::PositiveIntermediate
        );
        match pending {
            Pending::Connect => {
                if !ok {
                    self.send(reply, now);
                    if reply.code().get() / 100 == 4 {
                        self.close(Abort::Disconnected);
                    } else {
                        self.refused = true;
                    }
                } else if self.pregreet && self.config.forbid_unauth_pipelining {
                    self.sync_violation();
                    return;
                } else {
                    self.send(reply, now);
                }
            }
            Pending::Helo { extended } => {
                if ok {
                    self.helo = Some(extended);
                    self.reset_transaction();
                }
                self.send_counted(reply, ok, now);
            }
            Pending::Mail => {
                if ok {
                    // A new transaction: nothing of an earlier one stays.
                    let body = self.transaction.body;
                    self.reset_transaction();
                    self.transaction.active = true;
                    self.transaction.body = body;
                }
                self.send_counted(reply, ok, now);
            }
            Pending::Rcpt => {
                if ok {
                    self.transaction.recipients += 1;
                }
                self.send_counted(reply, ok, now);
            }
            Pending::DataStart { bdat: None } => {
                self.send_counted(reply, ok, now);
                if ok {
                    self.transaction.content_started = true;
                    // One buffer for the message's first chunk, rather
                    // than growing it line by line.
                    self.content.reserve(CONTENT_CHUNK);
                    self.phase = Phase::Data(DataReader {
                        prev_crlf: true,
                        ..DataReader::default()
                    });
                }
            }
            Pending::DataStart {
                bdat: Some((size, last)),
            } => {
                self.transaction.content_started = true;
                if !ok {
                    self.transaction.bdat_failed = Some(reply.clone());
                }
                self.phase = Phase::Bdat {
                    size,
                    remaining: size,
                    last,
                    keep: ok,
                    after_cr: false,
                };
            }
            Pending::DataEnd if self.config.lmtp => {
                // LMTP: the same answer for every recipient.
                self.pending = Some(Pending::DataEnd);
                let replies = vec![reply.clone(); self.transaction.recipients];
                self.respond_per_recipient(replies, now);
                return;
            }
            Pending::DataEnd => {
                if ok {
                    // Postfix forgives errors once mail is delivered.
                    self.errors = 0;
                    self.junk = 0;
                }
                self.send_counted(reply, ok, now);
                self.reset_transaction();
            }
            Pending::Vrfy | Pending::Etrn => self.send_counted(reply, ok, now),
            Pending::Auth => {
                if reply.code().get() == 334 {
                    self.phase = Phase::AuthResponse;
                    self.send(reply, now);
                } else {
                    self.authenticated = ok;
                    self.send_counted(reply, ok, now);
                }
            }
            Pending::StartTls => {
                if ok {
                    if !self.input.is_empty() && self.config.forbid_unauth_pipelining {
                        self.sync_violation();
                        return;
                    }
                    self.discarded_after_starttls += self.input.len();
                    self.input.clear();
                    self.send(reply, now);
                    self.phase = Phase::Tls;
                    self.deadline = None;
                    return;
                }
                self.send_counted(reply, ok, now);
            }
        }
        self.process(now);
    }

    /// Answers the end of data under LMTP: one reply per accepted
    /// recipient, in RCPT order.
    ///
    /// # Panics
    ///
    /// When the end of data is not pending, or the number of replies is
    /// not the number of accepted recipients.
    pub fn respond_per_recipient(&mut self, replies: Vec<Reply>, now: Instant) {
        assert_eq!(
            self.pending,
            Some(Pending::DataEnd),
            "no end of data pending"
        );
        assert_eq!(
            replies.len(),
            self.transaction.recipients,
            "one reply per recipient"
        );
        self.pending = None;
        let any_ok = replies
            .iter()
            .any(|r| r.code().class() == ReplyClass::PositiveCompletion);
        if any_ok {
            self.errors = 0;
            self.junk = 0;
        }
        for r in &replies {
            let ok = r.code().class() == ReplyClass::PositiveCompletion;
            self.send_counted(r, ok, now);
        }
        self.reset_transaction();
        self.process(now);
    }

    /// The TLS handshake after STARTTLS finished: the session starts
    /// over, as RFC 3207 section 4.2 requires (the client must send EHLO
    /// again; nothing learnt before TLS is kept).
    pub fn tls_established(&mut self, now: Instant) {
        assert!(
            matches!(self.phase, Phase::Tls),
            "tls_established() without STARTTLS"
        );
        self.tls = true;
        self.helo = None;
        self.authenticated = false;
        self.reset_transaction();
        self.input.clear();
        self.phase = Phase::Command;
        self.arm_deadline(now);
    }

    fn ehlo_reply(&self) -> Reply {
        let c = &self.config;
        let mut lines = vec![c.hostname.clone()];
        let mut add = |keyword: String| {
            let name = keyword
                .split([' ', '='])
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if !c.discard_ehlo_keywords.contains(&name) {
                lines.push(keyword);
            }
        };
        add("PIPELINING".into());
        add(if c.message_size_limit > 0 {
            format!("SIZE {}", c.message_size_limit)
        } else {
            "SIZE".into()
        });
        if !c.disable_vrfy {
            add("VRFY".into());
        }
        if !c.lmtp {
            add("ETRN".into());
        }
        if c.starttls && !self.tls {
            add("STARTTLS".into());
        }
        if self.auth_offered() {
            let list = c.auth_mechanisms.join(" ");
            add(format!("AUTH {list}"));
            if c.broken_sasl_auth_clients {
                add(format!("AUTH={list}"));
            }
        }
        add("ENHANCEDSTATUSCODES".into());
        add("8BITMIME".into());
        add("DSN".into());
        if c.smtputf8 {
            add("SMTPUTF8".into());
        }
        if c.chunking {
            add("CHUNKING".into());
        }
        Reply::new(mta_core::reply::ReplyCode::OK, None, lines).expect("EHLO lines are valid")
    }

    fn auth_offered(&self) -> bool {
        !self.config.auth_mechanisms.is_empty() && (self.tls || !self.config.auth_requires_tls)
    }

    fn pipelining_negotiated(&self) -> bool {
        self.helo == Some(true)
            && !self
                .config
                .discard_ehlo_keywords
                .iter()
                .any(|k| k == "pipelining")
    }

    fn arm_deadline(&mut self, now: Instant) {
        self.deadline = Some(now + self.config.timeout);
    }

    fn send(&mut self, reply: &Reply, now: Instant) {
        reply.write_to(&mut self.output);
        let _ = now;
    }

    /// Sends a reply; a refusal counts as an error, and past the soft
    /// limit replies are held back.
    fn send_counted(&mut self, reply: &Reply, ok: bool, now: Instant) {
        if !ok {
            self.errors += 1;
        }
        self.send(reply, now);
        if self.errors > self.config.soft_error_limit
            && self.errors < self.config.hard_error_limit
            && !self.config.error_sleep_time.is_zero()
        {
            self.hold_until = Some(now + self.config.error_sleep_time);
        }
    }

    fn reset_transaction(&mut self) {
        self.transaction = Transaction::default();
        self.content.clear();
    }

    fn close(&mut self, why: Abort) {
        self.phase = Phase::Closed;
        self.pending = None;
        self.deadline = None;
        self.input.clear();
        self.events.push_back(Event::Closed(why));
        self.close_after_output = true;
    }

    fn abort_session(&mut self, why: Abort, reply: Reply) {
        if matches!(self.phase, Phase::Data(_) | Phase::Bdat { .. }) {
            self.content.clear();
            self.events.push_back(Event::DataAborted(why));
        }
        reply.write_to(&mut self.output);
        // The last words go out at once.
        self.hold_until = None;
        self.close(why);
    }

    fn sync_violation(&mut self) {
        self.abort_session(
            Abort::Pipelining,
            reply(554, Some((5, 0)), "Error: SMTP protocol synchronization"),
        );
    }

    /// Reads as far as the input and the pending decision allow.
    fn process(&mut self, now: Instant) {
        while self.pending.is_none() && self.hold_until.is_none() {
            let progressed = match self.phase {
                Phase::Command => self.read_command(now),
                Phase::AuthResponse => self.read_auth_response(now),
                Phase::Data(_) => self.read_data(now),
                Phase::Bdat { .. } => self.read_bdat(now),
                Phase::Tls | Phase::Closed => false,
            };
            if !progressed {
                break;
            }
        }
        self.flush_content();
    }

    fn flush_content(&mut self) {
        if !self.content.is_empty() {
            let chunk = self.content.split().freeze();
            self.events.push_back(Event::Content(chunk));
        }
    }

    /// Finds the next line: `(content length, line length with its end,
    /// ends in CR LF)`.
    fn next_line(&self) -> Option<(usize, usize, bool)> {
        let lf = self.input.iter().position(|&b| b == b'\n')?;
        let crlf = lf > 0 && self.input[lf - 1] == b'\r';
        Some((if crlf { lf - 1 } else { lf }, lf + 1, crlf))
    }

    fn read_auth_response(&mut self, now: Instant) -> bool {
        let Some((len, used, _)) = self.next_line() else {
            return false;
        };
        let line = String::from_utf8_lossy(&self.input[..len]).into_owned();
        self.input.advance(used);
        if line.trim() == "*" {
            self.phase = Phase::Command;
            let r = reply(501, Some((7, 0)), "Authentication aborted");
            self.send_counted(&r, false, now);
            return true;
        }
        self.phase = Phase::Command;
        self.pending = Some(Pending::Auth);
        self.events.push_back(Event::AuthResponse(line));
        true
    }

    fn read_command(&mut self, now: Instant) -> bool {
        let limit = self.config.line_length_limit;
        let Some((len, used, crlf)) = self.next_line() else {
            if self.input.len() > limit {
                // An over-long line: refuse it once and skip the rest.
                if !self.skipping_long_line {
                    self.skipping_long_line = true;
                    let r = reply(500, Some((5, 2)), "Error: line too long");
                    self.send_counted(&r, false, now);
                }
                self.input.clear();
            }
            return false;
        };
        if self.skipping_long_line {
            self.skipping_long_line = false;
            self.input.advance(used);
            return true;
        }
        if len > limit {
            self.input.advance(used);
            let r = reply(500, Some((5, 2)), "Error: line too long");
            self.send_counted(&r, false, now);
            return true;
        }
        if self.errors >= self.config.hard_error_limit {
            let text = format!("{} Error: too many errors", self.config.hostname);
            self.abort_session(Abort::TooManyErrors, build(421, Some((7, 0)), text));
            return false;
        }
        if !crlf && self.config.bare_newline == BareNewline::Reject {
            let code = self.config.bare_newline_reject_code;
            let r = build(code, Some((5, 2)), "Error: bare <LF> received".into());
            self.abort_session(Abort::BareNewline, r);
            return false;
        }
        let input = std::mem::take(&mut self.input);
        let more_pending = input.len() > used;
        let opts = self.config.envelope.with_smtputf8(false);
        let parsed = parse_command(&input[..len], opts);
        let progressed = match parsed {
            Ok(cmd) => self.command(cmd, more_pending, now),
            Err(e) => {
                if self.refused {
                    self.send_refused(now);
                } else {
                    self.send_counted(&e.reply(), false, now);
                }
                true
            }
        };
        self.input = input;
        if matches!(self.phase, Phase::Closed) {
            self.input.clear();
        } else {
            self.input.advance(used);
        }
        progressed
    }

    fn send_refused(&mut self, now: Instant) {
        let r = reply(503, Some((5, 1)), "Error: service refused");
        self.send_counted(&r, false, now);
    }

    /// Whether RFC 2920 lets `cmd` be followed by more commands in the
    /// same group once PIPELINING is negotiated.
    fn may_be_followed(cmd: &Command<'_>) -> bool {
        matches!(
            cmd,
            Command::Rset | Command::Mail { .. } | Command::Rcpt { .. }
        )
    }

    /// Handles a parsed command; false when nothing more can be read.
    fn command(&mut self, cmd: Command<'_>, more_pending: bool, now: Instant) -> bool {
        if self.refused && !matches!(cmd, Command::Quit) {
            self.send_refused(now);
            return true;
        }
        // BDAT is always followed by its chunk.
        if more_pending
            && self.config.forbid_unauth_pipelining
            && !matches!(cmd, Command::Bdat { .. })
            && !(self.pipelining_negotiated() && Self::may_be_followed(&cmd))
        {
            self.sync_violation();
            return false;
        }
        let lmtp = self.config.lmtp;
        if self.config.tls_required
            && !self.tls
            && matches!(
                cmd,
                Command::Mail { .. }
                    | Command::Auth { .. }
                    | Command::Vrfy(_)
                    | Command::Expn(_)
                    | Command::Etrn(_)
            )
        {
            let r = reply(530, Some((7, 0)), "Must issue a STARTTLS command first");
            self.send_counted(&r, false, now);
            return true;
        }
        match cmd {
            Command::Helo(name) | Command::Ehlo(name) if lmtp => {
                let _ = name;
                self.send_counted(&crate::command::CommandError::Unknown.reply(), false, now);
            }
            Command::Lhlo(_) if !lmtp => {
                self.send_counted(&crate::command::CommandError::Unknown.reply(), false, now);
            }
            Command::Helo(name) | Command::Ehlo(name) | Command::Lhlo(name) => {
                let extended = !matches!(cmd, Command::Helo(_));
                self.pending = Some(Pending::Helo { extended });
                self.events.push_back(Event::Helo {
                    name: sanitize_echo(name.as_bytes(), 255),
                    extended,
                });
            }
            Command::Mail { from, params } => {
                let refusal = if self.config.helo_required && self.helo.is_none() {
                    Some(reply(503, Some((5, 1)), "Error: send HELO/EHLO first"))
                } else if self.transaction.active {
                    Some(reply(503, Some((5, 1)), "Error: nested MAIL command"))
                } else if params.smtputf8 && !self.config.smtputf8 {
                    Some(reply(555, Some((5, 4)), "Unsupported option: SMTPUTF8"))
                } else if self.config.message_size_limit > 0
                    && params
                        .size
                        .is_some_and(|s| s > self.config.message_size_limit)
                {
                    Some(reply(552, Some((3, 4)), "Message size exceeds fixed limit"))
                } else {
                    None
                };
                match refusal {
                    Some(r) => self.send_counted(&r, false, now),
                    None => {
                        self.transaction.body = params.body;
                        self.pending = Some(Pending::Mail);
                        self.events.push_back(Event::Mail {
                            from,
                            params: params.into_owned(),
                        });
                    }
                }
            }
            Command::Rcpt { to, params } => {
                if !self.transaction.active {
                    let r = reply(503, Some((5, 1)), "Error: need MAIL command");
                    self.send_counted(&r, false, now);
                } else if self.config.recipient_limit > 0
                    && self.transaction.recipients >= self.config.recipient_limit
                {
                    // RFC 5321 4.5.3.1.10: not an error; the client sends
                    // the rest later.
                    let r = reply(452, Some((5, 3)), "Error: too many recipients");
                    self.send(&r, now);
                } else {
                    self.pending = Some(Pending::Rcpt);
                    self.events.push_back(Event::Rcpt {
                        to,
                        params: params.into_owned(),
                    });
                }
            }
            Command::Data => {
                if let Some(r) = self.data_refusal(false) {
                    self.send_counted(&r, false, now);
                } else {
                    self.pending = Some(Pending::DataStart { bdat: None });
                    self.events.push_back(Event::DataStart);
                }
            }
            Command::Bdat { size, last } => return self.bdat(size, last, now),
            Command::Rset => {
                self.junk_command(now);
                self.reset_transaction();
                self.events.push_back(Event::Rset);
                self.send(&COMMON.ok, now);
            }
            Command::Noop => {
                self.junk_command(now);
                self.send(&COMMON.ok, now);
            }
            Command::Quit => {
                self.send(&COMMON.bye, now);
                self.events.push_back(Event::Quit);
                self.phase = Phase::Closed;
                self.deadline = None;
                self.hold_until = None;
                self.close_after_output = true;
                return false;
            }
            Command::Vrfy(arg) => {
                self.junk_command(now);
                if self.config.disable_vrfy {
                    let r = reply(502, Some((5, 1)), "VRFY command is disabled");
                    self.send_counted(&r, false, now);
                } else {
                    self.pending = Some(Pending::Vrfy);
                    self.vrfy_argument = sanitize_echo(arg.as_bytes(), 255);
                    self.events
                        .push_back(Event::Vrfy(self.vrfy_argument.clone()));
                }
            }
            // Postfix implements neither; it answers them as unknown.
            Command::Expn(_) | Command::Help(_) => {
                self.send_counted(&crate::command::CommandError::Unknown.reply(), false, now);
            }
            Command::Etrn(arg) => {
                self.junk_command(now);
                let refusal = if self.helo.is_none() {
                    Some(reply(503, None, "Error: send HELO/EHLO first"))
                } else if self.transaction.active {
                    Some(reply(503, None, "Error: MAIL transaction in progress"))
                } else {
                    None
                };
                match refusal {
                    Some(r) => self.send_counted(&r, false, now),
                    None => {
                        self.pending = Some(Pending::Etrn);
                        self.events
                            .push_back(Event::Etrn(sanitize_echo(arg.as_bytes(), 255)));
                    }
                }
            }
            Command::StartTls => {
                let refusal = if !self.config.starttls {
                    Some(reply(502, Some((5, 1)), "Error: command not implemented"))
                } else if self.tls {
                    Some(reply(554, Some((5, 1)), "Error: TLS already active"))
                } else if self.transaction.active {
                    Some(reply(
                        503,
                        Some((5, 1)),
                        "Error: MAIL transaction in progress",
                    ))
                } else {
                    None
                };
                match refusal {
                    Some(r) => self.send_counted(&r, false, now),
                    None => {
                        self.pending = Some(Pending::StartTls);
                        self.events.push_back(Event::StartTls);
                    }
                }
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                let refusal = if !self.auth_offered() {
                    Some(reply(
                        503,
                        Some((5, 1)),
                        "Error: authentication not enabled",
                    ))
                } else if self.helo.is_none() {
                    Some(reply(503, Some((5, 1)), "Error: send HELO/EHLO first"))
                } else if self.authenticated {
                    Some(reply(503, Some((5, 1)), "Error: already authenticated"))
                } else if self.transaction.active {
                    Some(reply(
                        503,
                        Some((5, 1)),
                        "Error: MAIL transaction in progress",
                    ))
                } else {
                    None
                };
                match refusal {
                    Some(r) => self.send_counted(&r, false, now),
                    None => {
                        self.pending = Some(Pending::Auth);
                        self.events.push_back(Event::Auth {
                            mechanism: mechanism.to_ascii_uppercase(),
                            initial_response: initial_response.map(str::to_string),
                        });
                    }
                }
            }
            // `Command` is non-exhaustive for other crates only.
            #[allow(unreachable_patterns)]
            _ => self.send_counted(&crate::command::CommandError::Unknown.reply(), false, now),
        }
        true
    }

    /// Junk commands count as errors past `smtpd_junk_command_limit`.
    fn junk_command(&mut self, now: Instant) {
        let _ = now;
        self.junk += 1;
        if self.junk > self.config.junk_command_limit {
            self.errors += 1;
        }
    }

    /// Why DATA or a first BDAT cannot start, if it cannot.
    fn data_refusal(&self, bdat: bool) -> Option<Reply> {
        if !self.transaction.active {
            Some(reply(503, Some((5, 1)), "Error: need RCPT command"))
        } else if self.transaction.recipients == 0 {
            Some(reply(554, Some((5, 1)), "Error: no valid recipients"))
        } else if !bdat && self.transaction.body == Some(Body::BinaryMime) {
            Some(reply(503, Some((5, 1)), "Error: BINARYMIME requires BDAT"))
        } else if !bdat && self.transaction.content_started {
            Some(reply(503, Some((5, 1)), "Error: DATA after BDAT"))
        } else {
            None
        }
    }

    fn bdat(&mut self, size: u64, last: bool, now: Instant) -> bool {
        if !self.config.chunking {
            let r = crate::command::CommandError::Unknown.reply();
            self.send_counted(&r, false, now);
            return true;
        }
        let refusal = if self.transaction.content_started {
            self.transaction.bdat_failed.clone()
        } else {
            self.data_refusal(true)
        };
        if let Some(r) = refusal {
            // The chunk is read and dropped; the refusal is the answer,
            // for the rest of the transaction if there is one.
            if self.transaction.active {
                self.transaction.content_started = true;
            }
            self.refused_chunk = Some(r);
            self.phase = Phase::Bdat {
                size,
                remaining: size,
                last,
                keep: false,
                after_cr: false,
            };
            return true;
        }
        if !self.transaction.content_started {
            self.pending = Some(Pending::DataStart {
                bdat: Some((size, last)),
            });
            self.events.push_back(Event::DataStart);
            return true;
        }
        self.phase = Phase::Bdat {
            size,
            remaining: size,
            last,
            keep: !self.transaction.too_big,
            after_cr: false,
        };
        true
    }

    /// Adds content, enforcing `message_size_limit`.
    fn add_content(&mut self, bytes: &[u8]) {
        if self.transaction.too_big {
            return;
        }
        let limit = self.config.message_size_limit;
        self.transaction.size += bytes.len() as u64;
        if limit > 0 && self.transaction.size > limit {
            self.transaction.too_big = true;
            self.content.clear();
            return;
        }
        self.content.extend_from_slice(bytes);
        if self.content.len() >= CONTENT_CHUNK {
            self.flush_content();
        }
    }

    fn read_data(&mut self, now: Instant) -> bool {
        let Phase::Data(mut reader) = std::mem::replace(&mut self.phase, Phase::Command) else {
            unreachable!("read_data outside DATA")
        };
        let input = std::mem::take(&mut self.input);
        let mut pos = 0;
        let mut ended = false;
        let policy = self.config.bare_newline;
        while pos < input.len() {
            let rest = &input[pos..];
            let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                // A partial line: pass on what cannot become the end of
                // the data, keeping a possible `.` or `.\r` (and a CR
                // that may start a line end) for later.
                let keep = if reader.mid_line { 1 } else { 2 };
                if rest.len() > keep {
                    let take = rest.len() - keep;
                    let mut chunk = &rest[..take];
                    if !reader.mid_line {
                        chunk = chunk.strip_prefix(b".").unwrap_or(chunk);
                    }
                    self.add_content(chunk);
                    reader.mid_line = true;
                    pos += take;
                }
                break;
            };
            let crlf = lf > 0 && rest[lf - 1] == b'\r';
            let body = if crlf { &rest[..lf - 1] } else { &rest[..lf] };
            if !crlf {
                reader.bare_lf = true;
            }
            let line_end_ok = crlf || policy == BareNewline::Allow;
            let prev_ok = reader.prev_crlf || policy == BareNewline::Allow;
            if !reader.mid_line && body == b"." && line_end_ok && prev_ok {
                pos += lf + 1;
                ended = true;
                break;
            }
            let mut text = body;
            if !reader.mid_line {
                text = text.strip_prefix(b".").unwrap_or(text);
            }
            self.add_content(text);
            self.add_content(b"\r\n");
            reader.mid_line = false;
            reader.prev_crlf = crlf;
            pos += lf + 1;
        }
        self.input = input;
        self.input.advance(pos);
        if !ended {
            self.phase = Phase::Data(reader);
            return false;
        }
        self.phase = Phase::Command;
        self.finish_content(reader.bare_lf && policy == BareNewline::Reject, now);
        true
    }

    /// The end of DATA or BDAT LAST: pass the message on, or refuse it.
    fn finish_content(&mut self, bare_lf: bool, now: Instant) {
        if self.transaction.too_big {
            self.events.push_back(Event::DataAborted(Abort::TooBig));
            let r = reply(552, Some((3, 4)), "Error: message file too big");
            self.send_counted(&r, false, now);
            self.reset_transaction();
        } else if bare_lf {
            self.content.clear();
            self.events
                .push_back(Event::DataAborted(Abort::BareNewline));
            let code = self.config.bare_newline_reject_code;
            let r = build(code, Some((5, 2)), "Error: bare <LF> received".into());
            self.send_counted(&r, false, now);
            self.reset_transaction();
        } else {
            self.flush_content();
            self.pending = Some(Pending::DataEnd);
            self.events.push_back(Event::DataEnd {
                size: self.transaction.size,
            });
        }
    }

    fn read_bdat(&mut self, now: Instant) -> bool {
        let Phase::Bdat {
            size,
            mut remaining,
            last,
            keep,
            mut after_cr,
        } = self.phase
        else {
            unreachable!("read_bdat outside BDAT")
        };
        let take = (remaining.min(self.input.len() as u64)) as usize;
        if take > 0 {
            let input = std::mem::take(&mut self.input);
            if keep {
                let chunk = &input[..take];
                if self.config.bare_newline == BareNewline::Allow {
                    self.add_content(chunk);
                } else {
                    // Bare LFs become CR LF (normalize) or mark the
                    // message (reject).
                    let mut start = 0;
                    for (i, &b) in chunk.iter().enumerate() {
                        if b == b'\n'
                            && !(if i == 0 {
                                after_cr
                            } else {
                                chunk[i - 1] == b'\r'
                            })
                        {
                            self.add_content(&chunk[start..i]);
                            self.add_content(b"\r\n");
                            start = i + 1;
                            if self.config.bare_newline == BareNewline::Reject {
                                self.transaction.bdat_failed = Some(build(
                                    self.config.bare_newline_reject_code,
                                    Some((5, 2)),
                                    "Error: bare <LF> received".into(),
                                ));
                            }
                        }
                    }
                    self.add_content(&chunk[start..]);
                }
                after_cr = chunk[take - 1] == b'\r';
            }
            self.input = input;
            self.input.advance(take);
            remaining -= take as u64;
        }
        if remaining > 0 {
            self.phase = Phase::Bdat {
                size,
                remaining,
                last,
                keep,
                after_cr,
            };
            return false;
        }
        self.phase = Phase::Command;
        if !keep || self.transaction.bdat_failed.is_some() {
            let r = self
                .refused_chunk
                .take()
                .or_else(|| self.transaction.bdat_failed.clone())
                .unwrap_or_else(|| reply(503, Some((5, 1)), "Error: need RCPT command"));
            if keep {
                self.content.clear();
                self.events
                    .push_back(Event::DataAborted(Abort::BareNewline));
            }
            self.send_counted(&r, false, now);
            if last {
                self.reset_transaction();
            }
            return true;
        }
        if last {
            self.finish_content(false, now);
        } else if self.transaction.too_big {
            // Postfix keeps reading chunks and refuses at the end.
            let r = reply(250, Some((0, 0)), "Ok: chunk received");
            self.send(&r, now);
        } else {
            let text = format!("Ok: {size} bytes");
            self.send(&reply(250, Some((0, 0)), &text), now);
        }
        true
    }
}
