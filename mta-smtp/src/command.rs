//! SMTP and LMTP commands: one command line in, a typed [`Command`] out.
//!
//! [`parse_command`] reads one line (without its line end) and returns a
//! [`Command`] that borrows its text from the line, or a
//! [`CommandError`] that says, through [`CommandError::reply`], what the
//! server answers: the codes and texts are Postfix 3.7's `smtpd`, checked
//! against it. Finding the line in the input is the session's job
//! ([`crate::server`]), since how a line ends is a policy there.
//!
//! Addresses are parsed into [`ReversePath`] and [`MailAddress`] at once
//! (with the caller's [`ParseOptions`]), and the ESMTP parameters of MAIL
//! and RCPT into [`MailParameters`] and [`RcptParameters`]: `SIZE`,
//! `BODY=7BIT|8BITMIME|BINARYMIME`, `SMTPUTF8`, `AUTH=`, `RET`, `ENVID`,
//! `NOTIFY` and `ORCPT`. The xtext values (`ENVID`, `ORCPT`, `AUTH`) are
//! checked and kept encoded, as they were sent: they are carried, not
//! interpreted.
//!
//! # Example
//!
//! ```
//! use mta_core::address::ParseOptions;
//! use mta_smtp::command::{parse_command, Body, Command};
//!
//! let cmd = parse_command(b"MAIL FROM:<joe@example.com> SIZE=1024 BODY=8BITMIME", ParseOptions::LENIENT)?;
//! let Command::Mail { from, params } = cmd else { panic!() };
//! assert_eq!(from.to_string(), "<joe@example.com>");
//! assert_eq!(params.size, Some(1024));
//! assert_eq!(params.body, Some(Body::EightBitMime));
//!
//! let err = parse_command(b"RCPT TO:<x", ParseOptions::LENIENT).unwrap_err();
//! assert_eq!(err.reply().to_string(), "501 5.1.3 Bad recipient address syntax");
//! # Ok::<(), mta_smtp::command::CommandError>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use mta_core::address::{AddressError, MailAddress, ParseOptions, ReversePath};
use mta_core::reply::{EnhancedStatus, Reply, ReplyCode, StatusClass};

/// The longest command line, line end included, that RFC 5321 section
/// 4.5.3.1.4 requires a server to accept. Servers may accept longer ones;
/// the session's limit is Postfix's `line_length_limit` (2048).
pub const RFC_COMMAND_LINE_LEN: usize = 512;

/// The most ESMTP parameters one MAIL or RCPT command may carry. RFC 5321
/// sets no number; every defined parameter fits many times over.
pub const MAX_PARAMETERS: usize = 16;

/// The longest `ENVID` value, in xtext form (RFC 3461 section 4.4: 100
/// characters once decoded; encoded it can be up to three times that).
pub const MAX_ENVID_LEN: usize = 300;

/// The longest `ORCPT` value, in xtext form (RFC 3461 section 4.2: 500
/// characters).
pub const MAX_ORCPT_LEN: usize = 500;

/// The largest `BDAT` chunk size that is accepted at all. A chunk is
/// streamed, never held, so this only bounds the number: larger than any
/// `message_size_limit`.
pub const MAX_BDAT_CHUNK: u64 = 1 << 40;

/// One SMTP or LMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `HELO name`.
    Helo(&'a str),
    /// `EHLO name`.
    Ehlo(&'a str),
    /// `LHLO name` (LMTP).
    Lhlo(&'a str),
    /// `MAIL FROM:<path> [parameters]`.
    Mail {
        /// The reverse path.
        from: ReversePath,
        /// The ESMTP parameters.
        params: MailParameters<'a>,
    },
    /// `RCPT TO:<path> [parameters]`.
    Rcpt {
        /// The forward path.
        to: MailAddress,
        /// The ESMTP parameters.
        params: RcptParameters<'a>,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// The number of octets that follow the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [text]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY text`.
    Vrfy(&'a str),
    /// `EXPN text`.
    Expn(&'a str),
    /// `HELP [topic]`.
    Help(&'a str),
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        /// The mechanism name, as sent.
        mechanism: &'a str,
        /// The initial response, base64 as sent (`=` for an empty one).
        initial_response: Option<&'a str>,
    },
    /// `ETRN [#|@]domain` (RFC 1985).
    Etrn(&'a str),
}

impl Command<'_> {
    /// The command's verb in upper case, as Postfix names commands in
    /// its logs (`MAIL`, `RCPT`, `BDAT`...).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Helo(_) => "HELO",
            Command::Ehlo(_) => "EHLO",
            Command::Lhlo(_) => "LHLO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::Help(_) => "HELP",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
            Command::Etrn(_) => "ETRN",
        }
    }
}

/// The body type of a message: the `BODY=` parameter of MAIL (RFC 6152,
/// RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    /// `7BIT` (also what no parameter means).
    #[default]
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME`: binary content, only with BDAT, sent byte for byte.
    BinaryMime,
}

/// The `RET=` parameter of MAIL (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `FULL`: return the whole message in a failure notice.
    Full,
    /// `HDRS`: return only its headers.
    Hdrs,
}

/// Decodes RFC 3461 xtext (`+2B` for `+`): `None` when `text` is not
/// xtext. For the `AUTH=` and `ENVID=` parameters.
///
/// ```
/// use mta_smtp::command::decode_xtext;
/// assert_eq!(decode_xtext("alice+2Bwork@example.com").as_deref(), Some("alice+work@example.com"));
/// assert_eq!(decode_xtext("a+zz"), None);
/// ```
pub fn decode_xtext(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
                {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b @ 33..=126 if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The ESMTP parameters of a MAIL command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParameters<'a> {
    /// `SIZE=n`: the size the client declares.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `AUTH=`: the xtext-encoded authenticated sender, `<>` for none.
    pub auth: Option<Cow<'a, str>>,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`: the envelope ID, xtext-encoded.
    pub envid: Option<Cow<'a, str>>,
}

impl MailParameters<'_> {
    /// The same parameters, owning their text.
    pub fn into_owned(self) -> MailParameters<'static> {
        MailParameters {
            size: self.size,
            body: self.body,
            smtputf8: self.smtputf8,
            auth: self.auth.map(|a| Cow::Owned(a.into_owned())),
            ret: self.ret,
            envid: self.envid.map(|e| Cow::Owned(e.into_owned())),
        }
    }
}

/// The `NOTIFY=` parameter of RCPT (RFC 3461).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    /// `NEVER`.
    pub never: bool,
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

impl fmt::Display for Notify {
    /// Renders the parameter value (`SUCCESS,FAILURE`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.never {
            return f.write_str("NEVER");
        }
        let words = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ];
        let mut first = true;
        for (on, word) in words {
            if on {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(word)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// The ESMTP parameters of a RCPT command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParameters<'a> {
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=type;xtext`: the original recipient as sent.
    pub orcpt: Option<Cow<'a, str>>,
}

impl RcptParameters<'_> {
    /// The same parameters, owning their text.
    pub fn into_owned(self) -> RcptParameters<'static> {
        RcptParameters {
            notify: self.notify,
            orcpt: self.orcpt.map(|o| Cow::Owned(o.into_owned())),
        }
    }
}

/// Why a command line was refused. [`CommandError::reply`] gives the
/// reply for each, in one exhaustive match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The verb is not one this server knows.
    #[error("command not recognized")]
    Unknown,
    /// The line has bytes that cannot be in a command: NUL, or 8-bit
    /// bytes that are not UTF-8.
    #[error("bad syntax")]
    BadBytes,
    /// The verb is known but its arguments are malformed; the verb is
    /// named.
    #[error("syntax error in {0}")]
    Syntax(&'static str),
    /// The reverse path of MAIL is malformed.
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// The forward path of RCPT is malformed.
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    /// An ESMTP parameter this server does not support (the text as
    /// sent, cut to a safe length and cleaned).
    #[error("unsupported option: {0}")]
    UnsupportedOption(String),
    /// `SIZE=` is not a number.
    #[error("bad SIZE syntax")]
    BadSize,
    /// `NOTIFY=` is malformed.
    #[error("bad NOTIFY syntax")]
    BadNotify,
    /// `ORCPT=` is malformed.
    #[error("bad ORCPT syntax")]
    BadOrcpt,
    /// `ENVID=` is malformed.
    #[error("bad ENVID syntax")]
    BadEnvid,
    /// `RET=` is malformed.
    #[error("bad RET syntax")]
    BadRet,
    /// `AUTH=` is malformed.
    #[error("bad AUTH syntax")]
    BadAuthParameter,
    /// More than [`MAX_PARAMETERS`] parameters.
    #[error("too many parameters")]
    TooManyParameters,
}

impl CommandError {
    /// The reply Postfix's `smtpd` gives for this error.
    ///
    /// ```
    /// use mta_smtp::command::CommandError;
    /// assert_eq!(CommandError::Unknown.reply().to_string(), "500 5.5.2 Error: command not recognized");
    /// ```
    pub fn reply(&self) -> Reply {
        let (code, status, text): (u16, Option<(u16, u16)>, String) = match self {
            CommandError::Unknown => (500, Some((5, 2)), "Error: command not recognized".into()),
            CommandError::BadBytes => (500, Some((5, 2)), "Error: bad syntax".into()),
            CommandError::Syntax(verb) => {
                let usage = match *verb {
                    // Before EHLO, no enhanced status (Postfix's usage).
                    "HELO" => return plain(501, "Syntax: HELO hostname"),
                    "EHLO" => return plain(501, "Syntax: EHLO hostname"),
                    "LHLO" => return plain(501, "Syntax: LHLO hostname"),
                    "ETRN" => return plain(500, "Syntax: ETRN domain"),
                    "BDAT" => {
                        return build(521, Some((5, 4)), "Syntax: BDAT count [LAST]".into());
                    }
                    "MAIL" => "Syntax: MAIL FROM:<address>",
                    "RCPT" => "Syntax: RCPT TO:<address>",
                    "VRFY" => "Syntax: VRFY address [SMTPUTF8]",
                    "EXPN" => "Syntax: EXPN address [SMTPUTF8]",
                    "AUTH" => "Syntax: AUTH mechanism",
                    "DATA" => "Syntax: DATA",
                    "RSET" => "Syntax: RSET",
                    "QUIT" => "Syntax: QUIT",
                    "STARTTLS" => "Syntax: STARTTLS",
                    _ => "Error: bad syntax",
                };
                (501, Some((5, 4)), usage.into())
            }
            CommandError::BadSender(_) => (501, Some((1, 7)), "Bad sender address syntax".into()),
            CommandError::BadRecipient(_) => {
                (501, Some((1, 3)), "Bad recipient address syntax".into())
            }
            CommandError::UnsupportedOption(what) => {
                (555, Some((5, 4)), format!("Unsupported option: {what}"))
            }
            CommandError::BadSize => (501, Some((5, 4)), "Bad message size syntax".into()),
            CommandError::BadNotify => (
                501,
                Some((5, 4)),
                "Error: Bad NOTIFY parameter syntax".into(),
            ),
            CommandError::BadOrcpt => (
                501,
                Some((5, 4)),
                "Error: Bad ORCPT parameter syntax".into(),
            ),
            CommandError::BadEnvid => (
                501,
                Some((5, 4)),
                "Error: Bad ENVID parameter syntax".into(),
            ),
            CommandError::BadRet => (501, Some((5, 4)), "Error: Bad RET parameter syntax".into()),
            CommandError::BadAuthParameter => {
                (501, Some((5, 5)), "Error: Bad AUTH parameter syntax".into())
            }
            CommandError::TooManyParameters => {
                (501, Some((5, 4)), "Error: too many parameters".into())
            }
        };
        build(code, status, text)
    }
}

fn plain(code: u16, text: &str) -> Reply {
    build(code, None, text.to_string())
}

/// A reply from a code, an optional enhanced status `(subject, detail)`
/// whose class follows the code, and one line of text.
pub(crate) fn build(code: u16, status: Option<(u16, u16)>, text: String) -> Reply {
    let code = ReplyCode::new(code).expect("reply codes here are valid");
    let status = status.map(|(subject, detail)| {
        let class = match code.get() / 100 {
            2 => StatusClass::Success,
            4 => StatusClass::PersistentTransient,
            _ => StatusClass::Permanent,
        };
        EnhancedStatus::new(class, subject, detail).expect("status codes here are valid")
    });
    Reply::new(code, status, [text]).expect("replies here are valid")
}

/// Parses one command line, without its line end.
///
/// Verbs and parameter names are case-insensitive. Arguments are split at
/// spaces and tabs, as Postfix's `smtpd` splits them. Addresses are parsed
/// with `opts` (`strict_rfc821_envelopes` and whether 8-bit text is
/// acceptable; `SMTPUTF8` in the same MAIL command also allows it for the
/// sender).
///
/// # Errors
///
/// A [`CommandError`]; its [`reply`](CommandError::reply) is what to send.
pub fn parse_command(line: &[u8], opts: ParseOptions) -> Result<Command<'_>, CommandError> {
    if line.contains(&0) {
        return Err(CommandError::BadBytes);
    }
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadBytes)?;
    let trimmed = line.trim_start_matches([' ', '\t']);
    let verb_end = trimmed.find([' ', '\t']).unwrap_or(trimmed.len());
    let (verb, rest) = trimmed.split_at(verb_end);
    let arg = rest.trim_matches([' ', '\t']);
    let no_arg = |cmd: Command<'static>, name: &'static str| {
        if arg.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax(name))
        }
    };
    let named = |name: &'static str| -> Result<&str, CommandError> {
        if arg.is_empty() {
            Err(CommandError::Syntax(name))
        } else {
            Ok(arg)
        }
    };
    let verb_is = |name: &str| verb.eq_ignore_ascii_case(name);
    if verb_is("HELO") {
        named("HELO").map(Command::Helo)
    } else if verb_is("EHLO") {
        named("EHLO").map(Command::Ehlo)
    } else if verb_is("LHLO") {
        named("LHLO").map(Command::Lhlo)
    } else if verb_is("MAIL") {
        parse_mail(arg, opts)
    } else if verb_is("RCPT") {
        parse_rcpt(arg, opts)
    } else if verb_is("DATA") {
        no_arg(Command::Data, "DATA")
    } else if verb_is("BDAT") {
        parse_bdat(arg)
    } else if verb_is("RSET") {
        no_arg(Command::Rset, "RSET")
    } else if verb_is("NOOP") {
        // RFC 5321 4.1.1.9: NOOP may have a parameter, to be ignored.
        Ok(Command::Noop)
    } else if verb_is("QUIT") {
        no_arg(Command::Quit, "QUIT")
    } else if verb_is("VRFY") {
        named("VRFY").map(Command::Vrfy)
    } else if verb_is("EXPN") {
        named("EXPN").map(Command::Expn)
    } else if verb_is("HELP") {
        Ok(Command::Help(arg))
    } else if verb_is("STARTTLS") {
        no_arg(Command::StartTls, "STARTTLS")
    } else if verb_is("AUTH") {
        let mut words = arg.split([' ', '\t']).filter(|w| !w.is_empty());
        let mechanism = words.next().ok_or(CommandError::Syntax("AUTH"))?;
        let initial_response = words.next();
        if words.next().is_some() {
            return Err(CommandError::Syntax("AUTH"));
        }
        Ok(Command::Auth {
            mechanism,
            initial_response,
        })
    } else if verb_is("ETRN") {
        named("ETRN").map(Command::Etrn)
    } else {
        Err(CommandError::Unknown)
    }
}

/// The text after `FROM:` or `TO:`. Postfix allows white space after
/// the colon (in both modes), not before it.
fn after_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].strip_prefix(':')?;
    let rest = rest.trim_start_matches([' ', '\t']);
    (!rest.is_empty()).then_some(rest)
}

fn parameters(text: &str) -> Result<Vec<(&str, Option<&str>)>, CommandError> {
    let mut out = Vec::new();
    for word in text.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if out.len() == MAX_PARAMETERS {
            return Err(CommandError::TooManyParameters);
        }
        match word.split_once('=') {
            Some((name, value)) => out.push((name, Some(value))),
            None => out.push((word, None)),
        }
    }
    Ok(out)
}

fn unsupported(word: &str) -> CommandError {
    CommandError::UnsupportedOption(mta_core::reply::sanitize_echo(word.as_bytes(), 100))
}

fn full_word<'a>(name: &'a str, value: Option<&'a str>) -> String {
    match value {
        Some(v) => format!("{name}={v}"),
        None => name.to_string(),
    }
}

fn parse_mail(arg: &str, opts: ParseOptions) -> Result<Command<'_>, CommandError> {
    let path = after_keyword(arg, "FROM").ok_or(CommandError::Syntax("MAIL"))?;
    // Find the path's end first, allowing 8-bit text: SMTPUTF8 among the
    // parameters decides whether it may stay.
    let (from, rest) = ReversePath::parse_prefix(path, opts.with_smtputf8(true))
        .map_err(CommandError::BadSender)?;
    let mut params = MailParameters::default();
    for (name, value) in parameters(rest)? {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        match value {
            Some(v) if is("SIZE") => {
                params.size = Some(
                    (!v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| v.parse().ok())
                        .flatten()
                        .ok_or(CommandError::BadSize)?,
                );
            }
            Some(v) if is("BODY") => {
                params.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                    Body::SevenBit
                } else if v.eq_ignore_ascii_case("8BITMIME") {
                    Body::EightBitMime
                } else if v.eq_ignore_ascii_case("BINARYMIME") {
                    Body::BinaryMime
                } else {
                    return Err(unsupported(&full_word(name, value)));
                });
            }
            None if is("SMTPUTF8") => params.smtputf8 = true,
            Some(v) if is("AUTH") => {
                if !(v == "<>" || is_xtext(v)) || v.len() > 500 {
                    return Err(CommandError::BadAuthParameter);
                }
                params.auth = Some(Cow::Borrowed(v));
            }
            Some(v) if is("RET") => {
                params.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                    Ret::Full
                } else if v.eq_ignore_ascii_case("HDRS") {
                    Ret::Hdrs
                } else {
                    return Err(CommandError::BadRet);
                });
            }
            Some(v) if is("ENVID") => {
                if v.is_empty() || v.len() > MAX_ENVID_LEN || !is_xtext(v) {
                    return Err(CommandError::BadEnvid);
                }
                params.envid = Some(Cow::Borrowed(v));
            }
            _ => return Err(unsupported(&full_word(name, value))),
        }
    }
    // Without SMTPUTF8, parse again as ASCII for the precise error.
    let from = if params.smtputf8 || opts.smtputf8 || path.is_ascii() {
        from
    } else {
        ReversePath::parse_prefix(path, opts)
            .map_err(CommandError::BadSender)?
            .0
    };
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(arg: &str, opts: ParseOptions) -> Result<Command<'_>, CommandError> {
    let path = after_keyword(arg, "TO").ok_or(CommandError::Syntax("RCPT"))?;
    let (to, rest) =
        MailAddress::parse_forward_path_prefix(path, opts).map_err(CommandError::BadRecipient)?;
    let mut params = RcptParameters::default();
    for (name, value) in parameters(rest)? {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        match value {
            Some(v) if is("NOTIFY") => params.notify = Some(parse_notify(v)?),
            Some(v) if is("ORCPT") => {
                let (kind, text) = v.split_once(';').ok_or(CommandError::BadOrcpt)?;
                let atom = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                };
                if !atom(kind) || text.is_empty() || v.len() > MAX_ORCPT_LEN || !is_xtext(text) {
                    return Err(CommandError::BadOrcpt);
                }
                params.orcpt = Some(Cow::Borrowed(v));
            }
            _ => return Err(unsupported(&full_word(name, value))),
        }
    }
    Ok(Command::Rcpt { to, params })
}

fn parse_notify(value: &str) -> Result<Notify, CommandError> {
    let mut notify = Notify::default();
    for word in value.split(',') {
        let flag = if word.eq_ignore_ascii_case("NEVER") {
            &mut notify.never
        } else if word.eq_ignore_ascii_case("SUCCESS") {
            &mut notify.success
        } else if word.eq_ignore_ascii_case("FAILURE") {
            &mut notify.failure
        } else if word.eq_ignore_ascii_case("DELAY") {
            &mut notify.delay
        } else {
            return Err(CommandError::BadNotify);
        };
        *flag = true;
    }
    // RFC 3461 4.1: NEVER stands alone.
    if notify.never && (notify.success || notify.failure || notify.delay) {
        return Err(CommandError::BadNotify);
    }
    Ok(notify)
}

fn parse_bdat(arg: &str) -> Result<Command<'_>, CommandError> {
    let mut words = arg.split([' ', '\t']).filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.len() <= 20 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .filter(|&n| n <= MAX_BDAT_CHUNK)
        .ok_or(CommandError::Syntax("BDAT"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax("BDAT")),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax("BDAT"));
    }
    Ok(Command::Bdat { size, last })
}

/// Whether `text` is well-formed xtext (RFC 3461 section 4): printable
/// ASCII except `+` and `=`, and `+XX` with two upper-case hex digits.
pub fn is_xtext(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                match (b.get(i + 1), b.get(i + 2)) {
                    (Some(&h), Some(&l)) if hex(h) && hex(l) => i += 3,
                    _ => return false,
                }
            }
            b'!'..=b'~' if b[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command<'_>, CommandError> {
        parse_command(line.as_bytes(), ParseOptions::LENIENT)
    }

    fn reply_of(line: &str) -> String {
        parse(line).unwrap_err().reply().to_string()
    }

    #[test]
    fn verbs_are_case_insensitive_and_arguments_trimmed() {
        assert_eq!(
            parse("helo  mx.example.com ").unwrap(),
            Command::Helo("mx.example.com")
        );
        assert_eq!(parse("Ehlo x").unwrap(), Command::Ehlo("x"));
        assert_eq!(parse("LHLO x").unwrap(), Command::Lhlo("x"));
        assert_eq!(parse("data").unwrap(), Command::Data);
        assert_eq!(parse("NOOP anything").unwrap(), Command::Noop);
        assert_eq!(parse("HELP").unwrap(), Command::Help(""));
        assert_eq!(parse("quit").unwrap(), Command::Quit);
        assert_eq!(parse("STARTTLS").unwrap(), Command::StartTls);
        assert_eq!(
            parse("AUTH PLAIN AGEAYg==").unwrap(),
            Command::Auth {
                mechanism: "PLAIN",
                initial_response: Some("AGEAYg==")
            }
        );
        assert_eq!(
            parse("ETRN @example.com").unwrap(),
            Command::Etrn("@example.com")
        );
    }

    /// The replies below were taken from Postfix 3.7's smtpd.
    #[test]
    fn errors_reply_as_postfix_does() {
        assert_eq!(reply_of("HELO"), "501 Syntax: HELO hostname");
        assert_eq!(reply_of("EHLO"), "501 Syntax: EHLO hostname");
        assert_eq!(reply_of("FOO"), "500 5.5.2 Error: command not recognized");
        assert_eq!(
            reply_of("MAIL FROM:<a@b> FOO=1"),
            "555 5.5.4 Unsupported option: FOO=1"
        );
        assert_eq!(
            reply_of("MAIL FROM:<a@b> SIZE=abc"),
            "501 5.5.4 Bad message size syntax"
        );
        assert_eq!(
            reply_of("MAIL FROM:<a@b> BODY=9BIT"),
            "555 5.5.4 Unsupported option: BODY=9BIT"
        );
        assert_eq!(
            reply_of("RCPT TO:<x@example.com> NOTIFY=BAD"),
            "501 5.5.4 Error: Bad NOTIFY parameter syntax"
        );
        assert_eq!(
            reply_of("RCPT TO:<x@example.com> NOTIFY=SUCCESS,NEVER"),
            "501 5.5.4 Error: Bad NOTIFY parameter syntax"
        );
        assert_eq!(
            reply_of("RCPT TO:<x@example.com> FOO"),
            "555 5.5.4 Unsupported option: FOO"
        );
        assert_eq!(
            reply_of("RCPT TO:<x"),
            "501 5.1.3 Bad recipient address syntax"
        );
        assert_eq!(reply_of("RCPT TO:"), "501 5.5.4 Syntax: RCPT TO:<address>");
        assert_eq!(
            reply_of("RCPT TO:<y@example.com> ORCPT=bad"),
            "501 5.5.4 Error: Bad ORCPT parameter syntax"
        );
        assert_eq!(reply_of("ETRN"), "500 Syntax: ETRN domain");
        assert_eq!(reply_of("BDAT x"), "521 5.5.4 Syntax: BDAT count [LAST]");
        assert_eq!(
            reply_of("BDAT 10 LASTX"),
            "521 5.5.4 Syntax: BDAT count [LAST]"
        );
        assert_eq!(reply_of("DATA x"), "501 5.5.4 Syntax: DATA");
        assert_eq!(reply_of("RSET x"), "501 5.5.4 Syntax: RSET");
        assert_eq!(
            reply_of("VRFY"),
            "501 5.5.4 Syntax: VRFY address [SMTPUTF8]"
        );
        assert_eq!(
            reply_of("MAIL TO:<a@b>"),
            "501 5.5.4 Syntax: MAIL FROM:<address>"
        );
        assert_eq!(
            reply_of("MAIL FROM:<a@b@c>"),
            "501 5.1.7 Bad sender address syntax"
        );
    }

    #[test]
    fn mail_parameters_are_typed() {
        let Command::Mail { from, params } = parse(
            "MAIL FROM:<a@example.com> SIZE=10 BODY=binarymime SMTPUTF8 RET=HDRS ENVID=ab+2Bc AUTH=<>",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(from.to_string(), "<a@example.com>");
        assert_eq!(
            params,
            MailParameters {
                size: Some(10),
                body: Some(Body::BinaryMime),
                smtputf8: true,
                auth: Some("<>".into()),
                ret: Some(Ret::Hdrs),
                envid: Some("ab+2Bc".into()),
            }
        );
        // Postfix accepts a space after the colon and a bare path.
        assert!(parse("MAIL FROM: <>").is_ok());
        assert!(parse("MAIL FROM:a@b").is_ok());
        assert!(parse_command(b"MAIL FROM: <a@b>", ParseOptions::STRICT).is_ok());
        assert!(matches!(
            parse("MAIL FROM : <a@b>"),
            Err(CommandError::Syntax("MAIL"))
        ));
        assert!(matches!(
            parse_command(b"MAIL FROM:a@b", ParseOptions::STRICT),
            Err(CommandError::BadSender(_))
        ));
        assert!(matches!(
            parse("MAIL FROM:<a@b> ENVID=a+zz"),
            Err(CommandError::BadEnvid)
        ));
        assert!(matches!(
            parse("MAIL FROM:<a@b> RET=x"),
            Err(CommandError::BadRet)
        ));
        assert!(matches!(
            parse("MAIL FROM:<a@b> SIZE=99999999999999999999999"),
            Err(CommandError::BadSize)
        ));
    }

    #[test]
    fn smtputf8_allows_utf8_in_the_sender_only_when_declared() {
        assert!(matches!(
            parse("MAIL FROM:<jös@example.com>"),
            Err(CommandError::BadSender(_))
        ));
        assert!(parse("MAIL FROM:<jös@example.com> SMTPUTF8").is_ok());
        assert!(matches!(parse("HELO \u{0}x"), Err(CommandError::BadBytes)));
        assert!(matches!(
            parse_command(b"HELO \xff", ParseOptions::LENIENT),
            Err(CommandError::BadBytes)
        ));
    }

    #[test]
    fn rcpt_parameters_are_typed() {
        let Command::Rcpt { to, params } =
            parse("RCPT TO:<x@example.com> NOTIFY=success,DELAY ORCPT=rfc822;x+40y@example.com")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(to.to_string(), "x@example.com");
        assert_eq!(params.notify.unwrap().to_string(), "SUCCESS,DELAY");
        assert_eq!(params.orcpt.as_deref(), Some("rfc822;x+40y@example.com"));
        assert!(matches!(
            parse("RCPT TO:<x@y> ORCPT=rfc822;"),
            Err(CommandError::BadOrcpt)
        ));
    }

    #[test]
    fn bdat_sizes() {
        assert_eq!(
            parse("BDAT 0 LAST").unwrap(),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        assert_eq!(
            parse("bdat 4096").unwrap(),
            Command::Bdat {
                size: 4096,
                last: false
            }
        );
        assert!(parse("BDAT -1").is_err());
        assert!(parse("BDAT 1 LAST x").is_err());
        assert!(parse(&format!("BDAT {}", MAX_BDAT_CHUNK + 1)).is_err());
    }

    #[test]
    fn too_many_parameters() {
        let line = format!(
            "RCPT TO:<a@b>{}",
            " NOTIFY=NEVER".repeat(MAX_PARAMETERS + 1)
        );
        assert!(matches!(parse(&line), Err(CommandError::TooManyParameters)));
    }

    #[test]
    fn xtext() {
        assert!(is_xtext("abc+2B+3D"));
        assert!(!is_xtext("a+2"));
        assert!(!is_xtext("a+2b"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("a b"));
        assert!(is_xtext(""));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_errors_have_replies(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Err(e) = parse_command(&line, ParseOptions::LENIENT) {
                let r = e.reply();
                proptest::prop_assert!(r.code().get() >= 500);
            }
        }
    }
}
