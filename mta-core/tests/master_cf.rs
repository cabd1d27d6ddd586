//! `master.cf` parsing against files, and against Debian's `postconf`.
//!
//! The corpus is `tests/data/master_cf/*.cf` (Debian's stock file and
//! files written to exercise continuations, comments, braces, `-o`
//! overrides, inet names and folding); `errors/*.cf` must be refused.
//! Where `/usr/sbin/postconf` is installed, its `-M`, `-Mf`, `-F` and `-P`
//! output for each file must equal ours byte for byte.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use mta_core::config::master_cf::{MasterCf, MasterCfError, MasterCfWarning, ServiceType, Wakeup};
use proptest::prelude::*;

const POSTCONF: &str = "/usr/sbin/postconf";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/master_cf")
}

/// The `*.cf` files of a directory, sorted, with their text.
fn files_in(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("test data directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cf"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).expect("test data file");
            (p, text)
        })
        .collect()
}

fn parse(path: &Path, text: &str) -> MasterCf {
    match MasterCf::parse(text, &path.display().to_string()) {
        Ok((cf, _)) => cf,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn debian_stock_master_cf_parses() {
    let path = data_dir().join("debian-3.7-stock.cf");
    let text = fs::read_to_string(&path).unwrap();
    let (cf, warnings) = MasterCf::parse(&text, "master.cf").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cf.services().len(), 31);

    let smtp = cf.get("smtp", ServiceType::Inet).unwrap();
    assert_eq!(smtp.line(), 12);
    assert!(!smtp.is_private());
    assert!(smtp.is_chrooted());
    assert_eq!(smtp.command().program(), "smtpd");

    let tlsmgr = cf.get("tlsmgr", ServiceType::Unix).unwrap();
    assert_eq!(
        tlsmgr.wakeup(),
        Wakeup {
            seconds: 1000,
            after_first_use: true
        }
    );
    assert_eq!(tlsmgr.process_limit(), Some(1));
    assert!(tlsmgr.is_private() && tlsmgr.is_unprivileged());

    let relay = cf.get("relay", ServiceType::Unix).unwrap();
    assert_eq!(
        relay.command().overrides(),
        [(
            "syslog_name".to_string(),
            "postfix/$service_name".to_string()
        )]
    );

    let postlog = cf.get("postlog", ServiceType::UnixDgram).unwrap();
    assert_eq!(postlog.command().program(), "postlogd");

    let maildrop = cf.get("maildrop", ServiceType::Unix).unwrap();
    assert!(!maildrop.is_unprivileged());
    assert_eq!(
        maildrop.command().operands(),
        [
            "flags=DRXhu",
            "user=vmail",
            "argv=/usr/bin/maildrop",
            "-d",
            "${recipient}"
        ]
    );
    // smtp/inet and smtp/unix are different services.
    assert_eq!(
        cf.get("smtp", ServiceType::Unix)
            .unwrap()
            .command()
            .program(),
        "smtp"
    );
}

#[test]
fn book_procmail_example_over_continuation_lines() {
    let text = "# the book's example\n\
                procmail unix - n n - - pipe\n  \
                flags=R\n\
                # a comment does not end the entry\n\n  \
                argv=/usr/bin/procmail -t -m\n\t\
                USER=${user} EXTENSION=${extension}\n  \
                /etc/procmailrc\n\
                next unix - - n - - smtp\n";
    let (cf, warnings) = MasterCf::parse(text, "master.cf").unwrap();
    assert!(warnings.is_empty());
    let procmail = &cf.services()[0];
    assert_eq!(procmail.line(), 2);
    assert_eq!(procmail.name(), "procmail");
    assert_eq!(procmail.service_type(), ServiceType::Unix);
    assert_eq!(procmail.private_setting(), None);
    assert!(!procmail.is_unprivileged());
    assert!(!procmail.is_chrooted());
    assert_eq!(procmail.process_limit(), None);
    let command = procmail.command();
    assert_eq!(command.program(), "pipe");
    assert!(command.overrides().is_empty());
    assert_eq!(
        command.operands(),
        [
            "flags=R",
            "argv=/usr/bin/procmail",
            "-t",
            "-m",
            "USER=${user}",
            "EXTENSION=${extension}",
            "/etc/procmailrc"
        ]
    );
    assert_eq!(cf.services()[1].line(), 9);
    assert_eq!(
        cf.postconf_m(),
        "procmail   unix  -       n       n       -       -       pipe flags=R argv=/usr/bin/procmail -t -m USER=${user} EXTENSION=${extension} /etc/procmailrc\n\
         next       unix  -       -       n       -       -       smtp\n"
    );
}

#[test]
fn reference_site_overrides() {
    let path = data_dir().join("reference-site.cf");
    let text = fs::read_to_string(&path).unwrap();
    let cf = parse(&path, &text);
    let submission = cf.get("submission", ServiceType::Inet).unwrap();
    let command = submission.command();
    assert_eq!(
        command.override_value("smtpd_tls_security_level"),
        Some("encrypt")
    );
    assert_eq!(
        command.override_value("smtpd_client_restrictions"),
        Some("permit_sasl_authenticated, reject")
    );
    assert_eq!(
        command.override_value("smtpd_recipient_restrictions"),
        Some("permit_sasl_authenticated reject_unauth_destination")
    );
    assert!(command.operands().is_empty());
}

#[test]
fn corpus_parses_and_renders() {
    for (path, text) in files_in(&data_dir()) {
        let cf = parse(&path, &text);
        for service in cf.services() {
            // Every entry starts at the start of the line it names.
            let line = text.split('\n').nth(service.line() - 1).unwrap();
            assert!(
                line.starts_with(service.name()),
                "{}: {line}",
                path.display()
            );
            let prefix = format!("{}/{}/", service.name(), service.service_type());
            let fields = service.postconf_f();
            assert_eq!(fields.lines().filter(|l| l.starts_with(&prefix)).count(), 8);
        }
        assert_eq!(cf.postconf_m().lines().count(), cf.services().len());
        assert!(cf.postconf_mf().lines().count() >= cf.services().len());
    }
}

#[test]
fn warnings_in_the_corpus() {
    let path = data_dir().join("leading-whitespace.cf");
    let text = fs::read_to_string(&path).unwrap();
    let (_, warnings) = MasterCf::parse(&text, "master.cf").unwrap();
    assert_eq!(
        warnings,
        [MasterCfWarning::LeadingWhitespace {
            path: "master.cf".to_string(),
            line: 1,
            text: "   -o this_is_ignored=1   -o and_so_is_this=2".to_string(),
        }]
    );
    let path = data_dir().join("duplicates.cf");
    let text = fs::read_to_string(&path).unwrap();
    let (cf, warnings) = MasterCf::parse(&text, "master.cf").unwrap();
    let lines: Vec<(usize, usize)> = warnings
        .iter()
        .filter_map(|w| match w {
            MasterCfWarning::DuplicateService {
                line, earlier_line, ..
            } => Some((*line, *earlier_line)),
            _ => None,
        })
        .collect();
    assert_eq!(lines, [(3, 2), (6, 4), (7, 6), (10, 9)]);
    assert_eq!(cf.effective_services().count(), 5);
}

#[test]
fn broken_files_are_refused_with_file_and_line() {
    let expected: &[(&str, usize)] = &[
        ("field-count-continued.cf", 1),
        ("field-count.cf", 1),
        ("private.cf", 1),
        ("process-limit.cf", 1),
        ("type.cf", 3),
        ("vertical-tab-is-not-a-separator.cf", 2),
        ("wakeup.cf", 1),
    ];
    let files = files_in(&data_dir().join("errors"));
    assert_eq!(files.len(), expected.len());
    for ((path, text), (name, line)) in files.iter().zip(expected) {
        assert!(path.ends_with(name));
        let err = MasterCf::parse(text, "/etc/mta/master.cf").unwrap_err();
        let prefix = format!("/etc/mta/master.cf, line {line}: ");
        assert!(err.to_string().starts_with(&prefix), "{name}: {err}");
    }
    let err = MasterCf::parse(&files[2].1, "m").unwrap_err();
    assert!(matches!(
        err,
        MasterCfError::InvalidFlag {
            field: "private",
            ..
        }
    ));
}

/// A scratch configuration directory for `postconf -c`, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("mta-master-cf-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }

    /// Writes `name` with a modification time in the past: Postfix waits
    /// for a configuration file that changed within the last second to
    /// settle, which would make each run take seconds.
    fn write(&self, name: &str, text: &str) {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether to run the differential tests: false, after saying so, when
/// Postfix is not installed; a failure in CI, where it must be.
fn postconf_available() -> bool {
    if Path::new(POSTCONF).exists() {
        return true;
    }
    let why = "skipped: /usr/sbin/postconf not installed (run tools/install-test-peers.sh)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
    false
}

fn postconf(dir: &Path, flag: &str) -> std::process::Output {
    Command::new(POSTCONF)
        .arg("-c")
        .arg(dir)
        .arg(flag)
        .env_remove("MAIL_CONFIG")
        .output()
        .expect("run postconf")
}

#[test]
fn output_matches_postconf() {
    if !postconf_available() {
        return;
    }
    let mut failures = Vec::new();
    for (path, text) in files_in(&data_dir()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let cf = parse(&path, &text);
        let dir = ScratchDir::new(&name);
        dir.write("main.cf", "");
        dir.write("master.cf", &text);
        for (flag, ours) in [
            ("-M", cf.postconf_m()),
            ("-Mf", cf.postconf_mf()),
            ("-F", cf.postconf_f()),
            ("-P", cf.postconf_p()),
        ] {
            let out = postconf(&dir.0, flag);
            assert!(
                out.status.success(),
                "postconf {flag} failed on {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs = String::from_utf8_lossy(&out.stdout);
            if theirs != ours {
                failures.push(format!(
                    "{name} {flag}:\n--- postconf\n{theirs}--- ours\n{ours}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn refusals_match_postconf() {
    if !postconf_available() {
        return;
    }
    // postconf pauses a second before exiting on a fatal error: run the
    // files side by side.
    let mut runs = Vec::new();
    for (path, text) in files_in(&data_dir().join("errors")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(MasterCf::parse(&text, &name).is_err(), "{name}");
        let dir = ScratchDir::new(&format!("error-{name}"));
        dir.write("main.cf", "");
        dir.write("master.cf", &text);
        let child = Command::new(POSTCONF)
            .arg("-c")
            .arg(&dir.0)
            .arg("-M")
            .env_remove("MAIL_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run postconf");
        runs.push((name, dir, child));
    }
    for (name, _dir, mut child) in runs {
        let status = child.wait().expect("postconf exit status");
        assert!(!status.success(), "postconf accepted {name}");
    }
}

/// Files made of random entries with valid columns and odd commands, the
/// same for every run (a fixed xorshift sequence), compared with
/// `postconf` like the corpus.
#[test]
fn random_entries_match_postconf() {
    if !postconf_available() {
        return;
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let names = [
        "smtp",
        "a",
        "b",
        "[::1]:25",
        "127.0.0.1:smtp",
        "é",
        "{a b}",
        "x23456789012",
    ];
    let types = ["inet", "unix", "unix-dgram", "fifo", "pass"];
    let flags = ["-", "y", "n"];
    let wakeups = ["-", "0", "60", "1000?", "?", "-?", "007"];
    let limits = ["-", "0", "1", "100", "010"];
    let programs = [
        "smtpd",
        "pipe",
        "{c m}",
        "-o",
        "p23456789012345678901234567890",
    ];
    let dir = ScratchDir::new("random");
    dir.write("main.cf", "");
    let mut failures = Vec::new();
    for round in 0..32 {
        let mut text = String::new();
        for _ in 0..1 + next(12) {
            let mut entry = format!(
                "{} {} {} {} {} {} {} {}",
                names[next(names.len())],
                types[next(types.len())],
                flags[next(flags.len())],
                flags[next(flags.len())],
                flags[next(flags.len())],
                wakeups[next(wakeups.len())],
                limits[next(limits.len())],
                programs[next(programs.len())],
            );
            for _ in 0..next(14) {
                // Only separators that keep the columns apart: a vertical
                // tab would glue two columns into one invalid word.
                entry.push_str(SEPARATORS[next(SEPARATORS.len())]);
                entry.push_str(WORDS[next(WORDS.len())]);
            }
            text.push_str(&entry);
            text.push('\n');
        }
        let cf = parse(Path::new("random"), &text);
        dir.write("master.cf", &text);
        for (flag, ours) in [
            ("-M", cf.postconf_m()),
            ("-Mf", cf.postconf_mf()),
            ("-F", cf.postconf_f()),
            ("-P", cf.postconf_p()),
        ] {
            let out = postconf(&dir.0, flag);
            assert!(out.status.success(), "postconf {flag} failed on:\n{text}");
            let theirs = String::from_utf8_lossy(&out.stdout);
            if theirs != ours {
                failures.push(format!(
                    "round {round} {flag}:\n{text}--- postconf\n{theirs}--- ours\n{ours}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Words that exercise the reader: options, braces, clusters, oddities.
const WORDS: &[&str] = &[
    "-o",
    "-v",
    "-vo",
    "-ov",
    "-",
    "--",
    "--o",
    "-Dvo",
    "x=1",
    "{x = a b}",
    "{ a  b }",
    "{a}b",
    "{a b",
    "a{b c}",
    "{}",
    "{ }",
    "{-o}",
    "{{a}}",
    "-oo",
    "-oxo",
    "=x",
    "y=",
    "{= b}",
    "}",
    "{",
    "a}b",
    "é",
    "-é",
    "#",
    "$name",
    "${user}",
    "argv=/bin/cat",
    "\u{b}",
    "-o{y = 2}",
];
const SEPARATORS: &[&str] = &[
    " ", "\t", "  ", "\r\n ", "\n\t", "\n# c\n ", "\n\n  ", "\r ",
];
const COLUMNS: &[&str] = &[
    "-", "y", "n", "0", "60", "1000?", "?", "-?", "inet", "unix", "x",
];

fn entry() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["smtp", "a", "[::1]:25", "é", "{a b}"]),
        prop::sample::select(vec!["inet", "unix", "unix-dgram", "fifo", "pass", "bad"]),
        prop::collection::vec(prop::sample::select(COLUMNS), 5),
        prop::collection::vec(
            (
                prop::sample::select(SEPARATORS),
                prop::sample::select(WORDS),
            ),
            0..12,
        ),
    )
        .prop_map(|(name, kind, columns, words)| {
            let mut text = format!("{name} {kind} {} cmd", columns.join(" "));
            for (separator, word) in words {
                text.push_str(separator);
                text.push_str(word);
            }
            text
        })
}

fn exercise(text: &str) {
    if let Ok((cf, warnings)) = MasterCf::parse(text, "master.cf") {
        for warning in &warnings {
            assert!(warning.to_string().starts_with("master.cf, line "));
        }
        let _ = (
            cf.postconf_m(),
            cf.postconf_mf(),
            cf.postconf_f(),
            cf.postconf_p(),
        );
        for service in cf.services() {
            let _ = service.inet_endpoint();
            let command = service.command();
            assert!(command.operands().len() <= command.args().len());
        }
        let _ = cf.effective_services().count();
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        exercise(&text);
    }

    #[test]
    fn master_cf_shaped_text_never_panics(entries in prop::collection::vec(entry(), 0..6)) {
        exercise(&entries.join("\n"));
    }

    #[test]
    fn errors_name_the_file_and_a_line(entries in prop::collection::vec(entry(), 1..6)) {
        let text = entries.join("\n");
        if let Err(err) = MasterCf::parse(&text, "master.cf") {
            let message = err.to_string();
            let line: usize = message
                .strip_prefix("master.cf, line ")
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse().ok())
                .expect("file and line");
            prop_assert!(line >= 1 && line <= text.split('\n').count());
        }
    }
}
