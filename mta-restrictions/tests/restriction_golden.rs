//! Golden-file tests in the style of Postfix's `smtpd_check` test driver.
//!
//! Each `tests/golden/NAME.in` is a script: `name = value` lines (with
//! continuation lines that start with white space) change `main.cf`;
//! `dns ...` lines script the stub resolver; the other lines are SMTP
//! events. The driver echoes every line as `>>> line`, then prints the log
//! lines and the decision (`OK` or the reply) of each event, and compares
//! the whole with `NAME.ref`. `UPDATE_GOLDEN=1` rewrites the `.ref` files
//! (review the diff before committing it).
//!
//! Events: `client NAME ADDRESS` (NAME `unknown` or `tempfail` for no
//! name), `reverse NAME`, `helo NAME`, `ehlo NAME`, `mail ADDRESS` (`<>`
//! for the null sender), `rcpt ADDRESS`, `data`, `eod`, `etrn DOMAIN`,
//! `sasl USER`, `pipelining on|off`, `queue ID`.
//!
//! DNS: `dns a NAME ADDRESS`, `dns mx DOMAIN PREF HOST`, `dns txt NAME
//! TEXT`, `dns ns DOMAIN HOST`, `dns name NAME` (exists, no records),
//! `dns tempfail NAME TYPE`.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use mta_core::config::{Config, HostFacts};
use mta_core::dns::{RecordType, StubResolver};
use mta_maps::registry::{OpenContext, Registry};
use mta_restrictions::restriction::{ClientName, Restrictions, SmtpContext, Stage, Verdict};

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn name(text: &str) -> ClientName {
    match text {
        "unknown" => ClientName::Unknown,
        "tempfail" => ClientName::TempFail,
        n => ClientName::Name(n.to_string()),
    }
}

fn record_type(text: &str) -> RecordType {
    match text.to_ascii_lowercase().as_str() {
        "a" => RecordType::A,
        "aaaa" => RecordType::Aaaa,
        "mx" => RecordType::Mx,
        "txt" => RecordType::Txt,
        "ns" => RecordType::Ns,
        "ptr" => RecordType::Ptr,
        other => panic!("unknown record type {other}"),
    }
}

/// Runs one script and returns its transcript.
pub fn run_script(script: &str, dir: &Path) -> String {
    let mut out = String::new();
    let mut main_cf = String::from(
        "myhostname = mail.example.com\nmydomain = example.com\ninet_interfaces = 127.0.0.1\n\
         compatibility_level = 3.6\n",
    );
    let mut restrictions: Option<Restrictions> = None;
    let mut broken = false;
    let dns = StubResolver::new();
    let mut ctx = SmtpContext::new("127.0.0.1".parse().unwrap());
    let mut last_setting = false;
    for line in script.lines() {
        // Settings and their continuation lines.
        if last_setting && line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            main_cf.push_str(line);
            main_cf.push('\n');
            out.push_str(&format!(">>> {line}\n"));
            restrictions = None;
            broken = false;
            continue;
        }
        last_setting = false;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(&format!(">>> {trimmed}\n"));
        let mut words = trimmed.splitn(2, char::is_whitespace);
        let verb = words.next().unwrap();
        let arg = words.next().unwrap_or("").trim();
        if arg.starts_with('=') || verb.contains('=') {
            main_cf.push_str(trimmed);
            main_cf.push('\n');
            restrictions = None;
            broken = false;
            last_setting = true;
            continue;
        }
        if verb == "dns" {
            let f: Vec<&str> = arg.split_whitespace().collect();
            match f[0] {
                "a" => dns.add_address(f[1], f[2].parse().unwrap()),
                "mx" => dns.add_mx(f[1], f[2].parse().unwrap(), f[3]),
                "txt" => dns.add_txt(f[1], &f[2..].join(" ")),
                "ns" => dns.add_ns(f[1], f[2]),
                "name" => dns.add_name(f[1]),
                "tempfail" => dns.fail_temporarily(f[1], record_type(f[2]), usize::MAX),
                other => panic!("unknown dns command {other}"),
            }
            continue;
        }
        if broken {
            out.push_str("(no restrictions: configuration error)\n");
            continue;
        }
        if restrictions.is_none() {
            let config =
                Config::parse(&main_cf, "main.cf", HostFacts::default()).expect("main.cf parses");
            let registry = Registry::new(OpenContext {
                config_directory: Some(dir.to_path_buf()),
                ..OpenContext::default()
            });
            match Restrictions::from_config(&config, &registry) {
                Ok(r) => {
                    for w in r.warnings() {
                        out.push_str(&format!("warning: {w}\n"));
                    }
                    restrictions = Some(r);
                }
                Err(e) => {
                    out.push_str(&format!("error: {e}\n"));
                    broken = true;
                    continue;
                }
            }
        }
        let r = restrictions.as_ref().unwrap();
        let stage = match verb {
            "client" => {
                let (n, a) = arg.split_once(' ').expect("client NAME ADDRESS");
                ctx = SmtpContext::new(a.trim().parse().expect("client address"));
                ctx.client_name = name(n);
                ctx.reverse_name = name(n);
                Some(Stage::Connect)
            }
            "reverse" => {
                ctx.reverse_name = name(arg);
                None
            }
            "helo" | "ehlo" => {
                ctx.helo = Some(arg.to_string());
                ctx.esmtp = verb == "ehlo";
                Some(Stage::Helo)
            }
            "mail" => {
                let a = if arg == "<>" { "" } else { arg };
                ctx.sender = Some(a.to_string());
                ctx.recipient = None;
                ctx.recipient_count = 0;
                Some(Stage::Mail)
            }
            "rcpt" => {
                ctx.recipient = Some(arg.to_string());
                Some(Stage::Rcpt)
            }
            "data" => Some(Stage::Data),
            "eod" => Some(Stage::EndOfData),
            "etrn" => {
                ctx.etrn_domain = Some(arg.to_string());
                Some(Stage::Etrn)
            }
            "sasl" => {
                ctx.sasl_username = Some(arg.to_string());
                None
            }
            "pipelining" => {
                ctx.improper_pipelining = arg == "on";
                None
            }
            "queue" => {
                ctx.queue_id = Some(arg.to_string());
                None
            }
            other => panic!("unknown script command {other}"),
        };
        let Some(stage) = stage else {
            continue;
        };
        let decision = block_on(r.evaluate(stage, &ctx, &dns));
        for l in &decision.log {
            out.push_str(&format!("{l}\n"));
        }
        for a in &decision.actions {
            out.push_str(&format!("action: {a:?}\n"));
        }
        match &decision.verdict {
            Verdict::Accept => {
                out.push_str("OK\n");
                if stage == Stage::Rcpt {
                    ctx.recipient_count += 1;
                }
            }
            Verdict::Reject(reply) => out.push_str(&format!("{reply}\n")),
        }
    }
    out
}

#[test]
fn golden_transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .collect();
    scripts.sort();
    assert!(
        !scripts.is_empty(),
        "no golden scripts in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for script in scripts {
        let text = std::fs::read_to_string(&script).unwrap();
        let got = run_script(&text, &dir);
        let reference = script.with_extension("ref");
        if update {
            std::fs::write(&reference, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&reference).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}: transcript differs\n--- want\n{want}\n--- got\n{got}",
                script.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
