//! Maildirs written by the virtual agent, read back by a real IMAP server:
//! Debian's Dovecot, started on a loopback port with the reference site's
//! layout (`virtual_mailbox_base/DOMAIN/USER/`), and Python's imaplib as
//! the mail client.
//!
//! The same Dovecot also takes mail over LMTP from the `lmtp` agent, the
//! usual way to hand mail to a mail store (`virtual_transport =
//! lmtp:inet:...`).
//!
//! Needs `dovecot` (dovecot-imapd, dovecot-lmtpd) and `python3`; without them the test
//! prints why it is skipped, or fails when `CI` is set.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mta_core::address::ReversePath;
use mta_core::config::{Config, HostFacts};
use mta_core::delivery::{DeliveryAgent, DeliveryRequest, Envelope, MemoryContent, Recipient};
use mta_core::dns::StubResolver;
use mta_core::queue_id::QueueId;
use mta_delivery::smtp::{SmtpAgent, SmtpConfig};
use mta_delivery::virtual_agent::{VirtualAgent, VirtualConfig};
use mta_maps::registry::{OpenContext, Registry};
use mta_smtp::connector::Connector;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the programs the tests need are here; says why not.
fn tools_missing() -> bool {
    for tool in ["dovecot", "doveadm", "python3"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            skip(&format!("{tool} is not installed"));
            return true;
        }
    }
    false
}

/// The mailbox owner: as root an unprivileged one, as a real site's
/// virtual_uid_maps gives, otherwise the test's own user.
fn owner() -> (bool, u32, u32) {
    let root = nix::unistd::geteuid().is_root();
    if root {
        (root, 65534, 65534)
    } else {
        (
            root,
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("dovecot test cannot run: {reason}");
    }
    eprintln!("SKIPPED dovecot test: {reason}");
}

struct Dovecot {
    config: PathBuf,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .output();
    }
}

/// Starts Dovecot with IMAP on `port` (and LMTP on `lmtp`) serving the
/// maildirs under `base`, with the one user alice@example.com (password
/// "secret") owned by `uid:gid`.
fn start_dovecot(
    dir: &Path,
    base: &Path,
    port: u16,
    lmtp: Option<u16>,
    uid: u32,
    gid: u32,
) -> Result<Dovecot, String> {
    let (protocols, lmtp_service) = match lmtp {
        Some(p) => (
            "imap lmtp",
            format!(
                "service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {p}\n  }}\n}}\n"
            ),
        ),
        None => ("imap", String::new()),
    };
    std::fs::write(
        dir.join("passwd"),
        "alice@example.com:{PLAIN}secret::::::\n",
    )
    .map_err(|e| e.to_string())?;
    let config = dir.join("dovecot.conf");
    let text = format!(
        "base_dir = {d}/run\n\
         state_dir = {d}/state\n\
         log_path = {d}/dovecot.log\n\
         protocols = {protocols}\n\
         listen = 127.0.0.1\n\
         ssl = no\n\
         disable_plaintext_auth = no\n\
         auth_mechanisms = plain\n\
         first_valid_uid = 1\n\
         mail_location = maildir:{base}/%d/%n\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/home/%d/%n\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  \
           inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
         service anvil {{\n  chroot =\n}}\n\
         service imap-login {{\n  chroot =\n}}\n\
         {lmtp_service}",
        d = dir.display(),
        base = base.display(),
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    // Dovecot goes into the background and keeps what it inherited: no
    // pipes, or waiting for it would wait for ever.
    let errors = std::fs::File::create(dir.join("dovecot.stderr")).map_err(|e| e.to_string())?;
    let out = Command::new("dovecot")
        .arg("-c")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(errors)
        .status()
        .map_err(|e| format!("dovecot: {e}"))?;
    let dovecot = Dovecot { config };
    if !out.success() {
        return Err(format!(
            "dovecot did not start: {}{}",
            std::fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        ));
    }
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > until {
            return Err("dovecot did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(dovecot)
}

const IMAP_CLIENT: &str = r#"
import imaplib, sys, email
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("alice@example.com", "secret")
typ, data = m.select("INBOX")
print("EXISTS", data[0].decode())
typ, data = m.search(None, "ALL")
for num in data[0].split():
    typ, parts = m.fetch(num, "(RFC822.SIZE RFC822)")
    meta = parts[0][0].decode()
    size = meta.split("RFC822.SIZE ")[1].split(" ")[0]
    msg = email.message_from_bytes(parts[0][1])
    print("MSG", size, len(parts[0][1]), msg["Subject"], msg["Delivered-To"], msg["Return-Path"], msg.get_payload().strip())
m.logout()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_serves_what_the_virtual_agent_delivered() {
    if tools_missing() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mta-dovecot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("mail");
    // As root, the agent gives the mailboxes to an unprivileged owner;
    // Dovecot reads them as that user.
    let (root, uid, gid) = owner();
    let main_cf = format!(
        "myhostname = mail.example.com\n\
         virtual_mailbox_base = {}\n\
         virtual_mailbox_maps = inline:{{ alice@example.com=example.com/alice/ }}\n\
         virtual_minimum_uid = 1\n\
         virtual_uid_maps = static:{uid}\nvirtual_gid_maps = static:{gid}\n",
        base.display()
    );
    let config = Config::parse(&main_cf, "main.cf", HostFacts::default()).unwrap();
    let mut vc =
        VirtualConfig::from_config(&config, &Registry::new(OpenContext::default())).unwrap();
    vc.set_owner = root;
    let agent = VirtualAgent::new(vc, Arc::new(SystemTime::now), "virtual");
    for (n, subject) in ["first", "second"].iter().enumerate() {
        let body = format!("Subject: {subject}\nFrom: bob@example.org\n\nmessage {n}\n");
        let envelope = Envelope::new(
            QueueId::from_parts(1_764_786_132, 0, n as u64),
            ReversePath::Mailbox("bob@example.org".parse().unwrap()),
            SystemTime::now(),
            body.len() as u64,
        );
        let request = DeliveryRequest::new(
            envelope,
            vec![Recipient::new("alice@example.com".parse().unwrap(), 1)],
            "example.com",
            Duration::from_secs(30),
            Arc::new(MemoryContent::new(body.into_bytes())),
        );
        let report = agent.deliver(request).await;
        assert_eq!(
            report.results[0].status.status_word(),
            Some("sent"),
            "{report:?}"
        );
    }
    if root {
        // Dovecot, as nobody, needs to reach the maildirs.
        for d in [&dir, &base] {
            let mut p = std::fs::metadata(d).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
            std::fs::set_permissions(d, p).unwrap();
        }
    }

    let port = free_port();
    let dovecot = match start_dovecot(&dir, &base, port, None, uid, gid) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let out = Command::new("python3")
        .args(["-c", IMAP_CLIENT, &port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{text}{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "EXISTS 2", "{text}\n{log}");
    // Dovecot's RFC822.SIZE (from the ,S= part of the name, CR LF counted)
    // matches the message it sends.
    for (line, (subject, n)) in lines[1..].iter().zip([("first", 0), ("second", 1)]) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[1], f[2], "size as announced and as sent: {line}");
        assert_eq!(
            &f[3..],
            [
                subject,
                "alice@example.com",
                "<bob@example.org>",
                "message",
                &n.to_string()
            ],
            "{line}"
        );
    }
    drop(dovecot);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_takes_mail_over_lmtp_with_a_result_per_recipient() {
    if tools_missing() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mta-dovecot-lmtp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("mail");
    std::fs::create_dir_all(&base).unwrap();
    let (root, uid, gid) = owner();
    if root {
        // Dovecot's lmtp writes the maildirs as their owner.
        nix::unistd::chown(&base, Some(uid.into()), Some(gid.into())).unwrap();
        let mut p = std::fs::metadata(&dir).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
        std::fs::set_permissions(&dir, p).unwrap();
    }
    let (imap, lmtp) = (free_port(), free_port());
    let dovecot = match start_dovecot(&dir, &base, imap, Some(lmtp), uid, gid) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", lmtp)).is_err() {
        assert!(Instant::now() < until, "dovecot did not listen for LMTP");
        std::thread::sleep(Duration::from_millis(50));
    }

    let config = Config::parse(
        "myhostname = mail.example.com\n",
        "main.cf",
        HostFacts::default(),
    )
    .unwrap();
    let agent = SmtpAgent::new(
        SmtpConfig::from_config(&config, "lmtp", true).unwrap(),
        Connector::from_config(&config, true).unwrap(),
        Arc::new(StubResolver::new()),
    );
    let body = "Subject: over lmtp\nFrom: bob@example.org\n\nmessage 0\n".to_owned();
    let envelope = Envelope::new(
        QueueId::from_parts(1_764_786_132, 0, 9),
        ReversePath::Mailbox("bob@example.org".parse().unwrap()),
        SystemTime::now(),
        body.len() as u64,
    );
    let request = DeliveryRequest::new(
        envelope,
        vec![
            Recipient::new("alice@example.com".parse().unwrap(), 1),
            Recipient::new("nobody@example.com".parse().unwrap(), 2),
        ],
        format!("inet:127.0.0.1:{lmtp}"),
        Duration::from_secs(30),
        Arc::new(MemoryContent::new(body.into_bytes())),
    );
    let report = agent.deliver(request).await;
    let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
    let words: Vec<_> = report
        .results
        .iter()
        .map(|r| r.status.status_word().unwrap())
        .collect();
    assert_eq!(words, ["sent", "bounced"], "{report:?}\n{log}");
    let alice = report.results[0].status.detail().unwrap();
    assert_eq!(
        alice.relay.to_string(),
        format!("127.0.0.1[127.0.0.1]:{lmtp}")
    );
    assert!(
        alice.text.starts_with("250 2.0.0 <alice@example.com>"),
        "{}",
        alice.text
    );
    let nobody = report.results[1].status.detail().unwrap();
    assert_eq!(nobody.dsn.to_string(), "5.1.1", "{}", nobody.text);
    assert!(
        nobody.text.starts_with(
            &"host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@example.com>".to_string()
        ),
        "{}",
        nobody.text
    );

    // Dovecot's own UNIX-domain LMTP socket (lmtp:unix:/path) works the
    // same.
    let socket = dir.join("run/lmtp");
    let body = "Subject: over the socket\nFrom: bob@example.org\n\nmessage 1\n".to_owned();
    let envelope = Envelope::new(
        QueueId::from_parts(1_764_786_132, 0, 10),
        ReversePath::Mailbox("bob@example.org".parse().unwrap()),
        SystemTime::now(),
        body.len() as u64,
    );
    let request = DeliveryRequest::new(
        envelope,
        vec![Recipient::new("alice@example.com".parse().unwrap(), 1)],
        format!("unix:{}", socket.display()),
        Duration::from_secs(30),
        Arc::new(MemoryContent::new(body.into_bytes())),
    );
    let report = agent.deliver(request).await;
    let alice = report.results[0].status.detail().unwrap();
    assert_eq!(
        report.results[0].status.status_word(),
        Some("sent"),
        "{report:?}"
    );
    assert_eq!(
        alice.relay.to_string(),
        format!("mail.example.com[{}]", socket.display())
    );

    // What LMTP stored, IMAP reads.
    let out = Command::new("python3")
        .args(["-c", IMAP_CLIENT, &imap.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "EXISTS 2", "{text}");
    assert!(lines[1].contains(" over lmtp "), "{text}");
    assert!(lines[2].contains(" over the socket "), "{text}");
    drop(dovecot);
    std::fs::remove_dir_all(&dir).unwrap();
}
