//! The reference site as mtad's tests use it: copied to a scratch
//! directory and its tables compiled, as an administrator leaves it after
//! `postmap` and `postalias` (the repository keeps only the sources);
//! and the small things every end-to-end test needs: free ports, child
//! processes that die with the test, a one-shot SMTP client.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `examples/small-office` copied to a scratch directory named after
/// `name`, with `master.cf` passed through `edit_master` and the hash
/// tables compiled by mtad itself.
pub(crate) fn compiled_site(name: &str, edit_master: impl Fn(String) -> String) -> PathBuf {
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../small-office");
    let dir = std::env::temp_dir().join(format!("mtad-site-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "main.cf",
        "vmailbox",
        "virtual",
        "aliases",
        "header_checks",
        "body_checks",
        "sasl_passwd",
        "sender_logins",
    ] {
        std::fs::copy(source.join(f), dir.join(f)).unwrap();
    }
    let master = std::fs::read_to_string(source.join("master.cf")).unwrap();
    // The smtps service moves to a free port unless the test moved it.
    let master = edit_master(master);
    let smtps = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let master = master.replace("127.0.0.1:4650 ", &format!("127.0.0.1:{smtps} "));
    std::fs::write(dir.join("master.cf"), master).unwrap();
    let c = dir.display().to_string();
    for (tool, table) in [
        ("postmap", "vmailbox"),
        ("postmap", "virtual"),
        ("postalias", "aliases"),
    ] {
        let status = Command::new(mtad)
            .args([tool, "-c", &c, &format!("hash:{c}/{table}")])
            .status()
            .unwrap();
        assert!(status.success(), "{tool} {table}");
    }
    dir
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `tool` is installed; says why not (or fails, in CI).
pub(crate) fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is not installed: CI must install it");
        }
        eprintln!("skipped: {tool} is not installed");
    }
    ok
}

/// Waits until something listens on `port`.
pub(crate) fn wait_for_port(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One SMTP transaction (EHLO, MAIL, RCPT, DATA, the message with LF
/// lines, QUIT); the reply to the end of data. The envelope commands must
/// be accepted.
pub(crate) fn send(port: u16, from: &str, to: &str, message: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    assert!(reply().starts_with("220 "));
    for command in [
        "EHLO client.example.org".to_owned(),
        format!("MAIL FROM:<{from}>"),
        format!("RCPT TO:<{to}>"),
        "DATA".to_owned(),
    ] {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let r = reply();
        assert!(r.starts_with('2') || r.starts_with('3'), "{command}: {r}");
    }
    let mut data = message.replace('\n', "\r\n");
    if !data.ends_with("\r\n") {
        data.push_str("\r\n");
    }
    writer.write_all(format!("{data}.\r\n").as_bytes()).unwrap();
    let r = reply();
    writer.write_all(b"QUIT\r\n").unwrap();
    r
}

pub(crate) const SINK: &str = "/usr/sbin/smtp-sink";

/// `smtp-sink` on 127.0.0.1 dumping messages into `dump` (a directory
/// anyone may write: it runs as nobody under root).
pub(crate) fn sink(dump: &Path, options: &[&str]) -> (Running, u16) {
    sink_at(dump, options, free_port())
}

/// [`sink`] on a given port (one a test already told mtad about).
pub(crate) fn sink_at(dump: &Path, options: &[&str], port: u16) -> (Running, u16) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dump).unwrap();
    std::fs::set_permissions(dump, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = Command::new(SINK);
    if nix::unistd::geteuid().is_root() {
        cmd.args(["-u", "nobody"]);
    }
    let child = cmd
        .args(["-d", &format!("{}/msg", dump.display())])
        .args(options)
        .arg(format!("127.0.0.1:{port}"))
        .arg("10")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start smtp-sink");
    let child = Running(child);
    wait_for_port(port, "smtp-sink");
    (child, port)
}

pub(crate) fn wait_for_files(dir: &Path, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if files.len() >= n {
            files.sort();
            let read = || -> Vec<String> {
                files
                    .iter()
                    .map(|f| std::fs::read_to_string(f).unwrap_or_default())
                    .collect()
            };
            // smtp-sink writes its dump files as the message comes: take
            // them once they are whole (not empty, unchanged a moment
            // later). Maildir files appear whole.
            let first = read();
            std::thread::sleep(Duration::from_millis(50));
            let second = read();
            if first == second && second.iter().all(|c| !c.is_empty()) {
                return second;
            }
        }
        assert!(
            Instant::now() < until,
            "{} files in {}",
            files.len(),
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An SMTP connection after its greeting: a reader and a writer.
pub(crate) fn smtp_session(port: u16) -> (BufReader<TcpStream>, TcpStream) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let greeting = read_reply(&mut reader);
    assert!(greeting.starts_with("220 "), "{greeting}");
    (reader, stream)
}

/// One reply, all its lines.
pub(crate) fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "connection closed after {all:?}");
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

/// Sends one command line; its reply.
pub(crate) fn say(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream, line: &str) -> String {
    writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    read_reply(reader)
}

/// Whether Debian's `smtp-sink` is here; says why not (or fails, in CI).
pub(crate) fn have_sink() -> bool {
    if Path::new(SINK).exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("smtp-sink is not installed: CI must install postfix");
    }
    eprintln!("skipped: smtp-sink is not installed");
    false
}

/// `mtad -c DIR`, its log appended to `DIR/mtad.log`, once it listens on
/// `port`.
pub(crate) fn start_mtad(dir: &Path, port: u16) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("mtad.log"))
        .unwrap();
    let daemon = Running(
        Command::new(env!("CARGO_BIN_EXE_mtad"))
            .args(["-c", &dir.display().to_string()])
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, "mtad");
    daemon
}

/// Waits until `DIR/mtad.log` holds `what`; fails with the log.
pub(crate) fn wait_for_log(dir: &Path, what: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap_or_default();
        if log.contains(what) {
            return;
        }
        assert!(Instant::now() < until, "no {what:?} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
