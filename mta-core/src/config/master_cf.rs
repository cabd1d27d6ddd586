//! The `master.cf` file: which services the mail system runs and how, read
//! as Postfix 3.7 reads it (master(5)), and printed as `postconf -M`,
//! `-Mf`, `-F` and `-P` print it.
//!
//! Each logical line is one service entry of eight or more fields:
//!
//! ```text
//! # service type  private unpriv  chroot  wakeup  maxproc command + args
//! smtp      inet  n       -       y       -       -       smtpd
//! relay     unix  -       -       n       -       -       smtp
//!     -o syslog_name=postfix/$service_name
//! ```
//!
//! # How the file is read
//!
//! These rules were settled against Debian's `postconf` where master(5)
//! leaves them open.
//!
//! - A physical line that starts with white space (including a carriage
//!   return, vertical tab or form feed) continues the logical line before
//!   it, even across comment lines and blank lines. The pieces are joined
//!   as they are, line ends removed, so a `{ ... }` group can span lines.
//!   A line whose first non-blank character is `#` is a comment; a `#`
//!   anywhere else is text. Indented text at the start of the file draws a
//!   warning and is ignored.
//! - Words are separated by spaces, tabs, carriage returns and newlines
//!   only. A `{` anywhere in a word opens a group that runs to the
//!   matching `}`, white space included: `{ a b }` and `x{a b}` are one
//!   word each. In the command, a word that starts with `{` loses its
//!   braces and the white space just inside them.
//! - `-` in a column asks for the default: `private` y (an `inet` service
//!   is never private), `unpriv` y, `chroot` n (Postfix 3.0 and later),
//!   `wakeup` 0, that is never, and `maxproc` `$default_process_limit`.
//!   `wakeup` may end in `?`, and may be `?` or `-?` alone.
//! - The options of the command run from the word after the command name
//!   to the first word that does not start with `-`, or `--`. `-o
//!   name=value` and `-o { name = value }` (white space around `=` and
//!   inside the braces dropped, kept inside the value) override a
//!   `main.cf` parameter for this service; `-vo x=1` is `-v -o x=1`; other
//!   letters are flags. `-o` values without a name or without `=` are
//!   ignored, as Postfix ignores them. Odd forms follow `postconf` too: a
//!   lone `-` takes the next word as its value, `-oo` is `-o` with the
//!   value `-o`, and a word in braces such as `{-o}` counts as an option.
//! - Two entries with the same name and type are both kept, as `postconf`
//!   keeps them and without a word from it; master(8) runs the last one
//!   only, so a warning here says so.
//!
//! # How `postconf` prints it
//!
//! Columns are aligned on tab stops, the arguments printed as normalized
//! above, in braces when they hold white space, except the options and the
//! first operand, which print bare (`pipe {a b} {c d}` shows as
//! `pipe a b {c d}`). `-P` prints, for each entry, a parameter table that
//! entries with the same name and type share, with runs of white space in
//! values shown as one space. `-Mf` and `-F` fold lines as described on
//! their methods.
//!
//! # What this module does not do
//!
//! It does not expand `$name` in override values (the caller does, with
//! `main.cf` in hand), check that override names are parameters, look up
//! host or port names, or check that the command exists. It reads no
//! file: the caller passes the text, and the file name for messages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// The longest physical line accepted, in bytes. Postfix has no fixed
/// limit; this one bounds memory on hostile input and is far above any
/// real entry.
pub const MAX_LINE_LENGTH: usize = 1 << 16;

/// The longest logical line (an entry with its continuation lines), in
/// bytes.
pub const MAX_ENTRY_LENGTH: usize = 1 << 18;

/// The most physical lines accepted in one file.
pub const MAX_LINES: usize = 1 << 20;

/// The most service entries accepted in one file. Postfix's stock file
/// has about thirty.
pub const MAX_SERVICES: usize = 10_000;

/// The most words accepted in one entry's command (its name included).
pub const MAX_ARGUMENTS: usize = 4096;

/// The largest number accepted in the `wakeup` and `maxproc` columns,
/// the largest C `int`. `postconf` accepts any string of digits; a larger
/// time or limit has no use, so it is refused here rather than wrapped.
pub const MAX_NUMBER: u32 = i32::MAX as u32;

/// Where white space ends a word: Postfix splits `master.cf` entries at
/// these four characters only (a vertical tab or form feed is text).
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// C's `isspace`: what makes a line blank or indented, and what is trimmed
/// inside braces and around `=`.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// A `master.cf` that cannot be used. Postfix treats each of these as
/// fatal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MasterCfError {
    /// An entry has fewer than eight fields. Each entry needs a service
    /// name, a type, the `private`, `unpriv`, `chroot`, `wakeup` and
    /// `maxproc` columns (`-` for the default) and a command.
    #[error(
        "{path}, line {line}: bad field count: found {found} fields, need 8 \
         (service type private unpriv chroot wakeup maxproc command), \
         write - for a default: \"{text}\""
    )]
    FieldCount {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// How many fields the entry has.
        found: usize,
        /// The entry, continuation lines joined.
        text: String,
    },
    /// The second column is not a service type.
    #[error(
        "{path}, line {line}: invalid type field \"{value}\" in \"{text}\": \
         use inet, unix, unix-dgram, fifo or pass"
    )]
    InvalidType {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The text of the column.
        value: String,
        /// The entry, continuation lines joined.
        text: String,
    },
    /// The `private`, `unpriv` or `chroot` column is not `y`, `n` or `-`.
    #[error(
        "{path}, line {line}: invalid {field} field \"{value}\" in \"{text}\": \
         use y, n, or - for the default"
    )]
    InvalidFlag {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The column, as `postconf -F` names it: `private`,
        /// `unprivileged` or `chroot`.
        field: &'static str,
        /// The text of the column.
        value: String,
        /// The entry, continuation lines joined.
        text: String,
    },
    /// The `wakeup` column is not a number of seconds, optionally followed
    /// by `?`, nor `-`.
    #[error(
        "{path}, line {line}: invalid wakeup field \"{value}\" in \"{text}\": \
         use a number of seconds, optionally followed by ?, or - for none"
    )]
    InvalidWakeup {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The text of the column.
        value: String,
        /// The entry, continuation lines joined.
        text: String,
    },
    /// The `maxproc` column is not a number nor `-`.
    #[error(
        "{path}, line {line}: invalid process_limit field \"{value}\" in \"{text}\": \
         use a number (0 for no limit), or - for $default_process_limit"
    )]
    InvalidProcessLimit {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The text of the column.
        value: String,
        /// The entry, continuation lines joined.
        text: String,
    },
    /// A `wakeup` or `maxproc` number is larger than [`MAX_NUMBER`].
    #[error(
        "{path}, line {line}: {field} field \"{value}\" is larger than {MAX_NUMBER} \
         in \"{text}\": use a smaller number"
    )]
    NumberTooLarge {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The column, as `postconf -F` names it: `wakeup` or
        /// `process_limit`.
        field: &'static str,
        /// The text of the column.
        value: String,
        /// The entry, continuation lines joined.
        text: String,
    },
    /// A physical line is longer than [`MAX_LINE_LENGTH`].
    #[error(
        "{path}, line {line}: line longer than {MAX_LINE_LENGTH} bytes: split it with continuation lines"
    )]
    LineTooLong {
        /// The file.
        path: String,
        /// The line.
        line: usize,
    },
    /// An entry with its continuation lines is longer than
    /// [`MAX_ENTRY_LENGTH`].
    #[error(
        "{path}, line {line}: entry longer than {MAX_ENTRY_LENGTH} bytes: move long values to main.cf"
    )]
    EntryTooLong {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
    },
    /// An entry's command has more than [`MAX_ARGUMENTS`] words.
    #[error(
        "{path}, line {line}: command with more than {MAX_ARGUMENTS} arguments: move settings to main.cf"
    )]
    TooManyArguments {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
    },
    /// The file has more than [`MAX_SERVICES`] entries.
    #[error("{path}, line {line}: more than {MAX_SERVICES} service entries")]
    TooManyServices {
        /// The file.
        path: String,
        /// The line where the entry over the limit starts.
        line: usize,
    },
    /// The file has more than [`MAX_LINES`] lines.
    #[error("{path}, line {line}: more than {MAX_LINES} lines")]
    TooManyLines {
        /// The file.
        path: String,
        /// The first line over the limit.
        line: usize,
    },
}

/// Something odd in a `master.cf` that Postfix reports, or silently
/// tolerates, and then reads past.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MasterCfWarning {
    /// The file's first logical line starts with white space, so there is
    /// nothing for it to continue; it is ignored.
    LeadingWhitespace {
        /// The file.
        path: String,
        /// The line where the ignored text starts.
        line: usize,
        /// The ignored text, continuation lines joined.
        text: String,
    },
    /// A `{` group has no matching `}`; it is taken to run to the end of
    /// the word.
    MissingBrace {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The word.
        word: String,
    },
    /// A `{...}` group is followed by more text in the same word
    /// (`{a}b`); that text is dropped.
    TextAfterBrace {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The word.
        word: String,
    },
    /// A `-o { ... }` override has nothing before its `=`; it is ignored.
    MissingOverrideName {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The text inside the braces.
        text: String,
    },
    /// A `-o { ... }` override has no `=` after its name; it is ignored.
    MissingOverrideEquals {
        /// The file.
        path: String,
        /// The line where the entry starts.
        line: usize,
        /// The text inside the braces.
        text: String,
    },
    /// An entry repeats the name and type of an earlier one. master(8)
    /// runs only the later one; `postconf` shows both and says nothing,
    /// so this warning is this crate's own.
    DuplicateService {
        /// The file.
        path: String,
        /// The line where the later entry starts.
        line: usize,
        /// The line where the earlier, ignored, entry starts.
        earlier_line: usize,
        /// The service name.
        name: String,
        /// The service type.
        service_type: ServiceType,
    },
}

impl fmt::Display for MasterCfWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterCfWarning::LeadingWhitespace { path, line, text } => write!(
                f,
                "{path}, line {line}: logical line must not start with whitespace: \"{text}\""
            ),
            MasterCfWarning::MissingBrace { path, line, word } => {
                write!(f, "{path}, line {line}: missing '}}' in \"{word}\"")
            }
            MasterCfWarning::TextAfterBrace { path, line, word } => {
                write!(
                    f,
                    "{path}, line {line}: syntax error after '}}' in \"{word}\""
                )
            }
            MasterCfWarning::MissingOverrideName { path, line, text } => {
                write!(f, "{path}, line {line}: missing attribute name: \"{text}\"")
            }
            MasterCfWarning::MissingOverrideEquals { path, line, text } => write!(
                f,
                "{path}, line {line}: missing '=' after attribute name: \"{text}\""
            ),
            MasterCfWarning::DuplicateService {
                path,
                line,
                earlier_line,
                name,
                service_type,
            } => write!(
                f,
                "{path}, line {line}: duplicate service {name}/{service_type}: \
                 the entry at line {earlier_line} is ignored"
            ),
        }
    }
}

/// How a service listens: the second column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceType {
    /// A TCP socket; the service name is `port`, `host:port` or
    /// `[address]:port`.
    Inet,
    /// A UNIX-domain stream socket; the name is a path relative to the
    /// queue directory.
    Unix,
    /// A UNIX-domain datagram socket (Postfix 3.4 and later, for
    /// `postlogd`).
    UnixDgram,
    /// A named pipe (obsolete in Postfix).
    Fifo,
    /// A UNIX-domain socket that receives one open connection per request
    /// (file-descriptor passing, as `postscreen` hands clients to `smtpd`).
    Pass,
}

impl ServiceType {
    /// The name as written in `master.cf`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
            ServiceType::UnixDgram => "unix-dgram",
            ServiceType::Fifo => "fifo",
            ServiceType::Pass => "pass",
        }
    }

    /// The type named `text`, exactly as master(5) spells it (lower case).
    pub fn from_name(text: &str) -> Option<ServiceType> {
        match text {
            "inet" => Some(ServiceType::Inet),
            "unix" => Some(ServiceType::Unix),
            "unix-dgram" => Some(ServiceType::UnixDgram),
            "fifo" => Some(ServiceType::Fifo),
            "pass" => Some(ServiceType::Pass),
            _ => None,
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `wakeup` column: how often master(8) wakes the service up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wakeup {
    /// Seconds between wake-up requests; 0 (the default, `-`) for none.
    pub seconds: u32,
    /// The column ends in `?`: send no wake-up request before the service
    /// has been used once.
    pub after_first_use: bool,
}

impl Wakeup {
    /// The interval between wake-up requests, or `None` when the service
    /// is never woken up.
    pub fn interval(self) -> Option<Duration> {
        (self.seconds > 0).then(|| Duration::from_secs(u64::from(self.seconds)))
    }
}

/// Where an `inet` service listens, split from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InetEndpoint<'a> {
    /// The host name or address, without `[` `]`; `None` when the name is
    /// a port only, which means every address in `inet_interfaces`.
    pub host: Option<&'a str>,
    /// The port: a number or a name from services(5).
    pub port: &'a str,
}

/// The command column of an entry with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command name, as written.
    program: String,
    /// The words after the command name, as written (braces kept).
    words: Vec<String>,
    /// The normalized argument vector, braces removed.
    args: Vec<String>,
    /// `braced[i]`: `postconf` prints `args[i]` in braces.
    braced: Vec<bool>,
    /// `takes_next[i]`: `args[i]` is an option and `args[i + 1]` is its
    /// value; `postconf -Mf` keeps the two together on a line of their own.
    takes_next: Vec<bool>,
    /// Index in `args` of the first operand.
    operands_from: usize,
    /// `-o` overrides in order, `(name, value)`.
    overrides: Vec<(String, String)>,
    /// How many `-v` flags.
    verbosity: u32,
    /// Whether `-D` is given.
    debug: bool,
}

impl Command {
    /// The command name: a program in `daemon_directory` (`smtpd`, `pipe`,
    /// ...).
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The words after the command name exactly as written, `{` `}`
    /// included.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The arguments after the command name, normalized as `postconf`
    /// normalizes them: braces and the white space just inside them
    /// removed, option clusters with `o` split (`-vo x=1` becomes `-v`,
    /// `-o`, `x=1`), and `-o { name = value }` written `name=value`.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The arguments after the options, braces removed: for `pipe`, the
    /// `flags=... user=... argv=...` list, with each `{ ... }` group one
    /// argument.
    pub fn operands(&self) -> &[String] {
        &self.args[self.operands_from.min(self.args.len())..]
    }

    /// The `-o name=value` overrides in the order written, `$name`
    /// references unexpanded. A name may appear twice; the later value
    /// wins.
    pub fn overrides(&self) -> &[(String, String)] {
        &self.overrides
    }

    /// The value the overrides give `name` (the last one wins), unexpanded.
    pub fn override_value(&self, name: &str) -> Option<&str> {
        self.overrides
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many `-v` flags the options give: the daemon's verbose logging
    /// level.
    pub fn verbosity(&self) -> u32 {
        self.verbosity
    }

    /// Whether `-D` asks to run the daemon under `debugger_command`.
    pub fn debug(&self) -> bool {
        self.debug
    }

    /// How `postconf` prints argument `i`.
    fn push_display(&self, i: usize, out: &mut String) {
        if self.braced[i] {
            out.push('{');
            out.push_str(&self.args[i]);
            out.push('}');
        } else {
            out.push_str(&self.args[i]);
        }
    }

    /// The command as `postconf -M` and `-F` print it.
    fn display_text(&self) -> String {
        let mut out = self.program.clone();
        for i in 0..self.args.len() {
            out.push(' ');
            self.push_display(i, &mut out);
        }
        out
    }
}

/// One service entry: a logical line of `master.cf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    line: usize,
    text: String,
    name: String,
    service_type: ServiceType,
    private: Option<bool>,
    unprivileged: Option<bool>,
    chroot: Option<bool>,
    wakeup: Wakeup,
    process_limit: Option<u32>,
    /// The seven columns as written, for printing.
    columns: [String; 7],
    command: Command,
}

impl Service {
    /// The 1-based line where the entry starts.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The entry as written, continuation lines joined (line ends removed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The service name, as written: a port or `host:port` for `inet`, a
    /// path relative to the queue directory otherwise. It is also the
    /// transport name that `transport_maps` and friends refer to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service type.
    pub fn service_type(&self) -> ServiceType {
        self.service_type
    }

    /// The `private` column: `None` for `-`.
    pub fn private_setting(&self) -> Option<bool> {
        self.private
    }

    /// Whether the service is reachable only by Postfix itself (socket
    /// under `private/`). The default is yes; an `inet` service is never
    /// private, whatever the column says.
    pub fn is_private(&self) -> bool {
        self.service_type != ServiceType::Inet && self.private.unwrap_or(true)
    }

    /// The `unpriv` column: `None` for `-`.
    pub fn unprivileged_setting(&self) -> Option<bool> {
        self.unprivileged
    }

    /// Whether the service runs as `mail_owner` rather than root. The
    /// default is yes.
    pub fn is_unprivileged(&self) -> bool {
        self.unprivileged.unwrap_or(true)
    }

    /// The `chroot` column: `None` for `-`.
    pub fn chroot_setting(&self) -> Option<bool> {
        self.chroot
    }

    /// Whether the service runs chrooted to the queue directory. The
    /// default is no (Postfix 3.0 and later).
    pub fn is_chrooted(&self) -> bool {
        self.chroot.unwrap_or(false)
    }

    /// The `wakeup` column; `-` reads as 0 (never).
    pub fn wakeup(&self) -> Wakeup {
        self.wakeup
    }

    /// The `maxproc` column: `None` for `-`, which means
    /// `$default_process_limit`; `Some(0)` for no limit.
    pub fn process_limit(&self) -> Option<u32> {
        self.process_limit
    }

    /// The command and its arguments.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// Where an `inet` service listens: `None` for other types, and for
    /// names that cannot be split into a host and a port (`[::1]` without
    /// a port, `:25`, `host:`). `postconf` accepts those; master(8) cannot
    /// listen on them.
    pub fn inet_endpoint(&self) -> Option<InetEndpoint<'_>> {
        if self.service_type != ServiceType::Inet {
            return None;
        }
        let (host, port) = if let Some(rest) = self.name.strip_prefix('[') {
            let (host, port) = rest.split_once("]:")?;
            (Some(host), port)
        } else {
            match self.name.rsplit_once(':') {
                Some((host, port)) => (Some(host), port),
                None => (None, self.name.as_str()),
            }
        };
        if port.is_empty() || host.is_some_and(str::is_empty) {
            return None;
        }
        Some(InetEndpoint { host, port })
    }

    /// The entry as `postconf -M` prints it: one line, the columns aligned
    /// on tab stops (`service` at 0, `type` at 11, then every 8 columns,
    /// the command at 57), the arguments after the command as `postconf`
    /// normalizes them.
    pub fn postconf_m(&self) -> String {
        self.render_m(false)
    }

    /// The entry as `postconf -Mf` prints it: as [`Service::postconf_m`],
    /// folded at 79 columns with each `-o` option on a line of its own.
    pub fn postconf_mf(&self) -> String {
        self.render_m(true)
    }

    fn render_m(&self, fold: bool) -> String {
        // Each column starts at a tab stop, or one space after the column
        // before when that one is too wide.
        const STOPS: [usize; 8] = [0, 11, 17, 25, 33, 41, 49, 57];
        let mut out = String::new();
        for (i, column) in self.columns.iter().enumerate() {
            out.push_str(column);
            let pad = STOPS[i + 1].saturating_sub(out.len()).max(1);
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(&self.command.program);
        let command = &self.command;
        if !fold {
            for i in 0..command.args.len() {
                out.push(' ');
                command.push_display(i, &mut out);
            }
            out.push('\n');
            return out;
        }
        // Folding, as `postconf -Mf` does it: an option with its value goes
        // on a line of its own, and whatever follows starts a new line.
        // Other arguments fill lines: one goes on the next line when the
        // line so far, a space and the argument without its braces would
        // pass 79 columns. A new line swallows the empty arguments at its
        // start.
        const WIDTH: usize = 79;
        const INDENT: &str = "\n    ";
        let count = command.args.len();
        let mut line_len = out.len();
        let mut break_next = false;
        let mut line_start = false;
        let mut i = 0;
        while i < count {
            if command.takes_next[i] && i + 1 < count {
                out.push_str(INDENT);
                let before = out.len();
                command.push_display(i, &mut out);
                out.push(' ');
                command.push_display(i + 1, &mut out);
                line_len = INDENT.len() - 1 + out.len() - before;
                break_next = true;
                line_start = false;
                i += 2;
                continue;
            }
            let text = &command.args[i];
            if break_next || (!line_start && line_len + 1 + text.len() > WIDTH) {
                out.push_str(INDENT);
                line_len = INDENT.len() - 1;
                break_next = false;
                line_start = true;
            }
            if line_start {
                if !text.is_empty() {
                    let before = out.len();
                    command.push_display(i, &mut out);
                    line_len += out.len() - before;
                    line_start = false;
                }
            } else {
                let before = out.len();
                out.push(' ');
                command.push_display(i, &mut out);
                line_len += out.len() - before;
            }
            i += 1;
        }
        out.push('\n');
        out
    }

    /// The entry's fields as `postconf -F` prints them:
    /// `service/type/field = value`, one line each. Like `postconf`, this
    /// starts the value on an indented line of its own when its first word
    /// would end past column 80; nothing else is folded.
    pub fn postconf_f(&self) -> String {
        const FIELDS: [&str; 7] = [
            "service",
            "type",
            "private",
            "unprivileged",
            "chroot",
            "wakeup",
            "process_limit",
        ];
        let mut out = String::new();
        let prefix = format!("{}/{}", self.name, self.service_type);
        let command = self.command.display_text();
        let fields = FIELDS
            .iter()
            .zip(self.columns.iter().map(String::as_str))
            .chain([(&"command", command.as_str())]);
        for (field, value) in fields {
            let start = out.len();
            out.push_str(&prefix);
            out.push('/');
            out.push_str(field);
            out.push_str(" = ");
            let first = split_words(value).first().map_or(0, |w| w.len());
            if out.len() - start + first > 80 {
                out.push_str("\n    ");
            }
            out.push_str(value);
            out.push('\n');
        }
        out
    }
}

/// A parsed `master.cf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterCf {
    path: String,
    services: Vec<Service>,
}

impl MasterCf {
    /// Parses the text of a `master.cf`. `path` is used in messages only.
    ///
    /// # Example
    /// ```
    /// use mta_core::config::master_cf::{MasterCf, ServiceType};
    /// let text = "\
    /// smtp      inet  n       -       y       -       -       smtpd
    /// submission inet n       -       y       -       -       smtpd
    ///   -o syslog_name=postfix/submission
    ///   -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
    /// procmail  unix  -       n       n       -       -       pipe
    ///   flags=R argv=/usr/bin/procmail -t -m USER=${user} EXTENSION=${extension}
    /// ";
    /// let (cf, warnings) = MasterCf::parse(text, "/etc/mta/master.cf").unwrap();
    /// assert!(warnings.is_empty());
    ///
    /// let submission = cf.get("submission", ServiceType::Inet).unwrap();
    /// assert_eq!(submission.line(), 2);
    /// assert!(!submission.is_private());
    /// assert_eq!(submission.command().program(), "smtpd");
    /// assert_eq!(
    ///     submission.command().override_value("smtpd_client_restrictions"),
    ///     Some("permit_sasl_authenticated, reject")
    /// );
    ///
    /// let procmail = cf.get("procmail", ServiceType::Unix).unwrap();
    /// assert_eq!(procmail.command().operands()[1], "argv=/usr/bin/procmail");
    ///
    /// // What `postconf -P` prints for this file.
    /// assert_eq!(
    ///     cf.postconf_p(),
    ///     "submission/inet/smtpd_client_restrictions = permit_sasl_authenticated, reject\n\
    ///      submission/inet/syslog_name = postfix/submission\n"
    /// );
    ///
    /// let err = MasterCf::parse("smtp inet n - y - - \n", "master.cf").unwrap_err();
    /// assert!(err.to_string().starts_with("master.cf, line 1: bad field count"));
    /// ```
    pub fn parse(
        text: &str,
        path: &str,
    ) -> Result<(MasterCf, Vec<MasterCfWarning>), MasterCfError> {
        let mut warnings = Vec::new();
        let mut services: Vec<Service> = Vec::new();
        // The logical line being gathered: its first line number and text.
        let mut current: Option<(usize, String)> = None;
        // A logical line that starts with white space: only warned about.
        let mut orphan: Option<(usize, String)> = None;
        let mut lines = text.split('\n').enumerate().peekable();
        while let Some((index, line)) = lines.next() {
            let number = index + 1;
            // The piece after the final newline is no line at all.
            if lines.peek().is_none() && line.is_empty() {
                break;
            }
            if number > MAX_LINES {
                return Err(MasterCfError::TooManyLines {
                    path: path.to_string(),
                    line: number,
                });
            }
            if line.len() > MAX_LINE_LENGTH {
                return Err(MasterCfError::LineTooLong {
                    path: path.to_string(),
                    line: number,
                });
            }
            let content = line.trim_start_matches(is_space);
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if line.starts_with(is_space) {
                let target = match (current.as_mut(), orphan.as_mut()) {
                    (Some(current), _) => current,
                    (None, Some(orphan)) => orphan,
                    (None, None) => orphan.insert((number, String::new())),
                };
                if target.1.len() + line.len() > MAX_ENTRY_LENGTH {
                    return Err(MasterCfError::EntryTooLong {
                        path: path.to_string(),
                        line: target.0,
                    });
                }
                target.1.push_str(line);
                continue;
            }
            if let Some((line, text)) = orphan.take() {
                warnings.push(MasterCfWarning::LeadingWhitespace {
                    path: path.to_string(),
                    line,
                    text,
                });
            }
            if let Some((line, text)) = current.replace((number, line.to_string())) {
                push_service(&mut services, &mut warnings, path, line, text)?;
            }
        }
        if let Some((line, text)) = orphan.take() {
            warnings.push(MasterCfWarning::LeadingWhitespace {
                path: path.to_string(),
                line,
                text,
            });
        }
        if let Some((line, text)) = current.take() {
            push_service(&mut services, &mut warnings, path, line, text)?;
        }

        let mut seen: HashMap<(&str, ServiceType), usize> = HashMap::new();
        for service in &services {
            let key = (service.name.as_str(), service.service_type);
            if let Some(earlier_line) = seen.insert(key, service.line) {
                warnings.push(MasterCfWarning::DuplicateService {
                    path: path.to_string(),
                    line: service.line,
                    earlier_line,
                    name: service.name.clone(),
                    service_type: service.service_type,
                });
            }
        }
        Ok((
            MasterCf {
                path: path.to_string(),
                services,
            },
            warnings,
        ))
    }

    /// The file name given to [`MasterCf::parse`].
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every entry in file order, including entries that a later entry
    /// with the same name and type replaces.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The entries master(8) runs: every entry that no later entry with
    /// the same name and type replaces, in file order.
    pub fn effective_services(&self) -> impl Iterator<Item = &Service> {
        let mut later: HashSet<(&str, ServiceType)> = HashSet::new();
        let mut keep = vec![false; self.services.len()];
        for (i, service) in self.services.iter().enumerate().rev() {
            keep[i] = later.insert((service.name.as_str(), service.service_type));
        }
        self.services
            .iter()
            .zip(keep)
            .filter_map(|(service, keep)| keep.then_some(service))
    }

    /// The entry master(8) runs for this name and type: the last one.
    pub fn get(&self, name: &str, service_type: ServiceType) -> Option<&Service> {
        self.services
            .iter()
            .rev()
            .find(|s| s.name == name && s.service_type == service_type)
    }

    /// The `-o` parameters `postconf -P` shows for each entry, in file
    /// order, each entry's sorted by name.
    ///
    /// `postconf` shares one parameter table among the entries with the
    /// same name and type (later values win), and shows it for an entry
    /// that has an override itself or comes after one that has; an entry
    /// without overrides before the first one that has some shows none.
    pub fn parameters(&self) -> Vec<(&Service, BTreeMap<&str, &str>)> {
        let (shared, linked) = self.parameter_tables();
        self.services
            .iter()
            .zip(linked)
            .map(|(service, linked)| {
                let table = match linked {
                    true => shared
                        .get(&(service.name.as_str(), service.service_type))
                        .cloned(),
                    false => None,
                };
                (service, table.unwrap_or_default())
            })
            .collect()
    }

    /// The shared parameter tables, by name and type, and whether each
    /// entry shows its table.
    #[allow(clippy::type_complexity)]
    fn parameter_tables(
        &self,
    ) -> (
        HashMap<(&str, ServiceType), BTreeMap<&str, &str>>,
        Vec<bool>,
    ) {
        let mut shared: HashMap<(&str, ServiceType), BTreeMap<&str, &str>> = HashMap::new();
        let mut linked = Vec::with_capacity(self.services.len());
        for service in &self.services {
            let key = (service.name.as_str(), service.service_type);
            if !service.command.overrides.is_empty() {
                let table = shared.entry(key).or_default();
                for (name, value) in &service.command.overrides {
                    table.insert(name.as_str(), value.as_str());
                }
            }
            linked.push(shared.contains_key(&key));
        }
        (shared, linked)
    }

    /// The file as `postconf -M` prints it: one line per entry.
    pub fn postconf_m(&self) -> String {
        self.services.iter().map(Service::postconf_m).collect()
    }

    /// The file as `postconf -Mf` prints it: long entries folded.
    pub fn postconf_mf(&self) -> String {
        self.services.iter().map(Service::postconf_mf).collect()
    }

    /// The file as `postconf -F` prints it.
    pub fn postconf_f(&self) -> String {
        self.services.iter().map(Service::postconf_f).collect()
    }

    /// The file as `postconf -P` prints it: `service/type/name = value`
    /// for each override, runs of white space in values printed as one
    /// space.
    pub fn postconf_p(&self) -> String {
        let (shared, linked) = self.parameter_tables();
        let mut out = String::new();
        for (service, linked) in self.services.iter().zip(linked) {
            let key = (service.name.as_str(), service.service_type);
            let Some(parameters) = shared.get(&key).filter(|_| linked) else {
                continue;
            };
            for (name, value) in parameters {
                out.push_str(&service.name);
                out.push('/');
                out.push_str(service.service_type.as_str());
                out.push('/');
                out.push_str(name);
                out.push_str(" =");
                for word in value.split(is_separator).filter(|w| !w.is_empty()) {
                    out.push(' ');
                    out.push_str(word);
                }
                out.push('\n');
            }
        }
        out
    }
}

fn push_service(
    services: &mut Vec<Service>,
    warnings: &mut Vec<MasterCfWarning>,
    path: &str,
    line: usize,
    text: String,
) -> Result<(), MasterCfError> {
    if services.len() >= MAX_SERVICES {
        return Err(MasterCfError::TooManyServices {
            path: path.to_string(),
            line,
        });
    }
    services.push(parse_service(path, line, text, warnings)?);
    Ok(())
}

/// Splits an entry into words: runs of non-separators, where a `{` opens a
/// group that runs to its matching `}` across white space. An unmatched
/// `{` runs to the end of the entry.
fn split_words(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_separator(char::from(bytes[i])) {
            i += 1;
            continue;
        }
        let start = i;
        let mut depth = 0usize;
        while i < bytes.len() {
            match bytes[i] {
                b'{' => depth += 1,
                b'}' if depth > 0 => depth -= 1,
                b if depth == 0 && is_separator(char::from(b)) => break,
                _ => {}
            }
            i += 1;
        }
        // Separators are ASCII, so `start` and `i` are character
        // boundaries.
        words.push(&text[start..i]);
    }
    words
}

fn parse_service(
    path: &str,
    line: usize,
    text: String,
    warnings: &mut Vec<MasterCfWarning>,
) -> Result<Service, MasterCfError> {
    let words = split_words(&text);
    if words.len() < 8 {
        return Err(MasterCfError::FieldCount {
            path: path.to_string(),
            line,
            found: words.len(),
            text,
        });
    }
    if words.len() - 7 > MAX_ARGUMENTS {
        return Err(MasterCfError::TooManyArguments {
            path: path.to_string(),
            line,
        });
    }
    let Some(service_type) = ServiceType::from_name(words[1]) else {
        return Err(MasterCfError::InvalidType {
            path: path.to_string(),
            line,
            value: words[1].to_string(),
            text: text.clone(),
        });
    };
    let flag = |field: &'static str, value: &str| match value {
        "-" => Ok(None),
        "y" => Ok(Some(true)),
        "n" => Ok(Some(false)),
        _ => Err(MasterCfError::InvalidFlag {
            path: path.to_string(),
            line,
            field,
            value: value.to_string(),
            text: text.clone(),
        }),
    };
    let private = flag("private", words[2])?;
    let unprivileged = flag("unprivileged", words[3])?;
    let chroot = flag("chroot", words[4])?;
    let too_large = |field: &'static str, value: &str| MasterCfError::NumberTooLarge {
        path: path.to_string(),
        line,
        field,
        value: value.to_string(),
        text: text.clone(),
    };

    let wakeup_text = words[5];
    let (number, after_first_use) = match wakeup_text.strip_suffix('?') {
        Some(number) => (number, true),
        None => (wakeup_text, false),
    };
    // `?` alone is accepted too: an empty number, which is 0.
    let seconds = match number {
        "-" => 0,
        _ if number.bytes().all(|b| b.is_ascii_digit()) => {
            parse_number(number).ok_or_else(|| too_large("wakeup", wakeup_text))?
        }
        _ => {
            return Err(MasterCfError::InvalidWakeup {
                path: path.to_string(),
                line,
                value: wakeup_text.to_string(),
                text: text.clone(),
            });
        }
    };

    let limit_text = words[6];
    let process_limit = match limit_text {
        "-" => None,
        _ if limit_text.bytes().all(|b| b.is_ascii_digit()) => {
            Some(parse_number(limit_text).ok_or_else(|| too_large("process_limit", limit_text))?)
        }
        _ => {
            return Err(MasterCfError::InvalidProcessLimit {
                path: path.to_string(),
                line,
                value: limit_text.to_string(),
                text: text.clone(),
            });
        }
    };

    let mut report = |problem: Problem, subject: &str| {
        let path = path.to_string();
        let subject = subject.to_string();
        warnings.push(match problem {
            Problem::MissingBrace => MasterCfWarning::MissingBrace {
                path,
                line,
                word: subject,
            },
            Problem::TextAfterBrace => MasterCfWarning::TextAfterBrace {
                path,
                line,
                word: subject,
            },
            Problem::MissingName => MasterCfWarning::MissingOverrideName {
                path,
                line,
                text: subject,
            },
            Problem::MissingEquals => MasterCfWarning::MissingOverrideEquals {
                path,
                line,
                text: subject,
            },
        });
    };
    let command = parse_command(words[7], &words[8..], &mut report);
    let columns = [
        words[0].to_string(),
        words[1].to_string(),
        words[2].to_string(),
        words[3].to_string(),
        words[4].to_string(),
        words[5].to_string(),
        words[6].to_string(),
    ];
    Ok(Service {
        line,
        name: words[0].to_string(),
        service_type,
        private,
        unprivileged,
        chroot,
        wakeup: Wakeup {
            seconds,
            after_first_use,
        },
        process_limit,
        columns,
        command,
        text,
    })
}

/// Digits as a number up to [`MAX_NUMBER`]; the empty string is 0.
fn parse_number(digits: &str) -> Option<u32> {
    digits.bytes().try_fold(0u32, |n, b| {
        n.checked_mul(10)?
            .checked_add(u32::from(b - b'0'))
            .filter(|&n| n <= MAX_NUMBER)
    })
}

/// What can be wrong with a brace group or a `-o` assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    MissingBrace,
    TextAfterBrace,
    MissingName,
    MissingEquals,
}

/// The text inside a word that starts with `{`, trimmed of white space,
/// and what was wrong with the braces.
fn strip_braces(word: &str) -> (&str, Option<Problem>) {
    let mut depth = 0usize;
    for (i, b) in word.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let inner = trim_space(&word[1..i]);
                    let problem = (i + 1 < word.len()).then_some(Problem::TextAfterBrace);
                    return (inner, problem);
                }
            }
            _ => {}
        }
    }
    (
        trim_space(word.get(1..).unwrap_or("")),
        Some(Problem::MissingBrace),
    )
}

/// `name = value` with white space allowed around `=` and trimmed from the
/// value. The name ends at white space or `=`.
fn split_assignment(text: &str) -> Result<(&str, &str), Problem> {
    let text = text.trim_start_matches(is_space);
    let end = text
        .find(|c: char| is_space(c) || c == '=')
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(end);
    if name.is_empty() {
        return Err(Problem::MissingName);
    }
    let rest = rest
        .trim_start_matches(is_space)
        .strip_prefix('=')
        .ok_or(Problem::MissingEquals)?;
    Ok((name, trim_space(rest)))
}

fn operand(word: &str, report: &mut impl FnMut(Problem, &str)) -> String {
    if !word.starts_with('{') {
        return word.to_string();
    }
    let (inner, problem) = strip_braces(word);
    if let Some(problem) = problem {
        report(problem, word);
    }
    inner.to_string()
}

fn override_value(word: &str, report: &mut impl FnMut(Problem, &str)) -> String {
    if !word.starts_with('{') {
        return word.to_string();
    }
    let (inner, problem) = strip_braces(word);
    if let Some(problem) = problem {
        report(problem, word);
    }
    match split_assignment(inner) {
        Ok((name, value)) => format!("{name}={value}"),
        Err(problem) => {
            report(problem, inner);
            inner.to_string()
        }
    }
}

/// Reads a command the way `postconf` does, in two passes.
///
/// The first pass normalizes the words: option clusters that contain `o`
/// are split and `-o` values in braces become `name=value`; it stops at the
/// first word that does not start with `-`, or at `--`, and the rest are
/// operands with their braces removed. The second pass finds the options
/// again in the normalized list, with slightly different rules that
/// `postconf -P` and `-Mf` follow (a lone `-` takes the next word; a word
/// in braces can be an option), and collects the overrides.
fn parse_command(program: &str, words: &[&str], report: &mut impl FnMut(Problem, &str)) -> Command {
    let mut args: Vec<String> = Vec::new();
    // What is left of an option cluster after a split, read as the option
    // `-` + `tail` before the next word. It stays a slice of the word, so
    // that a long cluster is read in linear time.
    let mut tail: Option<&str> = None;
    let mut next_word = 0;
    loop {
        let letters = if let Some(letters) = tail.take() {
            letters
        } else {
            let Some(&word) = words.get(next_word) else {
                break;
            };
            next_word += 1;
            if word == "--" || !word.starts_with('-') {
                args.push(operand(word, report));
                break;
            }
            if word == "-" {
                // A lone `-` takes the next word with it, as `postconf` reads it.
                args.push(word.to_string());
                if let Some(&value) = words.get(next_word) {
                    next_word += 1;
                    args.push(operand(value, report));
                }
                continue;
            }
            &word[1..]
        };
        // An `o` after the first letter splits the cluster: `-vo` is read
        // as `-v` then `-o`, `-oo` as `-o` whose value is `-o`, and `--o`
        // as `--` (which then does not end the options) and `-o`.
        let letters = match letters.bytes().skip(1).position(|b| b == b'o') {
            Some(at) => {
                let (head, rest) = letters.split_at(1 + at);
                tail = Some(rest);
                head
            }
            None => letters,
        };
        if letters == "o" {
            args.push("-o".to_string());
            let value = match tail.take() {
                Some(rest) => Some(format!("-{rest}")),
                None => words.get(next_word).map(|word| {
                    next_word += 1;
                    word.to_string()
                }),
            };
            if let Some(value) = value {
                args.push(override_value(&value, report));
            }
        } else if let Some(value) = letters.strip_prefix('o') {
            args.push("-o".to_string());
            args.push(override_value(value, report));
        } else {
            args.push(format!("-{letters}"));
        }
    }
    // After the options, every word is an operand.
    for word in words.iter().skip(next_word) {
        args.push(operand(word, report));
    }
    let count = args.len();
    let mut takes_next = vec![false; count];
    // The words this pass looks at print without braces, whatever they
    // hold: which is why the first operand of `cmd {a b} {c d}` prints as
    // `a b {c d}`.
    let mut seen = vec![false; count];
    let mut overrides = Vec::new();
    let mut verbosity = 0u32;
    let mut debug = false;
    let mut operands_from = count;
    let mut i = 0;
    while i < count {
        seen[i] = true;
        let word = args[i].as_str();
        if word == "--" {
            operands_from = i + 1;
            break;
        }
        if !word.starts_with('-') {
            operands_from = i;
            break;
        }
        if word == "-" || word.as_bytes().get(1) == Some(&b'o') {
            if let Some(value) = args.get(i + 1) {
                takes_next[i] = true;
                // Only a word that is exactly `-o` sets a parameter: `{-ov}`
                // takes the next word with it but sets nothing.
                let assignment = match word {
                    "-o" => split_assignment(value).ok(),
                    _ => None,
                };
                if let Some((name, value)) = assignment {
                    overrides.push((name.to_string(), value.to_string()));
                }
            }
            i += 2;
            continue;
        }
        for letter in word[1..].chars() {
            match letter {
                'v' => verbosity = verbosity.saturating_add(1),
                'D' => debug = true,
                _ => {}
            }
        }
        i += 1;
    }
    let braced = args
        .iter()
        .zip(&seen)
        .map(|(text, &seen)| !seen && text.contains(is_separator))
        .collect();
    Command {
        program: program.to_string(),
        words: words.iter().map(|w| w.to_string()).collect(),
        args,
        braced,
        takes_next,
        operands_from,
        overrides,
        verbosity,
        debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> MasterCf {
        MasterCf::parse(text, "master.cf").unwrap().0
    }

    fn command_display(line: &str) -> String {
        let cf = parse(&format!("a unix - - - - - {line}\n"));
        cf.services()[0].command().display_text()
    }

    #[test]
    fn words_keep_brace_groups_together() {
        assert_eq!(
            split_words(" a {b c} d{e f}g }h {x"),
            ["a", "{b c}", "d{e f}g", "}h", "{x"]
        );
        assert_eq!(split_words("a\u{b}b\r\nc"), ["a\u{b}b", "c"]);
    }

    #[test]
    fn braces_are_stripped_with_inner_white_space() {
        assert_eq!(strip_braces("{ a  b }"), ("a  b", None));
        assert_eq!(strip_braces("{a {b} c}"), ("a {b} c", None));
        assert_eq!(strip_braces("{a}b"), ("a", Some(Problem::TextAfterBrace)));
        assert_eq!(strip_braces("{a b"), ("a b", Some(Problem::MissingBrace)));
        assert_eq!(strip_braces("{\u{b}a\u{c}}"), ("a", None));
    }

    #[test]
    fn assignments_allow_white_space_around_equals() {
        assert_eq!(split_assignment(" x = a b "), Ok(("x", "a b")));
        assert_eq!(split_assignment("x==1"), Ok(("x", "=1")));
        assert_eq!(split_assignment("x"), Err(Problem::MissingEquals));
        assert_eq!(split_assignment("x y = 1"), Err(Problem::MissingEquals));
        assert_eq!(split_assignment("= b"), Err(Problem::MissingName));
        assert_eq!(split_assignment(""), Err(Problem::MissingName));
    }

    #[test]
    fn defaults_and_flags() {
        let cf = parse("smtp inet y - - - - smtpd\nlocal unix - n y 60? 0 local\n");
        let smtp = &cf.services()[0];
        assert!(!smtp.is_private(), "inet services are never private");
        assert_eq!(smtp.private_setting(), Some(true));
        assert!(smtp.is_unprivileged());
        assert!(!smtp.is_chrooted());
        assert_eq!(smtp.wakeup(), Wakeup::default());
        assert_eq!(smtp.wakeup().interval(), None);
        assert_eq!(smtp.process_limit(), None);
        let local = &cf.services()[1];
        assert!(local.is_private());
        assert!(!local.is_unprivileged());
        assert!(local.is_chrooted());
        assert_eq!(
            local.wakeup(),
            Wakeup {
                seconds: 60,
                after_first_use: true
            }
        );
        assert_eq!(local.wakeup().interval(), Some(Duration::from_secs(60)));
        assert_eq!(local.process_limit(), Some(0));
    }

    #[test]
    fn wakeup_forms() {
        for (text, seconds, after) in [
            ("-", 0, false),
            ("-?", 0, true),
            ("?", 0, true),
            ("007", 7, false),
            ("0?", 0, true),
        ] {
            let cf = parse(&format!("a unix - - - {text} - cmd\n"));
            let wakeup = cf.services()[0].wakeup();
            assert_eq!(
                (wakeup.seconds, wakeup.after_first_use),
                (seconds, after),
                "{text}"
            );
        }
        for text in ["1x", "??", "?5", "5?5", "-5", "+5", "--"] {
            let err = MasterCf::parse(&format!("a unix - - - {text} - cmd\n"), "m").unwrap_err();
            assert!(
                matches!(err, MasterCfError::InvalidWakeup { .. }),
                "{text}: {err}"
            );
        }
        let err = MasterCf::parse("a unix - - - 2147483648 - cmd\n", "m").unwrap_err();
        assert!(matches!(
            err,
            MasterCfError::NumberTooLarge {
                field: "wakeup",
                ..
            }
        ));
        assert!(MasterCf::parse("a unix - - - 2147483647 2147483647 cmd\n", "m").is_ok());
    }

    #[test]
    fn field_errors_name_file_and_line() {
        let err =
            MasterCf::parse("# x\n\na unix -\n  - - - -\n", "/etc/mta/master.cf").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/mta/master.cf, line 3: bad field count: found 7 fields, need 8 \
             (service type private unpriv chroot wakeup maxproc command), \
             write - for a default: \"a unix -  - - - -\""
        );
        let err = MasterCf::parse("a UNIX - - - - - cmd\n", "m").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("m, line 1: invalid type field \"UNIX\"")
        );
        let err = MasterCf::parse("a unix - yes - - - cmd\n", "m").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("m, line 1: invalid unprivileged field \"yes\"")
        );
        let err = MasterCf::parse("a unix - - - - -1 cmd\n", "m").unwrap_err();
        assert!(matches!(err, MasterCfError::InvalidProcessLimit { .. }));
    }

    #[test]
    fn continuation_comments_and_blank_lines() {
        let cf = parse(
            "a unix - - - - - cmd\n# note\n  # indented note\n\n \t\n  -o x=1\r\nb unix - - - - - cmd2 #not a comment\n",
        );
        assert_eq!(cf.services().len(), 2);
        assert_eq!(
            cf.services()[0].command().overrides(),
            [("x".to_string(), "1".to_string())]
        );
        assert_eq!(
            cf.services()[1].command().operands(),
            ["#not", "a", "comment"]
        );
        assert_eq!(cf.services()[1].line(), 7);
    }

    #[test]
    fn leading_white_space_is_warned_and_ignored() {
        let (cf, warnings) =
            MasterCf::parse("  -o x=1\n# c\n  -o y=2\na unix - - - - - cmd\n", "m").unwrap();
        assert_eq!(cf.services().len(), 1);
        assert_eq!(
            warnings,
            [MasterCfWarning::LeadingWhitespace {
                path: "m".to_string(),
                line: 1,
                text: "  -o x=1  -o y=2".to_string()
            }]
        );
    }

    #[test]
    fn postconf_display_quirks() {
        assert_eq!(command_display("cmd {a b} {c d}"), "cmd a b {c d}");
        assert_eq!(
            command_display("cmd x {a b} { c  d }"),
            "cmd x {a b} {c  d}"
        );
        assert_eq!(
            command_display("cmd - {1 1} {2 2} {3 3}"),
            "cmd - {1 1} 2 2 {3 3}"
        );
        assert_eq!(command_display("cmd -- {1 1} {2 2}"), "cmd -- {1 1} {2 2}");
        assert_eq!(
            command_display("cmd -vo x=1 -Dvo{ y = 2 } -ov"),
            "cmd -v -o x=1 -Dv -o y=2 -o v"
        );
        assert_eq!(
            command_display("cmd -o {x = a b} -o { = b} -o {}"),
            "cmd -o {x=a b} -o {= b} -o "
        );
        assert_eq!(command_display("cmd x a{b c}"), "cmd x {a{b c}}");
        assert_eq!(
            command_display("cmd --o x=1 {1 1} {2 2}"),
            "cmd -- -o x=1 {1 1} {2 2}"
        );
        assert_eq!(
            command_display("cmd -v{ o } {1 1} {2 2}"),
            "cmd -v{  -o { }} 1 1 {2 2}"
        );
        assert_eq!(
            command_display("cmd {-o} {x = 1} {1 1} {2 2}"),
            "cmd -o {x = 1} 1 1 {2 2}"
        );
    }

    #[test]
    fn overrides_follow_postconf() {
        let cf = parse(
            "a unix - - - - - cmd -o x=1 -ox=2 -vo{ y = a  b } -o z -o =w -D -o {v}  tail -o t=1\n",
        );
        let command = cf.services()[0].command();
        assert_eq!(
            command.overrides(),
            [
                ("x".to_string(), "1".to_string()),
                ("x".to_string(), "2".to_string()),
                ("y".to_string(), "a  b".to_string()),
            ]
        );
        assert_eq!(command.override_value("x"), Some("2"));
        assert_eq!(command.verbosity(), 1);
        assert!(command.debug());
        assert_eq!(command.operands(), ["tail", "-o", "t=1"]);
        // A lone `-` takes the next word, even an option.
        let cf = parse("a unix - - - - - cmd - -o x=1\nb unix - - - - - cmd - y -o x=1\n");
        assert!(cf.services()[0].command().overrides().is_empty());
        assert_eq!(cf.services()[1].command().override_value("x"), Some("1"));
    }

    #[test]
    fn brace_warnings() {
        let (_, warnings) =
            MasterCf::parse("a unix - - - - - cmd -o {x} -o { = y} x {a}b {c\n", "m").unwrap();
        let text: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            text,
            [
                "m, line 1: missing '=' after attribute name: \"x\"",
                "m, line 1: missing attribute name: \"= y\"",
                "m, line 1: syntax error after '}' in \"{a}b\"",
                "m, line 1: missing '}' in \"{c\"",
            ]
        );
    }

    #[test]
    fn duplicates_are_kept_and_the_last_one_runs() {
        let (cf, warnings) = MasterCf::parse(
            "a unix - - - - - c1 -o x=1\nb unix - - - - - c3 -o z=1\na unix - - - - - c2 -o y=2\na inet - - - - - c4\n",
            "m",
        )
        .unwrap();
        assert_eq!(cf.services().len(), 4);
        assert_eq!(
            warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
            ["m, line 3: duplicate service a/unix: the entry at line 1 is ignored"]
        );
        let effective: Vec<usize> = cf.effective_services().map(Service::line).collect();
        assert_eq!(effective, [2, 3, 4]);
        assert_eq!(
            cf.get("a", ServiceType::Unix).unwrap().command().program(),
            "c2"
        );
        assert_eq!(
            cf.postconf_p(),
            "a/unix/x = 1\na/unix/y = 2\nb/unix/z = 1\na/unix/x = 1\na/unix/y = 2\n"
        );
    }

    #[test]
    fn inet_endpoints() {
        let cf = parse(
            "smtp inet n - - - - s\n127.0.0.1:smtp inet n - - - - s\n::1:smtp inet n - - - - s\n\
             [::1]:25 inet n - - - - s\n[::1] inet n - - - - s\n:25 inet n - - - - s\nx unix - - - - - s\n",
        );
        let endpoints: Vec<Option<(Option<&str>, &str)>> = cf
            .services()
            .iter()
            .map(|s| s.inet_endpoint().map(|e| (e.host, e.port)))
            .collect();
        assert_eq!(
            endpoints,
            [
                Some((None, "smtp")),
                Some((Some("127.0.0.1"), "smtp")),
                Some((Some("::1"), "smtp")),
                Some((Some("::1"), "25")),
                None,
                None,
                None,
            ]
        );
    }

    #[test]
    fn postconf_m_columns() {
        let cf = parse(
            "smtp inet n - y - - smtpd\npostlog unix-dgram n - n - 1 postlogd\n\
             scalemail-backend unix - n n - 2 pipe\n",
        );
        assert_eq!(
            cf.postconf_m(),
            "smtp       inet  n       -       y       -       -       smtpd\n\
             postlog    unix-dgram n  -       n       -       1       postlogd\n\
             scalemail-backend unix - n       n       -       2       pipe\n"
        );
    }

    #[test]
    fn postconf_mf_folds() {
        let cf = parse(
            "a unix - - - - - cmd -v -o x=1 -v y aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        );
        assert_eq!(
            cf.postconf_mf(),
            "a          unix  -       -       -       -       -       cmd -v\n    -o x=1\n    -v y\n    \
             aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
        );
    }

    #[test]
    fn postconf_f_fields() {
        let cf = parse("relay unix - - n - - smtp\n  -o syslog_name=postfix/$service_name\n");
        assert_eq!(
            cf.postconf_f(),
            "relay/unix/service = relay\nrelay/unix/type = unix\nrelay/unix/private = -\n\
             relay/unix/unprivileged = -\nrelay/unix/chroot = n\nrelay/unix/wakeup = -\n\
             relay/unix/process_limit = -\n\
             relay/unix/command = smtp -o syslog_name=postfix/$service_name\n"
        );
    }

    #[test]
    fn limits() {
        let long = format!("a unix - - - - - {}\n", "x".repeat(MAX_LINE_LENGTH));
        assert!(matches!(
            MasterCf::parse(&long, "m"),
            Err(MasterCfError::LineTooLong { line: 1, .. })
        ));
        let many = format!("a unix - - - - - cmd{}\n", " x".repeat(MAX_ARGUMENTS));
        assert!(matches!(
            MasterCf::parse(&many, "m"),
            Err(MasterCfError::TooManyArguments { line: 1, .. })
        ));
        let mut entry = String::from("a unix - - - - - cmd\n");
        let chunk = format!(" {}\n", "y".repeat(MAX_LINE_LENGTH - 1));
        for _ in 0..(MAX_ENTRY_LENGTH / MAX_LINE_LENGTH + 1) {
            entry.push_str(&chunk);
        }
        assert!(matches!(
            MasterCf::parse(&entry, "m"),
            Err(MasterCfError::EntryTooLong { line: 1, .. })
        ));
    }

    #[test]
    fn empty_and_comment_only_files() {
        for text in ["", "\n", "# only\n", "#", "   \n\t\n"] {
            let (cf, warnings) = MasterCf::parse(text, "m").unwrap();
            assert!(cf.services().is_empty() && warnings.is_empty(), "{text:?}");
            assert_eq!(cf.postconf_m(), "");
        }
    }
}
