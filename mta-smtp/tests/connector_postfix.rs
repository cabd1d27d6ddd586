//! The connector against Debian's Postfix on 127.0.0.1: `smtp-sink`, and
//! a throwaway Postfix instance whose `smtpd` offers STARTTLS with a
//! self-signed certificate made here. Each test prints why it skips
//! where a program is missing, and fails instead when `CI` is set.

#[path = "connector_support/mod.rs"]
mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mta_smtp::client::{ClientConfig, TlsMode, TransactionResult, Verdict};
use mta_smtp::connector::{CertificateVerification, Connector, TlsTrust};
use support::*;

fn available(program: &str) -> bool {
    if Path::new(program).exists() {
        return true;
    }
    let reason = format!("{program} is not installed (Debian package postfix)");
    assert!(std::env::var_os("CI").is_none(), "{reason}");
    eprintln!("skipped: {reason}");
    false
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A port nobody listens on now (the kernel's choice, so never the
/// fixed ports other instances use).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn until_listening(port: u16) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < give_up, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verdicts(r: &TransactionResult) -> Vec<(Verdict, String)> {
    r.recipients.iter().map(|o| (o.verdict, o.dsn())).collect()
}

const CONTENT: &[u8] = b"Subject: connector test\n\n.leading dot\nsecond line\n";

/// `smtp-sink` on a free port, killed on drop.
struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    async fn start(options: &[&str]) -> Sink {
        let port = unused_port();
        let mut command = Command::new("/usr/sbin/smtp-sink");
        command.args(options);
        if running_as_root() {
            command.args(["-u", "root"]);
        }
        command
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("smtp-sink starts");
        until_listening(port).await;
        Sink { child, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn smtp_sink_several_transactions_on_one_connection() {
    if !available("/usr/sbin/smtp-sink") {
        return;
    }
    let sink = Sink::start(&[]).await;
    let connector = Connector::new(ClientConfig::new("client.example"));
    let mut conn = connector.connect(sink.addr(), "localhost").await.unwrap();
    assert!(conn.capabilities().pipelining);
    let mut big = Vec::new();
    while big.len() < 1_000_000 {
        big.extend_from_slice(b".a line of a big message\n");
    }
    for (i, content) in [CONTENT, &big[..], CONTENT].into_iter().enumerate() {
        let r = conn
            .deliver(tx(&["a@example.com", "b@example.com"]), content)
            .await;
        for o in &r.recipients {
            assert_eq!(o.verdict, Verdict::Delivered, "transaction {i}: {o:?}");
        }
    }
    conn.quit().await;
}

#[tokio::test]
async fn smtp_sink_lmtp_and_soft_rejects() {
    if !available("/usr/sbin/smtp-sink") {
        return;
    }
    let sink = Sink::start(&["-L"]).await;
    let mut conn = Connector::new(ClientConfig::lmtp("client.example"))
        .connect(sink.addr(), "localhost")
        .await
        .unwrap();
    for _ in 0..2 {
        let r = conn
            .deliver(tx(&["a@example.com", "b@example.com"]), CONTENT)
            .await;
        // smtp-sink says 2.2.0 per recipient.
        for o in &r.recipients {
            assert_eq!(o.verdict, Verdict::Delivered, "{o:?}");
        }
    }
    conn.quit().await;

    // -r RCPT: every RCPT gets a 4xx: deferred, and the connection is
    // still good for the next transaction.
    let sink = Sink::start(&["-r", "RCPT"]).await;
    let mut conn = Connector::new(ClientConfig::new("client.example"))
        .connect(sink.addr(), "localhost")
        .await
        .unwrap();
    for _ in 0..2 {
        let r = conn.deliver(tx(&["a@example.com"]), CONTENT).await;
        assert_eq!(r.recipients[0].verdict, Verdict::Deferred);
        assert_eq!(r.recipients[0].reply.code().get(), 450);
    }
    assert!(conn.is_open());
    conn.quit().await;
}

/// A throwaway Postfix: configuration, queue and data under a temporary
/// directory, `smtpd` on a free loopback port with STARTTLS (`may`) and
/// a certificate made here, accepted mail put on hold so `postcat` can
/// read it, `bad@`/`later@example.com` refused with 550/450. Stopped
/// and removed on drop.
struct Postfix {
    dir: PathBuf,
    port: u16,
    cert: SelfSigned,
}

impl Postfix {
    async fn start() -> Option<Postfix> {
        if !available("/usr/sbin/postfix")
            || !available("/usr/lib/postfix/sbin/smtpd")
            || !available("/usr/sbin/postcat")
        {
            return None;
        }
        if !running_as_root() {
            let reason = "a Postfix instance needs root";
            assert!(std::env::var_os("CI").is_none(), "{reason}");
            eprintln!("skipped: {reason}");
            return None;
        }
        let port = unused_port();
        let dir =
            std::env::temp_dir().join(format!("h-connector-postfix-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let cert = self_signed();
        std::fs::write(dir.join("etc/cert.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.join("etc/key.pem"), &cert.key_pem).unwrap();
        let d = dir.display().to_string();
        let master: String = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
            .unwrap()
            .lines()
            .map(|line| {
                if line.starts_with("smtp      inet") {
                    format!("127.0.0.1:{port} inet n - n - - smtpd\n")
                } else {
                    format!("{line}\n")
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
             smtpd_tls_security_level = may\n\
             smtpd_tls_cert_file = {d}/etc/cert.pem\n\
             smtpd_tls_key_file = {d}/etc/key.pem\n\
             smtpd_tls_loglevel = 1\n\
             smtpd_tls_received_header = yes\n\
             maillog_file_prefixes = {d}\n\
             maillog_file = {d}/maillog\n\
             smtp_dns_support_level = disabled\n"
        );
        std::fs::write(dir.join("etc/main.cf"), main).unwrap();
        // master locks a file in data_directory as the mail owner.
        let owned = Command::new("chown")
            .arg("postfix")
            .arg(dir.join("data"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(owned, "chown postfix {}", dir.join("data").display());
        let pf = Postfix { dir, port, cert };
        assert!(
            pf.postfix(&["start"]),
            "postfix -c {d}/etc start failed; see {d}/maillog"
        );
        until_listening(port).await;
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

    /// A queued message as `postcat -q` prints it.
    fn postcat(&self, queue_id: &str) -> String {
        let out = Command::new("/usr/sbin/postcat")
            .arg("-c")
            .arg(self.dir.join("etc"))
            .args(["-q", queue_id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Waits until the log has a line containing `text`.
    async fn log_line(&self, text: &str) -> String {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(text)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < give_up,
                "no {text:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.postfix(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The queue ID in `250 2.0.0 Ok: queued as ID`.
fn queue_id(r: &TransactionResult) -> String {
    let reply = r.data_reply.as_ref().expect("a final reply");
    reply.lines()[0].rsplit(' ').next().unwrap().to_owned()
}

#[tokio::test]
async fn postfix_smtpd_starttls_bdat_and_data() {
    let Some(pf) = Postfix::start().await else {
        return;
    };
    for (round, chunking) in [true, false].into_iter().enumerate() {
        let mut config = ClientConfig::new("client.example");
        config.tls = TlsMode::Require;
        config.use_chunking = chunking;
        let connector = Connector::new(config)
            .with_tls(client_tls(&pf.cert.der), CertificateVerification::Verifies);
        let mut conn = connector.connect(pf.addr(), "localhost").await.unwrap();
        let tls = conn.tls().expect("TLS with Postfix").clone();
        assert_eq!(tls.trust, TlsTrust::Verified);
        assert_eq!(tls.info.protocol, "TLSv1.3");
        assert!(conn.capabilities().chunking && conn.capabilities().size == Some(10_240_000));

        let first = conn
            .deliver(
                tx(&["a@example.com", "bad@example.com", "later@example.com"]),
                CONTENT,
            )
            .await;
        assert_eq!(
            verdicts(&first),
            [
                (Verdict::Delivered, "2.0.0".to_owned()),
                (Verdict::Bounced, "5.1.1".to_owned()),
                (Verdict::Deferred, "4.2.0".to_owned()),
            ],
            "chunking={chunking}"
        );
        let second = conn.deliver(tx(&["b@example.com"]), CONTENT).await;
        assert_eq!(
            verdicts(&second),
            [(Verdict::Delivered, "2.0.0".to_owned())]
        );
        conn.quit().await;

        // Postfix saw TLS: its log line, and the Received: header of the
        // held message.
        let established = pf
            .log_line("Anonymous TLS connection established from")
            .await;
        assert!(established.contains("TLSv1.3 with cipher"), "{established}");
        let verb = if chunking { "bdat=2" } else { "data=2" };
        let give_up = Instant::now() + Duration::from_secs(10);
        let disconnects = loop {
            let lines: Vec<String> = pf
                .log()
                .lines()
                // Not the readiness probe's empty connection.
                .filter(|l| l.contains("disconnect from") && l.contains(" ehlo="))
                .map(str::to_owned)
                .collect();
            if lines.len() > round || Instant::now() > give_up {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(disconnects.len(), round + 1, "{disconnects:?}");
        let last = disconnects.last().unwrap();
        assert!(
            last.contains("starttls=1") && last.contains(verb) && last.contains("rcpt=2/4"),
            "chunking={chunking}: {last}"
        );
        for r in [&first, &second] {
            let id = queue_id(r);
            let give_up = Instant::now() + Duration::from_secs(10);
            let printed = loop {
                let printed = pf.postcat(&id);
                if printed.contains("connector test") || Instant::now() > give_up {
                    break printed;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert!(
                printed.contains("(using TLSv1.3 with cipher"),
                "{id}: {printed}"
            );
            assert!(printed.contains("\n.leading dot\n"), "{id}: {printed}");
        }
    }
}
