//! Differential test: the same messages delivered by Debian's Postfix 3.7
//! `virtual(8)` (a throwaway instance on a loopback port, started with
//! mta-restrictions' `start-postfix.sh`) and by this crate's virtual
//! agent, into a maildir and an mbox file. Compared: every byte of each
//! delivered file, but for the time in the mbox `From_` line and the
//! maildir file names, whose shape is compared.
//!
//! Our agent is given, as content, what Postfix's own maildir copy holds
//! after its three delivery headers (its `Received:` and the message as
//! sent), so each difference is one of delivery: the prepended headers,
//! the `From_` line, `>From` quoting, the separator line.
//!
//! Needs root and `/usr/sbin/postfix`; without them the test prints why it
//! is skipped, or fails when `CI` is set.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mta_core::address::ReversePath;
use mta_core::config::{Config, HostFacts};
use mta_core::delivery::{DeliveryAgent, DeliveryRequest, Envelope, MemoryContent, Recipient};
use mta_core::queue_id::QueueId;
use mta_delivery::virtual_agent::{VirtualAgent, VirtualConfig};
use mta_maps::registry::{OpenContext, Registry};

fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("postfix differential test cannot run: {reason}");
    }
    eprintln!("SKIPPED postfix differential test: {reason}");
}

struct Instance {
    dir: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.dir)
            .arg("stop")
            .output();
    }
}

const TABLE: &str = "alice@example.com example.com/alice/\nbob@example.com example.com/bob\n";

fn start(dir: &Path, port: u16) -> Result<Instance, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mta-restrictions/tests/content_oracle/start-postfix.sh");
    let empty = dir.join("empty_checks");
    std::fs::create_dir_all(dir.join("pf")).map_err(|e| e.to_string())?;
    std::fs::write(&empty, "").map_err(|e| e.to_string())?;
    let mail = dir.join("postfix-mail");
    std::fs::create_dir_all(&mail).map_err(|e| e.to_string())?;
    std::os::unix::fs::chown(&mail, Some(65534), Some(65534)).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("vmailbox"), TABLE).map_err(|e| e.to_string())?;
    let pf = dir.join("pf");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&pf)
        .arg(port.to_string())
        .arg(&empty)
        .arg(&empty)
        .arg("virtual_transport = virtual")
        .arg("virtual_mailbox_domains = example.com")
        .arg(format!("virtual_mailbox_base = {}", mail.display()))
        .arg(format!(
            "virtual_mailbox_maps = texthash:{}",
            dir.join("vmailbox").display()
        ))
        .arg("virtual_uid_maps = static:65534")
        .arg("virtual_gid_maps = static:65534")
        .arg("recipient_delimiter = +")
        .output()
        .map_err(|e| format!("start-postfix.sh: {e}"))?;
    let instance = Instance { dir: pf };
    if !out.status.success() {
        return Err(format!(
            "start-postfix.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > until {
            return Err("postfix did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(instance)
}

fn reply(r: &mut impl BufRead) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("reply");
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

/// Sends one message (LF lines) over SMTP.
fn send(port: u16, sender: &str, rcpts: &[&str], message: &str) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    reply(&mut r);
    let mut cmds = vec![
        "EHLO client.example.org".to_owned(),
        format!("MAIL FROM:<{sender}>"),
    ];
    cmds.extend(rcpts.iter().map(|a| format!("RCPT TO:<{a}>")));
    cmds.push("DATA".into());
    for c in cmds {
        w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        let got = reply(&mut r);
        assert!(got.starts_with('2') || got.starts_with('3'), "{c}: {got}");
    }
    let mut data = String::new();
    for line in message.lines() {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    w.write_all(data.as_bytes()).unwrap();
    let got = reply(&mut r);
    assert!(got.starts_with("250"), "{got}");
    w.write_all(b"QUIT\r\n").unwrap();
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    v
}

fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < until, "Postfix did not deliver {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The mbox `From_` line with its time replaced.
fn without_time(mbox: &str) -> String {
    mbox.lines()
        .map(|l| match l.strip_prefix("From ") {
            Some(rest) => format!("From {} TIME", rest.split(' ').next().unwrap()),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cases: sender, recipients as given, message.
const CASES: [(&str, &str, &str); 3] = [
    (
        "carol@example.org",
        "Alice+Lists@example.com",
        "Subject: one\nFrom: carol@example.org\n\nFrom the top:\n>From quoted\n.dot\n From indented\n",
    ),
    (
        "\"j doe\"@example.org",
        // Postfix keeps a domain's case too (alice@EXAMPLE.com); mta-core
        // folds domains when it parses them, a known difference.
        "ALICE@example.com",
        "Subject: two\n\nbody\n",
    ),
    ("", "alice@example.com", "Subject: three\n\nFrom nobody\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_files_as_postfix_virtual() {
    if !nix::unistd::geteuid().is_root() {
        return skip("not root (Postfix's master must start as root)");
    }
    if !Path::new("/usr/sbin/postfix").exists() {
        return skip("/usr/sbin/postfix is not installed");
    }
    let dir = std::env::temp_dir().join(format!("mta-virtual-oracle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _postfix = match start(&dir, port) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let pf_mail = dir.join("postfix-mail/example.com");
    // Each case goes to alice's maildir and to bob's mbox, in one
    // transaction, so both copies share Postfix's Received header.
    for (n, (sender, rcpt, message)) in CASES.iter().enumerate() {
        send(port, sender, &[rcpt, "Bob@example.com"], message);
        wait_for(
            || files(&pf_mail.join("alice/new")).len() == n + 1,
            "to alice",
        );
        wait_for(
            || {
                std::fs::read_to_string(pf_mail.join("bob"))
                    .map(|t| {
                        t.to_lowercase()
                            .matches("\ndelivered-to: bob@example.com\n")
                            .count()
                            == n + 1
                    })
                    .unwrap_or(false)
            },
            "to bob",
        );
    }
    // Postfix may still be appending its last blank line.
    std::thread::sleep(Duration::from_millis(300));

    let ours = dir.join("our-mail");
    std::fs::write(dir.join("vmailbox"), TABLE).unwrap();
    let main_cf = format!(
        "myhostname = mail.example.com\nrecipient_delimiter = +\n\
         virtual_mailbox_base = {}\nvirtual_mailbox_maps = texthash:{}\n\
         virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\n",
        ours.display(),
        dir.join("vmailbox").display()
    );
    let config = Config::parse(&main_cf, "main.cf", HostFacts::default()).unwrap();
    let vc = VirtualConfig::from_config(&config, &Registry::new(OpenContext::default())).unwrap();
    let agent = VirtualAgent::new(vc, Arc::new(SystemTime::now), "virtual");
    let theirs = files(&pf_mail.join("alice/new"));
    for (n, ((sender, rcpt, _), pf_file)) in CASES.iter().zip(&theirs).enumerate() {
        let pf_text = std::fs::read_to_string(pf_file).unwrap();
        // Postfix's copy after its three delivery headers.
        let content: String = pf_text.splitn(4, '\n').nth(3).unwrap().to_owned();
        let reverse = if sender.is_empty() {
            ReversePath::Null
        } else {
            ReversePath::Mailbox(sender.parse().unwrap())
        };
        let envelope = Envelope::new(
            QueueId::from_parts(1_764_786_132, 0, n as u64),
            reverse,
            SystemTime::now(),
            content.len() as u64,
        );
        // As the queue gives it: the address folded by cleanup's rewrite
        // of the domain, the original as the client wrote it.
        let mut recipients = Vec::new();
        for (i, given) in [rcpt, &"Bob@example.com"].iter().enumerate() {
            let mut r = Recipient::new(given.parse().unwrap(), i as u64);
            r.original = Some(given.parse().unwrap());
            recipients.push(r);
        }
        let request = DeliveryRequest::new(
            envelope,
            recipients,
            "example.com",
            Duration::from_secs(30),
            Arc::new(MemoryContent::new(content.into_bytes())),
        );
        let report = agent.deliver(request).await;
        for r in &report.results {
            assert_eq!(r.status.status_word(), Some("sent"), "{report:?}");
        }
        let mine = files(&ours.join("example.com/alice/new"));
        assert_eq!(
            std::fs::read_to_string(&mine[n]).unwrap(),
            pf_text,
            "maildir file of case {n}"
        );
        // Same name shape: SECONDS.VdevIinodeMmicros.HOST (Postfix's HOST
        // is the kernel's host name; ours myhostname, with ,S=SIZE).
        let shape = |p: &Path| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            let parts: Vec<&str> = name.splitn(3, '.').collect();
            assert!(parts[0].bytes().all(|b| b.is_ascii_digit()), "{name}");
            let unique = parts[1];
            let (v, rest) = unique.split_once('I').unwrap_or_else(|| panic!("{name}"));
            let (i, m) = rest.split_once('M').unwrap_or_else(|| panic!("{name}"));
            assert!(
                v.starts_with('V') && u64::from_str_radix(&v[1..], 16).is_ok(),
                "{name}"
            );
            assert!(
                u64::from_str_radix(i, 16).is_ok() && m.parse::<u32>().is_ok(),
                "{name}"
            );
            assert!(!parts[2].is_empty(), "{name}");
        };
        shape(pf_file);
        shape(&mine[n]);
    }
    let pf_mbox = std::fs::read_to_string(pf_mail.join("bob")).unwrap();
    let our_mbox = std::fs::read_to_string(ours.join("example.com/bob")).unwrap();
    assert_eq!(without_time(&our_mbox), without_time(&pf_mbox));
    assert!(pf_mbox.ends_with("\n\n"), "the separator line");
    assert!(our_mbox.ends_with("\n\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}
