//! The client session against real Postfix programs on 127.0.0.1:
//! `smtp-sink` (Postfix's test server) and Debian's Postfix `smtpd` in a
//! throwaway instance. Each test skips with a printed reason where the
//! program is missing, and fails instead when the environment variable
//! `CI` is set.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mta_core::address::{MailAddress, ReversePath};
use mta_smtp::client::{
    ClientConfig, ClientEvent, ClientSession, FailureKind, Transaction, TransactionResult, Verdict,
};

/// Whether `program` can run here; prints why not, or panics under CI.
fn have(program: &str) -> bool {
    if Path::new(program).exists() {
        return true;
    }
    let reason = format!("{program} is not installed (Debian package postfix)");
    if std::env::var_os("CI").is_some() {
        panic!("{reason}");
    }
    eprintln!("skipped: {reason}");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An `smtp-sink` process, killed on drop.
struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    fn start(options: &[&str]) -> Sink {
        let port = free_port();
        let mut cmd = Command::new("/usr/sbin/smtp-sink");
        cmd.args(options);
        if is_root() {
            cmd.args(["-u", "root"]);
        }
        cmd.arg(format!("127.0.0.1:{port}")).arg("10");
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().expect("start smtp-sink");
        wait_for_port(port);
        Sink { child, port }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one session produced.
#[derive(Debug, Default)]
struct Outcome {
    events: Vec<ClientEvent>,
    results: Vec<TransactionResult>,
}

/// Drives `session` over a blocking TCP connection: the tiny I/O loop a
/// connector will replace. Starts `tx` when ready, streams `content` in
/// `chunk`-sized pieces, then quits.
fn run(
    port: u16,
    config: ClientConfig,
    mut txs: Vec<Transaction>,
    content: &[u8],
    chunk: usize,
) -> Outcome {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut session = ClientSession::new(config, Instant::now());
    let mut outcome = Outcome::default();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let give_up = Instant::now() + Duration::from_secs(30);
    txs.reverse();
    loop {
        assert!(
            Instant::now() < give_up,
            "session stuck: {:?}",
            outcome.events
        );
        while let Some(event) = session.poll_event() {
            let now = Instant::now();
            match &event {
                ClientEvent::Ready { .. } => match txs.pop() {
                    Some(tx) => session.start_transaction(tx, now),
                    None => session.quit(now),
                },
                ClientEvent::WantContent => {
                    for piece in content.chunks(chunk.max(1)) {
                        session.send_content(piece);
                    }
                    session.end_content(now);
                }
                ClientEvent::TransactionDone(r) => {
                    outcome.results.push(r.clone());
                    match txs.pop() {
                        Some(tx) => session.start_transaction(tx, now),
                        None => session.quit(now),
                    }
                }
                _ => {}
            }
            outcome.events.push(event);
        }
        session.poll_transmit(&mut out);
        if !out.is_empty() {
            stream.write_all(&out).unwrap();
            out.clear();
        }
        if session.is_closed() {
            return outcome;
        }
        match stream.read(&mut buf) {
            Ok(0) => session.connection_closed(),
            Ok(n) => session.handle_input(&buf[..n], Instant::now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                session.handle_timeout(Instant::now());
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn addr(a: &str) -> MailAddress {
    a.parse().unwrap()
}

fn tx(rcpts: &[&str]) -> Transaction {
    let mut tx = Transaction::new(
        ReversePath::Mailbox(addr("sender@example.org")),
        rcpts.iter().map(|a| addr(a)).collect(),
    );
    tx.size = Some(100);
    tx
}

fn capabilities(o: &Outcome) -> mta_smtp::client::Capabilities {
    o.events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Ready { capabilities } => Some(capabilities.clone()),
            _ => None,
        })
        .expect("Ready")
}

const MESSAGE: &[u8] =
    b"Subject: test\n\n.leading dot\nbare LF\r\n..two dots\r\n.\nlast line without end";

/// The dump files smtp-sink wrote under `dir`, concatenated.
fn read_dumps(dir: &Path) -> Vec<u8> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect()
}

#[test]
fn smtp_sink_pipelined_delivery_and_content() {
    if !have("/usr/sbin/smtp-sink") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("h-client-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let template = format!("{}/%M%S.", dir.display());
    let sink = Sink::start(&["-d", &template]);
    let o = run(
        sink.port,
        ClientConfig::new("client.example"),
        vec![tx(&["a@example.com", "b@example.com"])],
        MESSAGE,
        3,
    );
    let caps = capabilities(&o);
    assert!(caps.pipelining && caps.eightbitmime && caps.dsn, "{caps:?}");
    assert_eq!(o.results.len(), 1, "{:?}", o.events);
    for r in &o.results[0].recipients {
        assert_eq!(r.verdict, Verdict::Delivered, "{r:?}");
    }
    assert_eq!(o.events.last(), Some(&ClientEvent::Closed));
    // smtp-sink dumps the message as received, with LF line ends and the
    // dots unstuffed, after its own X-* and Received: headers.
    std::thread::sleep(Duration::from_millis(200));
    let dump = String::from_utf8_lossy(&read_dumps(&dir)).into_owned();
    let body = &dump[dump
        .find("Subject: test")
        .unwrap_or_else(|| panic!("{dump}"))..];
    assert!(
        body.starts_with(
            "Subject: test\n\n.leading dot\nbare LF\n..two dots\n.\nlast line without end\n"
        ),
        "{body:?}"
    );
    // smtp-sink offers no SIZE, so none is sent.
    assert!(
        dump.contains("X-Mail-Args: <sender@example.org>\n"),
        "{dump}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smtp_sink_lockstep_and_soft_and_hard_rejects() {
    if !have("/usr/sbin/smtp-sink") {
        return;
    }
    // -r RCPT: every RCPT gets a 4xx (and -r implies -p: no PIPELINING).
    let sink = Sink::start(&["-r", "RCPT"]);
    let o = run(
        sink.port,
        ClientConfig::new("client.example"),
        vec![tx(&["a@example.com"])],
        MESSAGE,
        100,
    );
    assert!(!capabilities(&o).pipelining);
    let r = &o.results[0].recipients[0];
    assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
    assert_eq!(r.reply.code().get(), 450);
    assert!(!o.events.contains(&ClientEvent::WantContent));

    let sink = Sink::start(&["-f", "MAIL"]);
    let o = run(
        sink.port,
        ClientConfig::new("client.example"),
        vec![tx(&["a@example.com", "b@example.com"])],
        MESSAGE,
        100,
    );
    for r in &o.results[0].recipients {
        assert_eq!(r.verdict, Verdict::Bounced, "{r:?}");
        assert_eq!(r.dsn(), "5.3.0");
    }

    // A refused DATA ("." is the end of data in smtp-sink's terms).
    let sink = Sink::start(&["-f", "."]);
    let o = run(
        sink.port,
        ClientConfig::new("client.example"),
        vec![tx(&["a@example.com"])],
        MESSAGE,
        7,
    );
    assert_eq!(o.results[0].recipients[0].verdict, Verdict::Bounced);
    assert!(o.events.contains(&ClientEvent::WantContent));
}

#[test]
fn smtp_sink_greeting_rejected_and_ehlo_refused() {
    if !have("/usr/sbin/smtp-sink") {
        return;
    }
    let sink = Sink::start(&["-f", "CONNECT"]);
    let o = run(
        sink.port,
        ClientConfig::new("client.example"),
        vec![],
        b"",
        1,
    );
    let f = o
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Failed(f) => Some(f.clone()),
            _ => None,
        })
        .expect("failure");
    assert_eq!(f.kind, FailureKind::GreetingSkipped);
    assert_eq!(f.reply.code().get(), 500);

    // EHLO refused with 5xx: HELO, no capabilities, lockstep delivery.
    let sink = Sink::start(&["-f", "EHLO"]);
    let o = run(
        sink.port,
        ClientConfig::new("client.example"),
        vec![tx(&["a@example.com"])],
        MESSAGE,
        5,
    );
    assert_eq!(capabilities(&o), Default::default());
    assert_eq!(
        o.results[0].recipients[0].verdict,
        Verdict::Delivered,
        "{:?}",
        o.events
    );
}

#[test]
fn smtp_sink_lmtp_per_recipient_replies() {
    if !have("/usr/sbin/smtp-sink") {
        return;
    }
    let sink = Sink::start(&["-L"]);
    let o = run(
        sink.port,
        ClientConfig::lmtp("client.example"),
        vec![
            tx(&["a@example.com", "b@example.com", "c@example.com"]),
            tx(&["d@example.com"]),
        ],
        MESSAGE,
        4,
    );
    assert_eq!(o.results.len(), 2, "{:?}", o.events);
    for r in o.results.iter().flat_map(|r| &r.recipients) {
        assert_eq!(r.verdict, Verdict::Delivered, "{r:?}");
    }
}

#[test]
fn smtp_sink_timeout_while_sending_rcpt() {
    if !have("/usr/sbin/smtp-sink") {
        return;
    }
    // -W RCPT:3 makes smtp-sink sit on every RCPT for three seconds.
    let sink = Sink::start(&["-W", "RCPT:3"]);
    let mut config = ClientConfig::new("client.example");
    config.peer_name = format!("localhost[127.0.0.1]:{}", sink.port);
    config.timeouts.rcpt = Duration::from_millis(500);
    // Lockstep: with -W, smtp-sink answers commands pipelined after the
    // delayed RCPT before the RCPT itself, out of order (RFC 2920 says
    // replies come in order), so a pipelined session would never wait.
    config.use_pipelining = false;
    let o = run(sink.port, config, vec![tx(&["a@example.com"])], MESSAGE, 5);
    let r = &o.results[0].recipients[0];
    assert_eq!(r.verdict, Verdict::Deferred, "{:?}", o.events);
    assert!(r.by_client);
    assert_eq!(
        r.reply.lines()[0],
        format!(
            "conversation with localhost[127.0.0.1]:{} timed out while sending RCPT TO",
            sink.port
        )
    );
}

/// A throwaway Postfix instance: its own configuration, queue and data
/// directories under a temporary directory, `smtpd` on a loopback port,
/// every accepted message put on hold (so `postcat` can read it back) and
/// recipients `bad@`/`later@example.com` refused with 550/450. Stopped and
/// removed on drop.
struct Postfix {
    dir: PathBuf,
    port: u16,
}

impl Postfix {
    fn start() -> Option<Postfix> {
        if !have("/usr/sbin/postfix") || !have("/usr/lib/postfix/sbin/smtpd") {
            return None;
        }
        if !is_root() {
            let reason = "starting a Postfix instance needs root";
            assert!(std::env::var_os("CI").is_none(), "{reason}");
            eprintln!("skipped: {reason}");
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "mta-smtp-client-postfix-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display().to_string();
        let master = std::fs::read_to_string("/usr/share/postfix/master.cf.dist").unwrap();
        let master: String = master
            .lines()
            .map(|l| {
                if l.starts_with("smtp      inet") {
                    format!("127.0.0.1:{port} inet n - n - - smtpd\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(dir.join("etc/master.cf"), master).unwrap();
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             myhostname = pf.example\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mydestination =\n\
             relay_domains = example.com\n\
             mynetworks = 127.0.0.0/8\n\
             default_transport = discard:\n\
             relay_transport = discard:\n\
             smtpd_recipient_restrictions = check_recipient_access inline:{{ \
               {{bad@example.com=550 5.1.1 no such user}}, {{later@example.com=450 4.2.0 try later}} }}, \
               permit_mynetworks, reject\n\
             smtpd_end_of_data_restrictions = check_client_access inline:{{ {{127.0.0.1=HOLD}} }}\n\
             maillog_file_prefixes = {d}\n\
             maillog_file = {d}/maillog\n\
             smtp_dns_support_level = disabled\n"
        );
        std::fs::write(dir.join("etc/main.cf"), main).unwrap();
        // master's lock file lives in data_directory, which it opens as
        // the mail owner.
        let ok = Command::new("chown")
            .arg("postfix")
            .arg(dir.join("data"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown postfix {}", dir.join("data").display());
        let pf = Postfix { dir, port };
        let status = pf.postfix(&["start"]);
        assert!(status, "postfix -c {d}/etc start failed; see {d}/maillog");
        wait_for_port(port);
        Some(pf)
    }

    fn postfix(&self, args: &[&str]) -> bool {
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.dir.join("etc"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The body of a queued message, as `postcat -b` prints it.
    fn body(&self, queue_id: &str) -> String {
        let out = Command::new("/usr/sbin/postcat")
            .arg("-c")
            .arg(self.dir.join("etc"))
            .args(["-b", "-q", queue_id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.postfix(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The queue ID from `250 2.0.0 Ok: queued as ID`.
fn queue_id(r: &TransactionResult) -> String {
    let text = &r.data_reply.as_ref().expect("final reply").lines()[0];
    text.rsplit(' ').next().unwrap().to_owned()
}

#[test]
fn postfix_smtpd_bdat_and_data_with_partial_rejection() {
    let Some(pf) = Postfix::start() else { return };
    let body = "first\r\n.leading dot\r\nbare LF\r\n..two\r\nlast\r\n";
    let content = b"Subject: t\n\nfirst\n.leading dot\nbare LF\r\n..two\nlast";
    for chunking in [true, false] {
        let mut config = ClientConfig::new("client.example");
        config.use_chunking = chunking;
        let o = run(
            pf.port,
            config,
            vec![tx(&[
                "a@example.com",
                "bad@example.com",
                "later@example.com",
            ])],
            content,
            3,
        );
        let caps = capabilities(&o);
        assert!(
            caps.chunking && caps.pipelining && caps.size == Some(10_240_000),
            "{caps:?}"
        );
        assert_eq!(o.results.len(), 1, "{:?}", o.events);
        let r = &o.results[0];
        let got: Vec<(Verdict, String)> =
            r.recipients.iter().map(|o| (o.verdict, o.dsn())).collect();
        assert_eq!(
            got,
            [
                (Verdict::Delivered, "2.0.0".to_owned()),
                (Verdict::Bounced, "5.1.1".to_owned()),
                (Verdict::Deferred, "4.2.0".to_owned()),
            ],
            "chunking={chunking}: {:?}",
            o.events
        );
        // Read the held message back: the body arrived byte for byte
        // (postcat prints lines with LF).
        let id = queue_id(r);
        std::thread::sleep(Duration::from_millis(300));
        let printed = pf.body(&id);
        assert!(
            printed.contains(&body.replace("\r\n", "\n")),
            "chunking={chunking}, {id}: {printed:?}"
        );
        // smtpd's disconnect line counts the commands it got.
        let log = std::fs::read_to_string(pf.dir.join("maillog")).unwrap_or_default();
        let verb = if chunking { "bdat=1 " } else { "data=1 " };
        let disconnects: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("disconnect from"))
            .collect();
        assert!(
            disconnects
                .last()
                .is_some_and(|l| l.contains(verb) && l.contains("rcpt=1/3")),
            "chunking={chunking}: {disconnects:?}"
        );
    }
}
