//! `mtad sendmail`: the Sendmail-compatible command line that mail
//! programs and scripts call, as Postfix's sendmail(1). The message goes
//! into the maildrop ([`mta_queue::pickup::drop_message`]); the daemon's
//! pickup takes it through cleanup, and is poked to do so at once. No
//! daemon needs to run: mail waits in the maildrop until one does.
//!
//! Supported: `-t`, `-i`/`-oi`, `-f`/`-r`, `-F`, `-N`, `-R`, `-V`, `-C`,
//! `-bm` (the default), `-bs` (SMTP on standard input and output, without
//! access controls, as Postfix's stand-alone mode), `-bp` (mailq), `-bi`
//! and `-I` (newaliases), `-q` and `-qRsite` (flush). The Sendmail options
//! Postfix also ignores (`-B`, `-G`, `-h`, `-L`, `-n`, `-O`, `-o`x, `-U`,
//! `-v`, `-X`, `-e`, `-m`, `-x`, `-c`, `-p`) are accepted and ignored;
//! `-bd`, `-bh`, `-bH`, `-bl` and `-bv` are refused with a message.
//!
//! Exit status follows sysexits(3), as Postfix's: 64 for usage errors, 65
//! for a message that is too big, 75 when the maildrop cannot be written.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use mta_core::config::Config;
use mta_core::reply::{ParseStatus, Reply, parse_reply};
use mta_queue::file::notify;
use mta_queue::pickup::{LocalMessage, drop_message, extracted_recipients};
use mta_queue::scheduler::Flush;
use mta_queue::store::Queue;
use mta_smtp::server::{Event, ServerConfig, ServerSession};

use crate::Fatal;
use crate::control::{FlushError, poke_pickup, request_flush};

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;

/// Prints `sendmail: fatal: TEXT` and gives `code`.
fn fatal(code: u8, text: &str) -> ExitCode {
    eprintln!("{}: fatal: {text}", crate::program());
    ExitCode::from(code)
}

/// What the command line asked for.
#[derive(Debug, Default)]
struct Options {
    config: Option<PathBuf>,
    mode: Mode,
    extract: bool,
    ignore_dots: bool,
    sender: Option<String>,
    full_name: Option<String>,
    notify: u8,
    ret: Option<String>,
    envid: Option<String>,
    recipients: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Deliver,
    Smtp,
    List,
    Aliases,
    Flush(Flush),
}

/// Options that take a value, as Postfix's sendmail getopt string has
/// them (`-q` is handled on its own: its value is optional).
const WITH_VALUE: &str = "ABCFLNORVXbefhopr";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            o.recipients.extend(args[i..].iter().cloned());
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            o.recipients.push(arg.clone());
            continue;
        };
        for (at, flag) in flags.char_indices() {
            if flag == 'q' {
                let rest = &flags[at + 1..];
                o.mode = match rest.strip_prefix('R') {
                    Some(site) if !site.is_empty() => Mode::Flush(Flush::Site(site.to_owned())),
                    _ if rest.is_empty() => Mode::Flush(Flush::All),
                    _ => {
                        return Err(format!(
                            "-q{rest}: only -q and -qRsite are supported (mtad does not run a periodic queue runner from the command line)"
                        ));
                    }
                };
                break;
            }
            if !WITH_VALUE.contains(flag) {
                match flag {
                    't' => o.extract = true,
                    'i' => o.ignore_dots = true,
                    'I' => o.mode = Mode::Aliases,
                    'G' | 'U' | 'v' | 'n' | 'm' | 'x' | 'c' => {}
                    other => return Err(format!("-{other}: unknown option")),
                }
                continue;
            }
            // The value is the rest of this word, else the next word.
            let attached = &flags[at + flag.len_utf8()..];
            let value = if attached.is_empty() {
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("-{flag}: option requires an argument"))?;
                i += 1;
                v
            } else {
                attached.to_owned()
            };
            match flag {
                'f' | 'r' => o.sender = Some(value),
                'F' => o.full_name = Some(value),
                'C' => {
                    // main.cf's path or its directory, as Postfix takes it.
                    let p = PathBuf::from(&value);
                    o.config = Some(if p.file_name().is_some_and(|n| n == "main.cf") {
                        p.parent()
                            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
                    } else {
                        p
                    });
                }
                'N' => o.notify = parse_notify(&value)?,
                'R' => match value.to_ascii_lowercase().as_str() {
                    "full" | "hdrs" => o.ret = Some(value.to_ascii_uppercase()),
                    _ => return Err(format!("-R {value}: specify full or hdrs")),
                },
                'V' => o.envid = Some(value),
                'o' if value == "i" => o.ignore_dots = true,
                'b' => {
                    o.mode = match value.as_str() {
                        "m" => Mode::Deliver,
                        "s" => Mode::Smtp,
                        "p" => Mode::List,
                        "i" => Mode::Aliases,
                        "d" => return Err(
                            "-bd: mtad runs as a daemon with `mtad -c DIR`, not through sendmail"
                                .into(),
                        ),
                        other => return Err(format!("-b{other}: not supported")),
                    }
                }
                // Accepted and ignored, as by Postfix.
                _ => {}
            }
            break;
        }
    }
    Ok(o)
}

/// `-N never` or a list of `delay`, `failure`, `success`.
fn parse_notify(value: &str) -> Result<u8, String> {
    let mut bits = 0;
    for word in value.split(',').map(|w| w.trim().to_ascii_lowercase()) {
        bits |= match word.as_str() {
            "never" => notify::NEVER,
            "delay" => notify::DELAY,
            "failure" => notify::FAILURE,
            "success" => notify::SUCCESS,
            _ => {
                return Err(format!(
                    "-N {value}: specify never, or delay, failure and success"
                ));
            }
        };
    }
    Ok(bits)
}

/// The login name of the user running us, the default sender.
fn login_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid{}", nix::unistd::getuid()), |u| u.name)
}

/// Reads the message: LF or CR LF line ends become CR LF; a line holding
/// only `.` ends it unless `ignore_dots`. At most `limit` bytes (0: no
/// limit); `None` when it is bigger.
fn read_message(
    input: &mut dyn BufRead,
    ignore_dots: bool,
    limit: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !ignore_dots && text == b"." {
            break;
        }
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
        if limit > 0 && out.len() as u64 > limit {
            // Drain the rest so a writer on a pipe is not killed by
            // SIGPIPE before it sees our status.
            std::io::copy(input, &mut std::io::sink())?;
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// Runs sendmail with its command line; `args[0]` is its name.
pub(crate) fn run(args: &[String]) -> Result<ExitCode, Fatal> {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => return Ok(fatal(EX_USAGE, &e)),
    };
    match &o.mode {
        Mode::List => {
            let mut a = vec!["mailq".to_owned()];
            if let Some(c) = &o.config {
                a.extend(["-c".to_owned(), c.display().to_string()]);
            }
            return crate::postqueue::run(&a, true).map(|()| ExitCode::SUCCESS);
        }
        Mode::Aliases => {
            return crate::postmap::newaliases(o.config.clone()).map(|()| ExitCode::SUCCESS);
        }
        _ => {}
    }
    let (dir, explicit) = crate::config_dir(o.config.clone());
    let config = crate::postconf::load_main(&dir, explicit, "sendmail")?;
    let queue_dir = PathBuf::from(
        config
            .expanded("queue_directory")
            .map_err(|e| Fatal(e.to_string()))?,
    );
    match &o.mode {
        Mode::Flush(which) => match request_flush(&queue_dir, which) {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(FlushError::Down(e)) => Ok(fatal(
                EX_TEMPFAIL,
                &format!("Cannot flush mail queue - mail system is down ({e})"),
            )),
            Err(FlushError::Refused(e)) => Ok(fatal(EX_USAGE, &e)),
        },
        Mode::Smtp => standalone_smtp(&config, &queue_dir),
        _ => deliver(&o, &config, &queue_dir),
    }
}

fn open_queue(queue_dir: &Path) -> Result<Queue, ExitCode> {
    Queue::open(queue_dir).map_err(|e| {
        fatal(
            EX_TEMPFAIL,
            &format!("queue_directory {}: {e}", queue_dir.display()),
        )
    })
}

/// Drops `message` into the maildrop and pokes pickup.
fn submit(queue: &Queue, queue_dir: &Path, message: &LocalMessage) -> Result<String, ExitCode> {
    let name = drop_message(queue, message, SystemTime::now())
        .map_err(|e| fatal(EX_TEMPFAIL, &format!("queue file write error: {e}")))?;
    if let Err(e) = poke_pickup(queue_dir) {
        // As Postfix's postdrop: the mail is safe, only later.
        crate::warn(&format!(
            "unable to wake up the mail system ({}: {e}): the message waits in the maildrop until mtad runs",
            crate::control::pickup_path(queue_dir).display()
        ));
    }
    Ok(name)
}

fn deliver(o: &Options, config: &Config, queue_dir: &Path) -> Result<ExitCode, Fatal> {
    if o.recipients.is_empty() && !o.extract {
        return Ok(fatal(
            EX_USAGE,
            "Recipient addresses must be specified on the command line or via the -t option",
        ));
    }
    let limit = u64::try_from(
        config
            .integer("message_size_limit")
            .map_err(|e| Fatal(e.to_string()))?,
    )
    .unwrap_or(0);
    let stdin = std::io::stdin();
    let content = match read_message(&mut stdin.lock(), o.ignore_dots, limit) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Ok(fatal(
                EX_DATAERR,
                &format!("message file too big: more than message_size_limit = {limit} bytes"),
            ));
        }
        Err(e) => return Ok(fatal(EX_TEMPFAIL, &format!("read the message: {e}"))),
    };
    if o.extract && o.recipients.is_empty() {
        let limit = usize::try_from(
            config
                .integer("header_address_token_limit")
                .map_err(|e| Fatal(e.to_string()))?,
        )
        .unwrap_or(10240);
        if extracted_recipients(&content, limit).is_empty() {
            return Ok(fatal(
                EX_USAGE,
                "No recipient addresses found in message header",
            ));
        }
    }
    let queue = match open_queue(queue_dir) {
        Ok(q) => q,
        Err(code) => return Ok(code),
    };
    let message = LocalMessage {
        sender: match o.sender.as_deref() {
            Some("<>") => String::new(),
            Some(s) => s.to_owned(),
            None => login_name(),
        },
        recipients: o.recipients.clone(),
        extract_recipients: o.extract,
        full_name: o.full_name.clone(),
        notify: o.notify,
        ret: o.ret.clone(),
        envid: o.envid.clone(),
        content,
    };
    Ok(match submit(&queue, queue_dir, &message) {
        Ok(_) => ExitCode::SUCCESS,
        Err(code) => code,
    })
}

fn reply(text: &str) -> Reply {
    let wire = format!("{text}\r\n");
    match parse_reply(wire.as_bytes()) {
        Ok(ParseStatus::Complete(v, _)) => v.to_reply(),
        _ => unreachable!("fixed replies are valid: {text}"),
    }
}

/// `sendmail -bs`: an SMTP session on standard input and output. Every
/// sender and recipient is accepted (no access controls, as Postfix's
/// stand-alone mode when not run by the mail owner); each message goes
/// into the maildrop.
fn standalone_smtp(config: &Config, queue_dir: &Path) -> Result<ExitCode, Fatal> {
    let mut session_config =
        ServerConfig::from_config(config, false).map_err(|e| Fatal(e.to_string()))?;
    // A script writes its whole session at once: on a pipe from a local
    // user that is no attack, so pipelining is not refused here.
    session_config.forbid_unauth_pipelining = false;
    let queue = match open_queue(queue_dir) {
        Ok(q) => q,
        Err(code) => return Ok(code),
    };
    let mut session = ServerSession::new(session_config, Instant::now());
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut message = LocalMessage::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(event) = session.poll_event() {
            let now = Instant::now();
            match event {
                Event::Mail { from, .. } => {
                    message = LocalMessage {
                        sender: from.mailbox().map(|m| m.to_string()).unwrap_or_default(),
                        ..LocalMessage::default()
                    };
                    session.accept(now);
                }
                Event::Rcpt { to, .. } => {
                    message.recipients.push(to.to_string());
                    session.accept(now);
                }
                Event::Content(bytes) => message.content.extend_from_slice(&bytes),
                Event::DataEnd { .. } => {
                    let m = std::mem::take(&mut message);
                    match submit(&queue, queue_dir, &m) {
                        Ok(name) => {
                            session.respond(reply(&format!("250 2.0.0 Ok: queued as {name}")), now)
                        }
                        Err(_) => {
                            session.respond(reply("451 4.3.0 Error: queue file write error"), now)
                        }
                    }
                }
                Event::DataAborted(_) | Event::Rset => message = LocalMessage::default(),
                Event::Etrn(_) => session.respond(reply("458 4.3.0 Unable to queue messages"), now),
                Event::Auth { .. } | Event::AuthResponse(_) | Event::StartTls => {
                    session.respond(reply("502 5.5.1 Error: command not implemented"), now);
                }
                e if e.needs_decision() => session.accept(now),
                _ => {}
            }
        }
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        if !out.is_empty() {
            stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .map_err(|e| Fatal(format!("write to standard output: {e}")))?;
        }
        if session.is_closed() {
            return Ok(ExitCode::SUCCESS);
        }
        if session.wants_input() {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => session.handle_eof(Instant::now()),
                Ok(n) => session.handle_input(&buf[..n], Instant::now()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        std::iter::once("sendmail")
            .chain(s.split_whitespace())
            .map(String::from)
            .collect()
    }

    #[test]
    fn the_usual_command_lines() {
        let o = parse(&args("-t -i -f alice@example.com -F Alice bob")).unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("alice@example.com"));
        assert_eq!(o.full_name.as_deref(), Some("Alice"));
        assert_eq!(o.recipients, ["bob"]);
        let o = parse(&args("-oi -falice -ti -- -odd")).unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("alice"));
        assert_eq!(o.recipients, ["-odd"]);
        let o = parse(&args(
            "-odb -oem -B 8BITMIME -N delay,failure -R hdrs -V env1 x",
        ))
        .unwrap();
        assert_eq!(o.notify, notify::DELAY | notify::FAILURE);
        assert_eq!(o.ret.as_deref(), Some("HDRS"));
        assert_eq!(o.envid.as_deref(), Some("env1"));
        assert_eq!(o.recipients, ["x"]);
        assert_eq!(parse(&args("-bs")).unwrap().mode, Mode::Smtp);
        assert_eq!(parse(&args("-bp")).unwrap().mode, Mode::List);
        assert_eq!(parse(&args("-I")).unwrap().mode, Mode::Aliases);
        assert_eq!(parse(&args("-q")).unwrap().mode, Mode::Flush(Flush::All));
        assert_eq!(
            parse(&args("-qRexample.org")).unwrap().mode,
            Mode::Flush(Flush::Site("example.org".into()))
        );
        let o = parse(&args("-C /etc/mta/main.cf x")).unwrap();
        assert_eq!(o.config, Some(PathBuf::from("/etc/mta")));
    }

    #[test]
    fn refusals_say_why() {
        assert!(parse(&args("-bd")).unwrap_err().contains("mtad -c DIR"));
        assert!(parse(&args("-bv x")).unwrap_err().contains("not supported"));
        assert!(parse(&args("-q30m")).unwrap_err().contains("-qRsite"));
        assert!(
            parse(&args("-f"))
                .unwrap_err()
                .contains("requires an argument")
        );
        assert!(parse(&args("-N sometimes x")).is_err());
        assert!(parse(&args("-Z")).is_err());
    }

    #[test]
    fn message_reading() {
        let read =
            |s: &str, dots: bool, limit: u64| read_message(&mut s.as_bytes(), dots, limit).unwrap();
        assert_eq!(read("a\nb\r\n.\nc\n", false, 0).unwrap(), b"a\r\nb\r\n");
        assert_eq!(read("a\n.\nc", true, 0).unwrap(), b"a\r\n.\r\nc\r\n");
        assert_eq!(read("", false, 0).unwrap(), b"");
        assert!(read("0123456789\n0123456789\n", false, 15).is_none());
    }
}
