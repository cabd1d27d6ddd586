//! The smtp agent against Debian's `smtp-sink` (from the `postfix`
//! package) on loopback: delivery by address and through MX records, the
//! next MX when the first refuses connections, soft and hard rejects, a
//! lost connection, connection reuse, the time limit.
//!
//! Each test skips with a printed reason when `smtp-sink` is absent, and
//! fails when `CI` is set (CI installs it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mta_core::address::ReversePath;
use mta_core::address_class::NextHop;
use mta_core::delivery::{
    DeliveryAgent, DeliveryReport, DeliveryRequest, DsnNotify, Envelope, MemoryContent, Recipient,
};
use mta_core::dns::{Resolver, StubResolver};
use mta_core::queue_id::QueueId;
use mta_delivery::smtp::{SmtpAgent, SmtpConfig};
use mta_smtp::client::ClientConfig;
use mta_smtp::connector::Connector;

const SINK: &str = "/usr/sbin/smtp-sink";

fn skip(reason: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{reason}: CI must install it (tools/install-peers.sh)");
    }
    eprintln!("skipped: {reason}");
    true
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `smtp-sink` that dumps each message into its directory.
struct Sink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Sink {
    /// Starts `smtp-sink` with `options` on 127.0.0.1; `None` when it is
    /// not installed (and not in CI).
    fn start(name: &str, options: &[&str]) -> Option<Sink> {
        if !Path::new(SINK).exists() && skip("smtp-sink is not installed") {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("mta-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // smtp-sink runs as nobody when started by root, and writes there.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        let mut cmd = Command::new(SINK);
        if nix::unistd::geteuid().is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let dump = format!("{}/msg", dir.display());
        cmd.args(["-d", &dump])
            .args(options)
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start smtp-sink");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Sink { child, port, dir })
    }

    /// The messages dumped so far.
    fn messages(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        out.sort();
        out
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn agent(config: SmtpConfig, dns: Arc<StubResolver>) -> SmtpAgent {
    let dns: Arc<dyn Resolver> = dns;
    SmtpAgent::new(
        config,
        Connector::new(ClientConfig::new("client.example.com")),
        dns,
    )
}

const MESSAGE: &[u8] =
    b"From: bob@example.org\nSubject: relayed\n\nfirst line\n.leading dot\nlast line\n";

fn request(nexthop: &str, recipients: &[&str]) -> DeliveryRequest {
    let id = QueueId::from_parts(1_764_786_132, 0, 7);
    let sender = ReversePath::Mailbox("bob@example.org".parse().unwrap());
    let envelope = Envelope::new(id, sender, SystemTime::now(), MESSAGE.len() as u64);
    let recipients = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| Recipient::new(r.parse().unwrap(), i as u64 + 1))
        .collect();
    DeliveryRequest::new(
        envelope,
        recipients,
        nexthop,
        Duration::from_secs(60),
        Arc::new(MemoryContent::new(MESSAGE.to_vec())),
    )
}

/// `(status word, dsn, relay, text)` per recipient.
fn summary(report: &DeliveryReport) -> Vec<(String, String, String, String)> {
    report
        .results
        .iter()
        .map(|r| {
            let d = r.status.detail().unwrap();
            (
                r.status.status_word().unwrap().to_owned(),
                d.dsn.to_string(),
                d.relay.to_string(),
                d.text.clone(),
            )
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn delivers_by_address_and_the_sink_gets_the_message() {
    let Some(sink) = Sink::start("address", &[]) else {
        return;
    };
    let a = agent(
        SmtpConfig::new("smtp", false),
        Arc::new(StubResolver::new()),
    );
    let hop = format!("[127.0.0.1]:{}", sink.port);
    let mut req = request(&hop, &["alice@example.net", "carol@example.net"]);
    req.recipients[0].notify = Some(DsnNotify {
        success: true,
        failure: true,
        delay: false,
    });
    let report = runtime().block_on(a.deliver(req));
    let s = summary(&report);
    assert_eq!(s.len(), 2);
    for (word, dsn, relay, text) in &s {
        assert_eq!(word, "sent");
        assert_eq!(dsn, "2.0.0");
        assert_eq!(relay, &format!("127.0.0.1[127.0.0.1]:{}", sink.port));
        assert!(text.starts_with("250 2.0.0 Ok"), "{text}");
    }
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "one transaction for both recipients");
    let m = &messages[0];
    assert!(m.contains("X-Mail-Args: <bob@example.org>\n"), "{m}");
    assert!(
        m.contains("X-Rcpt-Args: <alice@example.net> NOTIFY=SUCCESS,FAILURE\nX-Rcpt-Args: <carol@example.net>\n"),
        "{m}"
    );
    assert!(m.contains("\nSubject: relayed\n"), "{m}");
    // Dot-stuffed on the wire, unstuffed by the server: the body arrives
    // as it was queued.
    assert!(m.contains("\nfirst line\n.leading dot\nlast line\n"), "{m}");
}

#[test]
fn mx_lookup_and_the_next_mx_when_the_first_refuses() {
    let Some(sink) = Sink::start("mx", &[]) else {
        return;
    };
    let dns = Arc::new(StubResolver::new());
    // The better MX is an address where nothing listens.
    dns.add_mx("example.net", 10, "mx1.example.net");
    dns.add_address("mx1.example.net", "127.0.0.2".parse().unwrap());
    dns.add_mx("example.net", 20, "mx2.example.net");
    dns.add_address("mx2.example.net", "127.0.0.1".parse().unwrap());
    let mut config = SmtpConfig::new("smtp", false);
    // MX records carry no port: smtp_tcp_port gives it.
    config.port = sink.port;
    let a = agent(config, dns);
    let report = runtime().block_on(a.deliver(request("example.net", &["alice@example.net"])));
    let s = summary(&report);
    assert_eq!(s[0].0, "sent", "{s:?}");
    assert_eq!(s[0].2, format!("mx2.example.net[127.0.0.1]:{}", sink.port));
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn nothing_listening_defers_with_the_connect_error() {
    let port = free_port();
    let dns = Arc::new(StubResolver::new());
    dns.add_address("example.net", "127.0.0.1".parse().unwrap());
    let mut config = SmtpConfig::new("smtp", false);
    config.port = port;
    let a = agent(config, dns);
    let report = runtime().block_on(a.deliver(request("example.net", &["alice@example.net"])));
    let s = summary(&report);
    assert_eq!(s[0].0, "deferred");
    assert_eq!(s[0].1, "4.4.1");
    assert_eq!(s[0].2, "none");
    assert_eq!(
        s[0].3,
        format!("connect to example.net[127.0.0.1]:{port}: Connection refused")
    );
}

#[test]
fn soft_rejects_defer_and_hard_rejects_bounce_with_the_remote_reply() {
    let Some(soft) = Sink::start("soft", &["-r", "RCPT"]) else {
        return;
    };
    let Some(hard) = Sink::start("hard", &["-f", "RCPT"]) else {
        return;
    };
    let rt = runtime();
    let a = agent(
        SmtpConfig::new("smtp", false),
        Arc::new(StubResolver::new()),
    );
    let report = rt.block_on(a.deliver(request(
        &format!("[127.0.0.1]:{}", soft.port),
        &["alice@example.net"],
    )));
    let s = summary(&report);
    assert_eq!(s[0].0, "deferred");
    assert_eq!(s[0].1, "4.3.0");
    assert_eq!(
        s[0].3,
        "host 127.0.0.1[127.0.0.1] said: 450 4.3.0 Error: command failed (in reply to RCPT TO command)"
    );
    let detail = report.results[0].status.detail().unwrap();
    assert_eq!(
        detail.remote_reply.as_ref().unwrap().to_string(),
        "450 4.3.0 Error: command failed",
        "the remote reply goes into the DSN"
    );

    let report = rt.block_on(a.deliver(request(
        &format!("[127.0.0.1]:{}", hard.port),
        &["alice@example.net"],
    )));
    let s = summary(&report);
    assert_eq!(s[0].0, "bounced");
    assert_eq!(s[0].1, "5.3.0");
    assert_eq!(
        s[0].3,
        "host 127.0.0.1[127.0.0.1] said: 500 5.3.0 Error: command failed (in reply to RCPT TO command)"
    );
    assert!(soft.messages().is_empty() && hard.messages().is_empty());
}

#[test]
fn a_soft_failure_moves_the_recipients_to_the_next_mx() {
    // The first MX hangs up after DATA: nothing was delivered there, so
    // the backup gets the message.
    let Some(broken) = Sink::start("broken", &["-q", "DATA"]) else {
        return;
    };
    let Some(backup) = Sink::start("backup", &[]) else {
        return;
    };
    let dns = Arc::new(StubResolver::new());
    dns.add_mx("example.net", 10, "mx1.example.net");
    dns.add_address("mx1.example.net", "127.0.0.1".parse().unwrap());
    dns.add_mx("example.net", 20, "mx2.example.net");
    dns.add_address("mx2.example.net", "127.0.0.1".parse().unwrap());
    let mut config = SmtpConfig::new("smtp", false);
    config.port = broken.port;
    // Exchangers share smtp_tcp_port, so the backup is reached as the
    // fallback relay, tried after them.
    config.fallback_relay = vec![NextHop::parse(&format!("[127.0.0.1]:{}", backup.port)).unwrap()];
    config.mx_session_limit = 3;
    let a = agent(config, dns);
    let report = runtime().block_on(a.deliver(request("example.net", &["alice@example.net"])));
    let s = summary(&report);
    assert_eq!(s[0].0, "sent", "{s:?}");
    assert_eq!(s[0].2, format!("127.0.0.1[127.0.0.1]:{}", backup.port));
    assert_eq!(backup.messages().len(), 1);
}

#[test]
fn a_lost_connection_on_the_last_server_defers() {
    let Some(sink) = Sink::start("lost", &["-q", "DATA"]) else {
        return;
    };
    let a = agent(
        SmtpConfig::new("smtp", false),
        Arc::new(StubResolver::new()),
    );
    let hop = format!("[127.0.0.1]:{}", sink.port);
    let report = runtime().block_on(a.deliver(request(&hop, &["alice@example.net"])));
    let s = summary(&report);
    assert_eq!(s[0].0, "deferred", "{s:?}");
    assert!(
        s[0].3.contains("lost connection with 127.0.0.1[127.0.0.1]"),
        "{}",
        s[0].3
    );
}

#[test]
fn the_connection_is_reused_for_the_next_message() {
    // This sink ends after one session: the second message can only get
    // through on the first message's connection.
    let Some(sink) = Sink::start("reuse", &["-n", "1"]) else {
        return;
    };
    let rt = runtime();
    let a = agent(
        SmtpConfig::new("smtp", false),
        Arc::new(StubResolver::new()),
    );
    let hop = format!("[127.0.0.1]:{}", sink.port);
    for n in 0..3 {
        let report = rt.block_on(a.deliver(request(&hop, &["alice@example.net"])));
        assert_eq!(summary(&report)[0].0, "sent", "message {n}");
    }
    assert_eq!(sink.messages().len(), 3);
}

#[test]
fn the_time_limit_defers_what_is_undecided() {
    // A server that accepts the connection and never greets.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let a = agent(
        SmtpConfig::new("smtp", false),
        Arc::new(StubResolver::new()),
    );
    let mut req = request(&format!("[127.0.0.1]:{port}"), &["alice@example.net"]);
    req.time_limit = Duration::from_secs(1);
    let started = Instant::now();
    let report = runtime().block_on(a.deliver(req));
    assert!(started.elapsed() < Duration::from_secs(10));
    let s = summary(&report);
    assert_eq!(s[0].0, "deferred");
    assert_eq!(s[0].1, "4.4.2");
    drop(listener);
}
