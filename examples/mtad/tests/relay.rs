//! `mtad` relaying out on the reference site: mail for the Internet goes
//! through the `smtp` transport to Debian's `smtp-sink` standing in for
//! the remote servers (reached through `transport_maps`, so no DNS), and
//! a remote server's refusal comes back to the sender as a bounce with
//! the remote reply in it.
//!
//! Skips with a printed reason when `smtp-sink` is absent; fails in CI.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Running, free_port, send, sink, wait_for_files, wait_for_port};

const MTAD: &str = env!("CARGO_BIN_EXE_mtad");
#[test]
fn mail_for_the_internet_is_relayed_and_refusals_bounce() {
    if !common::have_sink() {
        return;
    }
    let smtp = free_port();
    let dir = common::compiled_site("relay", |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{} ", free_port()))
    });
    let (_ok_sink, ok_port) = sink(&dir.join("sink-ok"), &[]);
    let (_no_sink, no_port) = sink(&dir.join("sink-no"), &["-f", "RCPT"]);
    let mut main_cf = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    main_cf.push_str(&format!(
        "transport_maps = inline:{{ example.net=smtp:[127.0.0.1]:{ok_port}, \
         example.info=smtp:[127.0.0.1]:{no_port} }}\n"
    ));
    std::fs::write(dir.join("main.cf"), main_cf).unwrap();
    let log = std::fs::File::create(dir.join("mtad.log")).unwrap();
    let daemon = Running(
        Command::new(MTAD)
            .args(["-c", &dir.display().to_string()])
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    wait_for_port(smtp, "mtad");

    let r = send(
        smtp,
        "alice@example.org",
        "dave@example.net",
        "From: alice@example.org\nSubject: to the world\n\nout it goes\n",
    );
    let id = r
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap()
        .trim()
        .to_owned();
    let relayed = wait_for_files(&dir.join("sink-ok"), 1);
    let m = &relayed[0];
    assert!(m.contains("X-Mail-Args: <alice@example.org>"), "{m}");
    assert!(m.contains("X-Rcpt-Args: <dave@example.net>"), "{m}");
    assert!(
        m.contains("\nSubject: to the world\n\nout it goes\n"),
        "{m}"
    );
    // The message carries our Received line (with its queue ID).
    assert!(
        m.contains(&format!("by mail.example.com (mtad) with ESMTP id {id}")),
        "{m}"
    );

    // A remote 5xx to RCPT returns the message to its sender, here a
    // local mailbox, with the remote server's words.
    send(
        smtp,
        "alice@example.org",
        "eve@example.info",
        "From: alice@example.org\nSubject: refused\n\nno one home\n",
    );
    let bounces = wait_for_files(&dir.join("state/mail/example.org/alice/new"), 1);
    let b = &bounces[0];
    assert!(b.contains("Return-Path: <>\n"), "{b}");
    assert!(
        b.contains("Subject: Undelivered Mail Returned to Sender\n"),
        "{b}"
    );
    // Wrapped at 79 columns, as Postfix's bounce daemon wraps it.
    assert!(
        b.contains(
            "\n<eve@example.info>: host 127.0.0.1[127.0.0.1] said: 500 5.3.0 Error: command\n    failed (in reply to RCPT TO command)\n"
        ),
        "{b}"
    );
    assert!(b.contains("Remote-MTA: dns; 127.0.0.1\n"), "{b}");
    assert!(
        b.contains("Diagnostic-Code: smtp; 500 5.3.0 Error: command failed\n"),
        "{b}"
    );
    assert!(b.contains("Status: 5.3.0\n"), "{b}");

    // The log says what Postfix's smtp(8) says.
    let until = Instant::now() + Duration::from_secs(10);
    let pid = daemon.0.id();
    loop {
        let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
        let sent = format!(
            "postfix/smtp[{pid}]: {id}: to=<dave@example.net>, relay=127.0.0.1[127.0.0.1]:{ok_port}, delay="
        );
        if log.contains(&sent)
            && log.contains("dsn=2.0.0, status=sent (250 2.0.0 Ok")
            && log.contains("to=<eve@example.info>, relay=127.0.0.1[127.0.0.1]:")
            && log.contains("dsn=5.3.0, status=bounced (host 127.0.0.1[127.0.0.1] said: 500 5.3.0 Error: command failed (in reply to RCPT TO command))")
        {
            break;
        }
        assert!(Instant::now() < until, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(daemon);
}

#[test]
fn the_sender_chooses_the_relay_host() {
    if !common::have_sink() {
        return;
    }
    let smtp = free_port();
    let dir = common::compiled_site("sender-relay", |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{} ", free_port()))
    });
    let (_alice_sink, alice_port) = sink(&dir.join("sink-alice"), &[]);
    let (_org_sink, org_port) = sink(&dir.join("sink-org"), &[]);
    let (_default_sink, default_port) = sink(&dir.join("sink-default"), &[]);
    let mut main_cf = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    main_cf.push_str(&format!(
        "relayhost = [127.0.0.1]:{default_port}\n\
         sender_dependent_relayhost_maps = inline:{{ alice@example.org=[127.0.0.1]:{alice_port}, \
         @example.org=[127.0.0.1]:{org_port}, carol@example.org=DUNNO }}\n"
    ));
    std::fs::write(dir.join("main.cf"), main_cf).unwrap();
    let _daemon = common::start_mtad(&dir, smtp);
    for from in ["alice@example.org", "bob@example.org", "carol@example.org"] {
        let r = send(
            smtp,
            from,
            "dave@example.net",
            &format!("Subject: from {from}\n\nhi\n"),
        );
        assert!(r.starts_with("250"), "{from}: {r}");
    }
    // The address's own entry, then its domain's; DUNNO keeps relayhost.
    let got = |d: &str| wait_for_files(&dir.join(d), 1).join("\n");
    assert!(got("sink-alice").contains("X-Mail-Args: <alice@example.org>"));
    let org = got("sink-org");
    assert!(org.contains("X-Mail-Args: <bob@example.org>"), "{org}");
    assert!(got("sink-default").contains("X-Mail-Args: <carol@example.org>"));
    for d in ["sink-alice", "sink-org", "sink-default"] {
        assert_eq!(std::fs::read_dir(dir.join(d)).unwrap().count(), 1, "{d}");
    }
}

#[test]
fn a_server_that_greets_with_our_name_is_a_loop() {
    if !common::have_sink() {
        return;
    }
    let smtp = free_port();
    let dir = common::compiled_site("greeting-loop", |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{} ", free_port()))
    });
    // The next hop calls itself mail.example.com: this site's name.
    let (_sink, port) = sink(&dir.join("sink"), &["-h", "mail.example.com"]);
    let mut main_cf = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    main_cf.push_str(&format!(
        "transport_maps = inline:{{ example.net=smtp:[127.0.0.1]:{port} }}\n"
    ));
    std::fs::write(dir.join("main.cf"), main_cf).unwrap();
    let _daemon = common::start_mtad(&dir, smtp);
    let r = send(
        smtp,
        "alice@example.org",
        "dave@example.net",
        "Subject: loop\n\nhi\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
        if text.contains("to=<dave@example.net>") && text.contains("status=bounced") {
            assert!(
                text.contains("dsn=5.4.6, status=bounced (mail for [127.0.0.1]:"),
                "{text}"
            );
            assert!(text.contains("loops back to myself)"), "{text}");
            assert!(
                text.contains("greeted me with my own hostname mail.example.com"),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < until, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_dir(dir.join("sink")).unwrap().count(), 0);
}
