//! `mtad -c DIR` on the reference site, end to end over loopback: the
//! smtpd services listen where master.cf says, mail to the site's users
//! is queued durably with smtpd's Received header and delivered to their
//! virtual maildirs, mail for elsewhere waits in the deferred queue, the site's content
//! rules refuse spam and banned attachments, and SIGTERM stops it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mta_queue::file::QueueFile;

mod common;

const MTAD: &str = env!("CARGO_BIN_EXE_mtad");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The reference site in a scratch directory, listening on free ports.
fn site(name: &str) -> (PathBuf, u16, u16) {
    let (smtp, submission) = (free_port(), free_port());
    let dir = common::compiled_site(name, |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{submission} "))
    });
    (dir, smtp, submission)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, port: u16) -> Daemon {
    let child = Command::new(MTAD)
        .args(["-c", &dir.display().to_string()])
        // A file, not a pipe: nobody reads a pipe while the test runs, and
        // a full one would stop mtad at its next log line.
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("mtad.log"))
                .unwrap(),
        ))
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "mtad did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon(child)
}

/// The one message that arrives in maildir directory `new`.
fn wait_for_message(new: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(Ok(entry)) = std::fs::read_dir(new).ok().and_then(|mut d| d.next()) {
            return std::fs::read_to_string(entry.path()).unwrap();
        }
        assert!(
            Instant::now() < until,
            "nothing delivered to {}",
            new.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain SMTP client: sends each command, returns each reply.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> (Client, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = c.reply();
        (c, greeting)
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "connection closed; so far {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn send(&mut self, text: &str) -> String {
        self.writer
            .write_all(format!("{text}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// A whole transaction; returns the reply to the end of data.
    fn mail(&mut self, from: &str, to: &[&str], message: &str) -> String {
        assert!(self.send(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        for t in to {
            let r = self.send(&format!("RCPT TO:<{t}>"));
            assert!(r.starts_with("250"), "RCPT {t}: {r}");
        }
        assert!(self.send("DATA").starts_with("354"));
        let body = message.replace('\n', "\r\n");
        self.writer.write_all(body.as_bytes()).unwrap();
        self.send(".")
    }
}

const EXE: &str = "Subject: report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\nContent-Type: text/plain\n\nsee attached\n--XYZ\nContent-Type: application/octet-stream;\n\tname=\"invoice.pdf.scr\"\nContent-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n--XYZ--\n";

/// Adds `lines` to the site's main.cf (a later setting wins, as in
/// Postfix).
fn add_main_cf(dir: &Path, lines: &str) {
    let path = dir.join("main.cf");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(lines);
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_reference_site_receives_and_delivers_mail() {
    let (dir, smtp, submission) = site("daemon");
    // The Internet stand-in for example.net takes no connections.
    let closed = free_port();
    add_main_cf(
        &dir,
        &format!("transport_maps = inline:{{ example.net=smtp:[127.0.0.1]:{closed} }}\n"),
    );
    let mut daemon = start(&dir, smtp);
    let (mut c, greeting) = Client::connect(smtp);
    assert_eq!(greeting, "220 mail.example.com ESMTP mtad\r\n");
    // smtpd_helo_required = yes, as the site asks.
    assert!(
        c.send("MAIL FROM:<alice@example.org>")
            .starts_with("503 5.5.1")
    );
    assert!(
        c.send("EHLO client.example.org")
            .starts_with("250-mail.example.com")
    );
    let r = c.mail(
        "alice@example.org",
        &["bob@example.com", "carol@example.com"],
        "Subject: first light\nFrom: alice@example.org\n\nHello.\n..and a stuffed line\n",
    );
    let id = r
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{r}"))
        .trim()
        .to_string();
    // The queue manager delivers it to both virtual maildirs, then
    // removes it from the queue.
    let bob = wait_for_message(&dir.join("state/mail/example.com/bob/new"));
    let carol = wait_for_message(&dir.join("state/mail/example.com/carol/new"));
    let until = Instant::now() + Duration::from_secs(20);
    while dir.join("state/queue/active").join(&id).exists() {
        assert!(Instant::now() < until, "{id} stays in active");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        bob.starts_with("Return-Path: <alice@example.org>\nX-Original-To: bob@example.com\nDelivered-To: bob@example.com\nReceived: from client.example.org (unknown [127.0.0.1])\n\tby mail.example.com (mtad) with ESMTP id "),
        "{bob}"
    );
    assert!(
        carol.contains("Delivered-To: carol@example.com\n"),
        "{carol}"
    );
    // Two recipients: no "for", the date on its own line, as Postfix.
    let received: Vec<&str> = bob.split('\n').skip(3).take(3).collect();
    assert!(received[1].ends_with(&format!(" id {id};")), "{received:?}");
    assert!(
        received[2].starts_with('\t') && received[2].ends_with("+0000 (UTC)"),
        "{received:?}"
    );
    // Maildirs store LF lines, and the dot-stuffing is undone.
    assert!(
        bob.ends_with(
            "Subject: first light\nFrom: alice@example.org\n\nHello.\n.and a stuffed line\n"
        ),
        "{bob}"
    );

    // Mail for the Internet is relayed for this machine (mynetworks);
    // while its next hop refuses connections, it waits in the deferred
    // queue.
    let r = c.mail(
        "alice@example.org",
        &["dave@example.net"],
        "Subject: out\n\nto the world\n",
    );
    let out_id = r
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{r}"))
        .trim()
        .to_string();
    let deferred = dir.join("state/queue/deferred").join(&out_id);
    let until = Instant::now() + Duration::from_secs(20);
    while !deferred.exists() {
        assert!(Instant::now() < until, "{out_id} is not deferred");
        std::thread::sleep(Duration::from_millis(20));
    }
    let queued = QueueFile::read(&deferred).unwrap();
    assert_eq!(queued.envelope.sender, "alice@example.org");
    assert_eq!(queued.envelope.recipients[0].address, "dave@example.net");
    assert!(!queued.envelope.recipients[0].done);
    assert_eq!(
        queued.envelope.attribute("client_address"),
        Some("127.0.0.1")
    );
    // mailq lists it.
    let out = Command::new(MTAD)
        .args(["mailq", "-c", &dir.display().to_string()])
        .output()
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing.starts_with(
            "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"
        ),
        "{listing}"
    );
    assert!(listing.contains(&format!("{out_id} ")), "{listing}");
    assert!(listing.contains(" alice@example.org\n"), "{listing}");
    // The reason from the defer log, right-aligned as Postfix's showq
    // prints it, then the recipient.
    assert!(
        listing.contains(&format!(
            "(connect to 127.0.0.1[127.0.0.1]:{closed}: Connection refused)\n{:47}dave@example.net\n",
            ""
        )),
        "{listing}"
    );
    assert!(listing.ends_with("in 1 Request.\n"), "{listing}");
    // postcat finds it by queue ID, as Postfix's does.
    let out = Command::new(MTAD)
        .args(["postcat", "-c", &dir.display().to_string(), "-q", &out_id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.starts_with(&format!("*** ENVELOPE RECORDS deferred/{out_id} ***\n")),
        "{shown}"
    );
    assert!(shown.contains("sender: alice@example.org\n"), "{shown}");
    assert!(shown.contains("recipient: dave@example.net\n"), "{shown}");
    assert!(
        shown.contains(&format!(
            "*** MESSAGE CONTENTS deferred/{out_id} ***\nReceived: from client.example.org"
        )),
        "{shown}"
    );
    assert!(
        shown.ends_with(&format!("*** MESSAGE FILE END deferred/{out_id} ***\n")),
        "{shown}"
    );

    // The site's header and attachment rules (seed 004).
    let r = c.mail(
        "alice@example.org",
        &["bob@example.com"],
        "Subject: FREE OFFER!! today\n\nbuy\n",
    );
    assert_eq!(r, "550 5.7.1 message content rejected\r\n");
    let r = c.mail("alice@example.org", &["bob@example.com"], EXE);
    assert_eq!(r, "550 5.7.1 Mail contains banned attachment\r\n");
    // fast_flush_domains defaults to $relay_domains, empty at this site.
    assert_eq!(
        c.send("ETRN example.net"),
        "459 <example.net>: service unavailable\r\n"
    );
    assert!(c.send("QUIT").starts_with("221"));
    // Refused messages leave nothing behind: the queue holds only the
    // deferred one.
    for q in ["incoming", "active"] {
        let files = std::fs::read_dir(dir.join("state/queue").join(q))
            .unwrap()
            .count();
        assert_eq!(files, 0, "{q}");
    }

    // The submission port is up too.
    let (mut s, greeting) = Client::connect(submission);
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(s.send("QUIT").starts_with("221"));

    // SIGTERM: a graceful stop.
    let pid = nix::unistd::Pid::from_raw(daemon.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < until, "mtad did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut log = String::new();
    std::io::Read::read_to_string(
        &mut std::fs::File::open(dir.join("mtad.log")).unwrap(),
        &mut log,
    )
    .unwrap();
    assert!(log.contains("postfix/smtpd["), "{log}");
    assert!(
        log.contains(&format!("{id}: client=unknown[127.0.0.1]")),
        "{log}"
    );
    assert!(log.contains("terminating on signal"), "{log}");
    // The delivery, logged as Postfix's virtual(8) logs it.
    assert!(
        log.contains(&format!(
            "postfix/virtual[{}]: {id}: to=<bob@example.com>, relay=virtual, delay=",
            daemon.0.id()
        )),
        "{log}"
    );
    assert!(log.contains(&format!("{id}: removed")), "{log}");
    assert!(
        log.contains(&format!(
            "{out_id}: to=<dave@example.net>, relay=none, delay="
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:{closed}: Connection refused)"
        )),
        "{log}"
    );
    // cleanup's line for the refused message, in Postfix's words.
    assert!(
        log.contains(": reject: header Subject: FREE OFFER!! today from unknown[127.0.0.1]; from=<alice@example.org> to=<bob@example.com> proto=ESMTP helo=<client.example.org>: 5.7.1 message content rejected"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// All the files delivered to maildir directory `new`, once there are `n`.
fn wait_for_messages(new: &Path, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if files.len() >= n {
            assert_eq!(files.len(), n, "{}", new.display());
            return files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap())
                .collect();
        }
        assert!(
            Instant::now() < until,
            "{} has {} of {n}",
            new.display(),
            files.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn virtual_aliases_reach_their_mailboxes_once() {
    let (dir, smtp, _) = site("aliases");
    let _daemon = start(&dir, smtp);
    let (mut c, _) = Client::connect(smtp);
    c.send("EHLO client.example.org");
    // postmaster@ is alice; staff@ is everyone in example.com, alice too:
    // she gets one copy.
    let r = c.mail(
        "carol@example.org",
        &["postmaster@example.org", "staff@example.com"],
        "Subject: hello all\n\nmeeting at noon\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let mail = dir.join("state/mail/example.com");
    let alice = wait_for_messages(&mail.join("alice/new"), 1);
    assert!(
        alice[0].starts_with("Return-Path: <carol@example.org>\nX-Original-To: postmaster@example.org\nDelivered-To: alice@example.com\n"),
        "{}",
        alice[0]
    );
    for user in ["bob", "carol", "dave", "erin"] {
        let got = wait_for_messages(&mail.join(user).join("new"), 1);
        assert!(
            got[0].contains(&format!(
                "\nX-Original-To: staff@example.com\nDelivered-To: {user}@example.com\n"
            )),
            "{user}: {}",
            got[0]
        );
    }
    assert!(c.send("QUIT").starts_with("221"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn held_mail_waits_until_the_postmaster_releases_it() {
    let (dir, smtp, _) = site("hold");
    let _daemon = start(&dir, smtp);
    let (mut c, _) = Client::connect(smtp);
    c.send("EHLO client.example.org");
    let r = c.mail(
        "carol@example.org",
        &["bob@example.com"],
        "Subject: our newsletter\nPrecedence: bulk\n\nnews\n",
    );
    let id = r
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{r}"))
        .trim()
        .to_owned();
    assert!(c.send("QUIT").starts_with("221"));
    let c = dir.display().to_string();
    let mailq = || {
        let out = Command::new(MTAD)
            .args(["mailq", "-c", &c])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let listing = mailq();
    assert!(listing.contains(&format!("{id}!")), "{listing}");
    assert!(listing.contains("carol@example.org"), "{listing}");
    // The scheduler leaves it alone.
    std::thread::sleep(Duration::from_millis(500));
    let bob = dir.join("state/mail/example.com/bob/new");
    assert_eq!(std::fs::read_dir(&bob).map_or(0, |d| d.count()), 0);

    let out = Command::new(MTAD)
        .args(["postsuper", "-c", &c, "-H", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("postsuper: Released from hold: 1 message"),
        "{said}"
    );
    let got = wait_for_messages(&bob, 1);
    assert!(got[0].contains("Subject: our newsletter\n"), "{}", got[0]);
    assert!(!mailq().contains(&id));

    // Held again and deleted: it is gone for good.
    let mut c2 = Client::connect(smtp).0;
    c2.send("EHLO client.example.org");
    let r = c2.mail(
        "carol@example.org",
        &["bob@example.com"],
        "Subject: more news\nPrecedence: bulk\n\nnews\n",
    );
    assert!(r.starts_with("250"), "{r}");
    // Requeued, it goes through cleanup again, and the rule holds it
    // again under a new queue ID.
    let old = mailq()
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .next()
                .filter(|w| w.ends_with('!'))
                .map(|w| w.trim_end_matches('!').to_owned())
        })
        .expect("a held message");
    let out = Command::new(MTAD)
        .args(["postsuper", "-c", &c, "-r", &old])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("postsuper: Requeued: 1 message"),
        "{out:?}"
    );
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let listing = mailq();
        if !listing.contains(&old) && listing.contains("!") {
            break;
        }
        assert!(Instant::now() < until, "{listing}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(MTAD)
        .args(["postsuper", "-c", &c, "-d", "ALL", "hold"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("postsuper: Deleted: 1 message"),
        "{out:?}"
    );
    assert_eq!(mailq(), "Mail queue is empty\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn local_aliases_forward_through_the_queue() {
    // postmaster@mail.example.com is local (mydestination): aliases
    // postmaster -> root -> alice@example.com, which the local agent
    // resubmits; the new message reaches alice's virtual maildir.
    let (dir, smtp, _) = site("local-aliases");
    let daemon = start(&dir, smtp);
    let (mut c, _) = Client::connect(smtp);
    c.send("EHLO client.example.org");
    let r = c.mail(
        "carol@example.org",
        &["postmaster@mail.example.com"],
        "Subject: to the local postmaster\n\nhello\n",
    );
    let id = r
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{r}"))
        .trim()
        .to_string();
    let alice = wait_for_messages(&dir.join("state/mail/example.com/alice/new"), 1);
    // The forwarded copy: the local agent's Delivered-To for the alias,
    // the virtual agent's for alice, the original recipient kept.
    assert!(
        alice[0].starts_with(
            "Return-Path: <carol@example.org>\nX-Original-To: postmaster@mail.example.com\nDelivered-To: alice@example.com\nDelivered-To: postmaster@mail.example.com\nReceived: from client.example.org"
        ),
        "{}",
        alice[0]
    );
    assert!(c.send("QUIT").starts_with("221"));
    let pid = daemon.0.id();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
        let forwarded = log.lines().find_map(|l| {
            l.split_once(&format!(
                "postfix/local[{pid}]: {id}: to=<postmaster@mail.example.com>, relay=local, "
            ))
            .and_then(|(_, rest)| rest.split_once("status=sent (forwarded as "))
            .map(|(_, new)| new.trim_end_matches(')').to_owned())
        });
        if let Some(new_id) = forwarded {
            // The copy is a message of its own, delivered by virtual, and
            // the original is gone.
            assert!(
                log.contains(&format!("{new_id}: to=<alice@example.com>, orig_to=<postmaster@mail.example.com>, relay=virtual")),
                "{log}"
            );
            assert!(log.contains(&format!("{id}: removed")), "{log}");
            break;
        }
        assert!(Instant::now() < until, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends message number `n` to bob@example.com on one connection; true
/// when the server said 250 after the data. Any failure (the server was
/// killed) is false.
fn try_send(port: u16, n: usize) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut w = stream.try_clone()?;
        let mut r = BufReader::new(stream);
        let mut reply = || -> std::io::Result<String> {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                all.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(all);
                }
            }
        };
        reply()?;
        for cmd in [
            "EHLO client.example.org",
            "MAIL FROM:<alice@example.org>",
            "RCPT TO:<bob@example.com>",
            "DATA",
        ] {
            w.write_all(format!("{cmd}\r\n").as_bytes())?;
            reply()?;
        }
        w.write_all(format!("Subject: load {n}\r\n\r\nmessage {n}\r\n.\r\n").as_bytes())?;
        let done = reply()?;
        let _ = w.write_all(b"QUIT\r\n");
        if !done.starts_with("250 ") {
            eprintln!("message {n}: {done}");
        }
        Ok(done.starts_with("250 "))
    };
    attempt().unwrap_or_else(|e| {
        eprintln!("message {n}: {e}");
        false
    })
}

/// The durability contract under a crash: mtad killed with SIGKILL while
/// four clients send and the queue manager delivers; after a restart,
/// every message that got a 250 is in the maildir.
#[test]
fn every_accepted_message_survives_a_kill() {
    let (dir, smtp, _) = site("kill");
    let mut daemon = start(&dir, smtp);
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let accepted = std::sync::Arc::clone(&accepted);
            std::thread::spawn(move || {
                for k in 0..1000 {
                    let n = t * 1000 + k;
                    if !try_send(smtp, n) {
                        return;
                    }
                    accepted.lock().unwrap().push(n);
                }
            })
        })
        .collect();
    // Kill it once a good number is through, deliveries under way.
    let until = Instant::now() + Duration::from_secs(30);
    while accepted.lock().unwrap().len() < 150 {
        assert!(Instant::now() < until, "too slow to load");
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    for s in senders {
        s.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let queued: usize = ["incoming", "active", "deferred"]
        .iter()
        .map(|q| {
            std::fs::read_dir(dir.join("state/queue").join(q))
                .unwrap()
                .count()
        })
        .sum();
    eprintln!(
        "killed with {} accepted, {queued} in the queue",
        accepted.len()
    );

    // Restart: recovery, then delivery of what was left.
    let _daemon = start(&dir, smtp);
    let new = dir.join("state/mail/example.com/bob/new");
    let delivered = || -> std::collections::HashSet<usize> {
        std::fs::read_dir(&new)
            .map(|d| {
                d.filter_map(|e| {
                    let text = std::fs::read_to_string(e.ok()?.path()).ok()?;
                    let line = text.lines().find(|l| l.starts_with("Subject: load "))?;
                    line["Subject: load ".len()..].parse().ok()
                })
                .collect()
            })
            .unwrap_or_default()
    };
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let got = delivered();
        let missing: Vec<_> = accepted.iter().filter(|n| !got.contains(n)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "{} of {} accepted messages never delivered: {:?}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::read_dir(dir.join("state/queue/corrupt"))
            .unwrap()
            .count()
            <= 4,
        "at most the messages being written at the kill are torn"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smuggling_probes_deliver_nothing_extra() {
    // SEC Consult's false ends of data, each followed by a smuggled
    // transaction to erin: a client in mynetworks (it may relay) sends
    // them all in one message. erin must get nothing; bob gets one
    // message per probe, and none holds a second message's headers.
    let (dir, smtp, _) = site("smuggling");
    let _daemon = start(&dir, smtp);
    let probes: [&[u8]; 8] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n.\r\r\n",
        b"\r\r\n.\r\r\n",
        b"\r\n\0.\r\n",
    ];
    for probe in probes {
        let stream = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut reply = || {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return all;
                }
                all.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return all;
                }
            }
        };
        assert!(reply().starts_with("220"));
        for cmd in [
            "EHLO client.example.org",
            "MAIL FROM:<carol@example.org>",
            "RCPT TO:<bob@example.com>",
            "DATA",
        ] {
            writer.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
            let r = reply();
            assert!(r.starts_with('2') || r.starts_with('3'), "{cmd}: {r}");
        }
        let mut data = b"From: carol@example.org\r\nSubject: probe\r\n\r\nbefore".to_vec();
        data.extend_from_slice(probe);
        data.extend_from_slice(
            b"MAIL FROM:<carol@example.org>\r\nRCPT TO:<erin@example.com>\r\nDATA\r\nFrom: forged@example.org\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n",
        );
        writer.write_all(&data).unwrap();
        // What comes back is one reply to the whole DATA, or a refusal
        // of the bare line ends; never a reply to a smuggled command.
        let end = reply();
        assert!(
            end.starts_with("250 2.0.0 Ok: queued as ") || end.starts_with("5"),
            "{probe:?}: {end}"
        );
        let _ = writer.write_all(b"QUIT\r\n");
    }
    std::thread::sleep(Duration::from_millis(500));
    let erin = dir.join("state/mail/example.com/erin/new");
    assert_eq!(
        std::fs::read_dir(&erin).map_or(0, |d| d.count()),
        0,
        "a smuggled message was delivered"
    );
    let bob = dir.join("state/mail/example.com/bob/new");
    let accepted = std::fs::read_dir(&bob).map_or(0, |d| d.count());
    assert!(accepted >= 1, "the probes' own messages are delivered");
    for m in std::fs::read_dir(&bob).unwrap() {
        let text = std::fs::read_to_string(m.unwrap().path()).unwrap();
        let (headers, _) = text.split_once("\n\n").unwrap();
        assert!(!headers.contains("forged@example.org"), "{text}");
        assert_eq!(headers.matches("Subject:").count(), 1, "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
