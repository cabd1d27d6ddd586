//! The delivery-agent interface: how the queue hands a message and a batch
//! of its recipients to a delivery agent, and what comes back.
//!
//! The queue manager (`mta-queue`) and the agents (`mta-delivery`: maildir,
//! mbox, local, virtual, pipe, lmtp, smtp, error, discard) are siblings
//! that do not name each other; they meet here. The queue builds a
//! [`DeliveryRequest`] (the [`Envelope`], the [`Recipient`]s resolved to
//! one transport and nexthop, a time limit and access to the content), calls
//! [`DeliveryAgent::deliver`], and gets a [`DeliveryReport`] with one
//! [`RecipientResult`] per recipient: delivered, deferred, bounced, or
//! "resubmit to these addresses" (alias and `.forward` expansion, which the
//! queue feeds back through cleanup as a new message).
//!
//! This module only defines the interface. It does no I/O, schedules
//! nothing and delivers nothing; it does not write log lines or DSNs, but
//! carries what they need (the enhanced status, the text Postfix shows in
//! `status=sent (...)`, the relay, the remote reply).
//!
//! # Example
//!
//! An agent that accepts everything and keeps nothing, like Postfix's
//! `discard`:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use mta_core::address::ReversePath;
//! use mta_core::delivery::*;
//! use mta_core::queue_id::QueueId;
//! use mta_core::reply::EnhancedStatus;
//!
//! struct Discard;
//!
//! impl DeliveryAgent for Discard {
//!     fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_> {
//!         Box::pin(async move {
//!             let status = DeliveryStatus::Delivered(StatusDetail::new(
//!                 EnhancedStatus::OK,
//!                 "discarded",
//!                 Relay::None,
//!             ));
//!             DeliveryReport::uniform(&request.recipients, &status)
//!         })
//!     }
//! }
//!
//! let id = QueueId::from_parts(1_700_000_000, 0, 1);
//! let sender = ReversePath::Mailbox("sender@example.com".parse().unwrap());
//! let envelope = Envelope::new(id, sender, SystemTime::UNIX_EPOCH, 5);
//! let (a, b) = ("a@example.org".parse().unwrap(), "b@example.org".parse().unwrap());
//! let request = DeliveryRequest::new(
//!     envelope,
//!     vec![Recipient::new(a, 100), Recipient::new(b, 160)],
//!     "example.org",
//!     Duration::from_secs(300),
//!     Arc::new(MemoryContent::new(b"Hi.\n".to_vec())),
//! );
//! let offsets: Vec<u64> = request.recipients.iter().map(|r| r.queue_offset).collect();
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! let agent: &dyn DeliveryAgent = &Discard;
//! let report = block_on(agent.deliver(request));
//! report.validate(&offsets)?;
//! assert_eq!(report.results[1].status.status_word(), Some("sent"));
//! # Ok::<(), ReportError>(())
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::address::{MailAddress, ReversePath};
use crate::queue_id::QueueId;
use crate::reply::{EnhancedStatus, Reply, StatusClass};

/// The enhanced status for recipients an agent could not get to before its
/// time limit: `4.4.2`, the code Postfix reports for a conversation that
/// timed out (RFC 3463 section 3.5, "bad connection").
pub const TIME_LIMIT_STATUS: EnhancedStatus = EnhancedStatus::BAD_CONNECTION;

/// The future [`DeliveryAgent::deliver`] returns: boxed, `Send`, borrowing
/// the agent.
pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = DeliveryReport> + Send + 'a>>;

/// A delivery agent: delivers one message to a batch of recipients that
/// share a transport and nexthop.
///
/// The trait is object-safe, so the queue holds agents as
/// `Arc<dyn DeliveryAgent>` by `master.cf` service name.
///
/// # Contract
///
/// - **One result per recipient, in order.** `report.results[i]` is about
///   `request.recipients[i]` and carries its `queue_offset`.
///   [`DeliveryReport::validate`] checks this; the queue treats a report
///   that fails it as "defer every recipient".
/// - **The status class matches the outcome:** `Delivered` with `2.X.X`,
///   `Deferred` with `4.X.X`, `Bounced` with `5.X.X`.
/// - **Never panic, whatever the content or the recipients.** Content that
///   cannot be read defers the recipients (`4.3.0`); content a destination
///   refuses is reported per recipient.
/// - **Honour the time limit.** When `request.time_limit` is spent, the
///   agent stops and defers every recipient not yet done, with
///   [`TIME_LIMIT_STATUS`] (see [`DeliveryReport::defer_rest`]). The caller
///   may also drop the future some time after the limit, so an agent
///   makes nothing visible before it is complete (a maildir message
///   stays in `tmp/` until it is fsynced and renamed).
/// - **Delivered means durable.** `Delivered` is reported only once the
///   mailbox write is fsynced, or the next hop has accepted the message
///   (a 250 after the end of data).
/// - **Resubmit means done here.** An agent that expands an alias or a
///   `.forward` file does any local part itself (a mailbox, a file, a
///   command) and returns the rest as a [`Resubmission`]; the queue then
///   treats the recipient as done once the new message is safely queued.
pub trait DeliveryAgent: Send + Sync {
    /// Delivers the message in `request` to its recipients.
    fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_>;
}

/// Read access to a message's content, as many times as an agent needs.
///
/// The content is the message as the queue stores it: RFC 5322 header and
/// body, each line ending in a single LF (an agent that speaks SMTP or LMTP
/// converts to CRLF and dot-stuffs; maildir and mbox store LF). It has no
/// envelope records and no `Return-Path:` or `Delivered-To:`; agents add
/// those.
///
/// Why a reader factory rather than bytes: the queue file is on local disk
/// and may be large, and the design streams content instead of holding
/// copies. An agent reads it in chunks while it writes to a mailbox or a
/// socket, and may need it more than once: once per mailbox for a batch of
/// local recipients, again after a lost connection, or once per LMTP
/// recipient group. Each [`MessageContent::open`] starts a fresh reader at
/// the beginning. The reader is blocking (`std::io::Read`): reads of a
/// local file are short and usually hit the page cache; an async agent
/// reads in bounded chunks, or on a blocking thread when it needs to.
pub trait MessageContent: Send + Sync {
    /// The number of bytes every reader from [`MessageContent::open`]
    /// yields.
    fn size(&self) -> u64;

    /// A new reader positioned at the start of the content.
    ///
    /// # Errors
    ///
    /// Any I/O error opening the content; the agent defers.
    fn open(&self) -> io::Result<Box<dyn io::Read + Send>>;
}

/// Content held in memory, for tests and for small generated messages
/// (bounces). Opening it copies nothing.
#[derive(Debug, Clone)]
pub struct MemoryContent(Arc<[u8]>);

impl MemoryContent {
    /// Content with these bytes.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> MemoryContent {
        MemoryContent(bytes.into())
    }
}

impl MessageContent for MemoryContent {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn open(&self) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(io::Cursor::new(Arc::clone(&self.0))))
    }
}

/// The RFC 3461 `RET` parameter: what a failure DSN returns of the
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnRet {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: only the header.
    Headers,
}

/// The RFC 3461 `NOTIFY` parameter of one recipient. All three flags
/// false is `NOTIFY=NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DsnNotify {
    /// `SUCCESS`: report delivery.
    pub success: bool,
    /// `FAILURE`: report failure.
    pub failure: bool,
    /// `DELAY`: report delay.
    pub delay: bool,
}

impl DsnNotify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: DsnNotify = DsnNotify {
        success: false,
        failure: false,
        delay: false,
    };

    /// Whether this is `NOTIFY=NEVER`.
    pub fn is_never(&self) -> bool {
        *self == DsnNotify::NEVER
    }
}

/// The body type the client declared (RFC 6152 `BODY=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyType {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// What is known about the SMTP client that sent the message, for
/// `Received:` headers, logs and the smtp agent's `XFORWARD`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client's verified host name, or `unknown`.
    pub hostname: String,
    /// The client's IP address.
    pub address: IpAddr,
    /// The client's TCP port.
    pub port: u16,
    /// The `HELO`/`EHLO` argument, if one was given.
    pub helo: Option<String>,
    /// The protocol as `Received:` names it (RFC 3848): `SMTP`, `ESMTP`,
    /// `ESMTPS`, `ESMTPSA`, `LMTP`, ...
    pub protocol: String,
    /// The SASL login name, if the client authenticated.
    pub sasl_username: Option<String>,
}

impl ClientInfo {
    /// Client facts without `HELO` and login.
    pub fn new(
        hostname: impl Into<String>,
        address: IpAddr,
        port: u16,
        protocol: impl Into<String>,
    ) -> ClientInfo {
        ClientInfo {
            hostname: hostname.into(),
            address,
            port,
            helo: None,
            protocol: protocol.into(),
            sasl_username: None,
        }
    }
}

/// The message-wide facts of a delivery request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// The message's queue ID, for log lines.
    pub queue_id: QueueId,
    /// The reverse path (`MAIL FROM`); [`ReversePath::Null`] for the `<>`
    /// of bounces.
    pub sender: ReversePath,
    /// When the message entered the queue (for `delay=` and DSNs).
    pub arrival_time: SystemTime,
    /// The size of the content in bytes, as logged in `size=`.
    pub size: u64,
    /// The SMTP client; `None` for mail submitted locally.
    pub client: Option<ClientInfo>,
    /// RFC 3461 `ENVID`, decoded from xtext.
    pub dsn_envid: Option<String>,
    /// RFC 3461 `RET`.
    pub dsn_ret: Option<DsnRet>,
    /// Whether the client asked for `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// The declared body type, if any.
    pub body_type: Option<BodyType>,
}

impl Envelope {
    /// An envelope with no client, no DSN parameters, no SMTPUTF8 and no
    /// body type; set those fields as needed.
    pub fn new(
        queue_id: QueueId,
        sender: ReversePath,
        arrival_time: SystemTime,
        size: u64,
    ) -> Envelope {
        Envelope {
            queue_id,
            sender,
            arrival_time,
            size,
            client: None,
            dsn_envid: None,
            dsn_ret: None,
            smtputf8: false,
            body_type: None,
        }
    }

    /// Whether the reverse path is null (`<>`), as for bounces: such mail
    /// must never cause another bounce.
    pub fn has_null_sender(&self) -> bool {
        self.sender.is_null()
    }
}

/// One recipient of a delivery request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recipient {
    /// The final address to deliver to, after all rewriting.
    pub address: MailAddress,
    /// The address as the client gave it, before rewriting (for
    /// `X-Original-To:` and `orig_to=` in logs), if different.
    pub original: Option<MailAddress>,
    /// RFC 3461 `ORCPT`, as `addr-type;address` decoded from xtext, for
    /// DSNs.
    pub dsn_orcpt: Option<String>,
    /// RFC 3461 `NOTIFY`; `None` when the client did not say.
    pub notify: Option<DsnNotify>,
    /// Where the queue keeps this recipient, to mark it done; opaque to
    /// agents, which copy it into the result.
    pub queue_offset: u64,
}

impl Recipient {
    /// A recipient with no original address and no DSN parameters.
    pub fn new(address: MailAddress, queue_offset: u64) -> Recipient {
        Recipient {
            address,
            original: None,
            dsn_orcpt: None,
            notify: None,
            queue_offset,
        }
    }

    /// This recipient's result with the given status.
    pub fn result(&self, status: DeliveryStatus) -> RecipientResult {
        RecipientResult {
            queue_offset: self.queue_offset,
            status,
        }
    }
}

/// One delivery attempt: a message and a batch of its recipients.
#[derive(Clone)]
#[non_exhaustive]
pub struct DeliveryRequest {
    /// The message-wide facts.
    pub envelope: Envelope,
    /// The recipients, all for this transport and nexthop. Never empty.
    pub recipients: Vec<Recipient>,
    /// Where to deliver, as the transport resolution gave it: a domain or
    /// `[host]:port` for smtp and lmtp, the local host name for local
    /// transports, a command's service name for pipe.
    pub nexthop: String,
    /// How long the agent may take, counted from the call. A duration
    /// rather than an instant, so that the agent measures it with its own
    /// runtime's timer (which tests run on a virtual clock) and this crate
    /// never reads a clock.
    pub time_limit: Duration,
    /// The message content.
    pub content: Arc<dyn MessageContent>,
}

impl DeliveryRequest {
    /// A request from its parts.
    pub fn new(
        envelope: Envelope,
        recipients: Vec<Recipient>,
        nexthop: impl Into<String>,
        time_limit: Duration,
        content: Arc<dyn MessageContent>,
    ) -> DeliveryRequest {
        DeliveryRequest {
            envelope,
            recipients,
            nexthop: nexthop.into(),
            time_limit,
            content,
        }
    }
}

impl fmt::Debug for DeliveryRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryRequest")
            .field("envelope", &self.envelope)
            .field("recipients", &self.recipients)
            .field("nexthop", &self.nexthop)
            .field("time_limit", &self.time_limit)
            .field("content_size", &self.content.size())
            .finish()
    }
}

/// Which system a result came from, as Postfix logs it in `relay=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Relay {
    /// No system was reached: `relay=none` (for example every MX host was
    /// down, or the recipient was refused before any connection).
    None,
    /// A local transport, by name: `relay=local`, `relay=virtual`, or a
    /// pipe service such as `relay=dovecot`.
    Transport(String),
    /// A remote host: `relay=mx.example.com[192.0.2.25]:25`.
    Host {
        /// The host's name (or its address when it has none).
        name: String,
        /// The address connected to.
        address: IpAddr,
        /// The port connected to.
        port: u16,
    },
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Relay::None => f.write_str("none"),
            Relay::Transport(name) => f.write_str(name),
            Relay::Host {
                name,
                address,
                port,
            } => write!(f, "{name}[{address}]:{port}"),
        }
    }
}

/// The details of a delivered, deferred or bounced recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusDetail {
    /// The enhanced status code, logged as `dsn=` and put in DSNs.
    pub dsn: EnhancedStatus,
    /// The text Postfix logs in parentheses after `status=`:
    /// `250 2.0.0 Ok: queued as 4Xk...` from a remote server,
    /// `delivered to maildir`, `host mx.example.com[192.0.2.25] said: 550
    /// 5.1.1 ... (in reply to RCPT TO command)`.
    pub text: String,
    /// The system the result came from.
    pub relay: Relay,
    /// The remote server's reply, if the result is one, for the
    /// `Diagnostic-Code: smtp;` field of a DSN (RFC 3464 section 2.3.6).
    pub remote_reply: Option<Reply>,
}

impl StatusDetail {
    /// Details without a remote reply.
    pub fn new(dsn: EnhancedStatus, text: impl Into<String>, relay: Relay) -> StatusDetail {
        StatusDetail {
            dsn,
            text: text.into(),
            relay,
            remote_reply: None,
        }
    }

    /// The same details with the remote server's reply attached.
    pub fn with_remote_reply(mut self, reply: Reply) -> StatusDetail {
        self.remote_reply = Some(reply);
        self
    }
}

/// Addresses an alias or `.forward` expanded to, which the queue sends
/// through cleanup as a new message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resubmission {
    /// The new recipients. May be empty (an alias whose only targets were
    /// delivered locally, or were duplicates).
    pub recipients: Vec<MailAddress>,
    /// A new reverse path for the new message, as an `owner-` alias sets
    /// it; `None` keeps the original sender.
    pub sender: Option<ReversePath>,
    /// Header lines to put in front of the forwarded copy, without line
    /// ends: the `Delivered-To:` that lets the next hop see a loop.
    pub headers: Vec<String>,
}

impl Resubmission {
    /// A resubmission to these addresses, keeping the sender.
    pub fn new(recipients: Vec<MailAddress>) -> Resubmission {
        Resubmission {
            recipients,
            sender: None,
            headers: Vec::new(),
        }
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Delivered (`status=sent`); the status class is `2`.
    Delivered(StatusDetail),
    /// Not delivered this time, try again later (`status=deferred`); the
    /// status class is `4`.
    Deferred(StatusDetail),
    /// Not deliverable (`status=bounced`); the status class is `5`.
    Bounced(StatusDetail),
    /// Expanded (alias, `.forward`): resubmit to these addresses.
    Resubmit(Resubmission),
}

impl DeliveryStatus {
    /// The word Postfix logs after `status=`: `sent`, `deferred` or
    /// `bounced`; `None` for a resubmission, which the queue logs once the
    /// new message is queued (`forwarded as ID`).
    pub fn status_word(&self) -> Option<&'static str> {
        match self {
            DeliveryStatus::Delivered(_) => Some("sent"),
            DeliveryStatus::Deferred(_) => Some("deferred"),
            DeliveryStatus::Bounced(_) => Some("bounced"),
            DeliveryStatus::Resubmit(_) => None,
        }
    }

    /// The details, except for a resubmission.
    pub fn detail(&self) -> Option<&StatusDetail> {
        match self {
            DeliveryStatus::Delivered(d)
            | DeliveryStatus::Deferred(d)
            | DeliveryStatus::Bounced(d) => Some(d),
            DeliveryStatus::Resubmit(_) => None,
        }
    }

    /// The status for a recipient the agent did not get to before its
    /// time limit: deferred with [`TIME_LIMIT_STATUS`].
    pub fn time_limit_exceeded(relay: Relay) -> DeliveryStatus {
        DeliveryStatus::Deferred(StatusDetail::new(
            TIME_LIMIT_STATUS,
            "delivery time limit exceeded",
            relay,
        ))
    }

    /// The status class this outcome must carry, if it carries one.
    fn expected_class(&self) -> Option<StatusClass> {
        match self {
            DeliveryStatus::Delivered(_) => Some(StatusClass::Success),
            DeliveryStatus::Deferred(_) => Some(StatusClass::PersistentTransient),
            DeliveryStatus::Bounced(_) => Some(StatusClass::Permanent),
            DeliveryStatus::Resubmit(_) => None,
        }
    }
}

/// The result for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecipientResult {
    /// The recipient's `queue_offset`, copied from the request.
    pub queue_offset: u64,
    /// What happened.
    pub status: DeliveryStatus,
}

impl RecipientResult {
    /// A result for the recipient at `queue_offset`.
    pub fn new(queue_offset: u64, status: DeliveryStatus) -> RecipientResult {
        RecipientResult {
            queue_offset,
            status,
        }
    }
}

/// Why a report breaks the [`DeliveryAgent`] contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The report does not have one result per recipient.
    #[error("delivery report has {got} results for {expected} recipients")]
    WrongCount {
        /// Number of recipients in the request.
        expected: usize,
        /// Number of results in the report.
        got: usize,
    },
    /// A result is out of order: its queue offset is not the one of the
    /// recipient at the same position.
    #[error("delivery result {index} is for offset {got}, expected {expected}")]
    WrongRecipient {
        /// Position in the report.
        index: usize,
        /// The recipient's queue offset.
        expected: u64,
        /// The result's queue offset.
        got: u64,
    },
    /// A result's enhanced status class does not match its outcome (for
    /// example `Delivered` with `5.1.1`).
    #[error("delivery result {index} has an enhanced status of the wrong class")]
    StatusClassMismatch {
        /// Position in the report.
        index: usize,
    },
}

/// What an agent reports: one result per recipient of the request, in the
/// same order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeliveryReport {
    /// The results, in the order of the request's recipients.
    pub results: Vec<RecipientResult>,
}

impl DeliveryReport {
    /// A report from its results.
    pub fn new(results: Vec<RecipientResult>) -> DeliveryReport {
        DeliveryReport { results }
    }

    /// The same status for every recipient: for an agent that fails as a
    /// whole (content unreadable, destination down) or delivers the batch
    /// in one go.
    pub fn uniform(recipients: &[Recipient], status: &DeliveryStatus) -> DeliveryReport {
        DeliveryReport {
            results: recipients
                .iter()
                .map(|r| r.result(status.clone()))
                .collect(),
        }
    }

    /// Completes a report the agent stopped early, at its time limit:
    /// every recipient after those already reported gets
    /// [`DeliveryStatus::time_limit_exceeded`].
    pub fn defer_rest(&mut self, recipients: &[Recipient], relay: &Relay) {
        let done = self.results.len();
        for recipient in recipients.iter().skip(done) {
            let status = DeliveryStatus::time_limit_exceeded(relay.clone());
            self.results.push(recipient.result(status));
        }
    }

    /// Checks the report against the request's recipients, given by their
    /// queue offsets in order: one result each, in order, each with a
    /// status class that matches its outcome.
    ///
    /// # Errors
    ///
    /// The first [`ReportError`] found.
    pub fn validate(&self, queue_offsets: &[u64]) -> Result<(), ReportError> {
        if self.results.len() != queue_offsets.len() {
            return Err(ReportError::WrongCount {
                expected: queue_offsets.len(),
                got: self.results.len(),
            });
        }
        for (index, (result, &expected)) in self.results.iter().zip(queue_offsets).enumerate() {
            if result.queue_offset != expected {
                return Err(ReportError::WrongRecipient {
                    index,
                    expected,
                    got: result.queue_offset,
                });
            }
            let class_ok = match (result.status.expected_class(), result.status.detail()) {
                (Some(class), Some(detail)) => detail.dsn.class() == class,
                _ => true,
            };
            if !class_ok {
                return Err(ReportError::StatusClassMismatch { index });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> MailAddress {
        text.parse().expect("a test address")
    }
    use crate::test_support::block_on;
    use std::io::Read;

    fn request(recipients: &[(&str, u64)], content: &[u8]) -> DeliveryRequest {
        let id = QueueId::from_parts(1_700_000_000, 1, 2);
        let mut envelope = Envelope::new(
            id,
            ReversePath::Null,
            SystemTime::UNIX_EPOCH,
            content.len() as u64,
        );
        envelope.client = Some(ClientInfo::new(
            "client.example",
            "192.0.2.7".parse().unwrap(),
            52_000,
            "ESMTPS",
        ));
        DeliveryRequest::new(
            envelope,
            recipients
                .iter()
                .map(|&(a, o)| Recipient::new(addr(a), o))
                .collect(),
            "example.org",
            Duration::from_secs(60),
            Arc::new(MemoryContent::new(content.to_vec())),
        )
    }

    /// Delivers to recipients whose local part is not "nobody", forwards
    /// "list", and stops after three recipients, as if out of time.
    struct TestAgent;

    impl DeliveryAgent for TestAgent {
        fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_> {
            Box::pin(async move {
                let relay = Relay::Transport("virtual".into());
                let mut report = DeliveryReport::default();
                for rcpt in request.recipients.iter().take(3) {
                    // The content can be read more than once.
                    let mut body = String::new();
                    let read = request
                        .content
                        .open()
                        .and_then(|mut r| r.read_to_string(&mut body));
                    let status = if read.is_err() {
                        DeliveryStatus::Deferred(StatusDetail::new(
                            EnhancedStatus::parse("4.3.0").unwrap(),
                            "cannot read content",
                            relay.clone(),
                        ))
                    } else if rcpt.address.local_part().as_str() == "nobody" {
                        DeliveryStatus::Bounced(StatusDetail::new(
                            EnhancedStatus::BAD_MAILBOX,
                            "user unknown",
                            relay.clone(),
                        ))
                    } else if rcpt.address.local_part().as_str() == "list" {
                        DeliveryStatus::Resubmit(Resubmission::new(vec![
                            addr("a@example.org"),
                            addr("b@example.org"),
                        ]))
                    } else {
                        DeliveryStatus::Delivered(StatusDetail::new(
                            EnhancedStatus::OK,
                            "delivered to maildir",
                            relay.clone(),
                        ))
                    };
                    report.results.push(rcpt.result(status));
                }
                report.defer_rest(&request.recipients, &relay);
                report
            })
        }
    }

    #[test]
    fn agent_contract() {
        let req = request(
            &[
                ("x@example.org", 10),
                ("nobody@example.org", 20),
                ("list@example.org", 30),
                ("late@example.org", 40),
            ],
            b"Subject: hi\n\nbody\n",
        );
        assert!(req.envelope.has_null_sender());
        assert!(format!("{req:?}").contains("content_size: 18"));
        let offsets: Vec<u64> = req.recipients.iter().map(|r| r.queue_offset).collect();
        let agent: Arc<dyn DeliveryAgent> = Arc::new(TestAgent);
        let report = block_on(agent.deliver(req));
        assert_eq!(report.validate(&offsets), Ok(()));
        let words: Vec<_> = report
            .results
            .iter()
            .map(|r| r.status.status_word())
            .collect();
        assert_eq!(
            words,
            [Some("sent"), Some("bounced"), None, Some("deferred")]
        );
        let late = report.results[3].status.detail().unwrap();
        assert_eq!(late.dsn.to_string(), "4.4.2");
        assert_eq!(late.relay.to_string(), "virtual");
    }

    #[test]
    fn validate_finds_contract_breaches() {
        let ok = |o| {
            RecipientResult::new(
                o,
                DeliveryStatus::Delivered(StatusDetail::new(EnhancedStatus::OK, "ok", Relay::None)),
            )
        };
        let report = DeliveryReport::new(vec![ok(1), ok(2)]);
        assert_eq!(
            report.validate(&[1]),
            Err(ReportError::WrongCount {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(
            report.validate(&[2, 1]),
            Err(ReportError::WrongRecipient {
                index: 0,
                expected: 2,
                got: 1
            })
        );
        let wrong = DeliveryReport::new(vec![
            ok(1),
            RecipientResult::new(
                2,
                DeliveryStatus::Deferred(StatusDetail::new(
                    EnhancedStatus::BAD_MAILBOX,
                    "x",
                    Relay::None,
                )),
            ),
        ]);
        assert_eq!(
            wrong.validate(&[1, 2]),
            Err(ReportError::StatusClassMismatch { index: 1 })
        );
    }

    #[test]
    fn relay_and_remote_reply() {
        let relay = Relay::Host {
            name: "mx.example.com".into(),
            address: "2001:db8::25".parse().unwrap(),
            port: 25,
        };
        assert_eq!(relay.to_string(), "mx.example.com[2001:db8::25]:25");
        let relay = Relay::Host {
            name: "mx.example.com".into(),
            address: "192.0.2.25".parse().unwrap(),
            port: 25,
        };
        assert_eq!(relay.to_string(), "mx.example.com[192.0.2.25]:25");
        assert_eq!(Relay::None.to_string(), "none");
        let reply = Reply::ok();
        let d = StatusDetail::new(EnhancedStatus::OK, reply.to_string(), relay)
            .with_remote_reply(reply.clone());
        assert_eq!(d.text, "250 2.0.0 Ok");
        assert_eq!(d.remote_reply, Some(reply));
    }

    #[test]
    fn memory_content_reopens() {
        let content = MemoryContent::new(b"abc".to_vec());
        assert_eq!(content.size(), 3);
        for _ in 0..2 {
            let mut s = String::new();
            content.open().unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, "abc");
        }
    }

    #[test]
    fn dsn_notify() {
        assert!(DsnNotify::NEVER.is_never());
        assert!(DsnNotify::default().is_never());
        let n = DsnNotify {
            failure: true,
            ..DsnNotify::NEVER
        };
        assert!(!n.is_never());
    }

    #[test]
    fn uniform_report() {
        let req = request(&[("a@x", 1), ("b@x", 2)], b"");
        let status = DeliveryStatus::time_limit_exceeded(Relay::None);
        let report = DeliveryReport::uniform(&req.recipients, &status);
        assert_eq!(report.validate(&[1, 2]), Ok(()));
        assert!(report.results.iter().all(|r| r.status == status));
    }
}
