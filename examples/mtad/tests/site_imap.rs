//! The reference site end to end, as its users see it: one message to
//! each of the ten users of `vmailbox`, sent to mtad over SMTP, is read
//! back over IMAP from a real Dovecot serving the same maildirs (the
//! site's `virtual_uid_maps` owner when run as root).
//!
//! Needs Debian's `dovecot-imapd` and `python3`; skipped with a printed
//! reason without them, failed in CI.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, have, send, wait_for_files};

/// Stops Dovecot when the test ends.
struct Dovecot(std::path::PathBuf);

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(&self.0)
            .arg("stop")
            .output();
    }
}

const IMAP: &str = r#"
import imaplib, sys, email
port, password = int(sys.argv[1]), sys.argv[2]
for user in sys.argv[3:]:
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login(user, password)
    typ, data = m.select("INBOX")
    subjects = []
    typ, nums = m.search(None, "ALL")
    for num in nums[0].split():
        typ, parts = m.fetch(num, "(RFC822)")
        subjects.append(email.message_from_bytes(parts[0][1])["Subject"])
    print(user, data[0].decode(), "|".join(subjects))
    m.logout()
"#;

#[test]
fn every_user_reads_their_mail_over_imap() {
    if !have("dovecot") || !have("doveadm") || !have("python3") {
        return;
    }
    let smtp = free_port();
    let dir = common::compiled_site("imap", |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{} ", free_port()))
    });
    let users: Vec<String> = std::fs::read_to_string(dir.join("vmailbox"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(users.len(), 10, "the site has ten users: {users:?}");
    let _daemon = common::start_mtad(&dir, smtp);
    for user in &users {
        let r = send(
            smtp,
            "carol@example.org",
            user,
            &format!("From: carol@example.org\nSubject: hello {user}\n\nfor you\n"),
        );
        assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{user}: {r}");
    }
    let mail = dir.join("state/mail");
    for user in &users {
        let (local, domain) = user.split_once('@').unwrap();
        wait_for_files(&mail.join(domain).join(local).join("new"), 1);
    }

    // Dovecot on the same maildirs, as the site's IMAP server.
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (5000, 5000)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };
    let imap = free_port();
    let conf = dir.join("dovecot.conf");
    let passwd: String = users
        .iter()
        .map(|u| format!("{u}:{{PLAIN}}change-me::::::\n"))
        .collect();
    std::fs::write(dir.join("dovecot.passwd"), passwd).unwrap();
    std::fs::write(
        &conf,
        format!(
            "base_dir = {d}/dovecot-run\n\
             state_dir = {d}/dovecot-state\n\
             log_path = {d}/dovecot.log\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain\n\
             first_valid_uid = 1\n\
             mail_location = maildir:{mail}/%d/%n\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/dovecot.passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/dovecot-home/%d/%n\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap}\n  }}\n  \
               inet_listener imaps {{\n    port = 0\n  }}\n  chroot =\n}}\n\
             service anvil {{\n  chroot =\n}}\n",
            d = dir.display(),
            mail = mail.display(),
        ),
    )
    .unwrap();
    let errors = std::fs::File::create(dir.join("dovecot.stderr")).unwrap();
    let started = Command::new("dovecot")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors)
        .status()
        .unwrap();
    let _dovecot = Dovecot(conf.clone());
    let dovecot_log = || {
        format!(
            "{}{}",
            std::fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        )
    };
    assert!(started.success(), "{}", dovecot_log());
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", imap)).is_err() {
        assert!(
            Instant::now() < until,
            "dovecot did not listen\n{}",
            dovecot_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("python3")
        .args(["-c", IMAP, &imap.to_string(), "change-me"])
        .args(&users)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dovecot_log()
    );
    for user in &users {
        assert!(
            text.lines().any(|l| l == format!("{user} 1 hello {user}")),
            "{user}: {text}"
        );
    }
}
