//! The `pipe` agent, as Postfix's `pipe(8)`: a message handed to an
//! external command, such as the seed's procmail transport:
//!
//! ```text
//! procmail  unix  -  n  n  -  -  pipe flags=R user=vmail
//!   argv=/usr/bin/procmail -t -m USER=${user} EXTENSION=${extension} /etc/procmailrc
//! ```
//!
//! The `master.cf` attributes: `flags=`, `user=name[:group]` (required;
//! never root), `argv=` (the rest of the line), `size=`, `eol=`,
//! `directory=`, `null_sender=`. The command runs without a shell, with a
//! clean environment (`export_environment` and `PATH=/usr/bin:/bin`), in
//! its own process group, as the `user=` account when `mtad` runs as
//! root (otherwise as the user `mtad` runs as), with the message on its
//! standard input.
//!
//! `argv` macros: `${sender}`, `${recipient}`, `${original_recipient}`,
//! `${user}`, `${extension}`, `${mailbox}`, `${domain}`, `${nexthop}`,
//! `${size}`, `${queue_id}`, `${client_address}`, `${client_hostname}`,
//! `${client_helo}`, `${client_port}`, `${client_protocol}`,
//! `${sasl_username}`, `${service}`; `$name` works too, `$$` is a dollar.
//! An argument with a per-recipient macro is repeated once per recipient
//! of the batch, as `pipe(8)` does (set `SERVICE_destination_recipient_limit
//! = 1` for one command per recipient; the `D` and `O` flags imply it).
//!
//! Flags: `F` (a `From_` line), `R` (`Return-Path:`), `O`
//! (`X-Original-To:`), `D` (`Delivered-To:`), `.` (dot-stuffing), `>`
//! (`>From ` quoting), `B` (a blank line at the end), `q` (quote the
//! addresses of `${sender}` and `${recipient}` as RFC 5321 does), `u`
//! and `h` (fold the local part and the domain of recipient macros to
//! lower case), `X` (accepted: the delivery is final).
//!
//! The exit status decides, as `pipe(8)`'s: 0 delivers; output that
//! starts with an enhanced status code (`4.2.2 mailbox full`) uses it;
//! a `<sysexits.h>` status maps to its DSN (`EX_TEMPFAIL` 75 and
//! `EX_OSERR` 71 defer, the others bounce); any other status bounces
//! (`Command died with status N`); death by a signal defers; the time
//! limit kills the process group and bounces (`Command time limit
//! exceeded`). Up to 4 KiB of the command's output goes into the reason.
//!
//! # Example
//!
//! ```no_run
//! use mta_core::config::{Config, HostFacts};
//! use mta_delivery::pipe::{PipeAgent, PipeConfig};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::parse("", "main.cf", HostFacts::default())?;
//! let operands: Vec<String> = "flags=R user=vmail argv=/usr/bin/procmail -t -m USER=${user} /etc/procmailrc"
//!     .split(' ').map(String::from).collect();
//! let agent = PipeAgent::new(PipeConfig::parse("procmail", &operands, &config)?);
//! # let _ = agent;
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mta_core::address::{
    Domain, LocalPart, MailAddress, ParseOptions, RecipientDelimiter, ReversePath,
};
use mta_core::config::{Config, ConfigError};
use mta_core::delivery::{
    DeliveryAgent, DeliveryFuture, DeliveryReport, DeliveryRequest, DeliveryStatus, Recipient,
    RecipientResult, Relay, StatusDetail,
};
use mta_core::reply::{EnhancedStatus, StatusClass};

use crate::command::{self, CommandSpec};
use crate::headers::DeliveryHeaders;
use crate::macros;

/// A `master.cf` pipe entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PipeConfigError {
    /// An attribute is missing or wrong.
    #[error("service {service}: {message}")]
    Attribute {
        /// The service name.
        service: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A parameter the agent reads from main.cf is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The `pipe(8)` flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeFlags {
    /// `F`: a `From sender  date` line first.
    pub from_line: bool,
    /// `R`: `Return-Path:`.
    pub return_path: bool,
    /// `O`: `X-Original-To:`.
    pub original_to: bool,
    /// `D`: `Delivered-To:`.
    pub delivered_to: bool,
    /// `.`: a `.` before each line that starts with `.`.
    pub dot_stuff: bool,
    /// `>`: a `>` before each line that starts with `From `.
    pub quote_from: bool,
    /// `B`: a blank line after the message.
    pub blank_line: bool,
    /// `q`: addresses in macros quoted as in SMTP.
    pub quote_addresses: bool,
    /// `u`: recipient local parts folded to lower case.
    pub fold_user: bool,
    /// `h`: recipient domains folded to lower case.
    pub fold_host: bool,
}

impl PipeFlags {
    fn parse(text: &str) -> Result<PipeFlags, char> {
        let mut f = PipeFlags::default();
        for c in text.chars() {
            match c {
                'F' => f.from_line = true,
                'R' => f.return_path = true,
                'O' => f.original_to = true,
                'D' => f.delivered_to = true,
                '.' => f.dot_stuff = true,
                '>' => f.quote_from = true,
                'B' => f.blank_line = true,
                'q' => f.quote_addresses = true,
                'u' => f.fold_user = true,
                'h' => f.fold_host = true,
                // Final delivery (DSN "delivered" rather than "relayed"):
                // what this agent reports anyway.
                'X' => {}
                other => return Err(other),
            }
        }
        Ok(f)
    }
}

/// What one pipe service runs, and how.
#[derive(Debug, Clone)]
pub struct PipeConfig {
    /// The `master.cf` service name (`relay=` in logs).
    pub service: String,
    /// The `argv=` words, with their macros unexpanded.
    pub argv: Vec<String>,
    /// The flags.
    pub flags: PipeFlags,
    /// The `user=` account name, as written (`name` or `name:group`).
    pub user: String,
    /// The uid and gid to run as: the `user=` account's when the caller
    /// may switch to it (root), `None` to run as the calling process.
    pub run_as: Option<(u32, u32)>,
    /// `size=`: larger messages bounce.
    pub size_limit: Option<u64>,
    /// `eol=`: the line ending written (default LF).
    pub eol: Vec<u8>,
    /// `null_sender=`: what `${sender}` is for the null sender.
    pub null_sender: String,
    /// `directory=`: where the command runs (default `queue_directory`).
    pub directory: PathBuf,
    /// The environment the command gets.
    pub environment: Vec<(String, String)>,
    /// `recipient_delimiter`, for `${user}` and `${extension}`.
    pub recipient_delimiter: RecipientDelimiter,
}

/// The macros an argument may use.
const MACROS: [&str; 17] = [
    "sender",
    "recipient",
    "original_recipient",
    "user",
    "extension",
    "mailbox",
    "domain",
    "nexthop",
    "size",
    "queue_id",
    "client_address",
    "client_hostname",
    "client_helo",
    "client_port",
    "client_protocol",
    "sasl_username",
    "service",
];

/// The macros that differ from one recipient to the next.
const PER_RECIPIENT: [&str; 6] = [
    "recipient",
    "original_recipient",
    "user",
    "extension",
    "mailbox",
    "domain",
];

impl PipeConfig {
    /// Reads a pipe entry's operands (`flags=R user=vmail argv=...`, as
    /// [`mta_core::config::master_cf::Command::operands`] gives them) and
    /// the main.cf parameters it uses. `user=` is looked up in the
    /// password database; as root its uid and gid are used.
    ///
    /// # Errors
    ///
    /// [`PipeConfigError`] for a missing `user=` or `argv=`, `user=` of
    /// root, an unknown user or group, an unknown flag or macro, a bad
    /// `size=`.
    pub fn parse(
        service: &str,
        operands: &[String],
        config: &Config,
    ) -> Result<PipeConfig, PipeConfigError> {
        let bad = |message: String| PipeConfigError::Attribute {
            service: service.to_owned(),
            message,
        };
        let mut flags = PipeFlags::default();
        let mut user = None;
        let mut argv = Vec::new();
        let mut size_limit = None;
        let mut eol = b"\n".to_vec();
        let mut null_sender = "MAILER-DAEMON".to_owned();
        let mut directory = None;
        let mut words = operands.iter();
        for word in words.by_ref() {
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| bad(format!("bad attribute \"{word}\": expected name=value")))?;
            match name {
                "flags" => {
                    flags = PipeFlags::parse(value)
                        .map_err(|c| bad(format!("unknown flag \"{c}\" in flags={value}")))?;
                }
                "user" => user = Some(value.to_owned()),
                "size" => {
                    size_limit =
                        Some(value.parse::<u64>().map_err(|_| {
                            bad(format!("size={value}: expected a number of bytes"))
                        })?);
                }
                "eol" => eol = unescape(value).into_bytes(),
                "null_sender" => null_sender = value.to_owned(),
                "directory" => directory = Some(PathBuf::from(value)),
                "argv" => {
                    argv.push(value.to_owned());
                    break;
                }
                // Accepted and not needed here.
                "quote_recipient" | "chroot" => {}
                other => return Err(bad(format!("unknown attribute \"{other}\""))),
            }
        }
        argv.extend(words.cloned());
        if argv.first().is_none_or(String::is_empty) {
            return Err(bad("missing argv= command".into()));
        }
        for arg in &argv {
            if let Err(e) = macros::expand(arg, &|_| Some(String::new())) {
                return Err(bad(format!("bad macro in \"{arg}\": {e}")));
            }
            for name in macros::names(arg) {
                if !MACROS.contains(&name.as_str()) {
                    return Err(bad(format!("unknown macro ${{{name}}} in \"{arg}\"")));
                }
            }
        }
        let user = user.ok_or_else(|| {
            bad("missing user= attribute (pipe(8) will not run commands as root)".into())
        })?;
        let run_as = if nix::unistd::geteuid().is_root() {
            Some(lookup_user(&user).map_err(bad)?)
        } else {
            None
        };
        let mut environment = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        for name in config.list("export_environment")? {
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (name.clone(), std::env::var(&name).ok()),
            };
            if let Some(value) = value {
                environment.push((name, value));
            }
        }
        let directory = match directory {
            Some(d) => d,
            None => PathBuf::from(config.expanded("queue_directory")?),
        };
        Ok(PipeConfig {
            service: service.to_owned(),
            argv,
            flags,
            user,
            run_as,
            size_limit,
            eol,
            null_sender,
            directory,
            environment,
            recipient_delimiter: RecipientDelimiter::new(&config.expanded("recipient_delimiter")?),
        })
    }
}

/// `\n`, `\r`, `\t` and `\\` in `eol=`.
fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The uid and gid of `name` or `name:group`; never root.
fn lookup_user(spec: &str) -> Result<(u32, u32), String> {
    let (name, group) = match spec.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (spec, None),
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("user={spec}: {e}"))?
        .ok_or_else(|| format!("user={spec}: unknown user \"{name}\""))?;
    let gid = match group {
        None => user.gid.as_raw(),
        Some(g) => nix::unistd::Group::from_name(g)
            .map_err(|e| format!("user={spec}: {e}"))?
            .ok_or_else(|| format!("user={spec}: unknown group \"{g}\""))?
            .gid
            .as_raw(),
    };
    if user.uid.is_root() || gid == 0 {
        return Err(format!(
            "user={spec} specifies root privileges: name an unprivileged account"
        ));
    }
    Ok((user.uid.as_raw(), gid))
}

/// The `pipe` delivery agent for one `master.cf` service.
pub struct PipeAgent {
    config: Arc<PipeConfig>,
}

impl PipeAgent {
    /// An agent running what `config` says.
    pub fn new(config: PipeConfig) -> PipeAgent {
        PipeAgent {
            config: Arc::new(config),
        }
    }

    /// The command line for `recipients` of `request`.
    fn command_line(
        &self,
        request: &DeliveryRequest,
        recipients: &[&Recipient],
    ) -> Result<Vec<String>, String> {
        let c = &self.config;
        let envelope = &request.envelope;
        let render = |a: &MailAddress| {
            if c.flags.quote_addresses {
                a.render()
            } else {
                match a.domain() {
                    Some(d) => format!("{}@{}", a.local_part().as_str(), d.as_str()),
                    None => a.local_part().as_str().to_owned(),
                }
            }
        };
        let fold = |a: &MailAddress| -> MailAddress {
            if !c.flags.fold_user && !c.flags.fold_host {
                return a.clone();
            }
            let mut local = a.local_part().as_str().to_owned();
            if c.flags.fold_user {
                local = local.to_lowercase();
            }
            let domain = a.domain().and_then(|d| {
                let text = if c.flags.fold_host {
                    d.as_str().to_ascii_lowercase()
                } else {
                    d.as_str().to_owned()
                };
                Domain::parse(&text, ParseOptions::LENIENT.with_smtputf8(true)).ok()
            });
            LocalPart::new(local)
                .ok()
                .and_then(|l| MailAddress::new(l, domain).ok())
                .unwrap_or_else(|| a.clone())
        };
        let shared = |name: &str| -> Option<String> {
            let client = envelope.client.as_ref();
            Some(match name {
                "sender" => match &envelope.sender {
                    ReversePath::Null => c.null_sender.clone(),
                    ReversePath::Mailbox(a) => render(a),
                },
                "nexthop" => request.nexthop.clone(),
                "size" => request.content.size().to_string(),
                "queue_id" => envelope.queue_id.to_string(),
                "service" => c.service.clone(),
                "client_address" => client?.address.to_string(),
                "client_hostname" => client?.hostname.clone(),
                "client_helo" => client?.helo.clone()?,
                "client_port" => client?.port.to_string(),
                "client_protocol" => client?.protocol.clone(),
                "sasl_username" => client?.sasl_username.clone()?,
                _ => return None,
            })
        };
        let per_recipient = |name: &str, r: &Recipient| -> Option<String> {
            let address = fold(&r.address);
            let local = address.local_part().as_str();
            let ext = c.recipient_delimiter.split(local);
            Some(match name {
                "recipient" => render(&address),
                "original_recipient" => render(&fold(r.original.as_ref().unwrap_or(&r.address))),
                "mailbox" => local.to_owned(),
                "user" => ext.as_ref().map_or(local, |e| e.base).to_owned(),
                "extension" => ext.as_ref().map_or("", |e| e.extension).to_owned(),
                "domain" => address.domain().map(|d| d.as_str().to_owned())?,
                _ => return None,
            })
        };
        let mut line = Vec::new();
        for arg in &c.argv {
            let names = macros::names(arg);
            if names.iter().any(|n| PER_RECIPIENT.contains(&n.as_str())) {
                for r in recipients {
                    line.push(macros::expand(arg, &|n| {
                        per_recipient(n, r).or_else(|| shared(n))
                    })?);
                }
            } else {
                line.push(macros::expand(arg, &|n| shared(n))?);
            }
        }
        Ok(line)
    }

    /// Runs the command once for `recipients`; the status applies to all.
    async fn run(&self, request: &DeliveryRequest, recipients: &[&Recipient]) -> DeliveryStatus {
        let c = &self.config;
        let relay = Relay::Transport(c.service.clone());
        if c.size_limit
            .is_some_and(|limit| request.content.size() > limit)
        {
            return DeliveryStatus::Bounced(StatusDetail::new(
                EnhancedStatus::new(StatusClass::Permanent, 2, 3).expect("valid"),
                "message file too big",
                relay,
            ));
        }
        let argv = match self.command_line(request, recipients) {
            Ok(argv) => argv,
            // Checked when the entry was read; kept so nothing panics.
            Err(e) => {
                return DeliveryStatus::Deferred(StatusDetail::new(
                    EnhancedStatus::new(StatusClass::PersistentTransient, 3, 5).expect("valid"),
                    format!("mail system configuration error: {e}"),
                    relay,
                ));
            }
        };
        let spec = CommandSpec {
            argv,
            environment: c.environment.clone(),
            directory: c.directory.clone(),
            run_as: c.run_as,
        };
        let quoter = LineQuoter::new(c.flags, c.eol.clone());
        let head = self.head(request, recipients);
        let ran = command::run(&spec, head, quoter, &request.content, request.time_limit).await;
        command::status(
            &ran,
            &spec.argv[0],
            &relay,
            &format!("delivered via {} service", c.service),
        )
    }

    /// The lines the flags put before the message.
    fn head(&self, request: &DeliveryRequest, recipients: &[&Recipient]) -> Vec<u8> {
        let f = self.config.flags;
        let mut head = Vec::new();
        if f.from_line {
            let from = match &request.envelope.sender {
                ReversePath::Null => "MAILER-DAEMON".to_owned(),
                ReversePath::Mailbox(a) => a.render(),
            };
            head.extend_from_slice(
                format!(
                    "From {from}  {}\n",
                    mta_core::date::ctime(SystemTime::now())
                )
                .as_bytes(),
            );
        }
        if f.return_path || f.original_to || f.delivered_to {
            let r = recipients[0];
            let h = DeliveryHeaders::new(&request.envelope, r);
            // DeliveryHeaders renders all three; keep the ones asked for.
            let rendered = String::from_utf8_lossy(&h.render()).into_owned();
            for line in rendered.split_inclusive('\n') {
                let keep = (f.return_path && line.starts_with("Return-Path:"))
                    || (f.original_to && line.starts_with("X-Original-To:"))
                    || (f.delivered_to && line.starts_with("Delivered-To:"));
                if keep {
                    head.extend_from_slice(line.as_bytes());
                }
            }
        }
        head
    }
}

/// The message as the command reads it after the `.`, `>` and `B` flags
/// and `eol=` (without the lines the `F`, `R`, `O`, `D` flags put in
/// front), from content that arrives in `chunks`: the result does not
/// depend on where the chunks split it.
///
/// # Example
///
/// ```
/// use mta_delivery::pipe::{PipeFlags, transform_content};
///
/// let flags = PipeFlags { dot_stuff: true, quote_from: true, ..PipeFlags::default() };
/// let out = transform_content(flags, b"\r\n", &[b"From me\n.", b"dot"]);
/// assert_eq!(out, b">From me\r\n..dot\r\n");
/// ```
pub fn transform_content(flags: PipeFlags, eol: &[u8], chunks: &[&[u8]]) -> Vec<u8> {
    let mut quoter = LineQuoter::new(flags, eol.to_vec());
    let mut out = Vec::new();
    for chunk in chunks {
        quoter.push(chunk, &mut out, true);
    }
    quoter.finish(&mut out);
    out
}

/// The content transformations of the `.`, `>`, `B` flags and `eol=`,
/// streamed: only the first bytes of each line are held back until it is
/// known whether the line needs a prefix.
pub(crate) struct LineQuoter {
    flags: PipeFlags,
    eol: Vec<u8>,
    /// The start of the current line, while undecided.
    pending: Vec<u8>,
    /// Whether the current line's prefix is decided (and written).
    decided: bool,
    /// Whether anything of the message body was written.
    any: bool,
    /// Whether the last byte written ended a line.
    at_line_start: bool,
}

impl LineQuoter {
    pub(crate) fn new(flags: PipeFlags, eol: Vec<u8>) -> LineQuoter {
        LineQuoter {
            flags,
            eol,
            pending: Vec::new(),
            decided: false,
            any: false,
            at_line_start: true,
        }
    }

    /// Adds `data`; `quote` is false for the lines the agent itself
    /// prepends (they are never quoted).
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<u8>, quote: bool) {
        if !quote {
            for line in data.split_inclusive(|&b| b == b'\n') {
                match line.strip_suffix(b"\n") {
                    Some(text) => {
                        out.extend_from_slice(text);
                        out.extend_from_slice(&self.eol);
                    }
                    None => out.extend_from_slice(line),
                }
            }
            return;
        }
        for &b in data {
            self.any = true;
            if !self.decided {
                if b == b'\n' {
                    self.decide(out);
                } else {
                    self.pending.push(b);
                    if self.pending.len() >= 5 {
                        self.decide(out);
                    }
                    continue;
                }
            }
            if b == b'\n' {
                out.extend_from_slice(&self.eol);
                self.decided = false;
                self.at_line_start = true;
            } else {
                out.push(b);
                self.at_line_start = false;
            }
        }
    }

    fn decide(&mut self, out: &mut Vec<u8>) {
        if self.flags.dot_stuff && self.pending.first() == Some(&b'.') {
            out.push(b'.');
        }
        if self.flags.quote_from && self.pending.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(&self.pending);
        self.at_line_start = self.pending.is_empty();
        self.pending.clear();
        self.decided = true;
    }

    /// Ends the message: the last partial line, a final line end, the `B`
    /// blank line.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.decided && !self.pending.is_empty() {
            self.decide(out);
        }
        if self.any && !self.at_line_start {
            out.extend_from_slice(&self.eol);
        }
        if self.flags.blank_line {
            out.extend_from_slice(&self.eol);
        }
    }
}

impl DeliveryAgent for PipeAgent {
    fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_> {
        Box::pin(async move {
            let all: Vec<&Recipient> = request.recipients.iter().collect();
            // Delivered-To and X-Original-To name one recipient: one
            // command per recipient then.
            let groups: Vec<Vec<&Recipient>> =
                if self.config.flags.delivered_to || self.config.flags.original_to {
                    all.iter().map(|r| vec![*r]).collect()
                } else {
                    vec![all]
                };
            let mut results: Vec<RecipientResult> = Vec::new();
            let started = tokio::time::Instant::now();
            for group in groups {
                let left = request.time_limit.saturating_sub(started.elapsed());
                let mut this = request.clone();
                this.time_limit = left.max(Duration::from_millis(1));
                let status = self.run(&this, &group).await;
                results.extend(group.iter().map(|r| r.result(status.clone())));
            }
            DeliveryReport::new(results)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_expand_in_both_spellings() {
        let v = |n: &str| Some(format!("<{n}>"));
        assert_eq!(macros::expand("USER=${user}", &v).unwrap(), "USER=<user>");
        assert_eq!(macros::expand("$sender-x", &v).unwrap(), "<sender>-x");
        assert_eq!(macros::expand("cost $$5", &v).unwrap(), "cost $5");
        assert!(macros::expand("cost ${", &v).is_err());
        assert_eq!(macros::names("a${user}b$extension"), ["user", "extension"]);
    }

    #[test]
    fn quoting_streams_across_chunks() {
        let flags = PipeFlags {
            dot_stuff: true,
            quote_from: true,
            blank_line: true,
            ..PipeFlags::default()
        };
        let mut q = LineQuoter::new(flags, b"\r\n".to_vec());
        let mut out = Vec::new();
        q.push(b"Return-Path: <a@b>\n", &mut out, false);
        for chunk in [
            &b"Subject: x\n\nFr"[..],
            b"om me\n.dot\n",
            b"From",
            b"\nFrog\nend",
        ] {
            q.push(chunk, &mut out, true);
        }
        q.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Return-Path: <a@b>\r\nSubject: x\r\n\r\n>From me\r\n..dot\r\nFrom\r\nFrog\r\nend\r\n\r\n"
        );
    }
}
