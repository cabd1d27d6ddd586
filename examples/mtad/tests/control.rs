//! Running the daemon as an administrator does, with `postfix`'s verbs:
//! `mtad status` reads the pid file's lock, a second `mtad` on the same
//! configuration refuses to start, `mtad reload` puts an edited table in
//! force without dropping an open SMTP session, a broken configuration is
//! refused by the reload while the old one keeps working, and `mtad
//! stop` ends the daemon and waits until it has.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Running, free_port, wait_for_port};

const MTAD: &str = env!("CARGO_BIN_EXE_mtad");

fn mtad(dir: &Path, verb: &str) -> Output {
    Command::new(MTAD)
        .args([verb, "-c", &dir.display().to_string()])
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An SMTP session kept open across the reload.
struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Session {
    fn open(port: u16) -> Session {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut s = Session {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        assert!(s.reply().starts_with("220 "));
        assert!(s.say("EHLO client.example.org").starts_with("250"));
        s
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "connection closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn say(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// MAIL and RCPT; the reply to RCPT. The transaction is reset.
    fn try_rcpt(&mut self, to: &str) -> String {
        assert!(self.say("MAIL FROM:<alice@example.org>").starts_with("250"));
        let r = self.say(&format!("RCPT TO:<{to}>"));
        assert!(self.say("RSET").starts_with("250"));
        r
    }
}

#[test]
fn status_reload_and_stop() {
    let smtp = free_port();
    let dir = common::compiled_site("control", |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{} ", free_port()))
    });
    let status = mtad(&dir, "status");
    assert_eq!(status.status.code(), Some(1));
    assert!(stderr(&status).contains("the mail system is not running"));
    let stop = mtad(&dir, "stop");
    assert_eq!(stop.status.code(), Some(1));
    assert!(stderr(&stop).contains("fatal: the mail system is not running"));

    let log = std::fs::File::create(dir.join("mtad.log")).unwrap();
    let mut daemon = Running(
        Command::new(MTAD)
            .args(["-c", &dir.display().to_string()])
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    wait_for_port(smtp, "mtad");
    let pid = daemon.0.id();
    let status = mtad(&dir, "status");
    assert!(status.status.success(), "{status:?}");
    assert!(
        stderr(&status).contains(&format!("the mail system is running: PID: {pid}")),
        "{}",
        stderr(&status)
    );
    let pid_file = std::fs::read_to_string(dir.join("state/data/master.pid")).unwrap();
    assert_eq!(pid_file.trim(), pid.to_string());

    // A second daemon on the same configuration refuses to start.
    let second = Command::new(MTAD)
        .args(["-c", &dir.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains(&format!("the mail system is already running: PID: {pid}")),
        "{}",
        stderr(&second)
    );

    // A new mailbox: unknown before the reload.
    let mut open = Session::open(smtp);
    let before = open.try_rcpt("grace@example.com");
    assert!(before.starts_with("550 5.1.1"), "{before}");
    let mut vmailbox = std::fs::read_to_string(dir.join("vmailbox")).unwrap();
    vmailbox.push_str("grace@example.com example.com/grace/\n");
    std::fs::write(dir.join("vmailbox"), vmailbox).unwrap();
    let c = dir.display().to_string();
    assert!(
        Command::new(MTAD)
            .args(["postmap", "-c", &c, &format!("hash:{c}/vmailbox")])
            .status()
            .unwrap()
            .success()
    );
    let reload = mtad(&dir, "reload");
    assert!(reload.status.success(), "{reload:?}");
    assert!(stderr(&reload).contains("refreshing the mail system"));
    common::wait_for_log(&dir, "reloaded: ");
    // A new session sees the new table...
    let mut fresh = Session::open(smtp);
    let after = fresh.try_rcpt("grace@example.com");
    assert!(after.starts_with("250"), "{after}");
    // ...and the session that was open before still works: not dropped.
    let still = open.try_rcpt("alice@example.com");
    assert!(still.starts_with("250"), "{still}");

    // A configuration with an error: the reload is refused, the running
    // configuration stays, and says so.
    let main_cf = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    std::fs::write(
        dir.join("main.cf"),
        format!("{main_cf}smtpd_recipient_restrictions = permit_mynetworks, no_such_restriction\n"),
    )
    .unwrap();
    assert!(mtad(&dir, "reload").status.success());
    common::wait_for_log(&dir, "the running configuration stays in force");
    let mut third = Session::open(smtp);
    assert!(third.try_rcpt("grace@example.com").starts_with("250"));
    drop((open, fresh, third));
    std::fs::write(dir.join("main.cf"), main_cf).unwrap();

    // stop waits until the daemon is gone.
    let stop = mtad(&dir, "stop");
    assert!(stop.status.success(), "{stop:?}");
    assert!(stderr(&stop).contains("the mail system has stopped"));
    let exited = daemon.0.try_wait().unwrap();
    assert!(exited.is_some(), "mtad still runs after stop returned");
    assert!(TcpStream::connect(("127.0.0.1", smtp)).is_err());
    assert_eq!(mtad(&dir, "status").status.code(), Some(1));
}

#[test]
fn the_log_goes_where_maillog_file_says() {
    let smtp = free_port();
    let dir = common::compiled_site("maillog", |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{} ", free_port()))
    });
    let main_cf = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    let logfile = dir.join("maillog");
    // Outside maillog_file_prefixes: refused, as Postfix refuses it.
    std::fs::write(
        dir.join("main.cf"),
        format!("{main_cf}maillog_file = {}\n", logfile.display()),
    )
    .unwrap();
    let refused = Command::new(MTAD)
        .args(["-c", &dir.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("not under any of maillog_file_prefixes"),
        "{}",
        stderr(&refused)
    );
    std::fs::write(
        dir.join("main.cf"),
        format!(
            "{main_cf}maillog_file = {}\nmaillog_file_prefixes = {}\ndebug_peer_list = 127.0.0.1\n",
            logfile.display(),
            dir.display()
        ),
    )
    .unwrap();
    let _daemon = Running(
        Command::new(MTAD)
            .args(["-c", &dir.display().to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(smtp, "mtad");
    let mut s = Session::open(smtp);
    assert!(s.try_rcpt("nobody-here@example.com").starts_with("550"));
    drop(s);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&logfile).unwrap_or_default();
        // The daemon's own lines and the smtpd's refusal, in Postfix's shape.
        if log.contains("postfix/master[")
            && log.contains("]: daemon started -- configuration")
            && log.contains("postfix/smtpd[")
            && log.contains("NOQUEUE: reject: RCPT from ")
            // debug_peer_list: this client's protocol, both ways.
            && log.contains("]: < unknown[127.0.0.1]: EHLO client.example.org")
            && log.contains("]: > unknown[127.0.0.1]: 250-")
            && log.contains("]: < unknown[127.0.0.1]: RCPT TO:<nobody-here@example.com>")
        {
            break;
        }
        assert!(Instant::now() < until, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
