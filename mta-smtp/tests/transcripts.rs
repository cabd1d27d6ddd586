//! Golden SMTP dialogues, in the manner of Postfix's `smtpd_check` tests:
//! each `transcripts/NAME.in` is driven through a server session with a
//! scripted policy, and the dialogue (client lines, server replies and the
//! session's events) must equal `transcripts/NAME.ref`.
//!
//! `.in` lines:
//! - `set NAME=VALUE`: a session setting (before the first client line);
//! - `> TEXT`: the client sends TEXT and CR LF;
//! - `>> TEXT`: the client sends TEXT as is, with `\r`, `\n`, `\0`, `\\`
//!   escapes and no line end added;
//! - `refuse EVENT CODE TEXT`: the policy answers the next event of that
//!   kind (`connect`, `helo`, `mail`, `rcpt`, `data`, `end`, `vrfy`,
//!   `etrn`, `auth`, `starttls`) with this reply; every other event is
//!   accepted, and the end of data gets `250 2.0.0 Ok: queued as ID`;
//! - `early > TEXT`: TEXT is sent before the server's greeting;
//! - `wait SECONDS`: the virtual clock moves on;
//! - `tls`: the TLS handshake after STARTTLS completes;
//! - `eof`: the client closes the connection;
//! - `# ...` and blank lines are comments.
//!
//! Run with `UPDATE_REF=1` to write `.ref` files for new transcripts
//! (then read them: they are the specification).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mta_core::reply::Reply;
use mta_smtp::server::{BareNewline, Event, ServerConfig, ServerSession};

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = text.bytes();
    while let Some(b) = chars.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match chars.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            other => panic!("bad escape {other:?}"),
        }
    }
    out
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            0 => out.push_str("\\0"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => write!(out, "\\x{b:02x}").unwrap(),
        }
    }
    out
}

fn configure(config: &mut ServerConfig, name: &str, value: &str) {
    let number = || value.parse::<u64>().expect("a number");
    let flag = || matches!(value, "yes" | "true");
    match name {
        "helo_required" => config.helo_required = flag(),
        "disable_vrfy" => config.disable_vrfy = flag(),
        "recipient_limit" => config.recipient_limit = number() as usize,
        "message_size_limit" => config.message_size_limit = number(),
        "soft_error_limit" => config.soft_error_limit = number() as u32,
        "hard_error_limit" => config.hard_error_limit = number() as u32,
        "junk_command_limit" => config.junk_command_limit = number() as u32,
        "error_sleep_time" => config.error_sleep_time = Duration::from_secs(number()),
        "timeout" => config.timeout = Duration::from_secs(number()),
        "forbid_unauth_pipelining" => config.forbid_unauth_pipelining = flag(),
        "bare_newline" => {
            config.bare_newline = match value {
                "normalize" => BareNewline::Normalize,
                "reject" => BareNewline::Reject,
                "no" => BareNewline::Allow,
                _ => panic!("bare_newline {value}"),
            }
        }
        "discard_ehlo_keywords" => {
            config.discard_ehlo_keywords = value.split(',').map(str::to_string).collect()
        }
        "lmtp" => config.lmtp = flag(),
        "starttls" => config.starttls = flag(),
        "tls_required" => config.tls_required = flag(),
        "tls_auth_only" => config.auth_requires_tls = flag(),
        "auth" => config.auth_mechanisms = value.split(',').map(str::to_string).collect(),
        "chunking" => config.chunking = flag(),
        "line_length_limit" => config.line_length_limit = number() as usize,
        _ => panic!("unknown setting {name}"),
    }
}

fn kind(event: &Event) -> &'static str {
    match event {
        Event::Connect => "connect",
        Event::Helo { .. } => "helo",
        Event::Mail { .. } => "mail",
        Event::Rcpt { .. } => "rcpt",
        Event::DataStart => "data",
        Event::DataEnd { .. } => "end",
        Event::Vrfy(_) => "vrfy",
        Event::Etrn(_) => "etrn",
        Event::Auth { .. } | Event::AuthResponse(_) => "auth",
        Event::StartTls => "starttls",
        _ => "info",
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Connect => "connect".into(),
        Event::Helo { name, extended } => {
            format!("{} {name}", if *extended { "ehlo" } else { "helo" })
        }
        Event::Mail { from, params } => {
            let mut text = format!("mail {from}");
            if let Some(size) = params.size {
                write!(text, " size={size}").unwrap();
            }
            if let Some(body) = params.body {
                write!(text, " body={body:?}").unwrap();
            }
            if params.smtputf8 {
                text.push_str(" smtputf8");
            }
            for (name, value) in [("auth", &params.auth), ("envid", &params.envid)] {
                if let Some(v) = value {
                    write!(text, " {name}={v}").unwrap();
                }
            }
            if let Some(ret) = params.ret {
                write!(text, " ret={ret:?}").unwrap();
            }
            text
        }
        Event::Rcpt { to, params } => {
            let mut text = format!("rcpt <{to}>");
            if let Some(notify) = params.notify {
                write!(text, " notify={notify}").unwrap();
            }
            if let Some(orcpt) = &params.orcpt {
                write!(text, " orcpt={orcpt}").unwrap();
            }
            text
        }
        Event::DataStart => "data start".into(),
        Event::Content(bytes) => format!("content \"{}\"", escape(bytes)),
        Event::DataEnd { size } => format!("data end, {size} bytes"),
        Event::DataAborted(why) => format!("data aborted: {why:?}"),
        Event::Rset => "rset".into(),
        Event::Vrfy(a) => format!("vrfy {a}"),
        Event::Etrn(a) => format!("etrn {a}"),
        Event::Auth {
            mechanism,
            initial_response,
        } => format!("auth {mechanism} {initial_response:?}"),
        Event::AuthResponse(r) => format!("auth response {r}"),
        Event::StartTls => "starttls".into(),
        Event::Quit => "quit".into(),
        Event::Closed(why) => format!("closed: {why:?}"),
        other => format!("{other:?}"),
    }
}

fn parse_reply(code: &str, text: &str) -> Reply {
    let wire = format!("{code} {text}\r\n");
    match mta_core::reply::parse_reply(wire.as_bytes()).expect("a valid reply") {
        mta_core::reply::ParseStatus::Complete(view, _) => view.to_reply(),
        mta_core::reply::ParseStatus::Partial => unreachable!(),
    }
}

struct Run {
    session: ServerSession,
    now: Instant,
    refusals: Vec<(String, Reply)>,
    log: String,
    queued: u32,
    content: Vec<u8>,
}

impl Run {
    /// Answers events and collects output until the session waits.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.session.poll_event() {
                progressed = true;
                if let Event::Content(bytes) = &event {
                    self.content.extend_from_slice(bytes);
                }
                writeln!(self.log, "* {}", describe(&event)).unwrap();
                if !event.needs_decision() {
                    continue;
                }
                let k = kind(&event);
                if let Some(i) = self.refusals.iter().position(|(e, _)| e == k) {
                    let (_, reply) = self.refusals.remove(i);
                    self.session.respond(reply, self.now);
                } else if k == "end" {
                    self.queued += 1;
                    let text = format!("2.0.0 Ok: queued as TEST{}", self.queued);
                    self.session.respond(parse_reply("250", &text), self.now);
                } else {
                    self.session.accept(self.now);
                }
            }
            let mut out = Vec::new();
            self.session.poll_transmit(&mut out);
            if !out.is_empty() {
                progressed = true;
                for line in String::from_utf8_lossy(&out).split_inclusive("\r\n") {
                    writeln!(self.log, "< {}", line.trim_end_matches("\r\n")).unwrap();
                }
            }
            if !progressed {
                break;
            }
        }
    }
}

fn run(input: &str) -> String {
    let mut config = ServerConfig::new("mx.example.com");
    config.error_sleep_time = Duration::ZERO;
    let mut lines = input.lines().peekable();
    while let Some(line) = lines.peek() {
        let Some(setting) = line.strip_prefix("set ") else {
            if line.starts_with('#') || line.trim().is_empty() {
                lines.next();
                continue;
            }
            break;
        };
        let (name, value) = setting.split_once('=').expect("set NAME=VALUE");
        configure(&mut config, name.trim(), value.trim());
        lines.next();
    }
    let now = Instant::now();
    let mut r = Run {
        session: ServerSession::new(config, now),
        now,
        refusals: Vec::new(),
        log: String::new(),
        queued: 0,
        content: Vec::new(),
    };
    let mut started = false;
    for line in lines {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("refuse ") {
            let mut words = rest.splitn(3, ' ');
            let event = words.next().unwrap().to_string();
            let code = words.next().unwrap();
            let text = words.next().unwrap_or("");
            r.refusals.push((event, parse_reply(code, text)));
            continue;
        }
        if let Some(text) = line.strip_prefix("early > ") {
            // Sent before the server has greeted.
            writeln!(r.log, "early > {text}").unwrap();
            r.session
                .handle_input(format!("{text}\r\n").as_bytes(), r.now);
            continue;
        }
        if !started {
            started = true;
            r.settle();
        }
        if let Some(text) = line.strip_prefix(">> ") {
            writeln!(r.log, ">> {text}").unwrap();
            r.session.handle_input(&unescape(text), r.now);
        } else if let Some(text) = line.strip_prefix("> ").or((line == ">").then_some("")) {
            writeln!(r.log, "> {text}").unwrap();
            let mut bytes = text.as_bytes().to_vec();
            bytes.extend_from_slice(b"\r\n");
            r.session.handle_input(&bytes, r.now);
        } else if let Some(secs) = line.strip_prefix("wait ") {
            writeln!(r.log, "wait {secs}").unwrap();
            r.now += Duration::from_secs(secs.parse().unwrap());
            r.session.handle_timeout(r.now);
        } else if line == "tls" {
            writeln!(r.log, "tls").unwrap();
            r.session.tls_established(r.now);
        } else if line == "eof" {
            writeln!(r.log, "eof").unwrap();
            r.session.handle_eof(r.now);
        } else {
            panic!("bad transcript line {line:?}");
        }
        r.settle();
    }
    if !started {
        r.settle();
    }
    if r.session.is_closed() {
        writeln!(r.log, "(closed)").unwrap();
    }
    r.log
}

fn transcripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .collect();
    files.sort();
    files
}

#[test]
fn transcripts_match_their_references() {
    let files = transcripts();
    assert!(files.len() >= 10, "transcripts missing");
    let update = std::env::var_os("UPDATE_REF").is_some();
    let mut failures = Vec::new();
    for path in files {
        let input = std::fs::read_to_string(&path).unwrap();
        let actual = run(&input);
        let ref_path = path.with_extension("ref");
        if update && !ref_path.exists() {
            std::fs::write(&ref_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&ref_path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_REF=1 writes it)", ref_path.display()));
        if actual != expected {
            failures.push(format!(
                "{}: dialogue differs\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
