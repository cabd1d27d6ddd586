//! Authenticated submission on the reference site: the submission
//! service (STARTTLS required, `smtpd_sasl_auth_enable = yes`,
//! `permit_sasl_authenticated, reject`) asking Debian's Dovecot over its
//! auth protocol (`smtpd_sasl_type = dovecot`), with swaks and Python's
//! smtplib as the mail clients: an authenticated user relays to the
//! outside, a wrong password is refused, nothing is relayed without a
//! login.
//!
//! Needs `dovecot`, `doveadm`, `swaks` and `python3`; skipped with a
//! printed reason without them, failed in CI.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Running, free_port, have};

const MTAD: &str = env!("CARGO_BIN_EXE_mtad");

/// Dovecot with only its auth service, for the site's users.
struct Dovecot(PathBuf);

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(self.0.join("dovecot.conf"))
            .arg("stop")
            .output();
    }
}

fn start_dovecot(dir: &Path) -> Dovecot {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("passwd"),
        "alice@example.com:{PLAIN}secret::::::\nbob@example.com:{PLAIN}hunter2::::::\n",
    )
    .unwrap();
    let conf = format!(
        "base_dir = {d}/run\n\
         state_dir = {d}/state\n\
         log_path = {d}/dovecot.log\n\
         protocols = imap\n\
         listen = 127.0.0.1\n\
         ssl = no\n\
         auth_mechanisms = plain login\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home=/nonexistent\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n  chroot =\n}}\n\
         service anvil {{\n  chroot =\n}}\n\
         service auth {{\n  unix_listener {d}/auth {{\n    mode = 0666\n  }}\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
    let errors = std::fs::File::create(dir.join("dovecot.stderr")).unwrap();
    let status = Command::new("dovecot")
        .arg("-c")
        .arg(dir.join("dovecot.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "dovecot: {}",
        std::fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default()
    );
    let until = Instant::now() + Duration::from_secs(10);
    while !dir.join("auth").exists() {
        assert!(Instant::now() < until, "no Dovecot auth socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    Dovecot(dir.to_path_buf())
}

fn swaks(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--tls"])
        .args(["--helo", "client.example.org"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

const LOGIN: &str = r#"
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo("client.example.org")
print("mechanisms", s.esmtp_features.get("auth", "").strip())
s.user, s.password = "bob@example.com", "hunter2"
code, text = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
print("login", code, text.decode())
s.sendmail("bob@example.com", ["carol@example.net"], "Subject: from bob\r\n\r\nhi\r\n")
print("sent")
s.quit()
"#;

#[test]
fn authenticated_users_relay_and_nobody_else_does() {
    for tool in ["dovecot", "doveadm", "swaks", "python3"] {
        if !have(tool) {
            return;
        }
    }
    // Dovecot first: mtad asks it for its mechanisms when it starts.
    let dovecot_dir = std::env::temp_dir().join(format!("mta-sasl-dovecot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dovecot_dir);
    let _dovecot = start_dovecot(&dovecot_dir);
    let (dir, submission, _daemon) = start_site(
        "sasl",
        &format!(
            "smtpd_sasl_type = dovecot\nsmtpd_sasl_path = {}/auth\n",
            dovecot_dir.display()
        ),
    );

    let (ok, t) = swaks(
        submission,
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            "secret",
            "--from",
            "alice@example.com",
            "--to",
            "dave@example.net",
        ],
    );
    assert!(ok, "{t}");
    assert!(t.contains("<~  235 2.7.0 Authentication successful"), "{t}");
    assert!(t.contains("<~  250 2.0.0 Ok: queued as"), "{t}");

    let (ok, t) = swaks(
        submission,
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            "wrong",
            "--from",
            "alice@example.com",
            "--to",
            "dave@example.net",
        ],
    );
    assert!(!ok, "{t}");
    assert!(
        t.contains("<~* 535 5.7.8 Error: authentication failed: authentication failure"),
        "{t}"
    );

    // No login, no relaying: the submission service rejects, first
    // because alice's address needs alice's login, then for the recipient.
    let (ok, t) = swaks(
        submission,
        &["--from", "alice@example.com", "--to", "dave@example.net"],
    );
    assert!(!ok, "{t}");
    assert!(
        t.contains("<~* 553 5.7.1 <alice@example.com>: Sender address rejected: not logged in"),
        "{t}"
    );
    let (ok, t) = swaks(
        submission,
        &["--from", "someone@example.net", "--to", "dave@example.net"],
    );
    assert!(!ok, "{t}");
    assert!(t.contains("<~* 554 5.7.1"), "{t}");

    // LOGIN through smtplib.
    let out = Command::new("python3")
        .args(["-c", LOGIN, &submission.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("mechanisms PLAIN LOGIN"), "{text}");
    assert!(
        text.contains("login 235 2.7.0 Authentication successful"),
        "{text}"
    );
    assert!(text.contains("sent"), "{text}");

    let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
    assert!(
        log.contains(
            "client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=alice@example.com"
        ),
        "{log}"
    );
    assert!(
        log.contains("sasl_method=LOGIN, sasl_username=bob@example.com"),
        "{log}"
    );
    assert!(
        log.contains("SASL PLAIN authentication failed: "),
        "the failure is logged: {log}"
    );
    assert!(
        !log.contains("secret") && !log.contains("hunter2"),
        "a password in the log: {log}"
    );
}

/// The site with its own password table, `extra` main.cf lines added,
/// outside mail parked at a closed port; its directory, submission port
/// and the running daemon.
fn start_site(name: &str, extra: &str) -> (PathBuf, u16, Running) {
    let (smtp, submission) = (free_port(), free_port());
    let dir = common::compiled_site(name, |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{submission} "))
    });
    let closed = free_port();
    let mut main_cf = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    main_cf.push_str(&format!(
        "transport_maps = inline:{{ example.net=smtp:[127.0.0.1]:{closed} }}\n{extra}"
    ));
    std::fs::write(dir.join("main.cf"), main_cf).unwrap();
    let log_file = std::fs::File::create(dir.join("mtad.log")).unwrap();
    let daemon = Running(
        Command::new(MTAD)
            .args(["-c", &dir.display().to_string()])
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", submission)).is_err() {
        assert!(Instant::now() < until, "mtad did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (dir, submission, daemon)
}

#[test]
fn auth_attempts_are_rate_limited_per_client() {
    if !have("swaks") {
        return;
    }
    // Loopback is in $mynetworks, which smtpd_client_event_limit_exceptions
    // exempts by default: take the exemption away.
    let (dir, submission, _daemon) = start_site(
        "sasl-rate",
        "smtpd_client_auth_rate_limit = 2\nsmtpd_client_event_limit_exceptions =\n",
    );
    let attempt = || {
        swaks(
            submission,
            &[
                "--auth",
                "PLAIN",
                "--auth-user",
                "erin@example.org",
                "--auth-password",
                "guess",
                "--from",
                "erin@example.org",
                "--to",
                "dave@example.net",
            ],
        )
        .1
    };
    for _ in 0..2 {
        let t = attempt();
        assert!(t.contains("<~* 535 5.7.8"), "{t}");
    }
    let t = attempt();
    assert!(
        t.contains("<~* 450 4.7.1 Error: too many AUTH commands from 127.0.0.1"),
        "{t}"
    );
    let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
    assert!(
        log.contains("AUTH command rate limit exceeded: 3 from unknown[127.0.0.1] for service"),
        "{log}"
    );
}

#[test]
fn the_site_password_table_works_without_dovecot() {
    if !have("swaks") {
        return;
    }
    let (dir, submission, _daemon) = start_site("sasl-table", "");
    // The site's sasl_passwd: every demo user's password is change-me.
    let (ok, t) = swaks(
        submission,
        &[
            "--auth",
            "LOGIN",
            "--auth-user",
            "erin@example.org",
            "--auth-password",
            "change-me",
            "--from",
            "erin@example.org",
            "--to",
            "dave@example.net",
        ],
    );
    assert!(ok, "{t}");
    assert!(t.contains("<~  235 2.7.0 Authentication successful"), "{t}");
    for (user, password) in [
        ("erin@example.org", "Change-me"),
        ("nobody@example.org", "change-me"),
    ] {
        let (ok, t) = swaks(
            submission,
            &[
                "--auth",
                "PLAIN",
                "--auth-user",
                user,
                "--auth-password",
                password,
                "--from",
                "erin@example.org",
                "--to",
                "dave@example.net",
            ],
        );
        assert!(!ok && t.contains("<~* 535 5.7.8"), "{user}: {t}");
    }
    let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
    assert!(
        log.contains("sasl_method=LOGIN, sasl_username=erin@example.org"),
        "{log}"
    );
    assert!(
        !log.contains("change-me") && !log.contains("Change-me"),
        "{log}"
    );
}

/// A SCRAM-SHA-256 client written from RFC 5802 with Python's hashlib and
/// hmac: an implementation that is not ours.
const SCRAM: &str = r#"
import base64, hashlib, hmac, os, smtplib, ssl, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = smtplib.SMTP("127.0.0.1", port)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx); s.ehlo("client.example.org")
print("mechanisms", s.esmtp_features.get("auth", "").strip())
cnonce = base64.b64encode(os.urandom(18)).decode()
first_bare = "n=%s,r=%s" % (user, cnonce)
code, resp = s.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(("n,," + first_bare).encode()).decode())
server_first = base64.b64decode(resp).decode()
attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
assert attrs["r"].startswith(cnonce)
salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
stored_key = hashlib.sha256(client_key).digest()
without_proof = "c=biws,r=" + attrs["r"]
auth_message = ",".join([first_bare, server_first, without_proof]).encode()
signature = hmac.new(stored_key, auth_message, "sha256").digest()
proof = bytes(a ^ b for a, b in zip(client_key, signature))
code, resp = s.docmd(base64.b64encode((without_proof + ",p=" + base64.b64encode(proof).decode()).encode()).decode())
if code != 334:
    print("final", code, resp.decode()); sys.exit(0)
server_key = hmac.new(salted, b"Server Key", "sha256").digest()
expected = "v=" + base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest()).decode()
print("server-proof", base64.b64decode(resp).decode() == expected)
code, resp = s.docmd("")
print("final", code, resp.decode())
if code == 235:
    # RFC 4954's AUTH= on MAIL FROM, which the server keeps for an
    # authenticated session.
    s.mail(user, ["AUTH=" + user.replace("+", "+2B")])
    s.rcpt(user)
    code, resp = s.data(b"Subject: scram\r\n\r\nhello\r\n")
    print("data", code)
s.quit()
"#;

#[test]
fn scram_sha_256_against_an_independent_client() {
    if !have("python3") {
        return;
    }
    let (dir, submission, _daemon) = start_site("sasl-scram", "");
    let run = |password: &str| {
        let out = Command::new("python3")
            .args([
                "-c",
                SCRAM,
                &submission.to_string(),
                "carol@example.com",
                password,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let good = run("change-me");
    assert!(
        good.contains("mechanisms SCRAM-SHA-256 PLAIN LOGIN"),
        "{good}"
    );
    // Each side proved itself to the other.
    assert!(good.contains("server-proof True"), "{good}");
    assert!(
        good.contains("final 235 2.7.0 Authentication successful"),
        "{good}"
    );
    assert!(good.contains("data 250"), "{good}");
    let bad = run("not-it");
    assert!(bad.contains("final 535 5.7.8"), "{bad}");
    let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
    assert!(
        log.contains("SASL SCRAM-SHA-256 authentication failed"),
        "{log}"
    );
    assert!(
        log.contains(
            "sasl_method=SCRAM-SHA-256, sasl_username=carol@example.com, sasl_sender=carol@example.com"
        ),
        "{log}"
    );
}
