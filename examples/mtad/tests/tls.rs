//! TLS on the reference site, end to end over loopback: STARTTLS offered
//! on the smtp port with the certificate mtad makes at first start
//! (swaks as the client), the submission service that requires it
//! (Python's smtplib), and the smtp client's `smtp_tls_security_level`
//! levels against a second mtad.
//!
//! Skips with a printed reason when swaks or python3 is absent; fails in
//! CI.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Running, free_port, have, send};

const MTAD: &str = env!("CARGO_BIN_EXE_mtad");

/// The site in a scratch directory on free ports, `main_cf` lines added,
/// running; returns it with its smtp and submission ports.
fn start(name: &str, main_cf: &str) -> (PathBuf, u16, u16, Running) {
    let (smtp, submission) = (free_port(), free_port());
    let dir = common::compiled_site(name, |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{submission} "))
            // smtps on the submission port plus one, for the test below.
            .replace("127.0.0.1:4650 ", &format!("127.0.0.1:{} ", submission + 1))
    });
    let mut text = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    text.push_str(main_cf);
    std::fs::write(dir.join("main.cf"), text).unwrap();
    let log = std::fs::File::create(dir.join("mtad.log")).unwrap();
    let child = Command::new(MTAD)
        .args(["-c", &dir.display().to_string()])
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let running = Running(child);
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", smtp)).is_err() {
        let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap_or_default();
        assert!(Instant::now() < until, "mtad did not start\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (dir, smtp, submission, running)
}

fn wait_for_message(new: &Path, log: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(Ok(entry)) = std::fs::read_dir(new).ok().and_then(|mut d| d.next()) {
            return std::fs::read_to_string(entry.path()).unwrap();
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            Instant::now() < until,
            "nothing in {}\n{log}",
            new.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn starttls_with_the_first_start_certificate() {
    if !have("swaks") {
        return;
    }
    let (dir, smtp, _, _daemon) = start("tls-starttls", "");
    let cert = dir.join("state/data/smtpd-selfsigned.pem");
    assert!(cert.exists(), "no certificate made");
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtp}"), "--tls"])
        .args([
            "--helo",
            "client.example.org",
            "--from",
            "alice@example.org",
        ])
        .args(["--to", "bob@example.com", "--header", "Subject: over TLS"])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("<~  250 2.0.0 Ok: queued as"),
        "{transcript}"
    );
    let bob = wait_for_message(
        &dir.join("state/mail/example.com/bob/new"),
        &dir.join("mtad.log"),
    );
    assert!(bob.contains("\n\t(using TLSv1."), "{bob}");
    assert!(bob.contains(" with ESMTPS id "), "{bob}");
    // The certificate stays: the next start uses the same one.
    let before = std::fs::read(&cert).unwrap();
    assert!(String::from_utf8_lossy(&before).contains("BEGIN CERTIFICATE"));
    let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
    assert!(
        log.contains("made a self-signed certificate for mail.example.com"),
        "{log}"
    );
}

const SUBMISSION: &str = r#"
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
s.ehlo("client.example.org")
print("auth-before-tls", "auth" in s.esmtp_features)
code, text = s.mail("alice@example.org")
print("mail-before-tls", code, text.decode())
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo("client.example.org")
code, _ = s.mail("someone@example.net")
print("mail-after-tls", code)
code, text = s.rcpt("bob@example.com")
print("rcpt-without-auth", code, text.decode())
s.quit()
"#;

#[test]
fn submission_requires_tls_before_mail() {
    if !have("python3") {
        return;
    }
    let (_dir, _, submission, _daemon) = start("tls-submission", "");
    let out = Command::new("python3")
        .args(["-c", SUBMISSION, &submission.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "auth-before-tls False");
    assert_eq!(
        lines[1],
        "mail-before-tls 530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(lines[2], "mail-after-tls 250");
    // Without SASL nobody is authenticated: permit_sasl_authenticated,
    // reject refuses every recipient.
    assert!(
        lines[3].starts_with("rcpt-without-auth 554 5.7.1"),
        "{text}"
    );
}

const SMTPS: &str = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx)
s.ehlo("client.example.org")
print("cipher", s.sock.version())
print("auth", s.esmtp_features.get("auth", "").strip())
print(s.login("alice@example.com", "change-me")[0])
s.quit()
"#;

#[test]
fn smtps_speaks_tls_from_the_first_byte() {
    if !have("python3") {
        return;
    }
    let (_dir, _, submission, _daemon) = start("tls-smtps", "");
    let smtps = submission + 1;
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", smtps)).is_err() {
        assert!(Instant::now() < until, "no smtps listener");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("python3")
        .args(["-c", SMTPS, &smtps.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("cipher TLSv1."), "{text}");
    assert_eq!(lines[1], "auth SCRAM-SHA-256 PLAIN LOGIN");
    assert_eq!(lines[2], "235");
}

#[test]
fn the_smtp_client_honours_its_tls_security_level() {
    // The receiving side: a second mtad, mail host for example.net (no
    // sender domain checks: this machine has no DNS for example.org).
    let (remote, remote_smtp, _, _remote_daemon) = start(
        "tls-remote",
        "myhostname = mx.example.net\n\
         virtual_mailbox_domains = example.net\n\
         virtual_mailbox_maps = inline:{ dave@example.net=example.net/dave/ }\n\
         smtpd_sender_restrictions =\n",
    );
    for (n, level) in ["may", "encrypt", "verify", "none"].iter().enumerate() {
        let (dir, smtp, _, daemon) = start(
            &format!("tls-client-{level}"),
            &format!(
                "transport_maps = inline:{{ example.net=smtp:[127.0.0.1]:{remote_smtp} }}\n\
                 smtp_tls_security_level = {level}\n"
            ),
        );
        let subject = format!("level {level}");
        let r = send(
            smtp,
            "alice@example.org",
            "dave@example.net",
            &format!("Subject: {subject}\n\nhello\n"),
        );
        assert!(r.starts_with("250 "), "{r}");
        let log = dir.join("mtad.log");
        if *level == "verify" {
            // The remote's self-signed certificate is in no trust store:
            // the mail waits rather than going out unverified.
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                let text = std::fs::read_to_string(&log).unwrap();
                if text.contains("to=<dave@example.net>") && text.contains("status=deferred") {
                    assert!(text.contains("dsn=4.7.5"), "{text}");
                    break;
                }
                assert!(Instant::now() < until, "{text}");
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        }
        let new = remote.join("state/mail/example.net/dave/new");
        let until = Instant::now() + Duration::from_secs(20);
        let got = loop {
            let found = std::fs::read_dir(&new)
                .map(|d| {
                    d.filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
                        .find(|m| m.contains(&format!("Subject: {subject}\n")))
                })
                .unwrap_or(None);
            if let Some(m) = found {
                break m;
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                Instant::now() < until,
                "level {level}: nothing arrived\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The remote's Received line says whether TLS carried it.
        let hop = got
            .split("Received: ")
            .find(|r| r.contains("by mx.example.net"))
            .unwrap_or_else(|| panic!("{got}"))
            .to_owned();
        assert_eq!(
            hop.contains("(using TLSv1."),
            *level != "none",
            "level {level} (message {n}): {hop}"
        );
        // Both ends log the handshake as Postfix does.
        let ours = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            ours.contains(&format!(
                "postfix/smtp[{}]: Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{remote_smtp}: TLSv1.",
                daemon.0.id()
            )),
            *level != "none",
            "level {level}: {ours}"
        );
    }
}

#[test]
fn relaying_through_a_smarthost_that_wants_a_login() {
    // The smarthost: a second mtad, whose submission service wants TLS
    // and a login from its own password table (alice@example.com,
    // change-me), and which takes mail for example.net itself.
    let (remote, _, remote_submission, _remote_daemon) = start(
        "sasl-smarthost",
        "myhostname = mx.example.net\n\
         virtual_mailbox_domains = example.net\n\
         virtual_mailbox_maps = inline:{ dave@example.net=example.net/dave/ }\n",
    );
    // Postfix's default smtp_sasl_tls_security_options (noplaintext,
    // noanonymous) allows no PLAIN or LOGIN even over TLS; SASL_README's
    // recipe sets noanonymous for TLS sessions.
    for (name, password, tls_options, expect) in [
        (
            "right",
            "change-me",
            "noanonymous",
            "status=sent (250 2.0.0 Ok: queued as ",
        ),
        (
            "wrong",
            "guess",
            "noanonymous",
            "dsn=4.7.8, status=deferred (SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 Error: authentication failed",
        ),
        (
            "strict",
            "change-me",
            "noplaintext, noanonymous",
            "dsn=4.7.0, status=deferred (SASL authentication failed: server 127.0.0.1[127.0.0.1] offered no compatible authentication mechanisms for this type of connection security (offered: SCRAM-SHA-256 PLAIN LOGIN))",
        ),
    ] {
        let delivered = name == "right";
        let (dir, smtp, _, _daemon) = start(
            &format!("sasl-client-{name}"),
            &format!(
                "transport_maps = inline:{{ example.net=smtp:[127.0.0.1]:{remote_submission} }}\n\
                 smtp_tls_security_level = encrypt\n\
                 smtp_sasl_auth_enable = yes\n\
                 smtp_sasl_password_maps = inline:{{ [127.0.0.1]:{remote_submission}=alice@example.com:{password} }}\n\
                 smtp_sasl_security_options = noplaintext, noanonymous\n\
                 smtp_sasl_tls_security_options = {tls_options}\n"
            ),
        );
        let subject = format!("via the smarthost, {name} password");
        let r = send(
            smtp,
            "alice@example.com",
            "dave@example.net",
            &format!("Subject: {subject}\n\nhello\n"),
        );
        assert!(r.starts_with("250 "), "{r}");
        let log = dir.join("mtad.log");
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            let line = text
                .lines()
                .find(|l| l.contains("to=<dave@example.net>") && l.contains("status="))
                .map(str::to_owned);
            if let Some(line) = line {
                assert!(line.contains(expect), "{name}: {line}");
                if delivered {
                    let got = wait_for_message(
                        &remote.join("state/mail/example.net/dave/new"),
                        &remote.join("mtad.log"),
                    );
                    assert!(got.contains(&format!("Subject: {subject}\n")), "{got}");
                }
                break;
            }
            assert!(Instant::now() < until, "{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let remote_log = std::fs::read_to_string(remote.join("mtad.log")).unwrap();
    assert!(
        remote_log.contains("sasl_method=PLAIN, sasl_username=alice@example.com"),
        "{remote_log}"
    );
}

#[test]
fn a_client_certificate_in_relay_clientcerts_may_relay() {
    if !have("python3") {
        return;
    }
    // The laptop's certificate, self-signed: only its fingerprint counts.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["laptop.example.org".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let fingerprint = mta_smtp::transport::fingerprint_sha256(cert.der());
    let (dir, smtp, _, _daemon) = start(
        "tls-ccert",
        &format!(
            "mynetworks = 192.0.2.0/24\n\
             smtpd_tls_ask_ccert = yes\n\
             relay_clientcerts = inline:{{ {fingerprint}=laptop }}\n\
             smtpd_relay_restrictions = permit_tls_clientcerts, reject_unauth_destination\n\
             smtpd_recipient_restrictions = permit_tls_clientcerts, reject_unauth_destination\n\
             transport_maps = inline:{{ elsewhere.example=discard: }}\n"
        ),
    );
    std::fs::write(dir.join("laptop.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("laptop.key"), key.serialize_pem()).unwrap();
    // RCPT to an outside domain: its reply, with or without the
    // certificate.
    let try_relay = |with_cert: bool| -> String {
        let script = format!(
            r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if {with_cert}:
    ctx.load_cert_chain("{d}/laptop.pem", "{d}/laptop.key")
s = smtplib.SMTP("127.0.0.1", {smtp}, local_hostname="client.example.org", timeout=20)
s.starttls(context=ctx)
s.ehlo("client.example.org")
s.mail("alice@example.org")
code, text = s.rcpt("someone@elsewhere.example")
print(code, text.decode())
s.quit()
"#,
            with_cert = if with_cert { "True" } else { "False" },
            d = dir.display(),
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = try_relay(true);
    assert!(listed.starts_with("250"), "{listed}");
    let anonymous = try_relay(false);
    assert!(anonymous.starts_with("554 5.7.1"), "{anonymous}");
    assert!(anonymous.contains("Relay access denied"), "{anonymous}");
    let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
    assert!(
        log.contains(&format!("client certificate fingerprint={fingerprint}")),
        "{log}"
    );
    assert!(
        log.contains("Untrusted TLS connection established from"),
        "{log}"
    );
    assert!(
        log.contains("Anonymous TLS connection established from"),
        "{log}"
    );
}

#[test]
fn the_tls_policy_table_decides_per_destination() {
    // The remote: a second mtad taking mail for example.net and
    // example.info, with STARTTLS (the site's "may").
    let (remote, remote_smtp, _, _remote_daemon) = start(
        "tls-policy-remote",
        "myhostname = mx.example.net\n\
         virtual_mailbox_domains = example.net, example.info\n\
         virtual_mailbox_maps = inline:{ dave@example.net=example.net/dave/, erin@example.info=example.info/erin/ }\n\
         smtpd_sender_restrictions =\n",
    );
    // No TLS by default; the policy table asks for encryption to
    // example.net's next hop and names a cipher rule for example.info,
    // which mtad cannot apply: that mail waits rather than going out
    // with less than asked.
    let (dir, smtp, _, _daemon) = start(
        "tls-policy",
        &format!(
            "transport_maps = inline:{{ example.net=smtp:[127.0.0.1]:{remote_smtp}, example.info=smtp:[localhost]:{remote_smtp} }}\n\
             smtp_tls_security_level = none\n\
             smtp_tls_policy_maps = inline:{{ {{[127.0.0.1]:{remote_smtp}=encrypt}}, {{[localhost]:{remote_smtp}=encrypt ciphers=high}} }}\n"
        ),
    );
    let r = send(
        smtp,
        "alice@example.org",
        "dave@example.net",
        "Subject: policy\n\nhello\n",
    );
    assert!(r.starts_with("250 "), "{r}");
    let r = send(
        smtp,
        "alice@example.org",
        "erin@example.info",
        "Subject: policy 2\n\nhello\n",
    );
    assert!(r.starts_with("250 "), "{r}");
    let got = wait_for_message(
        &remote.join("state/mail/example.net/dave/new"),
        &dir.join("mtad.log"),
    );
    let hop = got
        .split("Received: ")
        .find(|r| r.contains("by mx.example.net"))
        .unwrap_or_else(|| panic!("{got}"))
        .to_owned();
    assert!(hop.contains("(using TLSv1."), "encrypted by policy: {hop}");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
        if text.contains("to=<erin@example.info>")
            && text.contains("status=deferred (TLS policy for [localhost]")
        {
            assert!(
                text.contains("ciphers=high: this policy attribute is not supported by mtad"),
                "{text}"
            );
            assert!(text.contains("dsn=4.7.5"), "{text}");
            break;
        }
        assert!(Instant::now() < until, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
