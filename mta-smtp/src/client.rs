//! The SMTP and LMTP client session: a deterministic state machine in the
//! manner of `quinn-proto`, with no I/O and no clock.
//!
//! The caller moves bytes and time; the session decides what to say.
//! Bytes received from the server go in through
//! [`ClientSession::handle_input`], bytes to send come out of
//! [`ClientSession::poll_transmit`], what happened comes out of
//! [`ClientSession::poll_event`], and the next deadline out of
//! [`ClientSession::poll_timeout`]. Every method that can start a wait
//! takes `now`, so tests run on a virtual clock.
//!
//! What the session does, as Postfix's `smtp(8)` and `lmtp(8)` do:
//! - greeting, `EHLO` (`LHLO` for LMTP) with a fall back to `HELO` when
//!   `EHLO` gets a 5xx, 4xx/5xx greetings skipped or reported
//!   (`smtp_skip_4xx_greeting`, `smtp_skip_5xx_greeting`);
//! - `STARTTLS` when offered or required, forgetting everything learned in
//!   plaintext, and refusing plaintext the server sent after its `220`;
//! - `AUTH` plumbing: base64 on the wire, raw bytes in the API;
//! - mail transactions: `MAIL`, `RCPT` and `DATA` pipelined in one write
//!   when the server offers `PIPELINING` (RFC 2920), one at a time
//!   otherwise; `BDAT` when the server offers `CHUNKING` (RFC 3030);
//!   `SIZE`, `BODY`, `SMTPUTF8` and DSN parameters only where offered;
//! - a result for every recipient: delivered, deferred or bounced, with the
//!   reply that decided it ([`RecipientOutcome`]);
//! - Postfix's per-stage timeouts, with Postfix's wording when one expires.
//!
//! What it does not do: connect, resolve MX records, run the TLS
//! handshake, pick a SASL mechanism, or convert 8-bit content to 7 bits.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use mta_smtp::client::*;
//!
//! let now = Instant::now();
//! let mut session = ClientSession::new(ClientConfig::new("client.example"), now);
//! session.handle_input(b"220 mx.example ESMTP\r\n", now);
//! let mut out = Vec::new();
//! session.poll_transmit(&mut out);
//! assert_eq!(out, b"EHLO client.example\r\n");
//! session.handle_input(b"250-mx.example\r\n250 PIPELINING\r\n", now);
//! assert!(matches!(session.poll_event(), Some(ClientEvent::Greeting(_))));
//! let Some(ClientEvent::Ready { capabilities }) = session.poll_event() else { panic!() };
//! assert!(capabilities.pipelining);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use mta_core::address::{MailAddress, ReversePath};
use mta_core::delivery::{DsnNotify, DsnRet};
use mta_core::reply::{ParseStatus, Reply, ReplyClass, ReplyCode, parse_reply};

/// How many octets of content one `BDAT` chunk carries at most before it
/// is sent (the last chunk may be smaller). Large enough that the command
/// overhead does not matter, small enough to bound what the session holds.
pub const BDAT_CHUNK_SIZE: usize = 64 * 1024;

/// The longest text a reply made by this client carries; the peer name
/// in it is cut so the reply stays within RFC 5321's line length.
const MAX_LOCAL_TEXT: usize = 400;

/// When to use `STARTTLS` (Postfix's `smtp_tls_security_level`, reduced
/// to what the session itself decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never send `STARTTLS` (`none`, Postfix's default).
    #[default]
    Never,
    /// Use `STARTTLS` when the server offers it; plaintext otherwise, and
    /// also when the server refuses the command (`may`).
    Offer,
    /// Fail the session unless TLS is established (`encrypt`).
    Require,
}

/// Postfix's `smtp_*_timeout` (and the identical `lmtp_*_timeout`)
/// parameters. Each one bounds how long the session waits for the
/// server's reply at that stage, counted from the moment the command was
/// handed to [`ClientSession::poll_transmit`]'s caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `smtp_helo_timeout` (300s): the greeting and the `EHLO`/`HELO`/
    /// `LHLO` reply. This session also uses it for `AUTH` replies.
    pub helo: Duration,
    /// `smtp_mail_timeout` (300s): the `MAIL FROM` reply.
    pub mail: Duration,
    /// `smtp_rcpt_timeout` (300s): each `RCPT TO` reply.
    pub rcpt: Duration,
    /// `smtp_data_init_timeout` (120s): the `DATA` reply.
    pub data_init: Duration,
    /// `smtp_data_xfer_timeout` (180s): while content is being sent, the
    /// longest time without the caller handing over more content (and
    /// each non-final `BDAT` reply).
    pub data_xfer: Duration,
    /// `smtp_data_done_timeout` (600s): the reply after the end of the
    /// content.
    pub data_done: Duration,
    /// `smtp_quit_timeout` (300s): the `QUIT` reply.
    pub quit: Duration,
    /// `smtp_starttls_timeout` (300s): the `STARTTLS` reply.
    pub starttls: Duration,
    /// `smtp_rset_timeout` (20s): the `RSET` reply.
    pub rset: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            helo: Duration::from_secs(300),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_xfer: Duration::from_secs(180),
            data_done: Duration::from_secs(600),
            quit: Duration::from_secs(300),
            starttls: Duration::from_secs(300),
            rset: Duration::from_secs(20),
        }
    }
}

/// What the session needs to know before it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The name sent with `EHLO`/`HELO`/`LHLO` (`smtp_helo_name`).
    pub helo_name: String,
    /// How the server is named in failure texts, as Postfix names it:
    /// `mx.example.com[192.0.2.1]`. Defaults to `unknown`.
    pub peer_name: String,
    /// Speak LMTP (RFC 2033): `LHLO`, no `HELO` fall back, and one reply
    /// per accepted recipient after the content.
    pub lmtp: bool,
    /// `smtp_skip_4xx_greeting` (default true): a 4xx greeting means "try
    /// the next host" ([`FailureKind::GreetingSkipped`]) rather than a
    /// result for the message ([`FailureKind::GreetingRejected`]).
    pub skip_4xx_greeting: bool,
    /// `smtp_skip_5xx_greeting` (default true): the same for 5xx.
    pub skip_5xx_greeting: bool,
    /// When to use `STARTTLS`.
    pub tls: TlsMode,
    /// Pipeline commands when the server offers `PIPELINING` (default
    /// true; Postfix's `smtp_use_pipelining` is implied).
    pub use_pipelining: bool,
    /// Send content with `BDAT` when the server offers `CHUNKING` and
    /// `PIPELINING` (default true). Without `PIPELINING` each chunk would
    /// have to wait for its reply, so `DATA` is used then.
    pub use_chunking: bool,
    /// EHLO keywords to ignore, case-insensitively
    /// (`smtp_discard_ehlo_keywords`).
    pub discard_ehlo_keywords: Vec<String>,
    /// The per-stage time limits.
    pub timeouts: Timeouts,
}

impl ClientConfig {
    /// An SMTP client configuration with Postfix's defaults.
    pub fn new(helo_name: impl Into<String>) -> ClientConfig {
        ClientConfig {
            helo_name: helo_name.into(),
            peer_name: "unknown".to_owned(),
            lmtp: false,
            skip_4xx_greeting: true,
            skip_5xx_greeting: true,
            tls: TlsMode::Never,
            use_pipelining: true,
            use_chunking: true,
            discard_ehlo_keywords: Vec::new(),
            timeouts: Timeouts::default(),
        }
    }

    /// An LMTP client configuration with Postfix's `lmtp_*` defaults.
    pub fn lmtp(helo_name: impl Into<String>) -> ClientConfig {
        ClientConfig {
            lmtp: true,
            ..ClientConfig::new(helo_name)
        }
    }

    /// The settings Postfix's `smtp` client (or, with `lmtp`, its `lmtp`
    /// client, from the `lmtp_*` parameters) would take from `config`:
    /// the HELO name, `smtp_skip_5xx_greeting`,
    /// `smtp_tls_security_level` (`may` offers, `encrypt` and the
    /// verifying levels require TLS; verification itself is the
    /// transport's), `smtp_discard_ehlo_keywords` and the per-stage
    /// timeouts.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](mta_core::config::ConfigError) naming the parameter, file and line for a value
    /// of the wrong kind.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::config::{Config, HostFacts};
    /// use mta_smtp::client::{ClientConfig, TlsMode};
    ///
    /// let main_cf = "myhostname = mx.example.com\nsmtp_tls_security_level = may\n";
    /// let config = Config::parse(main_cf, "main.cf", HostFacts::default()).unwrap();
    /// let smtp = ClientConfig::from_config(&config, false).unwrap();
    /// assert_eq!(smtp.helo_name, "mx.example.com");
    /// assert_eq!(smtp.tls, TlsMode::Offer);
    /// assert_eq!(smtp.timeouts.data_done.as_secs(), 600);
    /// ```
    pub fn from_config(
        config: &mta_core::config::Config,
        lmtp: bool,
    ) -> Result<ClientConfig, mta_core::config::ConfigError> {
        let p = if lmtp { "lmtp" } else { "smtp" };
        let name = |suffix: &str| format!("{p}_{suffix}");
        let helo_param = if lmtp {
            "lmtp_lhlo_name"
        } else {
            "smtp_helo_name"
        };
        let level_name = name("tls_security_level");
        let level = config.expanded(&level_name)?.trim().to_ascii_lowercase();
        let tls = match level.as_str() {
            "" => {
                if config.boolean(&name("enforce_tls"))? {
                    TlsMode::Require
                } else if config.boolean(&name("use_tls"))? {
                    TlsMode::Offer
                } else {
                    TlsMode::Never
                }
            }
            "none" => TlsMode::Never,
            "may" | "opportunistic" => TlsMode::Offer,
            "encrypt" | "dane" | "dane-only" | "fingerprint" | "verify" | "secure" => {
                TlsMode::Require
            }
            _ => {
                return Err(config.bad_value(
                    &level_name,
                    &level,
                    "expected none, may, encrypt, dane, dane-only, fingerprint, verify or secure",
                ));
            }
        };
        let discard = if lmtp {
            "lmtp_discard_lhlo_keywords"
        } else {
            "smtp_discard_ehlo_keywords"
        };
        let time = |suffix: &str| config.time(&name(suffix));
        Ok(ClientConfig {
            helo_name: config.expanded(helo_param)?,
            peer_name: "unknown".to_owned(),
            lmtp,
            // Postfix 3 has no smtp_skip_4xx_greeting: a 4xx greeting is
            // always a reason to try the next server.
            skip_4xx_greeting: true,
            skip_5xx_greeting: config.boolean(&name("skip_5xx_greeting"))?,
            tls,
            use_pipelining: true,
            use_chunking: true,
            discard_ehlo_keywords: config
                .list(discard)?
                .into_iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
            timeouts: Timeouts {
                helo: time(if lmtp { "lhlo_timeout" } else { "helo_timeout" })?,
                mail: time("mail_timeout")?,
                rcpt: time("rcpt_timeout")?,
                data_init: time("data_init_timeout")?,
                data_xfer: time("data_xfer_timeout")?,
                data_done: time("data_done_timeout")?,
                quit: time("quit_timeout")?,
                starttls: time("starttls_timeout")?,
                rset: time("rset_timeout")?,
            },
        })
    }
}

/// What the server offered in its `EHLO`/`LHLO` reply, after
/// `discard_ehlo_keywords`. All false or empty after `HELO`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `SIZE` (RFC 1870): `Some(limit)`, `Some(0)` when the server
    /// announces no limit, `None` when it does not offer the extension.
    pub size: Option<u64>,
    /// `8BITMIME` (RFC 6152).
    pub eightbitmime: bool,
    /// `BINARYMIME` (RFC 3030).
    pub binarymime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// The `AUTH` mechanisms (RFC 4954, also the old `AUTH=` form),
    /// upper case, without duplicates.
    pub auth: Vec<String>,
    /// `CHUNKING` (RFC 3030).
    pub chunking: bool,
    /// `DSN` (RFC 3461).
    pub dsn: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
}

impl Capabilities {
    /// Reads the lines of an `EHLO` reply (the first line is the server's
    /// name and is skipped), ignoring the keywords in `discard`.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_smtp::client::Capabilities;
    ///
    /// let lines = ["mx.example", "SIZE 10240000", "AUTH=LOGIN", "AUTH PLAIN LOGIN", "DSN"];
    /// let caps = Capabilities::parse(lines, &["dsn".to_owned()]);
    /// assert_eq!(caps.size, Some(10_240_000));
    /// assert_eq!(caps.auth, ["LOGIN", "PLAIN"]);
    /// assert!(!caps.dsn);
    /// ```
    pub fn parse<'a, I>(lines: I, discard: &[String]) -> Capabilities
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut caps = Capabilities::default();
        for line in lines.into_iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(first) = words.next() else { continue };
            // The old form `AUTH=PLAIN LOGIN` of pre-RFC 2554 servers.
            let (keyword, inline_arg) = match first.split_once('=') {
                Some((k, a)) if k.eq_ignore_ascii_case("AUTH") => (k, Some(a)),
                _ => (first, None),
            };
            if discard.iter().any(|d| d.eq_ignore_ascii_case(keyword)) {
                continue;
            }
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    let limit = words.next().and_then(|n| n.parse::<u64>().ok());
                    caps.size = Some(limit.unwrap_or(0));
                }
                "8BITMIME" => caps.eightbitmime = true,
                "BINARYMIME" => caps.binarymime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "CHUNKING" => caps.chunking = true,
                "DSN" => caps.dsn = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => {
                    for mech in inline_arg.into_iter().chain(words) {
                        let mech = mech.to_ascii_uppercase();
                        if !mech.is_empty() && !caps.auth.contains(&mech) {
                            caps.auth.push(mech);
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }
}

pub use crate::command::Body;

/// One recipient of a [`Transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientSpec {
    /// The address for `RCPT TO:<...>`.
    pub address: MailAddress,
    /// The DSN `NOTIFY` parameter, sent when the server offers `DSN`.
    pub notify: Option<DsnNotify>,
    /// The original recipient for the DSN `ORCPT` parameter: the bare
    /// address, sent as `ORCPT=rfc822;` and its xtext form.
    pub orcpt: Option<String>,
}

impl RecipientSpec {
    /// A recipient without DSN parameters.
    pub fn new(address: MailAddress) -> RecipientSpec {
        RecipientSpec {
            address,
            notify: None,
            orcpt: None,
        }
    }
}

/// One message to send: the envelope and what the session needs to know
/// about the content before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The reverse path for `MAIL FROM`.
    pub from: ReversePath,
    /// The recipients, in the order their results are reported.
    pub recipients: Vec<RecipientSpec>,
    /// The content size in octets, for `SIZE=` and the check against the
    /// server's limit.
    pub size: Option<u64>,
    /// The body type.
    pub body: Body,
    /// Whether the message needs SMTPUTF8 even if no envelope address
    /// does (UTF-8 headers).
    pub smtputf8: bool,
    /// The DSN `RET` parameter.
    pub ret: Option<DsnRet>,
    /// The DSN `ENVID` parameter (sent as xtext).
    pub envid: Option<String>,
}

impl Transaction {
    /// A 7-bit transaction without size or DSN parameters.
    pub fn new(from: ReversePath, recipients: Vec<MailAddress>) -> Transaction {
        Transaction {
            from,
            recipients: recipients.into_iter().map(RecipientSpec::new).collect(),
            size: None,
            body: Body::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
        }
    }

    fn needs_smtputf8(&self) -> bool {
        self.smtputf8
            || self.from.mailbox().is_some_and(MailAddress::needs_smtputf8)
            || self.recipients.iter().any(|r| r.address.needs_smtputf8())
    }
}

/// What a queue manager does with one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The server took responsibility (2xx): remove the recipient.
    Delivered,
    /// Try again later: a 4xx reply, or a failure of the session.
    Deferred,
    /// Permanent failure (5xx): send a bounce.
    Bounced,
}

impl Verdict {
    /// The verdict a final reply gives. Codes outside 2xx/4xx/5xx (a
    /// `354` where none belongs) are protocol errors, so deferred.
    pub fn of(reply: &Reply) -> Verdict {
        match reply.code().class() {
            ReplyClass::PositiveCompletion => Verdict::Delivered,
            ReplyClass::PermanentNegative => Verdict::Bounced,
            ReplyClass::PositiveIntermediate | ReplyClass::TransientNegative => Verdict::Deferred,
        }
    }

    /// Postfix's log word: `sent`, `deferred` or `bounced`.
    pub fn status_word(self) -> &'static str {
        match self {
            Verdict::Delivered => "sent",
            Verdict::Deferred => "deferred",
            Verdict::Bounced => "bounced",
        }
    }
}

/// The result for one recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    /// The recipient.
    pub address: MailAddress,
    /// The server's reply to `RCPT TO`, if the command was answered.
    pub rcpt_reply: Option<Reply>,
    /// What to do with the recipient.
    pub verdict: Verdict,
    /// The reply that decided: the `MAIL`, `RCPT` or final content reply
    /// (for LMTP the recipient's own), or a reply this client made up for
    /// a local failure (see `by_client`).
    pub reply: Reply,
    /// Whether `reply` was made by this client (timeout, lost connection,
    /// size or SMTPUTF8 check) rather than received from the server.
    pub by_client: bool,
    /// The command the server's deciding `reply` answered, in Postfix's
    /// words for `(in reply to X command)`: `MAIL FROM`, `RCPT TO`,
    /// `DATA`, `end of DATA` or `BDAT`. `None` when `reply` was made by
    /// this client, or is a session failure's reply that was not about
    /// this recipient.
    pub in_reply_to: Option<&'static str>,
}

impl RecipientOutcome {
    /// The enhanced status for the log and the DSN: the reply's own, or
    /// `X.0.0` of the reply's class when the server sent none, as Postfix
    /// does.
    pub fn dsn(&self) -> String {
        match self.reply.status() {
            Some(status) => status.to_string(),
            None => format!("{}.0.0", self.reply.code().get() / 100),
        }
    }
}

/// Everything a finished transaction produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// The reply to `MAIL FROM`; `None` when the command was not sent or
    /// not answered.
    pub mail_reply: Option<Reply>,
    /// One outcome per recipient, in the order of the transaction.
    pub recipients: Vec<RecipientOutcome>,
    /// The reply to `DATA` if it was not `354`, otherwise the reply after
    /// the content (for LMTP the first recipient's); `None` when not sent
    /// or not answered.
    pub data_reply: Option<Reply>,
}

/// Why the session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// A 4xx/5xx greeting that the configuration says to skip: try the
    /// next host; the message has no result from this one.
    GreetingSkipped,
    /// A 4xx/5xx greeting that counts as the result for the message.
    GreetingRejected,
    /// The server refused `EHLO`/`HELO`/`LHLO`.
    HandshakeRejected,
    /// TLS is required and the server did not offer `STARTTLS`, or
    /// refused it.
    TlsUnavailable,
    /// The server sent plaintext after its `220` to `STARTTLS`, which
    /// could be injected commands' replies (CVE-2011-0411 style).
    PlaintextAfterStartTls,
    /// A reply that makes no sense at this point (or a `421`: the server
    /// is closing the connection).
    UnexpectedReply,
    /// Bytes that are not a valid SMTP reply.
    MalformedReply,
    /// A stage took longer than its timeout.
    Timeout,
    /// The server closed the connection before the session ended.
    ConnectionLost,
}

/// A failed session: what went wrong and the reply that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFailure {
    /// What went wrong.
    pub kind: FailureKind,
    /// The server's reply, or one made by this client for failures
    /// without one (a 4xx with status 4.4.2 for timeouts and lost
    /// connections, 4.5.0 for protocol errors, 4.7.4 for missing TLS).
    pub reply: Reply,
    /// Whether `reply` was made by this client.
    pub by_client: bool,
    /// The text for the log and the delivery status, worded as Postfix
    /// words it: `conversation with HOST timed out while sending RCPT TO`.
    pub message: String,
}

impl fmt::Display for SessionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the session reports to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server's `220` greeting.
    Greeting(Reply),
    /// The handshake is done (again after TLS): transactions and `AUTH`
    /// may start.
    Ready {
        /// What the server offered.
        capabilities: Capabilities,
    },
    /// The server accepted `STARTTLS`: run the TLS handshake on the
    /// connection, then call [`ClientSession::tls_established`].
    StartTls,
    /// A `334` challenge, decoded: answer with
    /// [`ClientSession::auth_response`].
    AuthChallenge(Vec<u8>),
    /// The final `AUTH` reply (`235`, or a refusal).
    AuthDone(Reply),
    /// The server waits for content: call [`ClientSession::send_content`]
    /// any number of times, then [`ClientSession::end_content`].
    WantContent,
    /// The transaction is over and the session idle again (or failing,
    /// in which case [`ClientEvent::Failed`] follows).
    TransactionDone(TransactionResult),
    /// The session cannot go on; [`ClientEvent::Closed`] follows.
    Failed(SessionFailure),
    /// The session is over: send what [`ClientSession::poll_transmit`]
    /// still gives, then close the connection.
    Closed,
}

/// A reply the session waits for, in the order the commands were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Lhlo,
    Helo,
    StartTls,
    Auth,
    Mail,
    Rcpt(usize),
    Data,
    /// The reply after `.` (SMTP).
    DataDone,
    /// The reply after `.` or `BDAT LAST` for one accepted recipient
    /// (LMTP).
    LmtpRecipient(usize),
    BdatChunk,
    BdatLast,
    /// The reply to a `.` sent to end a `DATA` with no accepted
    /// recipient; its reply means nothing.
    DiscardedData,
    Rset,
    Quit,
}

impl Expect {
    /// Postfix's words for the stage, for timeout and lost-connection
    /// messages.
    fn stage(self) -> &'static str {
        match self {
            Expect::Greeting => "receiving the initial server greeting",
            Expect::Ehlo => "performing the EHLO handshake",
            Expect::Lhlo => "performing the LHLO handshake",
            Expect::Helo => "performing the HELO handshake",
            Expect::StartTls => "sending STARTTLS",
            Expect::Auth => "performing SASL authentication",
            Expect::Mail => "sending MAIL FROM",
            Expect::Rcpt(_) => "sending RCPT TO",
            Expect::Data => "sending DATA command",
            Expect::BdatChunk => "sending message body",
            Expect::DataDone | Expect::LmtpRecipient(_) | Expect::BdatLast => {
                "sending end of data -- message may be sent more than once"
            }
            Expect::DiscardedData => "sending end of data",
            Expect::Rset => "sending final RSET",
            Expect::Quit => "sending QUIT",
        }
    }

    /// The command named in `(in reply to X command)`.
    fn command(self) -> &'static str {
        match self {
            Expect::Greeting => "CONNECT",
            Expect::Ehlo => "EHLO",
            Expect::Lhlo => "LHLO",
            Expect::Helo => "HELO",
            Expect::StartTls => "STARTTLS",
            Expect::Auth => "AUTH",
            Expect::Mail => "MAIL FROM",
            Expect::Rcpt(_) => "RCPT TO",
            Expect::Data => "DATA",
            Expect::BdatChunk | Expect::BdatLast => "BDAT",
            Expect::DataDone | Expect::LmtpRecipient(_) | Expect::DiscardedData => "end of DATA",
            Expect::Rset => "RSET",
            Expect::Quit => "QUIT",
        }
    }

    fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            Expect::Greeting | Expect::Ehlo | Expect::Lhlo | Expect::Helo | Expect::Auth => t.helo,
            Expect::StartTls => t.starttls,
            Expect::Mail => t.mail,
            Expect::Rcpt(_) => t.rcpt,
            Expect::Data => t.data_init,
            Expect::BdatChunk => t.data_xfer,
            Expect::DataDone
            | Expect::LmtpRecipient(_)
            | Expect::BdatLast
            | Expect::DiscardedData => t.data_done,
            Expect::Rset => t.rset,
            Expect::Quit => t.quit,
        }
    }
}

/// Where the session is, apart from the replies it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Greeting, EHLO/HELO/LHLO, STARTTLS.
    Handshake,
    /// Waiting for the caller's TLS handshake.
    TlsHandshake,
    /// Nothing in progress.
    Idle,
    /// An `AUTH` exchange.
    Auth,
    /// A transaction, before or after the content.
    Transaction,
    /// The caller is streaming content.
    Content,
    /// `QUIT` sent.
    Quitting,
    Closed,
}

/// How the content goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentMode {
    Data,
    Bdat,
}

/// The state of the transaction in progress.
#[derive(Debug)]
struct TxState {
    tx: Transaction,
    pipelined: bool,
    mode: ContentMode,
    mail_reply: Option<Reply>,
    rcpt_replies: Vec<Option<Reply>>,
    /// The final reply per recipient (SMTP: the shared content reply),
    /// with the command it answered.
    final_replies: Vec<Option<(Reply, Expect)>>,
    data_reply: Option<Reply>,
    /// The next recipient whose `RCPT` is still to be sent (lockstep).
    next_rcpt: usize,
    /// A `BDAT` chunk was refused: no more content goes out.
    bdat_failed: bool,
    /// The content has ended (`end_content` called).
    content_ended: bool,
    /// `RSET` was sent to close a failed transaction.
    resetting: bool,
    /// [`ClientEvent::WantContent`] was emitted.
    content_started: bool,
}

impl TxState {
    fn mail_ok(&self) -> bool {
        self.mail_reply.as_ref().is_some_and(is_positive)
    }

    fn accepted(&self) -> impl Iterator<Item = usize> + '_ {
        self.rcpt_replies
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_some_and(is_positive))
            .map(|(i, _)| i)
    }

    fn any_accepted(&self) -> bool {
        self.mail_ok() && self.accepted().next().is_some()
    }
}

fn is_positive(reply: &Reply) -> bool {
    reply.code().class() == ReplyClass::PositiveCompletion
}

/// The content encoder: line-end normalisation and dot-stuffing with
/// state carried across chunks, so no line is ever buffered.
#[derive(Debug, Clone, Copy)]
struct ContentEncoder {
    /// Add a dot to lines that start with one (`DATA`).
    stuff_dots: bool,
    /// Pass bytes through unchanged (`BODY=BINARYMIME`).
    raw: bool,
    /// The last octet written was the LF of a CRLF (or nothing yet).
    at_line_start: bool,
    /// A CR was seen and not yet written: whether it is half of a CRLF
    /// depends on the next octet.
    pending_cr: bool,
}

impl ContentEncoder {
    fn new(stuff_dots: bool, raw: bool) -> ContentEncoder {
        ContentEncoder {
            stuff_dots,
            raw,
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the wire form of `input` to `out`.
    ///
    /// Every CRLF written comes from a line end (a CRLF or bare LF of the
    /// input), after which a leading dot is doubled; a CR of the input not
    /// followed by LF is written alone and never followed by LF. So the
    /// output holds `CRLF . CRLF` only if the caller's terminator adds it.
    fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if self.raw {
            out.extend_from_slice(input);
            self.at_line_start = input.last().map_or(self.at_line_start, |&b| b == b'\n');
            return;
        }
        while let Some((&b, rest)) = input.split_first() {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    input = rest;
                    continue;
                }
                out.push(b'\r');
                self.at_line_start = false;
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    input = rest;
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    input = rest;
                }
                b'.' if self.at_line_start && self.stuff_dots => {
                    out.extend_from_slice(b"..");
                    self.at_line_start = false;
                    input = rest;
                }
                _ => {
                    // Copy the run up to the next line-end octet at once.
                    let run = input
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(input.len());
                    out.extend_from_slice(&input[..run]);
                    self.at_line_start = false;
                    input = &input[run..];
                }
            }
        }
    }

    /// Ends the content with a line end if it does not have one. A CR
    /// left at the very end is taken as a CRLF cut short.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.raw {
            return;
        }
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_cr = false;
        self.at_line_start = true;
    }
}

/// A sans-IO SMTP or LMTP client session. See the [module
/// documentation](self).
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    phase: Phase,
    input: BytesMut,
    output: Vec<u8>,
    events: VecDeque<ClientEvent>,
    expect: VecDeque<Expect>,
    deadline: Option<Instant>,
    capabilities: Capabilities,
    tls_active: bool,
    tx: Option<TxState>,
    encoder: ContentEncoder,
    /// Encoded content not yet sent in a `BDAT` chunk.
    bdat_buf: Vec<u8>,
    /// The caller handed over content since the deadline was set.
    content_progress: bool,
}

impl ClientSession {
    /// A session on a connection just opened; it waits for the greeting.
    pub fn new(config: ClientConfig, now: Instant) -> ClientSession {
        let mut session = ClientSession {
            config,
            phase: Phase::Handshake,
            input: BytesMut::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            expect: VecDeque::new(),
            deadline: None,
            capabilities: Capabilities::default(),
            tls_active: false,
            tx: None,
            encoder: ContentEncoder::new(true, false),
            bdat_buf: Vec::new(),
            content_progress: false,
        };
        session.expect_reply(Expect::Greeting, now);
        session
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Appends the bytes to send to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    /// When [`ClientSession::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            None
        } else {
            self.deadline
        }
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The capabilities of the last `EHLO`/`LHLO` reply.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Bytes received from the server.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        match self.phase {
            Phase::Closed => return,
            Phase::TlsHandshake => {
                // The TLS layer owns the connection now; plaintext that
                // reaches us is what the server sent after its 220.
                self.fail_plaintext_injection();
                return;
            }
            _ => {}
        }
        self.input.extend_from_slice(data);
        while self.phase != Phase::Closed && !self.input.is_empty() {
            let (reply, used) = match parse_reply(&self.input) {
                Ok(ParseStatus::Complete(view, used)) => (view.to_reply(), used),
                Ok(ParseStatus::Partial) => break,
                Err(err) => {
                    let message = format!(
                        "host {} sent a malformed reply while {}: {err}",
                        self.config.peer_name,
                        self.stage()
                    );
                    self.fail_local(FailureKind::MalformedReply, 450, (4, 5, 0), message);
                    return;
                }
            };
            self.input.advance(used);
            self.dispatch(reply, now);
            if self.phase == Phase::TlsHandshake && !self.input.is_empty() {
                self.fail_plaintext_injection();
                return;
            }
        }
    }

    /// The server closed the connection (a read returned end of file).
    pub fn connection_closed(&mut self) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.close(),
            _ => {
                let message = format!(
                    "lost connection with {} while {}",
                    self.config.peer_name,
                    self.stage()
                );
                self.fail_local(FailureKind::ConnectionLost, 421, (4, 4, 2), message);
            }
        }
    }

    /// Time has passed; call at [`ClientSession::poll_timeout`] or later.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline || self.phase == Phase::Closed {
            return;
        }
        if self.phase == Phase::Content && self.content_progress {
            // Content arrived since the deadline was set: the limit is on
            // a stall, not on the whole message.
            self.content_progress = false;
            self.deadline = Some(now + self.config.timeouts.data_xfer);
            return;
        }
        if self.phase == Phase::Quitting {
            self.close();
            return;
        }
        let message = format!(
            "conversation with {} timed out while {}",
            self.config.peer_name,
            self.stage()
        );
        self.fail_local(FailureKind::Timeout, 421, (4, 4, 2), message);
    }

    /// The caller finished the TLS handshake after
    /// [`ClientEvent::StartTls`]: the session forgets what it learned in
    /// plaintext and sends `EHLO` (`LHLO`) again.
    pub fn tls_established(&mut self, now: Instant) {
        if self.phase != Phase::TlsHandshake {
            return;
        }
        self.tls_active = true;
        self.capabilities = Capabilities::default();
        self.input.clear();
        self.phase = Phase::Handshake;
        self.send_hello(now);
    }

    /// Starts a mail transaction; valid after [`ClientEvent::Ready`] or
    /// [`ClientEvent::TransactionDone`]. Otherwise every recipient is
    /// deferred at once with a reply saying the session was not ready.
    pub fn start_transaction(&mut self, tx: Transaction, now: Instant) {
        let mut state = TxState {
            pipelined: self.config.use_pipelining && self.capabilities.pipelining,
            mode: ContentMode::Data,
            mail_reply: None,
            rcpt_replies: vec![None; tx.recipients.len()],
            final_replies: vec![None; tx.recipients.len()],
            data_reply: None,
            next_rcpt: 0,
            bdat_failed: false,
            content_ended: false,
            resetting: false,
            content_started: false,
            tx,
        };
        if self.phase != Phase::Idle {
            let reply = local_reply(450, (4, 3, 0), "client session not ready for a transaction");
            self.finish_local(state, Verdict::Deferred, reply);
            return;
        }
        if state.tx.recipients.is_empty() {
            self.events
                .push_back(ClientEvent::TransactionDone(TransactionResult {
                    mail_reply: None,
                    recipients: Vec::new(),
                    data_reply: None,
                }));
            return;
        }
        let caps = &self.capabilities;
        let peer = &self.config.peer_name;
        if let (Some(size), Some(limit)) = (state.tx.size, caps.size)
            && limit > 0
            && size > limit
        {
            let text = format!("message size {size} exceeds size limit {limit} of server {peer}");
            let reply = local_reply(552, (5, 3, 4), &text);
            self.finish_local(state, Verdict::Bounced, reply);
            return;
        }
        let smtputf8 = state.tx.needs_smtputf8();
        if smtputf8 && !caps.smtputf8 {
            let text = format!("SMTPUTF8 is required, but was not offered by host {peer}");
            let reply = local_reply(554, (5, 6, 7), &text);
            self.finish_local(state, Verdict::Bounced, reply);
            return;
        }
        let chunking = self.config.use_chunking && caps.chunking && state.pipelined;
        if state.tx.body == Body::BinaryMime && !(chunking && caps.binarymime) {
            let text = format!("BINARYMIME is required, but was not offered by host {peer}");
            let reply = local_reply(554, (5, 6, 3), &text);
            self.finish_local(state, Verdict::Bounced, reply);
            return;
        }
        state.mode = if chunking {
            ContentMode::Bdat
        } else {
            ContentMode::Data
        };
        self.write_mail(&state.tx, smtputf8);
        self.phase = Phase::Transaction;
        self.expect_reply(Expect::Mail, now);
        if state.pipelined {
            for (i, spec) in state.tx.recipients.iter().enumerate() {
                write_rcpt_to(&mut self.output, spec, self.capabilities.dsn);
                self.expect.push_back(Expect::Rcpt(i));
            }
            state.next_rcpt = state.tx.recipients.len();
            if state.mode == ContentMode::Data {
                self.output.extend_from_slice(b"DATA\r\n");
                self.expect.push_back(Expect::Data);
            }
        }
        self.tx = Some(state);
    }

    /// Message content, after [`ClientEvent::WantContent`]: any chunking,
    /// CRLF or bare LF line ends. Ignored at other times, and after the
    /// server refused a `BDAT` chunk.
    pub fn send_content(&mut self, chunk: &[u8]) {
        if self.phase != Phase::Content {
            return;
        }
        self.content_progress = true;
        let Some(tx) = self.tx.as_ref() else { return };
        match tx.mode {
            ContentMode::Data => self.encoder.encode(chunk, &mut self.output),
            ContentMode::Bdat => {
                if tx.bdat_failed {
                    return;
                }
                self.encoder.encode(chunk, &mut self.bdat_buf);
                if self.bdat_buf.len() >= BDAT_CHUNK_SIZE {
                    write_bdat(&mut self.output, &mut self.bdat_buf, false);
                    self.expect.push_back(Expect::BdatChunk);
                }
            }
        }
    }

    /// The end of the content: the session ends it as the protocol
    /// wants and waits for the final reply (replies, for LMTP).
    pub fn end_content(&mut self, now: Instant) {
        if self.phase != Phase::Content {
            return;
        }
        let Some(tx) = self.tx.as_mut() else { return };
        tx.content_ended = true;
        self.phase = Phase::Transaction;
        match tx.mode {
            ContentMode::Data => {
                self.encoder.finish(&mut self.output);
                self.output.extend_from_slice(b".\r\n");
            }
            // The server refused a chunk: nothing more goes out.
            ContentMode::Bdat if tx.bdat_failed => {}
            ContentMode::Bdat => {
                self.encoder.finish(&mut self.bdat_buf);
                write_bdat(&mut self.output, &mut self.bdat_buf, true);
            }
        }
        if !(tx.mode == ContentMode::Bdat && tx.bdat_failed) {
            if self.config.lmtp {
                let accepted: Vec<usize> = tx.accepted().collect();
                self.expect
                    .extend(accepted.into_iter().map(Expect::LmtpRecipient));
            } else if tx.mode == ContentMode::Bdat {
                self.expect.push_back(Expect::BdatLast);
            } else {
                self.expect.push_back(Expect::DataDone);
            }
        }
        match self.expect.front() {
            Some(&front) => self.deadline = Some(now + front.timeout(&self.config.timeouts)),
            None => self.after_transaction_replies(now),
        }
    }

    /// Starts `AUTH` with `mechanism` and an optional initial response
    /// (RFC 4954; an empty one is sent as `=`). Valid when idle; otherwise
    /// [`ClientEvent::AuthDone`] reports a `503` made by this client.
    pub fn auth(&mut self, mechanism: &str, initial_response: Option<&[u8]>, now: Instant) {
        if self.phase != Phase::Idle {
            let reply = local_reply(503, (5, 5, 1), "client session not ready for AUTH");
            self.events.push_back(ClientEvent::AuthDone(reply));
            return;
        }
        self.output.extend_from_slice(b"AUTH ");
        self.output.extend_from_slice(mechanism.as_bytes());
        if let Some(data) = initial_response {
            self.output.push(b' ');
            if data.is_empty() {
                self.output.push(b'=');
            } else {
                base64_encode(data, &mut self.output);
            }
        }
        self.output.extend_from_slice(b"\r\n");
        self.phase = Phase::Auth;
        self.expect_reply(Expect::Auth, now);
    }

    /// The answer to an [`ClientEvent::AuthChallenge`].
    pub fn auth_response(&mut self, data: &[u8], now: Instant) {
        if self.phase != Phase::Auth || !self.expect.is_empty() {
            return;
        }
        base64_encode(data, &mut self.output);
        self.output.extend_from_slice(b"\r\n");
        self.expect_reply(Expect::Auth, now);
    }

    /// Ends the session politely: `QUIT`, then [`ClientEvent::Closed`]
    /// on the reply (or its timeout). During a transaction or before the
    /// handshake is done, the session closes at once without `QUIT`.
    pub fn quit(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed | Phase::Quitting => {}
            Phase::Idle => {
                self.output.extend_from_slice(b"QUIT\r\n");
                self.phase = Phase::Quitting;
                self.expect.clear();
                self.expect_reply(Expect::Quit, now);
            }
            _ => {
                if self.tx.is_some() {
                    let reply = local_reply(421, (4, 3, 0), "session ended by the client");
                    let result = self.take_result(Some((&reply, true)));
                    self.events.push_back(ClientEvent::TransactionDone(result));
                }
                self.close();
            }
        }
    }

    // ---- replies ----

    fn dispatch(&mut self, reply: Reply, now: Instant) {
        let Some(expect) = self.expect.pop_front() else {
            self.fail_reply(FailureKind::UnexpectedReply, reply, None);
            return;
        };
        self.deadline = match self.expect.front() {
            Some(e) => Some(now + e.timeout(&self.config.timeouts)),
            None if self.phase == Phase::Content => Some(now + self.config.timeouts.data_xfer),
            None => None,
        };
        // 421: the server is going away, whatever the command was
        // (RFC 5321 section 3.8). A QUIT reply needs no such care.
        if reply.code() == ReplyCode::SERVICE_NOT_AVAILABLE
            && !matches!(expect, Expect::Quit | Expect::Greeting)
        {
            self.record_tx_reply(expect, &reply);
            self.fail_reply(FailureKind::UnexpectedReply, reply, Some(expect));
            return;
        }
        match expect {
            Expect::Greeting => self.on_greeting(reply, now),
            Expect::Ehlo | Expect::Lhlo => self.on_ehlo(expect, reply, now),
            Expect::Helo => {
                if is_positive(&reply) {
                    self.capabilities = Capabilities::default();
                    self.become_ready();
                } else {
                    self.fail_reply(FailureKind::HandshakeRejected, reply, Some(expect));
                }
            }
            Expect::StartTls => self.on_starttls(reply),
            Expect::Auth => self.on_auth(reply),
            Expect::Quit => self.close(),
            Expect::Mail
            | Expect::Rcpt(_)
            | Expect::Data
            | Expect::DataDone
            | Expect::LmtpRecipient(_)
            | Expect::BdatChunk
            | Expect::BdatLast
            | Expect::DiscardedData
            | Expect::Rset => self.on_tx_reply(expect, reply, now),
        }
    }

    fn on_greeting(&mut self, reply: Reply, now: Instant) {
        match reply.code().class() {
            ReplyClass::PositiveCompletion => {
                self.events.push_back(ClientEvent::Greeting(reply));
                self.send_hello(now);
            }
            ReplyClass::TransientNegative | ReplyClass::PermanentNegative => {
                let skip = if reply.code().class() == ReplyClass::TransientNegative {
                    self.config.skip_4xx_greeting
                } else {
                    self.config.skip_5xx_greeting
                };
                let kind = if skip {
                    FailureKind::GreetingSkipped
                } else {
                    FailureKind::GreetingRejected
                };
                let message = format!(
                    "host {} refused to talk to me: {reply}",
                    self.config.peer_name
                );
                self.output.extend_from_slice(b"QUIT\r\n");
                self.fail(kind, reply, false, message);
            }
            ReplyClass::PositiveIntermediate => {
                self.fail_reply(FailureKind::UnexpectedReply, reply, Some(Expect::Greeting));
            }
        }
    }

    fn send_hello(&mut self, now: Instant) {
        let (verb, expect) = if self.config.lmtp {
            ("LHLO ", Expect::Lhlo)
        } else {
            ("EHLO ", Expect::Ehlo)
        };
        self.write_line(verb, &self.config.helo_name.clone());
        self.expect_reply(expect, now);
    }

    fn on_ehlo(&mut self, expect: Expect, reply: Reply, now: Instant) {
        if !is_positive(&reply) {
            if expect == Expect::Ehlo && reply.code().class() == ReplyClass::PermanentNegative {
                let name = self.config.helo_name.clone();
                self.write_line("HELO ", &name);
                self.expect_reply(Expect::Helo, now);
            } else {
                self.fail_reply(FailureKind::HandshakeRejected, reply, Some(expect));
            }
            return;
        }
        self.capabilities = Capabilities::parse(
            reply.lines().iter().map(String::as_str),
            &self.config.discard_ehlo_keywords,
        );
        if self.tls_active || self.config.tls == TlsMode::Never {
            self.become_ready();
        } else if self.capabilities.starttls {
            self.output.extend_from_slice(b"STARTTLS\r\n");
            self.expect_reply(Expect::StartTls, now);
        } else if self.config.tls == TlsMode::Require {
            self.fail_tls_unavailable(None);
        } else {
            self.become_ready();
        }
    }

    fn on_starttls(&mut self, reply: Reply) {
        if reply.code() == ReplyCode::SERVICE_READY {
            self.phase = Phase::TlsHandshake;
            self.deadline = None;
            self.events.push_back(ClientEvent::StartTls);
        } else if self.config.tls == TlsMode::Require {
            self.fail_tls_unavailable(Some(reply));
        } else {
            self.become_ready();
        }
    }

    fn on_auth(&mut self, reply: Reply) {
        if reply.code() == ReplyCode::AUTH_CHALLENGE {
            let text = reply.lines().first().map_or("", String::as_str);
            match base64_decode(text.trim().as_bytes()) {
                Some(challenge) => {
                    // The caller answers; until then no deadline runs.
                    self.deadline = None;
                    self.events.push_back(ClientEvent::AuthChallenge(challenge));
                }
                None => {
                    let message = format!(
                        "host {} sent a malformed AUTH challenge: {reply}",
                        self.config.peer_name
                    );
                    self.fail_local(FailureKind::MalformedReply, 450, (4, 5, 0), message);
                }
            }
        } else {
            self.phase = Phase::Idle;
            self.events.push_back(ClientEvent::AuthDone(reply));
        }
    }

    fn become_ready(&mut self) {
        self.phase = Phase::Idle;
        self.deadline = None;
        self.events.push_back(ClientEvent::Ready {
            capabilities: self.capabilities.clone(),
        });
    }

    /// Stores a transaction reply where it belongs; shared with the 421
    /// path so a closing server's reply still decides the recipient.
    fn record_tx_reply(&mut self, expect: Expect, reply: &Reply) {
        let Some(tx) = self.tx.as_mut() else { return };
        let positive = is_positive(reply);
        match expect {
            Expect::Mail => tx.mail_reply = Some(reply.clone()),
            Expect::Rcpt(i) => tx.rcpt_replies[i] = Some(reply.clone()),
            Expect::Data if reply.code() == ReplyCode::START_MAIL_INPUT => {}
            Expect::BdatChunk if positive => {}
            Expect::Data | Expect::BdatChunk | Expect::BdatLast | Expect::DataDone => {
                if expect == Expect::BdatChunk {
                    tx.bdat_failed = true;
                }
                tx.data_reply.get_or_insert_with(|| reply.clone());
                if tx.mail_ok() {
                    for i in tx.accepted().collect::<Vec<_>>() {
                        tx.final_replies[i].get_or_insert_with(|| (reply.clone(), expect));
                    }
                }
            }
            Expect::LmtpRecipient(i) => {
                tx.data_reply.get_or_insert_with(|| reply.clone());
                tx.final_replies[i].get_or_insert_with(|| (reply.clone(), expect));
            }
            _ => {}
        }
    }

    fn on_tx_reply(&mut self, expect: Expect, reply: Reply, now: Instant) {
        if self.tx.is_none() {
            self.fail_reply(FailureKind::UnexpectedReply, reply, Some(expect));
            return;
        }
        self.record_tx_reply(expect, &reply);
        let lmtp = self.config.lmtp;
        let Some(tx) = self.tx.as_mut() else { return };
        let more_rcpts = !tx.pipelined && tx.mail_ok() && tx.next_rcpt < tx.tx.recipients.len();
        match expect {
            Expect::Mail | Expect::Rcpt(_) if more_rcpts => {
                let i = tx.next_rcpt;
                tx.next_rcpt += 1;
                write_rcpt_to(
                    &mut self.output,
                    &tx.tx.recipients[i],
                    self.capabilities.dsn,
                );
                self.expect_reply(Expect::Rcpt(i), now);
            }
            Expect::Rcpt(_)
                if !tx.pipelined && tx.mode == ContentMode::Data && tx.any_accepted() =>
            {
                self.output.extend_from_slice(b"DATA\r\n");
                self.expect_reply(Expect::Data, now);
            }
            Expect::Data if reply.code() == ReplyCode::START_MAIL_INPUT => {
                if tx.any_accepted() {
                    self.start_content(now);
                } else {
                    // A server that says 354 with nobody to deliver to:
                    // end the empty message at once (Postfix does too).
                    self.output.extend_from_slice(b".\r\n");
                    self.expect_reply(Expect::DiscardedData, now);
                }
            }
            Expect::BdatChunk if lmtp && !is_positive(&reply) => {
                // The server will not give per-recipient replies for a
                // message it refused part of: wait for one reply to LAST.
                let had_last = self
                    .expect
                    .iter()
                    .any(|e| matches!(e, Expect::LmtpRecipient(_)));
                self.expect
                    .retain(|e| !matches!(e, Expect::LmtpRecipient(_)));
                if had_last {
                    self.expect.push_back(Expect::BdatLast);
                }
            }
            Expect::Rset if !is_positive(&reply) => {
                let result = self.take_result(None);
                self.events.push_back(ClientEvent::TransactionDone(result));
                self.fail_reply(FailureKind::UnexpectedReply, reply, Some(expect));
                return;
            }
            _ => {}
        }
        if self.expect.is_empty() && self.phase == Phase::Transaction {
            self.after_transaction_replies(now);
        }
    }

    /// All replies so far are in, nothing is in flight and the caller is
    /// not streaming content: decide what comes next.
    fn after_transaction_replies(&mut self, now: Instant) {
        let Some(tx) = self.tx.as_mut() else { return };
        let done = tx.resetting || (tx.content_ended && !tx.bdat_failed);
        if done {
            let result = self.take_result(None);
            self.phase = Phase::Idle;
            self.deadline = None;
            self.events.push_back(ClientEvent::TransactionDone(result));
        } else if tx.mode == ContentMode::Bdat
            && !tx.content_started
            && tx.data_reply.is_none()
            && tx.any_accepted()
        {
            // MAIL and RCPT answered and someone accepted: the content
            // goes in BDAT chunks.
            self.start_content(now);
        } else {
            // Failed before or during the content: reset so the
            // connection can carry the next transaction.
            tx.resetting = true;
            self.output.extend_from_slice(b"RSET\r\n");
            self.expect_reply(Expect::Rset, now);
        }
    }

    fn start_content(&mut self, now: Instant) {
        let Some(tx) = self.tx.as_mut() else { return };
        tx.content_started = true;
        let (stuff, raw) = match tx.mode {
            ContentMode::Data => (true, false),
            ContentMode::Bdat => (false, tx.tx.body == Body::BinaryMime),
        };
        self.encoder = ContentEncoder::new(stuff, raw);
        self.bdat_buf.clear();
        self.phase = Phase::Content;
        self.content_progress = false;
        if self.expect.is_empty() {
            self.deadline = Some(now + self.config.timeouts.data_xfer);
        }
        self.events.push_back(ClientEvent::WantContent);
    }

    /// The result of the transaction. `failure` (a reply, and whether
    /// this client made it) ends the session: it defers every recipient
    /// that nothing else decided.
    fn take_result(&mut self, failure: Option<(&Reply, bool)>) -> TransactionResult {
        let Some(tx) = self.tx.take() else {
            return TransactionResult {
                mail_reply: None,
                recipients: Vec::new(),
                data_reply: None,
            };
        };
        let mail_failed = tx.mail_reply.as_ref().filter(|r| !is_positive(r));
        let mut recipients = Vec::with_capacity(tx.tx.recipients.len());
        for (i, spec) in tx.tx.recipients.iter().enumerate() {
            let rcpt_reply = tx.rcpt_replies[i].clone();
            let decided = match (mail_failed, &rcpt_reply) {
                (Some(mail), _) => Some((mail.clone(), Expect::Mail)),
                (None, Some(r)) if !is_positive(r) => Some((r.clone(), Expect::Rcpt(i))),
                (None, Some(_)) => tx.final_replies[i].clone(),
                (None, None) => None,
            };
            let (verdict, reply, by_client, in_reply_to) = match (decided, failure) {
                (Some((reply, expect)), _) => {
                    (Verdict::of(&reply), reply, false, Some(expect.command()))
                }
                // Whatever the failure's reply says, it was not the
                // answer about this recipient: try again later.
                (None, Some((reply, by_client))) => {
                    (Verdict::Deferred, reply.clone(), by_client, None)
                }
                (None, None) => (
                    Verdict::Deferred,
                    local_reply(450, (4, 5, 0), "transaction ended without a result"),
                    true,
                    None,
                ),
            };
            recipients.push(RecipientOutcome {
                address: spec.address.clone(),
                rcpt_reply,
                verdict,
                reply,
                by_client,
                in_reply_to,
            });
        }
        TransactionResult {
            mail_reply: tx.mail_reply,
            recipients,
            data_reply: tx.data_reply,
        }
    }

    /// Reports a transaction decided before any command went out.
    fn finish_local(&mut self, state: TxState, verdict: Verdict, reply: Reply) {
        let recipients = state
            .tx
            .recipients
            .into_iter()
            .map(|spec| RecipientOutcome {
                address: spec.address,
                rcpt_reply: None,
                verdict,
                reply: reply.clone(),
                by_client: true,
                in_reply_to: None,
            })
            .collect();
        self.events
            .push_back(ClientEvent::TransactionDone(TransactionResult {
                mail_reply: None,
                recipients,
                data_reply: None,
            }));
    }

    // ---- failures ----

    /// What the session is doing, in Postfix's words.
    fn stage(&self) -> &'static str {
        match (self.expect.front(), self.phase) {
            (Some(e), _) => e.stage(),
            (None, Phase::Content) => "sending message body",
            (None, Phase::TlsHandshake) => "performing the TLS handshake",
            (None, Phase::Auth) => "performing SASL authentication",
            (None, _) => "waiting for a command",
        }
    }

    fn fail_reply(&mut self, kind: FailureKind, reply: Reply, expect: Option<Expect>) {
        let peer = &self.config.peer_name;
        let message = match expect {
            Some(e) => format!(
                "host {peer} said: {reply} (in reply to {} command)",
                e.command()
            ),
            None => format!("host {peer} sent an unexpected reply: {reply}"),
        };
        // The connection still works; say goodbye unless the server is
        // already gone.
        if reply.code() != ReplyCode::SERVICE_NOT_AVAILABLE {
            self.output.extend_from_slice(b"QUIT\r\n");
        }
        self.fail(kind, reply, false, message);
    }

    fn fail_local(
        &mut self,
        kind: FailureKind,
        code: u16,
        status: (u8, u16, u16),
        message: String,
    ) {
        let reply = local_reply(code, status, &message);
        self.fail(kind, reply, true, message);
    }

    fn fail_tls_unavailable(&mut self, refusal: Option<Reply>) {
        let peer = &self.config.peer_name;
        let message = match &refusal {
            None => format!("TLS is required, but was not offered by host {peer}"),
            Some(r) => format!("TLS is required, but host {peer} refused to start TLS: {r}"),
        };
        self.output.extend_from_slice(b"QUIT\r\n");
        let reply = local_reply(450, (4, 7, 4), &message);
        self.fail(FailureKind::TlsUnavailable, reply, true, message);
    }

    fn fail_plaintext_injection(&mut self) {
        let message = format!(
            "host {} sent plaintext after its STARTTLS reply (possible command injection)",
            self.config.peer_name
        );
        self.fail_local(FailureKind::PlaintextAfterStartTls, 450, (4, 5, 0), message);
    }

    fn fail(&mut self, kind: FailureKind, reply: Reply, by_client: bool, message: String) {
        if self.tx.is_some() {
            let result = self.take_result(Some((&reply, by_client)));
            self.events.push_back(ClientEvent::TransactionDone(result));
        }
        self.events.push_back(ClientEvent::Failed(SessionFailure {
            kind,
            reply,
            by_client,
            message,
        }));
        self.close();
    }

    fn close(&mut self) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.deadline = None;
            self.expect.clear();
            self.input.clear();
            self.events.push_back(ClientEvent::Closed);
        }
    }

    // ---- commands ----

    fn expect_reply(&mut self, expect: Expect, now: Instant) {
        if self.expect.is_empty() {
            self.deadline = Some(now + expect.timeout(&self.config.timeouts));
        }
        self.expect.push_back(expect);
    }

    fn write_line(&mut self, verb: &str, arg: &str) {
        self.output.extend_from_slice(verb.as_bytes());
        self.output.extend_from_slice(arg.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn write_mail(&mut self, tx: &Transaction, smtputf8: bool) {
        let caps = &self.capabilities;
        let out = &mut self.output;
        out.extend_from_slice(b"MAIL FROM:");
        out.extend_from_slice(tx.from.to_string().as_bytes());
        if let (Some(size), Some(_)) = (tx.size, caps.size) {
            out.extend_from_slice(format!(" SIZE={size}").as_bytes());
        }
        match tx.body {
            Body::SevenBit => {}
            Body::EightBitMime if caps.eightbitmime => out.extend_from_slice(b" BODY=8BITMIME"),
            Body::EightBitMime => {}
            Body::BinaryMime => out.extend_from_slice(b" BODY=BINARYMIME"),
        }
        if smtputf8 {
            out.extend_from_slice(b" SMTPUTF8");
        }
        if caps.dsn {
            match tx.ret {
                Some(DsnRet::Full) => out.extend_from_slice(b" RET=FULL"),
                Some(DsnRet::Headers) => out.extend_from_slice(b" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &tx.envid {
                out.extend_from_slice(b" ENVID=");
                xtext_encode(envid.as_bytes(), out);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes one `BDAT` command with its chunk, emptying `chunk`.
fn write_bdat(out: &mut Vec<u8>, chunk: &mut Vec<u8>, last: bool) {
    let n = chunk.len();
    let line = if last {
        format!("BDAT {n} LAST\r\n")
    } else {
        format!("BDAT {n}\r\n")
    };
    out.extend_from_slice(line.as_bytes());
    out.append(chunk);
}

fn write_rcpt_to(out: &mut Vec<u8>, spec: &RecipientSpec, dsn: bool) {
    out.extend_from_slice(b"RCPT TO:");
    out.extend_from_slice(spec.address.render_path().as_bytes());
    if dsn {
        if let Some(notify) = spec.notify {
            out.extend_from_slice(b" NOTIFY=");
            if notify.is_never() {
                out.extend_from_slice(b"NEVER");
            } else {
                let words = [
                    (notify.success, "SUCCESS"),
                    (notify.failure, "FAILURE"),
                    (notify.delay, "DELAY"),
                ];
                let mut first = true;
                for (_, word) in words.iter().filter(|(on, _)| *on) {
                    if !first {
                        out.push(b',');
                    }
                    out.extend_from_slice(word.as_bytes());
                    first = false;
                }
            }
        }
        if let Some(orcpt) = &spec.orcpt {
            out.extend_from_slice(b" ORCPT=rfc822;");
            xtext_encode(orcpt.as_bytes(), out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A reply made by this client, with text cut and cleaned to be valid.
fn local_reply(code: u16, status: (u8, u16, u16), text: &str) -> Reply {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.len() > MAX_LOCAL_TEXT {
        let mut end = MAX_LOCAL_TEXT;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    let wire = format!("{code} {}.{}.{} {clean}\r\n", status.0, status.1, status.2);
    match parse_reply(wire.as_bytes()) {
        Ok(ParseStatus::Complete(view, _)) => view.to_reply(),
        // Unreachable with the codes used here; a bare reply keeps the
        // session going rather than panicking.
        _ => Reply::new(ReplyCode::LOCAL_ERROR, None, ["local error"])
            .unwrap_or_else(|_| Reply::ok()),
    }
}

/// RFC 3461 section 4 xtext: `+` and `=` and octets outside `!`..`~` as
/// `+XX`.
fn xtext_encode(input: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in input {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'+', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4), as `AUTH` wants.
pub(crate) fn base64_encode(input: &[u8], out: &mut Vec<u8>) {
    for group in input.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| BASE64[((n >> shift) & 63) as usize];
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if group.len() > 1 { sextet(6) } else { b'=' });
        out.push(if group.len() > 2 { sextet(0) } else { b'=' });
    }
}

/// Decodes standard base64; `None` if it is not. An empty challenge
/// (`334 ` alone) is empty data.
pub(crate) fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    if !input.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let groups = input.len() / 4;
    for (g, quad) in input.chunks(4).enumerate() {
        let mut n: u32 = 0;
        let mut pad = 0;
        for (j, &c) in quad.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                // Padding only in the last group, only at its end.
                b'=' if g + 1 == groups && j >= 2 => {
                    pad += 1;
                    0
                }
                _ => return None,
            };
            if pad > 0 && c != b'=' {
                return None;
            }
            n = (n << 6) | u32::from(v);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// A fuzz-target body: drives a whole session (greeting, EHLO, maybe
/// STARTTLS and AUTH, a transaction with content, QUIT) with `data` as
/// everything the server says. It must never panic, whatever `data` is.
///
/// The first octet picks the configuration (SMTP or LMTP, TLS mode,
/// pipelining, chunking) and the next one the size of the pieces the
/// rest is fed in, so the fuzzer explores splits of replies too.
pub fn fuzz_client_replies(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&split, replies)) = rest.split_first() else {
        return;
    };
    let mut config = if flags & 1 != 0 {
        ClientConfig::lmtp("fuzz.example")
    } else {
        ClientConfig::new("fuzz.example")
    };
    config.tls = match (flags >> 1) & 3 {
        0 => TlsMode::Never,
        1 => TlsMode::Offer,
        _ => TlsMode::Require,
    };
    config.use_pipelining = flags & 8 != 0;
    config.use_chunking = flags & 16 != 0;
    config.skip_4xx_greeting = flags & 32 != 0;
    let auth = flags & 64 != 0;
    let start = Instant::now();
    let mut now = start;
    let mut session = ClientSession::new(config, now);
    let mut out = Vec::new();
    let piece = usize::from(split).max(1);
    let tx = || {
        let from =
            ReversePath::Mailbox(MailAddress::parse("a@example.com", Default::default()).ok()?);
        let rcpts = ["b@example.com", "c@example.com"]
            .iter()
            .filter_map(|a| MailAddress::parse(a, Default::default()).ok())
            .collect();
        let mut tx = Transaction::new(from, rcpts);
        tx.size = Some(100);
        Some(tx)
    };
    let mut pieces = replies.chunks(piece);
    let mut sent_tx = false;
    for _round in 0..10_000 {
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Ready { .. } if auth && !sent_tx => {
                    session.auth("PLAIN", Some(b"\0user\0pass"), now);
                }
                ClientEvent::Ready { .. } | ClientEvent::AuthDone(_) if !sent_tx => {
                    sent_tx = true;
                    if let Some(tx) = tx() {
                        session.start_transaction(tx, now);
                    }
                }
                ClientEvent::StartTls => session.tls_established(now),
                ClientEvent::AuthChallenge(c) => session.auth_response(&c, now),
                ClientEvent::WantContent => {
                    session.send_content(b"Subject: x\n\n.line\r\nbody\r");
                    session.send_content(&[b'x'; 3000]);
                    session.end_content(now);
                }
                ClientEvent::TransactionDone(_) => session.quit(now),
                _ => {}
            }
        }
        out.clear();
        session.poll_transmit(&mut out);
        if session.is_closed() {
            return;
        }
        match pieces.next() {
            Some(p) => session.handle_input(p, now),
            None => {
                if let Some(t) = session.poll_timeout() {
                    now = now.max(t);
                    session.handle_timeout(now);
                } else {
                    session.connection_closed();
                }
            }
        }
        now += Duration::from_millis(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A session on a virtual clock, with helpers that script the server.
    struct Harness {
        s: ClientSession,
        now: Instant,
    }

    impl Harness {
        fn new(config: ClientConfig) -> Harness {
            let now = Instant::now();
            Harness {
                s: ClientSession::new(config, now),
                now,
            }
        }

        /// A session past greeting and EHLO, with `ehlo` as the EHLO
        /// reply's keyword lines.
        fn ready(config: ClientConfig, keywords: &[&str]) -> Harness {
            let mut h = Harness::new(config);
            h.recv("220 mx.example ESMTP\r\n");
            h.sent();
            let mut ehlo = String::new();
            let lines: Vec<&str> = std::iter::once("mx.example")
                .chain(keywords.iter().copied())
                .collect();
            for (i, l) in lines.iter().enumerate() {
                let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                ehlo.push_str(&format!("250{sep}{l}\r\n"));
            }
            h.recv(&ehlo);
            let events = h.events();
            assert!(
                matches!(events.last(), Some(ClientEvent::Ready { .. })),
                "{events:?}"
            );
            h
        }

        fn recv(&mut self, text: &str) {
            self.s.handle_input(text.as_bytes(), self.now);
        }

        fn sent(&mut self) -> String {
            let mut out = Vec::new();
            self.s.poll_transmit(&mut out);
            String::from_utf8(out).unwrap()
        }

        fn events(&mut self) -> Vec<ClientEvent> {
            std::iter::from_fn(|| self.s.poll_event()).collect()
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.s.handle_timeout(self.now);
        }

        /// The single `TransactionDone` among the events.
        fn result(&mut self) -> TransactionResult {
            let mut done = self.events().into_iter().filter_map(|e| match e {
                ClientEvent::TransactionDone(r) => Some(r),
                _ => None,
            });
            let r = done.next().expect("TransactionDone");
            assert!(done.next().is_none());
            r
        }
    }

    fn addr(a: &str) -> MailAddress {
        a.parse().unwrap()
    }

    fn tx(rcpts: &[&str]) -> Transaction {
        Transaction::new(
            ReversePath::Mailbox(addr("sender@example.org")),
            rcpts.iter().map(|a| addr(a)).collect(),
        )
    }

    fn verdicts(r: &TransactionResult) -> Vec<(Verdict, String)> {
        r.recipients.iter().map(|o| (o.verdict, o.dsn())).collect()
    }

    fn failure(events: &[ClientEvent]) -> SessionFailure {
        events
            .iter()
            .find_map(|e| match e {
                ClientEvent::Failed(f) => Some(f.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no failure in {events:?}"))
    }

    #[test]
    fn greeting_4xx_is_skipped_and_5xx_reported_when_configured() {
        let mut h = Harness::new(ClientConfig::new("me.example"));
        h.recv("421 4.3.2 busy\r\n");
        let ev = h.events();
        let f = failure(&ev);
        assert_eq!(f.kind, FailureKind::GreetingSkipped);
        assert_eq!(f.reply.code().get(), 421);
        assert_eq!(
            f.message,
            "host unknown refused to talk to me: 421 4.3.2 busy"
        );
        assert_eq!(ev.last(), Some(&ClientEvent::Closed));
        assert_eq!(h.sent(), "QUIT\r\n");
        assert!(h.s.is_closed());

        let mut config = ClientConfig::new("me.example");
        config.skip_5xx_greeting = false;
        let mut h = Harness::new(config);
        h.recv("554 5.7.1 go away\r\n");
        let f = failure(&h.events());
        assert_eq!(f.kind, FailureKind::GreetingRejected);
        assert!(!f.by_client);
    }

    #[test]
    fn ehlo_5xx_falls_back_to_helo_but_not_for_lmtp() {
        let mut h = Harness::new(ClientConfig::new("me.example"));
        h.recv("220 old.example\r\n");
        assert_eq!(h.sent(), "EHLO me.example\r\n");
        h.recv("502 5.5.2 what\r\n");
        assert_eq!(h.sent(), "HELO me.example\r\n");
        h.recv("250 old.example\r\n");
        let ev = h.events();
        assert_eq!(
            ev.last(),
            Some(&ClientEvent::Ready {
                capabilities: Capabilities::default()
            })
        );

        let mut h = Harness::new(ClientConfig::lmtp("me.example"));
        h.recv("220 lmtp.example LMTP\r\n");
        assert_eq!(h.sent(), "LHLO me.example\r\n");
        h.recv("500 5.5.1 no\r\n");
        let f = failure(&h.events());
        assert_eq!(f.kind, FailureKind::HandshakeRejected);
        assert_eq!(
            f.message,
            "host unknown said: 500 5.5.1 no (in reply to LHLO command)"
        );
        assert_eq!(h.sent(), "QUIT\r\n");
    }

    #[test]
    fn capabilities_from_ehlo() {
        let mut config = ClientConfig::new("me.example");
        config.discard_ehlo_keywords = vec!["chunking".to_owned(), "Silent-Discard".to_owned()];
        let h = Harness::ready(
            config,
            &[
                "PIPELINING",
                "SIZE 10240000",
                "8BITMIME",
                "SMTPUTF8",
                "STARTTLS",
                "AUTH=LOGIN",
                "AUTH PLAIN login CRAM-MD5",
                "CHUNKING",
                "DSN",
                "ENHANCEDSTATUSCODES",
                "VRFY",
            ],
        );
        let caps = h.s.capabilities();
        assert!(caps.pipelining && caps.eightbitmime && caps.smtputf8 && caps.starttls);
        assert!(caps.dsn && caps.enhanced_status_codes && !caps.binarymime);
        assert!(!caps.chunking, "discarded");
        assert_eq!(caps.size, Some(10_240_000));
        assert_eq!(caps.auth, ["LOGIN", "PLAIN", "CRAM-MD5"]);

        let caps = Capabilities::parse(["x", "SIZE"], &[]);
        assert_eq!(caps.size, Some(0));
        assert_eq!(Capabilities::parse(["x"], &[]), Capabilities::default());
    }

    #[test]
    fn pipelined_transaction_is_one_write_and_replies_match_in_order() {
        let mut h = Harness::ready(
            ClientConfig::new("me.example"),
            &["PIPELINING", "SIZE 1000", "8BITMIME"],
        );
        let mut t = tx(&["a@example.com", "b@example.com", "c@example.com"]);
        t.size = Some(42);
        t.body = Body::EightBitMime;
        h.s.start_transaction(t, h.now);
        assert_eq!(
            h.sent(),
            "MAIL FROM:<sender@example.org> SIZE=42 BODY=8BITMIME\r\n\
             RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n\
             RCPT TO:<c@example.com>\r\nDATA\r\n"
        );
        h.recv("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <b@example.com>: unknown\r\n");
        assert!(h.events().is_empty());
        h.recv("450 4.2.0 <c@example.com>: greylisted\r\n354 go\r\n");
        assert_eq!(h.events(), [ClientEvent::WantContent]);
        h.s.send_content(b"Subject: hi\n\nbody");
        h.s.end_content(h.now);
        assert_eq!(h.sent(), "Subject: hi\r\n\r\nbody\r\n.\r\n");
        h.recv("250 2.0.0 Ok: queued as 4XyZ\r\n");
        let r = h.result();
        assert_eq!(
            verdicts(&r),
            [
                (Verdict::Delivered, "2.0.0".to_owned()),
                (Verdict::Bounced, "5.1.1".to_owned()),
                (Verdict::Deferred, "4.2.0".to_owned()),
            ]
        );
        assert_eq!(
            r.recipients[0].reply.to_string(),
            "250 2.0.0 Ok: queued as 4XyZ"
        );
        assert_eq!(r.recipients[1].reply.lines(), ["<b@example.com>: unknown"]);
        assert!(r.recipients.iter().all(|o| !o.by_client));
        let commands: Vec<_> = r.recipients.iter().map(|o| o.in_reply_to).collect();
        assert_eq!(
            commands,
            [Some("end of DATA"), Some("RCPT TO"), Some("RCPT TO")]
        );
        assert_eq!(r.mail_reply.unwrap().code().get(), 250);
        // Idle again: a second transaction starts.
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        assert!(h.sent().starts_with("MAIL FROM:"));
    }

    #[test]
    fn lockstep_without_pipelining_sends_one_command_at_a_time() {
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["8BITMIME"]);
        h.s.start_transaction(tx(&["a@example.com", "b@example.com"]), h.now);
        assert_eq!(h.sent(), "MAIL FROM:<sender@example.org>\r\n");
        h.recv("250 2.1.0 Ok\r\n");
        assert_eq!(h.sent(), "RCPT TO:<a@example.com>\r\n");
        h.recv("250 2.1.5 Ok\r\n");
        assert_eq!(h.sent(), "RCPT TO:<b@example.com>\r\n");
        h.recv("250 2.1.5 Ok\r\n");
        assert_eq!(h.sent(), "DATA\r\n");
        h.recv("354 go\r\n");
        h.s.send_content(b"x\r\n");
        h.s.end_content(h.now);
        assert_eq!(h.sent(), "x\r\n.\r\n");
        h.recv("250 2.0.0 Ok\r\n");
        assert!(
            h.result()
                .recipients
                .iter()
                .all(|o| o.verdict == Verdict::Delivered)
        );

        // Pipelining configured off: lockstep even when offered.
        let mut config = ClientConfig::new("me.example");
        config.use_pipelining = false;
        let mut h = Harness::ready(config, &["PIPELINING"]);
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        assert_eq!(h.sent(), "MAIL FROM:<sender@example.org>\r\n");
    }

    #[test]
    fn all_recipients_rejected_means_no_content() {
        // Lockstep: DATA is never sent; RSET ends the transaction.
        let mut h = Harness::ready(ClientConfig::new("me.example"), &[]);
        h.s.start_transaction(tx(&["a@example.com", "b@example.com"]), h.now);
        h.recv("250 Ok\r\n");
        h.recv("550 5.1.1 no\r\n");
        h.recv("451 4.3.0 later\r\n");
        let sent = h.sent();
        assert!(!sent.contains("DATA"), "{sent}");
        assert!(sent.ends_with("RSET\r\n"), "{sent}");
        assert!(h.events().is_empty(), "done only after RSET");
        h.recv("250 2.0.0 Ok\r\n");
        let r = h.result();
        assert_eq!(
            verdicts(&r),
            [
                (Verdict::Bounced, "5.1.1".to_owned()),
                (Verdict::Deferred, "4.3.0".to_owned())
            ]
        );
        assert_eq!(r.data_reply, None);

        // Pipelined: the server refuses the pipelined DATA; no content.
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING"]);
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        h.sent();
        h.recv("250 Ok\r\n550 5.1.1 no\r\n554 5.5.1 Error: no valid recipients\r\n");
        assert_eq!(h.sent(), "RSET\r\n");
        h.recv("250 Ok\r\n");
        let ev = h.events();
        assert!(!ev.contains(&ClientEvent::WantContent));
        let ClientEvent::TransactionDone(r) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(r.recipients[0].verdict, Verdict::Bounced);
        assert_eq!(r.recipients[0].dsn(), "5.1.1");

        // Pipelined, and a server that says 354 anyway: "." at once.
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING"]);
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        h.sent();
        h.recv("250 Ok\r\n550 5.1.1 no\r\n354 go\r\n");
        assert!(h.events().is_empty());
        assert_eq!(h.sent(), ".\r\n");
        h.recv("250 Ok\r\n");
        assert_eq!(h.sent(), "RSET\r\n");
        h.recv("250 Ok\r\n");
        assert_eq!(h.result().recipients[0].verdict, Verdict::Bounced);
    }

    #[test]
    fn mail_rejection_decides_every_recipient() {
        for (reply, verdict, dsn) in [
            (
                "553 5.7.1 <sender@example.org>: Sender address rejected\r\n",
                Verdict::Bounced,
                "5.7.1",
            ),
            (
                "451 4.3.5 Server configuration problem\r\n",
                Verdict::Deferred,
                "4.3.5",
            ),
            ("550 no status\r\n", Verdict::Bounced, "5.0.0"),
        ] {
            let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING"]);
            h.s.start_transaction(tx(&["a@example.com", "b@example.com"]), h.now);
            h.sent();
            h.recv(reply);
            h.recv("503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
            assert_eq!(h.sent(), "RSET\r\n");
            h.recv("250 Ok\r\n");
            let r = h.result();
            for o in &r.recipients {
                assert_eq!(o.verdict, verdict);
                assert_eq!(o.dsn(), dsn);
                assert_eq!(o.reply.to_string(), reply.trim_end());
                assert_eq!(o.in_reply_to, Some("MAIL FROM"));
            }

            // Lockstep: no RCPT after a refused MAIL.
            let mut h = Harness::ready(ClientConfig::new("me.example"), &[]);
            h.s.start_transaction(tx(&["a@example.com"]), h.now);
            h.sent();
            h.recv(reply);
            assert_eq!(h.sent(), "RSET\r\n");
            h.recv("250 Ok\r\n");
            assert_eq!(h.result().recipients[0].verdict, verdict);
        }
    }

    #[test]
    fn data_reply_classifies_accepted_recipients() {
        for (final_reply, verdict) in [
            (
                "451 4.3.0 Error: queue file write error\r\n",
                Verdict::Deferred,
            ),
            ("554 5.7.1 spam\r\n", Verdict::Bounced),
        ] {
            let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING"]);
            h.s.start_transaction(tx(&["a@example.com", "b@example.com"]), h.now);
            h.sent();
            h.recv("250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n354 go\r\n");
            h.events();
            h.s.end_content(h.now);
            assert_eq!(h.sent(), ".\r\n", "empty content is just the dot");
            h.recv(final_reply);
            let r = h.result();
            assert_eq!(r.recipients[0].verdict, verdict);
            assert_eq!(r.recipients[1].verdict, Verdict::Bounced);
            assert_eq!(r.data_reply.unwrap().to_string(), final_reply.trim_end());
        }
    }

    #[test]
    fn lmtp_gives_one_reply_per_accepted_recipient() {
        let mut h = Harness::ready(
            ClientConfig::lmtp("me.example"),
            &["PIPELINING", "ENHANCEDSTATUSCODES"],
        );
        h.s.start_transaction(
            tx(&["a@example.com", "b@example.com", "c@example.com"]),
            h.now,
        );
        h.sent();
        h.recv("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 unknown\r\n250 2.1.5 Ok\r\n354 go\r\n");
        assert_eq!(h.events(), [ClientEvent::WantContent]);
        h.s.send_content(b"hello\n");
        h.s.end_content(h.now);
        assert_eq!(h.sent(), "hello\r\n.\r\n");
        h.recv("250 2.0.0 <a@example.com> delivered\r\n");
        assert!(h.events().is_empty(), "waits for c's reply");
        h.recv("452 4.2.2 <c@example.com> mailbox full\r\n");
        let r = h.result();
        assert_eq!(
            verdicts(&r),
            [
                (Verdict::Delivered, "2.0.0".to_owned()),
                (Verdict::Bounced, "5.1.1".to_owned()),
                (Verdict::Deferred, "4.2.2".to_owned()),
            ]
        );
        assert_eq!(
            r.recipients[2].reply.lines(),
            ["<c@example.com> mailbox full"]
        );
        assert_eq!(h.sent(), "", "no RSET after a completed LMTP transaction");
    }

    #[test]
    fn starttls_required_but_not_offered_fails() {
        let mut config = ClientConfig::new("me.example");
        config.tls = TlsMode::Require;
        config.peer_name = "mx.example[192.0.2.1]".to_owned();
        let mut h = Harness::new(config);
        h.recv("220 mx\r\n");
        h.sent();
        h.recv("250-mx\r\n250 PIPELINING\r\n");
        let ev = h.events();
        let f = failure(&ev);
        assert_eq!(f.kind, FailureKind::TlsUnavailable);
        assert_eq!(
            f.message,
            "TLS is required, but was not offered by host mx.example[192.0.2.1]"
        );
        assert_eq!(f.reply.status().unwrap().to_string(), "4.7.4");
        assert!(!ev.iter().any(|e| matches!(e, ClientEvent::Ready { .. })));
        assert_eq!(h.sent(), "QUIT\r\n");
    }

    #[test]
    fn starttls_offered_mode_goes_plaintext_without_offer() {
        let mut config = ClientConfig::new("me.example");
        config.tls = TlsMode::Offer;
        let mut h = Harness::ready(config, &["PIPELINING"]);
        assert_eq!(h.sent(), "");
        assert!(!h.s.capabilities().starttls);
    }

    #[test]
    fn starttls_flow_forgets_plaintext_capabilities() {
        let mut config = ClientConfig::new("me.example");
        config.tls = TlsMode::Offer;
        let mut h = Harness::new(config);
        h.recv("220 mx\r\n");
        h.sent();
        h.recv("250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n");
        assert_eq!(h.sent(), "STARTTLS\r\n");
        assert!(
            !h.events()
                .iter()
                .any(|e| matches!(e, ClientEvent::Ready { .. }))
        );
        h.recv("220 2.0.0 Ready to start TLS\r\n");
        assert_eq!(h.events(), [ClientEvent::StartTls]);
        assert_eq!(h.s.poll_timeout(), None, "the caller times the handshake");
        h.s.tls_established(h.now);
        assert_eq!(h.sent(), "EHLO me.example\r\n");
        h.recv("250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
        let ev = h.events();
        let [ClientEvent::Ready { capabilities }] = ev.as_slice() else {
            panic!("{ev:?}")
        };
        assert!(capabilities.pipelining);
        assert!(
            capabilities.auth.is_empty(),
            "plaintext AUTH offer forgotten"
        );
        assert_eq!(h.sent(), "", "no second STARTTLS");
    }

    #[test]
    fn plaintext_after_starttls_reply_is_refused() {
        for split in [false, true] {
            let mut config = ClientConfig::new("me.example");
            config.tls = TlsMode::Require;
            let mut h = Harness::new(config);
            h.recv("220 mx\r\n");
            h.recv("250-mx\r\n250 STARTTLS\r\n");
            h.sent();
            if split {
                h.recv("220 go ahead\r\n");
                assert_eq!(h.events().last(), Some(&ClientEvent::StartTls));
                h.recv("250 injected\r\n");
            } else {
                h.recv("220 go ahead\r\n250 injected\r\n");
            }
            let ev = h.events();
            assert_eq!(failure(&ev).kind, FailureKind::PlaintextAfterStartTls);
            assert!(h.s.is_closed());
            // Nothing resurrects the session after the handshake.
            h.s.tls_established(h.now);
            assert_eq!(h.sent(), "");
        }
    }

    #[test]
    fn starttls_refused_in_offer_mode_continues_plaintext() {
        let mut config = ClientConfig::new("me.example");
        config.tls = TlsMode::Offer;
        let mut h = Harness::new(config);
        h.recv("220 mx\r\n250-mx\r\n250 STARTTLS\r\n");
        h.sent();
        h.recv("454 4.7.0 TLS not available\r\n");
        assert!(matches!(h.events().last(), Some(ClientEvent::Ready { .. })));
    }

    #[test]
    fn timeouts_name_the_stage_as_postfix_does() {
        let mut config = ClientConfig::new("me.example");
        config.peer_name = "mx.example[192.0.2.1]".to_owned();
        let mut h = Harness::new(config.clone());
        let t0 = h.now;
        assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(300)));
        h.advance(Duration::from_secs(299));
        assert!(h.events().is_empty());
        h.advance(Duration::from_secs(1));
        let f = failure(&h.events());
        assert_eq!(f.kind, FailureKind::Timeout);
        assert_eq!(
            f.message,
            "conversation with mx.example[192.0.2.1] timed out while receiving the initial server greeting"
        );
        assert_eq!(f.reply.status().unwrap().to_string(), "4.4.2");

        // RCPT timeout in lockstep: the accepted-so-far recipient is
        // deferred too, the refused one keeps its bounce.
        let mut h = Harness::ready(config.clone(), &[]);
        h.s.start_transaction(
            tx(&["a@example.com", "b@example.com", "c@example.com"]),
            h.now,
        );
        h.recv("250 Ok\r\n550 5.1.1 no\r\n");
        assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(300)));
        h.advance(Duration::from_secs(300));
        let ev = h.events();
        let ClientEvent::TransactionDone(r) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(r.recipients[0].verdict, Verdict::Bounced);
        assert_eq!(r.recipients[1].verdict, Verdict::Deferred);
        assert!(r.recipients[1].by_client);
        assert_eq!(
            r.recipients[2].reply.lines(),
            ["conversation with mx.example[192.0.2.1] timed out while sending RCPT TO"]
        );
        assert_eq!(failure(&ev).kind, FailureKind::Timeout);
        assert_eq!(ev.last(), Some(&ClientEvent::Closed));

        // DATA: 120s; end of data: 600s.
        let mut h = Harness::ready(config.clone(), &["PIPELINING"]);
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        h.recv("250 Ok\r\n250 Ok\r\n");
        assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(120)));
        h.recv("354 go\r\n");
        h.events();
        h.s.end_content(h.now);
        assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(600)));
        h.advance(Duration::from_secs(600));
        let ev = h.events();
        assert_eq!(
            failure(&ev).message,
            "conversation with mx.example[192.0.2.1] timed out while sending end of data -- message may be sent more than once"
        );
    }

    #[test]
    fn content_timeout_is_a_stall_limit() {
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING"]);
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        h.recv("250 Ok\r\n250 Ok\r\n354 go\r\n");
        h.events();
        assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(180)));
        h.s.send_content(b"some");
        h.advance(Duration::from_secs(180));
        assert!(h.events().is_empty(), "content arrived: deadline moved");
        assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(180)));
        h.advance(Duration::from_secs(180));
        let ev = h.events();
        assert!(
            failure(&ev)
                .message
                .ends_with("timed out while sending message body")
        );
    }

    #[test]
    fn quit_waits_for_reply_or_its_timeout() {
        let mut h = Harness::ready(ClientConfig::new("me.example"), &[]);
        h.s.quit(h.now);
        assert_eq!(h.sent(), "QUIT\r\n");
        assert!(!h.s.is_closed());
        h.recv("221 2.0.0 Bye\r\n");
        assert_eq!(h.events(), [ClientEvent::Closed]);

        let mut h = Harness::ready(ClientConfig::new("me.example"), &[]);
        h.s.quit(h.now);
        h.advance(Duration::from_secs(300));
        assert_eq!(h.events(), [ClientEvent::Closed]);
    }

    #[test]
    fn size_limit_and_smtputf8_are_checked_before_sending() {
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["SIZE 1000"]);
        let mut t = tx(&["a@example.com"]);
        t.size = Some(1001);
        h.s.start_transaction(t, h.now);
        assert_eq!(h.sent(), "");
        let r = h.result();
        assert_eq!(r.recipients[0].verdict, Verdict::Bounced);
        assert_eq!(r.recipients[0].reply.code().get(), 552);
        assert_eq!(r.recipients[0].dsn(), "5.3.4");
        assert_eq!(
            r.recipients[0].reply.lines(),
            ["message size 1001 exceeds size limit 1000 of server unknown"]
        );

        let mut h = Harness::ready(ClientConfig::new("me.example"), &["8BITMIME"]);
        h.s.start_transaction(tx(&["jöran@example.com"]), h.now);
        assert_eq!(h.sent(), "");
        let r = h.result();
        assert_eq!(r.recipients[0].verdict, Verdict::Bounced);
        assert_eq!(r.recipients[0].dsn(), "5.6.7");
        assert_eq!(
            r.recipients[0].reply.lines(),
            ["SMTPUTF8 is required, but was not offered by host unknown"]
        );

        let mut h = Harness::ready(ClientConfig::new("me.example"), &["SMTPUTF8", "SIZE 1000"]);
        let mut t = tx(&["jöran@example.com"]);
        t.size = Some(1000);
        h.s.start_transaction(t, h.now);
        assert_eq!(
            h.sent(),
            "MAIL FROM:<sender@example.org> SIZE=1000 SMTPUTF8\r\n"
        );
    }

    #[test]
    fn dsn_parameters_only_when_offered() {
        let mut t = tx(&["a@example.com"]);
        t.ret = Some(DsnRet::Headers);
        t.envid = Some("id+1 x".to_owned());
        t.recipients[0].notify = Some(DsnNotify {
            success: true,
            failure: true,
            delay: false,
        });
        t.recipients[0].orcpt = Some("a=b@example.com".to_owned());
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING", "DSN"]);
        h.s.start_transaction(t.clone(), h.now);
        assert_eq!(
            h.sent(),
            "MAIL FROM:<sender@example.org> RET=HDRS ENVID=id+2B1+20x\r\n\
             RCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+3Db@example.com\r\n\
             DATA\r\n"
        );
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING"]);
        h.s.start_transaction(t, h.now);
        assert_eq!(
            h.sent(),
            "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n"
        );
    }

    #[test]
    fn bdat_chunks_without_stuffing() {
        let caps = ["PIPELINING", "CHUNKING", "8BITMIME"];
        let mut h = Harness::ready(ClientConfig::new("me.example"), &caps);
        h.s.start_transaction(tx(&["a@example.com", "b@example.com"]), h.now);
        assert_eq!(
            h.sent(),
            "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
            "no DATA with CHUNKING"
        );
        h.recv("250 Ok\r\n250 Ok\r\n");
        assert!(h.events().is_empty());
        h.recv("550 5.1.1 no\r\n");
        assert_eq!(h.events(), [ClientEvent::WantContent]);
        h.s.send_content(b".dot\nline\r");
        h.s.end_content(h.now);
        assert_eq!(h.sent(), "BDAT 12 LAST\r\n.dot\r\nline\r\n");
        h.recv("250 2.0.0 Ok: queued\r\n");
        let r = h.result();
        assert_eq!(r.recipients[0].verdict, Verdict::Delivered);
        assert_eq!(r.recipients[1].verdict, Verdict::Bounced);

        // Empty content; a big one in several chunks.
        let mut h = Harness::ready(ClientConfig::new("me.example"), &caps);
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        h.sent();
        h.recv("250 Ok\r\n250 Ok\r\n");
        h.events();
        h.s.end_content(h.now);
        assert_eq!(h.sent(), "BDAT 0 LAST\r\n");
        h.recv("250 Ok\r\n");
        h.result();

        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        h.sent();
        h.recv("250 Ok\r\n250 Ok\r\n");
        h.events();
        let line = [b'x'; 999];
        for _ in 0..100 {
            h.s.send_content(&line);
            h.s.send_content(b"\n");
        }
        h.s.end_content(h.now);
        let sent = h.sent();
        // A chunk goes out once 64 KiB are buffered, here mid-line.
        let commands: Vec<&str> = sent
            .match_indices("BDAT ")
            .map(|(i, _)| &sent[i..i + sent[i..].find("\r\n").unwrap()])
            .collect();
        assert_eq!(commands, ["BDAT 66064", "BDAT 34036 LAST"]);
        assert_eq!(
            sent.len(),
            100_100 + "BDAT 66064\r\nBDAT 34036 LAST\r\n".len()
        );
        h.recv("250 2.0.0 chunk ok\r\n");
        assert!(h.events().is_empty());
        h.recv("250 2.0.0 Ok: queued\r\n");
        assert_eq!(h.result().recipients[0].verdict, Verdict::Delivered);
    }

    #[test]
    fn bdat_needs_pipelining_and_binarymime_needs_bdat() {
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["CHUNKING"]);
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        h.recv("250 Ok\r\n250 Ok\r\n");
        assert_eq!(
            h.sent(),
            "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n"
        );

        let mut t = tx(&["a@example.com"]);
        t.body = Body::BinaryMime;
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING", "8BITMIME"]);
        h.s.start_transaction(t.clone(), h.now);
        assert_eq!(h.result().recipients[0].dsn(), "5.6.3");

        let mut h = Harness::ready(
            ClientConfig::new("me.example"),
            &["PIPELINING", "CHUNKING", "BINARYMIME"],
        );
        h.s.start_transaction(t, h.now);
        assert!(
            h.sent()
                .starts_with("MAIL FROM:<sender@example.org> BODY=BINARYMIME\r\n")
        );
        h.recv("250 Ok\r\n250 Ok\r\n");
        h.events();
        h.s.send_content(b"\x00\n.\r");
        h.s.end_content(h.now);
        assert_eq!(h.sent(), "BDAT 4 LAST\r\n\x00\n.\r", "binary is sent as is");
    }

    #[test]
    fn reply_421_defers_open_recipients_and_ends_session() {
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING"]);
        h.s.start_transaction(tx(&["a@example.com", "b@example.com"]), h.now);
        h.sent();
        h.recv("250 Ok\r\n550 5.1.1 no\r\n421 4.4.2 timeout, bye\r\n");
        let ev = h.events();
        let ClientEvent::TransactionDone(r) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(r.recipients[0].verdict, Verdict::Bounced);
        assert_eq!(r.recipients[1].verdict, Verdict::Deferred);
        assert_eq!(r.recipients[1].reply.code().get(), 421);
        assert!(!r.recipients[1].by_client);
        assert!(h.s.is_closed());
        assert_eq!(h.sent(), "", "no QUIT to a server that said 421");
    }

    #[test]
    fn malformed_and_unexpected_replies_fail_the_session() {
        let mut h = Harness::new(ClientConfig::new("me.example"));
        h.recv("22O bad\r\n");
        assert_eq!(failure(&h.events()).kind, FailureKind::MalformedReply);

        let mut h = Harness::ready(ClientConfig::new("me.example"), &[]);
        h.recv("250 nobody asked\r\n");
        assert_eq!(failure(&h.events()).kind, FailureKind::UnexpectedReply);

        let mut h = Harness::ready(ClientConfig::new("me.example"), &["PIPELINING"]);
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        h.recv("250 Ok\r\n250 Ok\r\n354 go\r\n");
        h.events();
        h.s.send_content(b"x");
        h.s.connection_closed();
        let ev = h.events();
        let ClientEvent::TransactionDone(r) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(r.recipients[0].verdict, Verdict::Deferred);
        assert_eq!(
            r.recipients[0].reply.lines(),
            ["lost connection with unknown while sending message body"]
        );
        assert_eq!(failure(&ev).kind, FailureKind::ConnectionLost);
    }

    #[test]
    fn auth_is_base64_on_the_wire_and_raw_in_the_api() {
        let mut h = Harness::ready(ClientConfig::new("me.example"), &["AUTH PLAIN LOGIN"]);
        h.s.auth("PLAIN", Some(b"\0user\0pass"), h.now);
        assert_eq!(h.sent(), "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
        h.recv("235 2.7.0 Authentication successful\r\n");
        let ev = h.events();
        let [ClientEvent::AuthDone(r)] = ev.as_slice() else {
            panic!("{ev:?}")
        };
        assert_eq!(r.code().get(), 235);

        h.s.auth("LOGIN", None, h.now);
        assert_eq!(h.sent(), "AUTH LOGIN\r\n");
        h.recv("334 VXNlcm5hbWU6\r\n");
        assert_eq!(
            h.events(),
            [ClientEvent::AuthChallenge(b"Username:".to_vec())]
        );
        h.s.auth_response(b"user", h.now);
        assert_eq!(h.sent(), "dXNlcg==\r\n");
        h.recv("535 5.7.8 Error: authentication failed\r\n");
        let ev = h.events();
        let [ClientEvent::AuthDone(r)] = ev.as_slice() else {
            panic!("{ev:?}")
        };
        assert_eq!(r.code().get(), 535);
        // Idle again.
        h.s.start_transaction(tx(&["a@example.com"]), h.now);
        assert!(h.sent().starts_with("MAIL FROM:"));
    }

    /// Reverses dot-stuffing: the content a receiver gets from the wire
    /// form before the terminating `.` line.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        let mut at_line_start = true;
        for (i, &b) in body.iter().enumerate() {
            if at_line_start && b == b'.' {
                at_line_start = false;
                continue;
            }
            out.push(b);
            at_line_start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
        }
        out
    }

    /// What the content should be once received: every line end CRLF, a
    /// CR not followed by LF kept (a trailing one completed), ending with
    /// CRLF.
    fn normalise(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' if input.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' if i + 1 == input.len() => out.extend_from_slice(b"\r\n"),
                b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn stuff_in_chunks(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut enc = ContentEncoder::new(true, false);
        let mut wire = Vec::new();
        let mut rest = input;
        for &cut in cuts {
            let (a, b) = rest.split_at(cut.min(rest.len()));
            enc.encode(a, &mut wire);
            rest = b;
        }
        enc.encode(rest, &mut wire);
        enc.finish(&mut wire);
        wire.extend_from_slice(b".\r\n");
        wire
    }

    #[test]
    fn dot_stuffing_examples() {
        assert_eq!(
            stuff_in_chunks(b".a\n..b\r\nc.\n.", &[]),
            b"..a\r\n...b\r\nc.\r\n..\r\n.\r\n"
        );
        // A lone CR before a dot does not make a line start.
        assert_eq!(stuff_in_chunks(b"a\r.\r\n", &[]), b"a\r.\r\n.\r\n");
        // A CR at the end of one chunk and LF at the start of the next.
        assert_eq!(stuff_in_chunks(b"a\r\n.\r\n", &[2, 1]), b"a\r\n..\r\n.\r\n");
        assert_eq!(stuff_in_chunks(b"", &[]), b".\r\n");
        assert_eq!(stuff_in_chunks(b"x\r", &[]), b"x\r\n.\r\n");
    }

    /// Bytes rich in the octets that matter.
    fn content() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'\r'),
                Just(b'\n'),
                Just(b'.'),
                Just(b'a'),
                any::<u8>()
            ],
            0..200,
        )
    }

    proptest! {
        #[test]
        fn stuffing_round_trips_and_ends_only_at_the_end(
            input in content(),
            cuts in prop::collection::vec(0usize..20, 0..10),
        ) {
            let wire = stuff_in_chunks(&input, &cuts);
            prop_assert_eq!(unstuff(&wire), normalise(&input));
            let end = wire.windows(5).position(|w| w == b"\r\n.\r\n");
            let expected_end = wire.len().checked_sub(5);
            prop_assert!(end.is_none() || end == expected_end, "early end in {:?}", wire);
            // Without a terminator found by windows, the content is
            // empty and the wire is the bare dot line.
            if end.is_none() {
                prop_assert_eq!(&wire[..], b".\r\n");
            }
            // Every LF in the wire form follows a CR.
            for (i, &b) in wire.iter().enumerate() {
                if b == b'\n' {
                    prop_assert!(i > 0 && wire[i - 1] == b'\r');
                }
            }
        }

        #[test]
        fn base64_round_trips(data in prop::collection::vec(any::<u8>(), 0..100)) {
            let mut enc = Vec::new();
            base64_encode(&data, &mut enc);
            prop_assert_eq!(base64_decode(&enc), Some(data));
        }

        #[test]
        fn fuzz_body_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
            fuzz_client_replies(&data);
        }

        #[test]
        fn fuzz_body_never_panics_on_plausible_replies(
            flags in any::<u8>(),
            split in any::<u8>(),
            lines in prop::collection::vec(
                prop_oneof![
                    Just("220 mx\r\n"), Just("250 ok\r\n"), Just("250-mx\r\n"),
                    Just("250-PIPELINING\r\n"), Just("250-CHUNKING\r\n"), Just("250 STARTTLS\r\n"),
                    Just("354 go\r\n"), Just("334 \r\n"), Just("334 dGVzdA==\r\n"), Just("235 ok\r\n"),
                    Just("421 bye\r\n"), Just("450 later\r\n"), Just("550 no\r\n"), Just("221 bye\r\n"),
                    Just("502 no\r\n"), Just("250 SIZE 10\r\n"),
                ],
                0..30,
            ),
        ) {
            let mut data = vec![flags, split];
            for l in lines {
                data.extend_from_slice(l.as_bytes());
            }
            fuzz_client_replies(&data);
        }
    }
}
