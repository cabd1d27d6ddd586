//! SMTP replies: reply codes (RFC 5321 section 4.2), enhanced mail system
//! status codes (RFC 3463, carried in replies as RFC 2034 describes), and
//! whole replies with their wire form.
//!
//! - [`ReplyCode`] is a validated three-digit code such as `250`.
//! - [`EnhancedStatus`] is a `class.subject.detail` code such as `5.1.1`.
//! - [`Reply`] is a code, an optional enhanced status and one or more
//!   lines of text. [`Reply::to_bytes`] writes it as it goes on the wire,
//!   with the enhanced status repeated on every line as Postfix does:
//!   `250-2.0.0 first\r\n250 2.0.0 last\r\n`.
//! - [`parse_reply`] reads one reply from a buffer without copying, like
//!   `httparse`: it returns [`ParseStatus::Complete`] with a [`ReplyView`]
//!   borrowing from the buffer and the number of bytes used, or
//!   [`ParseStatus::Partial`] when more input is needed. Its limits
//!   ([`MAX_REPLY_LINE_LEN`], [`MAX_REPLY_LINES`]) bound what a hostile
//!   server can make the client buffer.
//! - [`sanitize_echo`] makes client-supplied text safe to put in a reply.
//!
//! This module does no I/O and keeps no session state: which reply to send
//! when is the SMTP state machines' business, in `mta-smtp`.
//!
//! # Example
//!
//! ```
//! use mta_core::reply::{parse_reply, ParseStatus, Reply, ReplyCode, EnhancedStatus};
//!
//! let reply = Reply::new(
//!     ReplyCode::OK,
//!     Some("2.0.0".parse()?),
//!     ["first line", "last line"],
//! )?;
//! let wire = reply.to_bytes();
//! assert_eq!(wire, b"250-2.0.0 first line\r\n250 2.0.0 last line\r\n");
//!
//! match parse_reply(&wire)? {
//!     ParseStatus::Complete(view, used) => {
//!         assert_eq!(used, wire.len());
//!         assert_eq!(view.to_reply(), reply);
//!     }
//!     ParseStatus::Partial => unreachable!("the reply is complete"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::queue_id::QueueId;

/// The longest reply line, in octets, counting the reply code and the
/// terminating CRLF (RFC 5321 section 4.5.3.1.5).
pub const MAX_REPLY_LINE_LEN: usize = 512;

/// The most lines one reply may have.
///
/// RFC 5321 sets no limit. Real multi-line replies are short (an `EHLO`
/// answer has a dozen lines); a hundred lines is ample room for them and
/// caps what a server can make a client buffer for one reply at 51 200
/// octets.
pub const MAX_REPLY_LINES: usize = 100;

/// The longest client-supplied text [`sanitize_echo`] keeps by default:
/// the longest path RFC 5321 allows (section 4.5.3.1.3), so an address
/// fits whole and a reply that echoes one stays within
/// [`MAX_REPLY_LINE_LEN`].
pub const MAX_ECHO_LEN: usize = 256;

/// The reply code, separator and CRLF around the text of a reply line.
const LINE_OVERHEAD: usize = 3 + 1 + 2;

/// Why a reply or one of its parts could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A reply code outside RFC 5321's grammar: the first digit must be
    /// 2 to 5, the second 0 to 5 (section 4.2).
    #[error("invalid SMTP reply code {code}")]
    InvalidCode {
        /// The rejected code.
        code: u16,
    },
    /// Text that is not an RFC 3463 `class.subject.detail` code: the class
    /// must be 2, 4 or 5, subject and detail one to three digits without
    /// leading zeros (section 2).
    #[error("invalid enhanced status code {text:?}")]
    InvalidEnhancedStatus {
        /// The rejected text (at most 16 characters of it).
        text: String,
    },
    /// The enhanced status class differs from the reply code's first digit,
    /// or the reply is a 3xx, which takes no enhanced status (RFC 2034
    /// section 4 and RFC 3463 section 2).
    #[error("enhanced status {status} does not fit reply code {code}")]
    StatusMismatch {
        /// The reply code.
        code: ReplyCode,
        /// The enhanced status code.
        status: EnhancedStatus,
    },
    /// A reply without any line.
    #[error("a reply needs at least one line")]
    NoLines,
    /// More lines than [`MAX_REPLY_LINES`].
    #[error("reply has {count} lines, the limit is {MAX_REPLY_LINES}")]
    TooManyLines {
        /// Number of lines given.
        count: usize,
    },
    /// A line that would be longer than [`MAX_REPLY_LINE_LEN`] on the wire.
    #[error("reply line {line} is {len} octets on the wire, the limit is {MAX_REPLY_LINE_LEN}")]
    LineTooLong {
        /// Index of the line, from 0.
        line: usize,
        /// Its length on the wire, code and CRLF included.
        len: usize,
    },
    /// A line with a control character other than tab (a CR or LF would
    /// end the line early on the wire).
    #[error("reply line {line} contains a control character")]
    ControlCharacter {
        /// Index of the line, from 0.
        line: usize,
    },
    /// A reply helper was given a code of the wrong class, for example
    /// [`Reply::reject`] with a 250.
    #[error("reply code {code} is not of the expected class")]
    WrongClass {
        /// The rejected code.
        code: ReplyCode,
    },
}

/// Why bytes received are not a valid reply. The error is final for the
/// connection: the reply boundary is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyParseError {
    /// A line longer than [`MAX_REPLY_LINE_LEN`], or that many octets
    /// without a line end.
    #[error("reply line {line} exceeds {MAX_REPLY_LINE_LEN} octets")]
    LineTooLong {
        /// Index of the line, from 0.
        line: usize,
    },
    /// More than [`MAX_REPLY_LINES`] lines in one reply.
    #[error("reply has more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    /// A line that does not start with a valid three-digit reply code.
    #[error("reply line {line} does not start with a valid reply code")]
    BadCode {
        /// Index of the line, from 0.
        line: usize,
    },
    /// The code is followed by something other than `-`, a space or the
    /// end of the line.
    #[error("reply line {line} has no '-' or space after the code")]
    BadSeparator {
        /// Index of the line, from 0.
        line: usize,
    },
    /// A line of a multi-line reply has a code different from the first
    /// line's (RFC 5321 section 4.2.1 requires the same code).
    #[error("reply line {line} has a different code from the first line")]
    CodeMismatch {
        /// Index of the line, from 0.
        line: usize,
    },
    /// A carriage return that is not part of a line end.
    #[error("reply line {line} contains a bare CR")]
    BareCr {
        /// Index of the line, from 0.
        line: usize,
    },
}

/// The meaning of a reply code's first digit (RFC 5321 section 4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyClass {
    /// `2yz`: the action is done.
    PositiveCompletion,
    /// `3yz`: go on with more information (after `DATA`, during `AUTH`).
    PositiveIntermediate,
    /// `4yz`: not done this time; try again later.
    TransientNegative,
    /// `5yz`: not done, and trying again will not help.
    PermanentNegative,
}

/// A validated SMTP reply code (RFC 5321 section 4.2).
///
/// The constants are the codes of RFC 5321 section 4.2.3 that the project
/// sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// 220: service ready (the greeting).
    pub const SERVICE_READY: ReplyCode = ReplyCode(220);
    /// 221: service closing transmission channel (after `QUIT`).
    pub const CLOSING: ReplyCode = ReplyCode(221);
    /// 235: authentication succeeded (RFC 4954 section 6).
    pub const AUTH_SUCCEEDED: ReplyCode = ReplyCode(235);
    /// 250: requested mail action okay, completed.
    pub const OK: ReplyCode = ReplyCode(250);
    /// 334: authentication challenge (RFC 4954 section 4).
    pub const AUTH_CHALLENGE: ReplyCode = ReplyCode(334);
    /// 354: start mail input (after `DATA`).
    pub const START_MAIL_INPUT: ReplyCode = ReplyCode(354);
    /// 421: service not available, closing transmission channel.
    pub const SERVICE_NOT_AVAILABLE: ReplyCode = ReplyCode(421);
    /// 450: mailbox unavailable, try again later.
    pub const MAILBOX_BUSY: ReplyCode = ReplyCode(450);
    /// 451: local error in processing.
    pub const LOCAL_ERROR: ReplyCode = ReplyCode(451);
    /// 452: insufficient system storage (also: too many recipients).
    pub const INSUFFICIENT_STORAGE: ReplyCode = ReplyCode(452);
    /// 500: syntax error, command unrecognized (or line too long).
    pub const SYNTAX_ERROR: ReplyCode = ReplyCode(500);
    /// 501: syntax error in parameters or arguments.
    pub const PARAMETER_ERROR: ReplyCode = ReplyCode(501);
    /// 502: command not implemented.
    pub const NOT_IMPLEMENTED: ReplyCode = ReplyCode(502);
    /// 503: bad sequence of commands.
    pub const BAD_SEQUENCE: ReplyCode = ReplyCode(503);
    /// 550: mailbox unavailable (not found, no access, policy).
    pub const MAILBOX_UNAVAILABLE: ReplyCode = ReplyCode(550);
    /// 552: exceeded storage allocation (message too big).
    pub const EXCEEDED_STORAGE: ReplyCode = ReplyCode(552);
    /// 554: transaction failed (the usual code for policy rejections).
    pub const TRANSACTION_FAILED: ReplyCode = ReplyCode(554);

    /// Validates a reply code.
    ///
    /// # Errors
    ///
    /// [`ReplyError::InvalidCode`] unless the first digit is 2 to 5 and the
    /// second 0 to 5, as RFC 5321's `Reply-code` grammar requires.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::reply::{ReplyClass, ReplyCode};
    ///
    /// let code = ReplyCode::new(451)?;
    /// assert_eq!(code.class(), ReplyClass::TransientNegative);
    /// assert!(ReplyCode::new(199).is_err());
    /// assert!(ReplyCode::new(260).is_err());
    /// # Ok::<(), mta_core::reply::ReplyError>(())
    /// ```
    pub const fn new(code: u16) -> Result<ReplyCode, ReplyError> {
        let (first, second) = (code / 100, code / 10 % 10);
        if first >= 2 && first <= 5 && second <= 5 {
            Ok(ReplyCode(code))
        } else {
            Err(ReplyError::InvalidCode { code })
        }
    }

    /// The code as a number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// What the first digit means.
    pub const fn class(self) -> ReplyClass {
        match self.0 / 100 {
            2 => ReplyClass::PositiveCompletion,
            3 => ReplyClass::PositiveIntermediate,
            4 => ReplyClass::TransientNegative,
            _ => ReplyClass::PermanentNegative,
        }
    }

    /// The enhanced status class that goes with this code, `None` for 3xx.
    pub const fn status_class(self) -> Option<StatusClass> {
        match self.class() {
            ReplyClass::PositiveCompletion => Some(StatusClass::Success),
            ReplyClass::PositiveIntermediate => None,
            ReplyClass::TransientNegative => Some(StatusClass::PersistentTransient),
            ReplyClass::PermanentNegative => Some(StatusClass::Permanent),
        }
    }

    fn from_digits(d: [u8; 3]) -> Option<ReplyCode> {
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = d.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
        ReplyCode::new(n).ok()
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u16> for ReplyCode {
    type Error = ReplyError;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        ReplyCode::new(code)
    }
}

/// The class of an enhanced status code (RFC 3463 section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatusClass {
    /// `2.X.X`: success.
    Success,
    /// `4.X.X`: persistent transient failure; a later attempt may work.
    PersistentTransient,
    /// `5.X.X`: permanent failure.
    Permanent,
}

impl StatusClass {
    /// The class digit.
    pub const fn digit(self) -> u8 {
        match self {
            StatusClass::Success => 2,
            StatusClass::PersistentTransient => 4,
            StatusClass::Permanent => 5,
        }
    }
}

/// An RFC 3463 enhanced mail system status code, `class.subject.detail`.
///
/// Subject and detail are 0 to 999 (one to three digits, section 2). The
/// constants are the codes the project's own replies and delivery results
/// use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnhancedStatus {
    class: StatusClass,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// The largest subject or detail: three digits (RFC 3463 section 2).
    pub const MAX_SUBCODE: u16 = 999;

    /// `2.0.0`: other or undefined success.
    pub const OK: EnhancedStatus = EnhancedStatus::known(StatusClass::Success, 0, 0);
    /// `4.3.2`: system not accepting network messages (section 3.5).
    pub const NOT_ACCEPTING: EnhancedStatus =
        EnhancedStatus::known(StatusClass::PersistentTransient, 3, 2);
    /// `4.4.2`: bad connection (section 3.6); what Postfix reports for a
    /// timed-out conversation.
    pub const BAD_CONNECTION: EnhancedStatus =
        EnhancedStatus::known(StatusClass::PersistentTransient, 4, 2);
    /// `5.1.1`: bad destination mailbox address (section 3.2).
    pub const BAD_MAILBOX: EnhancedStatus = EnhancedStatus::known(StatusClass::Permanent, 1, 1);
    /// `5.7.1`: delivery not authorized, message refused (section 3.8).
    pub const NOT_AUTHORIZED: EnhancedStatus = EnhancedStatus::known(StatusClass::Permanent, 7, 1);

    const fn known(class: StatusClass, subject: u16, detail: u16) -> EnhancedStatus {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// An enhanced status code from its parts.
    ///
    /// # Errors
    ///
    /// [`ReplyError::InvalidEnhancedStatus`] when subject or detail exceeds
    /// [`EnhancedStatus::MAX_SUBCODE`].
    pub fn new(class: StatusClass, subject: u16, detail: u16) -> Result<Self, ReplyError> {
        if subject > Self::MAX_SUBCODE || detail > Self::MAX_SUBCODE {
            return Err(ReplyError::InvalidEnhancedStatus {
                text: format!("{}.{subject}.{detail}", class.digit()),
            });
        }
        Ok(EnhancedStatus::known(class, subject, detail))
    }

    /// Parses `class.subject.detail`, for example `5.1.1`.
    ///
    /// RFC 3463 allows no white space and no leading zeros (`5.01.1` is
    /// refused), which keeps one spelling per code.
    ///
    /// # Errors
    ///
    /// [`ReplyError::InvalidEnhancedStatus`] for anything else.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::reply::{EnhancedStatus, StatusClass};
    ///
    /// let s = EnhancedStatus::parse("4.7.1")?;
    /// assert_eq!((s.class(), s.subject(), s.detail()), (StatusClass::PersistentTransient, 7, 1));
    /// assert_eq!(s.to_string(), "4.7.1");
    /// assert!(EnhancedStatus::parse("3.0.0").is_err());
    /// # Ok::<(), mta_core::reply::ReplyError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, ReplyError> {
        Self::parse_bytes(text.as_bytes()).ok_or_else(|| ReplyError::InvalidEnhancedStatus {
            text: text.chars().take(16).collect(),
        })
    }

    fn parse_bytes(text: &[u8]) -> Option<Self> {
        let mut parts = text.split(|&b| b == b'.');
        let class = match parts.next()? {
            b"2" => StatusClass::Success,
            b"4" => StatusClass::PersistentTransient,
            b"5" => StatusClass::Permanent,
            _ => return None,
        };
        let subject = subcode(parts.next()?)?;
        let detail = subcode(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(EnhancedStatus::known(class, subject, detail))
    }

    /// The class: success, transient or permanent.
    pub const fn class(self) -> StatusClass {
        self.class
    }

    /// The subject: what the status is about (1 addressing, 2 mailbox, 3
    /// mail system, 4 network and routing, 5 protocol, 6 content, 7
    /// security or policy).
    pub const fn subject(self) -> u16 {
        self.subject
    }

    /// The detail within the subject.
    pub const fn detail(self) -> u16 {
        self.detail
    }

    /// The same subject and detail with another class; for example Postfix's
    /// `soft_bounce` turns `5.1.1` into `4.1.1`.
    pub const fn with_class(self, class: StatusClass) -> EnhancedStatus {
        EnhancedStatus::known(class, self.subject, self.detail)
    }
}

/// One to three digits, no leading zero unless the number is 0.
fn subcode(digits: &[u8]) -> Option<u16> {
    if digits.is_empty()
        || digits.len() > 3
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u16, |n, b| n * 10 + u16::from(b - b'0')),
    )
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class.digit(), self.subject, self.detail)
    }
}

impl FromStr for EnhancedStatus {
    type Err = ReplyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EnhancedStatus::parse(s)
    }
}

/// An SMTP reply: a code, an optional enhanced status and one or more
/// lines of text.
///
/// A `Reply` is always valid to send: the constructor checks the code and
/// status agree, the line count, the line lengths on the wire, and that no
/// text contains a control character other than tab. Text may contain
/// UTF-8 (RFC 6531 allows it in replies); text that echoes client input
/// should go through [`sanitize_echo`] first.
///
/// Its [`Display`](fmt::Display) form is the one Postfix logs: the wire
/// lines without CRLF, joined by a space
/// (`550-5.1.1 first 550 5.1.1 second`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    code: ReplyCode,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl Reply {
    /// Builds a reply from its code, enhanced status and lines.
    ///
    /// A reply without enhanced status whose first line starts with text
    /// that looks like one of the right class (`250 2.1.0 ...`) is read
    /// back by [`parse_reply`] as having that status, as any client would
    /// read it.
    ///
    /// # Errors
    ///
    /// [`ReplyError::StatusMismatch`], [`ReplyError::NoLines`],
    /// [`ReplyError::TooManyLines`], [`ReplyError::LineTooLong`] and
    /// [`ReplyError::ControlCharacter`], as described there.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::reply::{EnhancedStatus, Reply, ReplyCode};
    ///
    /// let r = Reply::new(ReplyCode::OK, Some(EnhancedStatus::OK), ["Ok"])?;
    /// assert_eq!(r.to_string(), "250 2.0.0 Ok");
    /// assert!(Reply::new(ReplyCode::OK, Some(EnhancedStatus::BAD_MAILBOX), ["x"]).is_err());
    /// # Ok::<(), mta_core::reply::ReplyError>(())
    /// ```
    pub fn new<I, S>(
        code: ReplyCode,
        status: Option<EnhancedStatus>,
        lines: I,
    ) -> Result<Reply, ReplyError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match status {
            Some(status) if code.status_class() != Some(status.class()) => {
                return Err(ReplyError::StatusMismatch { code, status });
            }
            _ => {}
        }
        let lines: Vec<String> = lines.into_iter().map(Into::into).collect();
        if lines.is_empty() {
            return Err(ReplyError::NoLines);
        }
        if lines.len() > MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines { count: lines.len() });
        }
        let max_text = max_text_len(status);
        for (line, text) in lines.iter().enumerate() {
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(ReplyError::ControlCharacter { line });
            }
            if text.len() > max_text {
                return Err(ReplyError::LineTooLong {
                    line,
                    len: text.len() + MAX_REPLY_LINE_LEN - max_text,
                });
            }
        }
        Ok(Reply {
            code,
            status,
            lines,
        })
    }

    /// A reply for which every part is known to be valid.
    fn known(code: ReplyCode, status: Option<EnhancedStatus>, text: &str) -> Reply {
        Reply {
            code,
            status,
            lines: vec![text.to_owned()],
        }
    }

    /// `250 2.0.0 Ok`.
    pub fn ok() -> Reply {
        Reply::known(ReplyCode::OK, Some(EnhancedStatus::OK), "Ok")
    }

    /// `250 2.0.0 Ok: queued as ID`, the answer to a message accepted into
    /// the queue.
    pub fn queued(id: &QueueId) -> Reply {
        let text = format!("Ok: queued as {id}");
        Reply::known(ReplyCode::OK, Some(EnhancedStatus::OK), &text)
    }

    /// `221 2.0.0 Bye`, the answer to `QUIT`.
    pub fn bye() -> Reply {
        Reply::known(ReplyCode::CLOSING, Some(EnhancedStatus::OK), "Bye")
    }

    /// `354 End data with <CR><LF>.<CR><LF>`, the answer to `DATA`.
    pub fn start_mail_input() -> Reply {
        Reply::known(
            ReplyCode::START_MAIL_INPUT,
            None,
            "End data with <CR><LF>.<CR><LF>",
        )
    }

    /// `421 4.3.2 Service shutting down`, sent before closing the
    /// connection when the server stops.
    pub fn shutting_down() -> Reply {
        Reply::known(
            ReplyCode::SERVICE_NOT_AVAILABLE,
            Some(EnhancedStatus::NOT_ACCEPTING),
            "Service shutting down",
        )
    }

    /// A refusal: a 4xx or 5xx code, the enhanced status of the same class
    /// with the given subject and detail, and one line of text. This makes
    /// the 450/550 families (`450 4.1.1`, `550 5.1.1`, `554 5.7.1`, ...).
    ///
    /// # Errors
    ///
    /// [`ReplyError::WrongClass`] for a 2xx or 3xx code, and the errors of
    /// [`EnhancedStatus::new`] and [`Reply::new`].
    ///
    /// # Example
    ///
    /// ```
    /// use mta_core::reply::{sanitize_echo, Reply, ReplyCode, MAX_ECHO_LEN};
    ///
    /// let rcpt = sanitize_echo(b"<nobody@example.com>", MAX_ECHO_LEN);
    /// let text = format!("{rcpt}: Recipient address rejected: User unknown");
    /// let r = Reply::reject(ReplyCode::MAILBOX_UNAVAILABLE, 1, 1, text)?;
    /// assert_eq!(
    ///     r.to_string(),
    ///     "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"
    /// );
    /// # Ok::<(), mta_core::reply::ReplyError>(())
    /// ```
    pub fn reject(
        code: ReplyCode,
        subject: u16,
        detail: u16,
        text: impl Into<String>,
    ) -> Result<Reply, ReplyError> {
        let class = match code.class() {
            ReplyClass::TransientNegative => StatusClass::PersistentTransient,
            ReplyClass::PermanentNegative => StatusClass::Permanent,
            _ => return Err(ReplyError::WrongClass { code }),
        };
        let status = EnhancedStatus::new(class, subject, detail)?;
        Reply::new(code, Some(status), [text])
    }

    /// The reply code.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The enhanced status code, if the reply has one.
    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The lines of text, without code and enhanced status. Never empty.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Appends the reply's wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len() - 1;
        for (i, text) in self.lines.iter().enumerate() {
            self.write_line(out, text, i == last);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reply's wire form: every line with its code, `-` on all lines
    /// but the last, the enhanced status, the text and CRLF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.iter().map(|l| l.len() + 16).sum());
        self.write_to(&mut out);
        out
    }

    /// One line without its CRLF.
    fn write_line(&self, out: &mut Vec<u8>, text: &str, last: bool) {
        out.extend_from_slice(self.code.to_string().as_bytes());
        out.push(if last { b' ' } else { b'-' });
        if let Some(status) = self.status {
            out.extend_from_slice(status.to_string().as_bytes());
            if !text.is_empty() {
                out.push(b' ');
            }
        }
        out.extend_from_slice(text.as_bytes());
        // `250 ` with nothing after the space is outside RFC 5321's grammar
        // (textstring is not empty); the bare code is inside it.
        if last && self.status.is_none() && text.is_empty() {
            out.pop();
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = Vec::new();
        let last = self.lines.len() - 1;
        for (i, text) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            line.clear();
            self.write_line(&mut line, text, i == last);
            f.write_str(&String::from_utf8_lossy(&line))?;
        }
        Ok(())
    }
}

/// The longest text a reply line can carry with this status.
fn max_text_len(status: Option<EnhancedStatus>) -> usize {
    let status_len = status.map_or(0, |s| s.to_string().len() + 1);
    MAX_REPLY_LINE_LEN - LINE_OVERHEAD - status_len
}

/// The result of [`parse_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseStatus<'a> {
    /// A complete reply, and the number of bytes of input it took.
    Complete(ReplyView<'a>, usize),
    /// The input ends before the reply does; read more and call again.
    Partial,
}

/// A parsed reply that borrows its text from the input buffer.
///
/// The text is bytes as the server sent them, not necessarily UTF-8;
/// [`ReplyView::to_reply`] makes an owned, clean [`Reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyView<'a> {
    code: ReplyCode,
    status: Option<EnhancedStatus>,
    raw: &'a [u8],
    line_count: usize,
}

impl<'a> ReplyView<'a> {
    /// The reply code.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The enhanced status code, if the first line starts with one whose
    /// class matches the reply code.
    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The number of lines.
    pub fn line_count(&self) -> usize {
        self.line_count
    }

    /// The reply as received, line ends included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The text of each line, without code, separator, enhanced status and
    /// line end. On lines after the first, the enhanced status is removed
    /// only where it is present (not every server repeats it).
    pub fn lines(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let status = self.status;
        self.raw
            .split_inclusive(|&b| b == b'\n')
            .map(move |line| line_text(strip_line_end(line), status))
    }

    /// An owned [`Reply`] with the same code, status and lines.
    ///
    /// Bytes that are not valid UTF-8 and control characters other than
    /// tab become `?`. A line that is too long once the enhanced status is
    /// put back in front of it (a server that did not repeat it) is cut to
    /// fit.
    pub fn to_reply(&self) -> Reply {
        let max_text = max_text_len(self.status);
        let lines = self
            .lines()
            .map(|text| clean_text(text, max_text))
            .collect();
        Reply {
            code: self.code,
            status: self.status,
            lines,
        }
    }
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The text of a well-formed line: after the code and separator, and after
/// the enhanced status when it is there.
fn line_text(line: &[u8], status: Option<EnhancedStatus>) -> &[u8] {
    let text = line.get(4..).unwrap_or_default();
    match status {
        Some(status) => match leading_status(text) {
            Some((found, rest)) if found == status => rest,
            _ => text,
        },
        None => text,
    }
}

/// An enhanced status at the start of `text`, ended by a space or the end
/// of the text, and the text after that space.
fn leading_status(text: &[u8]) -> Option<(EnhancedStatus, &[u8])> {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    // At most "5.999.999": looking further is pointless.
    if end > 9 {
        return None;
    }
    let status = EnhancedStatus::parse_bytes(&text[..end])?;
    Some((status, text.get(end + 1..).unwrap_or_default()))
}

/// Valid UTF-8 without control characters (tab allowed), at most
/// `max_len` octets, with `?` for whatever is not.
fn clean_text(text: &[u8], max_len: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_len));
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                out.push('?');
            } else {
                out.push(c);
            }
        }
        out.extend(std::iter::repeat_n('?', chunk.invalid().len()));
    }
    if out.len() > max_len {
        let mut end = max_len;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// Reads one complete reply from the start of `input`.
///
/// Lines end with CRLF; a bare LF is accepted too, as servers that end
/// lines that way exist and nothing is ambiguous about it in a reply. A
/// line has the code, then `-` (more lines follow), a space or nothing
/// (last line), then the text. The enhanced status is recognised when the
/// first line's text starts with one whose class matches the code.
///
/// # Errors
///
/// A [`ReplyParseError`] as soon as the input cannot be the start of a
/// valid reply, including a line over [`MAX_REPLY_LINE_LEN`] or more than
/// [`MAX_REPLY_LINES`] lines, so a hostile server cannot make the caller
/// buffer without end.
///
/// # Example
///
/// ```
/// use mta_core::reply::{parse_reply, ParseStatus};
///
/// let input = b"250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n220 next";
/// let ParseStatus::Complete(view, used) = parse_reply(input)? else { panic!() };
/// assert_eq!(view.code().get(), 250);
/// assert_eq!(view.lines().collect::<Vec<_>>(), [&b"mx.example.com"[..], b"PIPELINING", b"8BITMIME"]);
/// assert_eq!(&input[used..], b"220 next");
/// assert_eq!(parse_reply(&input[..10])?, ParseStatus::Partial);
/// # Ok::<(), mta_core::reply::ReplyParseError>(())
/// ```
pub fn parse_reply(input: &[u8]) -> Result<ParseStatus<'_>, ReplyParseError> {
    let mut pos = 0;
    let mut line = 0;
    let mut first: Option<(ReplyCode, Option<EnhancedStatus>)> = None;
    loop {
        if line >= MAX_REPLY_LINES {
            return Err(ReplyParseError::TooManyLines);
        }
        let rest = &input[pos..];
        let window = &rest[..rest.len().min(MAX_REPLY_LINE_LEN)];
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            if rest.len() >= MAX_REPLY_LINE_LEN {
                return Err(ReplyParseError::LineTooLong { line });
            }
            // Check what has arrived, so garbage fails now rather than
            // after 512 octets.
            check_line_start(rest, line, first.map(|f| f.0))?;
            return Ok(ParseStatus::Partial);
        };
        let content = strip_line_end(&rest[..=nl]);
        if content.contains(&b'\r') {
            return Err(ReplyParseError::BareCr { line });
        }
        let (code, last) = check_line_start(content, line, first.map(|f| f.0))?;
        let Some(code) = code else {
            // Fewer than three octets before the line end.
            return Err(ReplyParseError::BadCode { line });
        };
        if first.is_none() {
            let status = leading_status(content.get(4..).unwrap_or_default())
                .map(|(s, _)| s)
                .filter(|s| code.status_class() == Some(s.class()));
            first = Some((code, status));
        }
        pos += nl + 1;
        line += 1;
        if last {
            let (code, status) = first.unwrap_or((code, None));
            let view = ReplyView {
                code,
                status,
                raw: &input[..pos],
                line_count: line,
            };
            return Ok(ParseStatus::Complete(view, pos));
        }
    }
}

/// Checks the code and separator of a line, complete or not. Returns the
/// code when three octets are there, and whether this is the last line.
fn check_line_start(
    bytes: &[u8],
    line: usize,
    expected: Option<ReplyCode>,
) -> Result<(Option<ReplyCode>, bool), ReplyParseError> {
    let digits = &bytes[..bytes.len().min(3)];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(ReplyParseError::BadCode { line });
    }
    if bytes.len() < 3 {
        return Ok((None, false));
    }
    let code = ReplyCode::from_digits([bytes[0], bytes[1], bytes[2]])
        .ok_or(ReplyParseError::BadCode { line })?;
    if expected.is_some_and(|e| e != code) {
        return Err(ReplyParseError::CodeMismatch { line });
    }
    let last = match bytes.get(3) {
        // A CR here is the start of the line end of a line still arriving
        // (complete lines reach this point without theirs).
        None | Some(b' ' | b'\r') => true,
        Some(b'-') => false,
        Some(_) => return Err(ReplyParseError::BadSeparator { line }),
    };
    Ok((Some(code), last))
}

/// Makes client-supplied text safe to echo in a reply or a log line.
///
/// Every octet outside printable ASCII (control characters, DEL and all
/// 8-bit octets, so also UTF-8) becomes `?`, and the result is cut to
/// `max_len` octets. The result can be put in a [`Reply`] line as long as
/// the rest of the line leaves room; [`MAX_ECHO_LEN`] is a sensible
/// `max_len`.
///
/// # Example
///
/// ```
/// use mta_core::reply::sanitize_echo;
///
/// assert_eq!(sanitize_echo(b"evil\r\n250 ok\x00", 100), "evil??250 ok?");
/// assert_eq!(sanitize_echo("héllo".as_bytes(), 100), "h??llo");
/// assert_eq!(sanitize_echo(b"abcdef", 3), "abc");
/// ```
pub fn sanitize_echo(input: &[u8], max_len: usize) -> String {
    input
        .iter()
        .take(max_len)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(input: &[u8]) -> (ReplyView<'_>, usize) {
        match parse_reply(input) {
            Ok(ParseStatus::Complete(view, used)) => (view, used),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn code(n: u16) -> ReplyCode {
        ReplyCode::new(n).unwrap()
    }

    #[test]
    fn reply_codes() {
        for ok in [200, 211, 220, 250, 259, 334, 354, 421, 450, 555, 559] {
            assert_eq!(code(ok).get(), ok);
        }
        for bad in [0, 99, 100, 199, 260, 299, 360, 600, 999, 1000, 2500] {
            assert_eq!(
                ReplyCode::new(bad),
                Err(ReplyError::InvalidCode { code: bad })
            );
        }
        assert_eq!(code(250).class(), ReplyClass::PositiveCompletion);
        assert_eq!(code(354).class(), ReplyClass::PositiveIntermediate);
        assert_eq!(code(421).class(), ReplyClass::TransientNegative);
        assert_eq!(code(554).class(), ReplyClass::PermanentNegative);
        assert_eq!(code(354).status_class(), None);
        assert_eq!(ReplyCode::try_from(250), Ok(ReplyCode::OK));
    }

    #[test]
    fn enhanced_status_syntax() {
        let s = EnhancedStatus::parse("5.1.1").unwrap();
        assert_eq!(s, EnhancedStatus::BAD_MAILBOX);
        assert_eq!(s.to_string(), "5.1.1");
        assert_eq!(
            EnhancedStatus::parse("2.999.0").unwrap().to_string(),
            "2.999.0"
        );
        assert_eq!(
            EnhancedStatus::parse("4.0.0").unwrap().class(),
            StatusClass::PersistentTransient
        );
        for bad in [
            "", "5", "5.1", "5.1.1.1", "3.1.1", "1.0.0", "6.0.0", "5.01.1", "5.1.01", "5.1000.1",
            "5.1.1000", "5..1", "5.1.", " 5.1.1", "5.1.1 ", "5.a.1", "+5.1.1", "05.1.1",
        ] {
            assert!(EnhancedStatus::parse(bad).is_err(), "{bad:?}");
        }
        assert!(EnhancedStatus::new(StatusClass::Success, 1000, 0).is_err());
        assert_eq!(
            EnhancedStatus::BAD_MAILBOX
                .with_class(StatusClass::PersistentTransient)
                .to_string(),
            "4.1.1"
        );
    }

    #[test]
    fn renders_like_postfix() {
        assert_eq!(Reply::ok().to_bytes(), b"250 2.0.0 Ok\r\n");
        assert_eq!(Reply::bye().to_bytes(), b"221 2.0.0 Bye\r\n");
        assert_eq!(
            Reply::start_mail_input().to_bytes(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        assert_eq!(
            Reply::shutting_down().to_bytes(),
            b"421 4.3.2 Service shutting down\r\n"
        );
        let id = QueueId::from_parts(1_700_000_000, 5, 42);
        assert_eq!(
            Reply::queued(&id).to_string(),
            format!("250 2.0.0 Ok: queued as {id}")
        );
        let r = Reply::new(
            code(550),
            Some(EnhancedStatus::BAD_MAILBOX),
            ["one", "two", "three"],
        )
        .unwrap();
        assert_eq!(
            r.to_bytes(),
            b"550-5.1.1 one\r\n550-5.1.1 two\r\n550 5.1.1 three\r\n"
        );
        assert_eq!(r.to_string(), "550-5.1.1 one 550-5.1.1 two 550 5.1.1 three");
        let ehlo = Reply::new(code(250), None, ["mx.example.com", "PIPELINING", ""]).unwrap();
        assert_eq!(
            ehlo.to_bytes(),
            b"250-mx.example.com\r\n250-PIPELINING\r\n250\r\n"
        );
        let empty = Reply::new(code(250), Some(EnhancedStatus::OK), [""]).unwrap();
        assert_eq!(empty.to_bytes(), b"250 2.0.0\r\n");
    }

    #[test]
    fn construction_limits() {
        assert_eq!(
            Reply::new(code(250), None, Vec::<String>::new()),
            Err(ReplyError::NoLines)
        );
        assert!(matches!(
            Reply::new(code(354), Some(EnhancedStatus::OK), ["x"]),
            Err(ReplyError::StatusMismatch { .. })
        ));
        assert!(matches!(
            Reply::new(code(451), Some(EnhancedStatus::OK), ["x"]),
            Err(ReplyError::StatusMismatch { .. })
        ));
        assert_eq!(
            Reply::new(code(250), None, vec!["x"; MAX_REPLY_LINES + 1]),
            Err(ReplyError::TooManyLines {
                count: MAX_REPLY_LINES + 1
            })
        );
        assert!(Reply::new(code(250), None, vec!["x"; MAX_REPLY_LINES]).is_ok());
        // 512 octets exactly fit: "250 " + 506 + CRLF.
        let fits = "a".repeat(506);
        let r = Reply::new(code(250), None, [fits.as_str()]).unwrap();
        assert_eq!(r.to_bytes().len(), MAX_REPLY_LINE_LEN);
        assert_eq!(
            Reply::new(code(250), None, ["a".repeat(507)]),
            Err(ReplyError::LineTooLong { line: 0, len: 513 })
        );
        let fits = "a".repeat(500);
        let r = Reply::new(code(250), Some(EnhancedStatus::OK), [fits]).unwrap();
        assert_eq!(r.to_bytes().len(), MAX_REPLY_LINE_LEN);
        assert!(Reply::new(code(250), Some(EnhancedStatus::OK), ["a".repeat(501)]).is_err());
        for bad in ["a\rb", "a\nb", "\0", "\x7f", "\u{85}"] {
            assert_eq!(
                Reply::new(code(250), None, ["fine", bad]),
                Err(ReplyError::ControlCharacter { line: 1 })
            );
        }
        assert!(Reply::new(code(250), None, ["tab\there", "ünïcödé"]).is_ok());
        assert!(matches!(
            Reply::reject(code(250), 0, 0, "x"),
            Err(ReplyError::WrongClass { .. })
        ));
        assert_eq!(
            Reply::reject(code(450), 7, 1, "try later")
                .unwrap()
                .to_string(),
            "450 4.7.1 try later"
        );
    }

    #[test]
    fn parses_single_and_multi_line() {
        let (v, used) = complete(b"220 mx.example.com ESMTP\r\n");
        assert_eq!(used, 26);
        assert_eq!(v.code(), code(220));
        assert_eq!(v.status(), None);
        assert_eq!(v.lines().collect::<Vec<_>>(), [b"mx.example.com ESMTP"]);

        let (v, _) = complete(b"250\r\n");
        assert_eq!(v.lines().collect::<Vec<_>>(), [b""]);
        let (v, _) = complete(b"250 \r\n");
        assert_eq!(v.to_reply(), Reply::new(code(250), None, [""]).unwrap());

        // Enhanced status only on the first line, as some servers send it.
        let (v, _) = complete(b"550-5.1.1 one\r\n550 two\r\n");
        assert_eq!(v.status(), Some(EnhancedStatus::BAD_MAILBOX));
        assert_eq!(v.lines().collect::<Vec<_>>(), [&b"one"[..], b"two"]);
        assert_eq!(v.line_count(), 2);

        // A status of the wrong class is text.
        let (v, _) = complete(b"250 5.1.1 odd\r\n");
        assert_eq!(v.status(), None);
        assert_eq!(v.lines().next(), Some(&b"5.1.1 odd"[..]));
        // Not a status: leading zero, or no space after it.
        assert_eq!(complete(b"550 5.01.1 x\r\n").0.status(), None);
        assert_eq!(complete(b"550 5.1.1: x\r\n").0.status(), None);

        // Bare LF line ends.
        let (v, used) = complete(b"250-a\n250 b\n");
        assert_eq!(used, 12);
        assert_eq!(v.lines().collect::<Vec<_>>(), [&b"a"[..], b"b"]);
    }

    #[test]
    fn partial_and_pipelined_input() {
        assert_eq!(parse_reply(b""), Ok(ParseStatus::Partial));
        assert_eq!(parse_reply(b"25"), Ok(ParseStatus::Partial));
        assert_eq!(parse_reply(b"250-a\r\n250"), Ok(ParseStatus::Partial));
        assert_eq!(parse_reply(b"250 ok\r"), Ok(ParseStatus::Partial));
        let input = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n";
        let (v, used) = complete(input);
        assert_eq!(used, 14);
        assert_eq!(v.status().map(|s| s.to_string()), Some("2.1.0".into()));
        let (v, used2) = complete(&input[used..]);
        assert_eq!(v.status().map(|s| s.to_string()), Some("2.1.5".into()));
        let (v, _) = complete(&input[used + used2..]);
        assert_eq!(v.code(), ReplyCode::START_MAIL_INPUT);
    }

    #[test]
    fn parse_errors() {
        use ReplyParseError::*;
        assert_eq!(parse_reply(b"HTTP/1.1 400"), Err(BadCode { line: 0 }));
        assert_eq!(parse_reply(b"2x0 ok\r\n"), Err(BadCode { line: 0 }));
        assert_eq!(parse_reply(b"199 ok\r\n"), Err(BadCode { line: 0 }));
        assert_eq!(parse_reply(b"25\r\n"), Err(BadCode { line: 0 }));
        assert_eq!(parse_reply(b"\r\n"), Err(BadCode { line: 0 }));
        assert_eq!(parse_reply(b"250x"), Err(BadSeparator { line: 0 }));
        assert_eq!(parse_reply(b"250_ok\r\n"), Err(BadSeparator { line: 0 }));
        assert_eq!(
            parse_reply(b"250-a\r\n251 b\r\n"),
            Err(CodeMismatch { line: 1 })
        );
        assert_eq!(parse_reply(b"250-a\r\n251"), Err(CodeMismatch { line: 1 }));
        assert_eq!(parse_reply(b"250 a\rb\r\n"), Err(BareCr { line: 0 }));
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 506));
        long.extend_from_slice(b"\r\n");
        assert_eq!(long.len(), MAX_REPLY_LINE_LEN);
        assert!(matches!(
            parse_reply(&long),
            Ok(ParseStatus::Complete(_, 512))
        ));
        long.insert(5, b'a');
        assert_eq!(parse_reply(&long), Err(LineTooLong { line: 0 }));
        assert_eq!(parse_reply(&long[..512]), Err(LineTooLong { line: 0 }));
        assert_eq!(parse_reply(&long[..511]), Ok(ParseStatus::Partial));
        let many = b"250-x\r\n".repeat(MAX_REPLY_LINES);
        assert_eq!(parse_reply(&many), Err(TooManyLines));
        let mut enough = b"250-x\r\n".repeat(MAX_REPLY_LINES - 1);
        enough.extend_from_slice(b"250 x\r\n");
        assert!(matches!(
            parse_reply(&enough),
            Ok(ParseStatus::Complete(..))
        ));
    }

    #[test]
    fn to_reply_cleans_server_text() {
        let (v, _) = complete(b"550-5.7.1 bad\xff\x01text\r\n550 5.7.1 caf\xc3\xa9\r\n");
        let r = v.to_reply();
        assert_eq!(r.lines(), ["bad??text", "café"]);
        // A server that did not repeat the status on a full-length line:
        // the text is cut to fit once the status is put back.
        let mut input = b"550-5.7.1 a\r\n550 ".to_vec();
        input.extend(std::iter::repeat_n(b'b', 506));
        input.extend_from_slice(b"\r\n");
        let r = complete(&input).0.to_reply();
        assert_eq!(r.lines()[1].len(), 500);
        assert_eq!(r.to_bytes().len(), 13 + 512);
    }

    #[test]
    fn sanitize() {
        assert_eq!(sanitize_echo(b"", 10), "");
        assert_eq!(sanitize_echo(b"<a@b>", 10), "<a@b>");
        assert_eq!(sanitize_echo(b"\t\x1b[31m\x7f", 10), "??[31m?");
        assert_eq!(
            sanitize_echo(&[b'x'; 1000], MAX_ECHO_LEN).len(),
            MAX_ECHO_LEN
        );
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let code = (2u16..=5, 0u16..=5, 0u16..=9).prop_map(|(a, b, c)| code(a * 100 + b * 10 + c));
        let text = prop_oneof![
            "[ -~\t]{0,40}",
            "[0-9. ]{0,12}",
            "\\PC{0,20}",
            Just(String::new()),
        ];
        (
            code,
            any::<bool>(),
            0u16..=999,
            0u16..=999,
            proptest::collection::vec(text, 1..6),
        )
            .prop_filter_map(
                "valid reply",
                |(code, with_status, subject, detail, lines)| {
                    let status = code
                        .status_class()
                        .filter(|_| with_status)
                        .map(|class| EnhancedStatus::new(class, subject, detail).unwrap());
                    Reply::new(code, status, lines).ok()
                },
            )
    }

    /// A reply without enhanced status whose first line starts with one is
    /// read back with it; generated replies that do so are left out.
    fn unambiguous(r: &Reply) -> bool {
        r.status().is_some()
            || leading_status(r.lines()[0].as_bytes())
                .is_none_or(|(s, _)| r.code().status_class() != Some(s.class()))
    }

    proptest! {
        #[test]
        fn parse_render_round_trip(r in arb_reply()) {
            prop_assume!(unambiguous(&r));
            let wire = r.to_bytes();
            let (view, used) = complete(&wire);
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(view.line_count(), r.lines().len());
            prop_assert_eq!(view.to_reply(), r);
        }

        #[test]
        fn every_prefix_is_partial(r in arb_reply()) {
            let wire = r.to_bytes();
            for end in 0..wire.len() {
                prop_assert_eq!(parse_reply(&wire[..end]), Ok(ParseStatus::Partial));
            }
        }

        #[test]
        fn reply_followed_by_more(r in arb_reply(), tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut wire = r.to_bytes();
            let len = wire.len();
            wire.extend_from_slice(&tail);
            let (_, used) = complete(&wire);
            prop_assert_eq!(used, len);
        }

        #[test]
        fn parser_never_panics_and_to_reply_round_trips(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(ParseStatus::Complete(view, used)) = parse_reply(&input) {
                prop_assert!(used <= input.len());
                let r = view.to_reply();
                let wire = r.to_bytes();
                prop_assert_eq!(complete(&wire).0.to_reply(), r);
            }
        }

        #[test]
        fn sanitized_text_is_always_a_valid_line(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            let clean = sanitize_echo(&input, MAX_ECHO_LEN);
            prop_assert!(clean.len() <= MAX_ECHO_LEN);
            prop_assert!(Reply::reject(ReplyCode::TRANSACTION_FAILED, 7, 1, clean).is_ok());
        }

        #[test]
        fn enhanced_status_round_trip(class in proptest::sample::select(vec![StatusClass::Success, StatusClass::PersistentTransient, StatusClass::Permanent]), s in 0u16..=999, d in 0u16..=999) {
            let st = EnhancedStatus::new(class, s, d).unwrap();
            prop_assert_eq!(EnhancedStatus::parse(&st.to_string()), Ok(st));
        }
    }
}
