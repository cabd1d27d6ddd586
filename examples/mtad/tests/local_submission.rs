//! Local submission on the reference site, as a mail program or a script
//! uses it: `mtad sendmail` (also through a link named `sendmail`) drops
//! the message into the maildrop, the daemon's pickup queues it with the
//! headers Postfix adds, and it arrives in the virtual maildir; `-t`
//! finds the recipients in the headers and `Bcc:` does not travel; mail
//! submitted while the daemon is down waits and goes when it starts;
//! `-bs` speaks SMTP on standard input; `mailq` lists what waits, and
//! `postqueue -f` and `sendmail -q` make deferred mail go now.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{free_port, sink_at, wait_for_files};

const MTAD: &str = env!("CARGO_BIN_EXE_mtad");

/// The site with its smtpd services on free ports.
fn site(name: &str, extra_main: &str) -> (PathBuf, u16) {
    let smtp = free_port();
    let dir = common::compiled_site(name, |master| {
        master
            .replace("127.0.0.1:2525 ", &format!("127.0.0.1:{smtp} "))
            .replace("127.0.0.1:5870 ", &format!("127.0.0.1:{} ", free_port()))
    });
    if !extra_main.is_empty() {
        let mut main_cf = std::fs::read_to_string(dir.join("main.cf")).unwrap();
        main_cf.push_str(extra_main);
        std::fs::write(dir.join("main.cf"), main_cf).unwrap();
    }
    (dir, smtp)
}

/// Runs `mtad sendmail ARGS` with `input` on standard input.
fn sendmail(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(MTAD)
        .arg("sendmail")
        .args(["-C", &dir.display().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn maildir(dir: &Path, domain: &str, user: &str) -> PathBuf {
    dir.join(format!("state/mail/{domain}/{user}/new"))
}

fn login() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name
}

#[test]
fn sendmail_delivers_with_the_headers_postfix_adds() {
    let (dir, smtp) = site("sendmail", "");
    let _daemon = common::start_mtad(&dir, smtp);
    // A script's usual call: recipients on the command line, -oi, a body
    // with a line holding only a dot (kept, as with -i).
    let out = sendmail(
        &dir,
        &["-oi", "-F", "Backup Job", "alice@example.com"],
        "Subject: nightly backup\n\nall done\n.\nreally\n",
    );
    assert!(out.status.success(), "{out:?}");
    let m = &wait_for_files(&maildir(&dir, "example.com", "alice"), 1)[0];
    let me = login();
    let uid = nix::unistd::getuid();
    assert!(
        m.contains(&format!(
            "Received: by mail.example.com (mtad, from userid {uid})\n\tid "
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!("From: Backup Job <{me}@example.com>\n")),
        "{m}"
    );
    assert!(m.contains("\nDate: "), "{m}");
    assert!(m.contains("\nMessage-Id: <"), "{m}");
    assert!(
        m.contains(&format!("Return-Path: <{me}@example.com>\n")),
        "{m}"
    );
    assert!(m.ends_with("\n\nall done\n.\nreally\n"), "{m}");
    common::wait_for_log(&dir, "/pickup[");
    common::wait_for_log(&dir, &format!(": uid={uid} from=<{me}@example.com>"));

    // -t: recipients from To, Cc and Bcc; the Bcc header is removed.
    let out = sendmail(
        &dir,
        &["-t", "-f", "carol@example.com"],
        "From: Carol <carol@example.com>\nTo: Bob <bob@example.com>\nBcc: dave@example.com\nSubject: minutes\n\nsee you\n.\nnot sent: without -i a lone dot ends the message\n",
    );
    assert!(out.status.success(), "{out:?}");
    let to_bob = &wait_for_files(&maildir(&dir, "example.com", "bob"), 1)[0];
    let to_dave = &wait_for_files(&maildir(&dir, "example.com", "dave"), 1)[0];
    for m in [to_bob, to_dave] {
        assert!(m.contains("Return-Path: <carol@example.com>\n"), "{m}");
        assert!(!m.contains("Bcc:"), "{m}");
        assert!(m.ends_with("\n\nsee you\n"), "{m}");
        assert_eq!(m.matches("\nFrom: ").count(), 1, "{m}");
    }

    // The mail system's own answers: a usage error and an empty -t.
    let out = sendmail(&dir, &[], "Subject: x\n\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "Recipient addresses must be specified on the command line or via the -t option"
    ));
    let out = sendmail(&dir, &["-t"], "Subject: x\n\nbody\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("No recipient addresses found in message header")
    );
}

#[test]
fn mail_waits_in_the_maildrop_until_the_daemon_runs() {
    let (dir, smtp) = site("maildrop", "");
    // Through a link named sendmail, as MUAs find it.
    let link = dir.join("sendmail");
    std::os::unix::fs::symlink(MTAD, &link).unwrap();
    let mut child = Command::new(&link)
        .args(["-C", &dir.display().to_string(), "-i", "erin@example.com"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: while you were out\n\nhello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sendmail: warning: unable to wake up the mail system"),
        "{err}"
    );
    let maildrop = dir.join("state/queue/maildrop");
    assert_eq!(std::fs::read_dir(&maildrop).unwrap().count(), 1);
    let _daemon = common::start_mtad(&dir, smtp);
    let m = &wait_for_files(&maildir(&dir, "example.com", "erin"), 1)[0];
    assert!(m.contains("Subject: while you were out\n"), "{m}");
    assert_eq!(std::fs::read_dir(&maildrop).unwrap().count(), 0);
}

#[test]
fn sendmail_bs_speaks_smtp_on_standard_input() {
    let (dir, smtp) = site("bs", "");
    let _daemon = common::start_mtad(&dir, smtp);
    let out = sendmail(
        &dir,
        &["-bs"],
        "EHLO localhost\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: over stdin\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("220 mail.example.com ESMTP"), "{said}");
    assert!(said.contains("250 2.0.0 Ok: queued as "), "{said}");
    assert!(said.ends_with("221 2.0.0 Bye\r\n"), "{said}");
    let m = &wait_for_files(&maildir(&dir, "example.org", "alice"), 1)[0];
    assert!(m.contains("Return-Path: <alice@example.com>\n"), "{m}");
    assert!(m.contains("Subject: over stdin\n"), "{m}");
}

#[test]
fn deferred_mail_goes_when_flushed() {
    if !common::have_sink() {
        return;
    }
    // example.net is reached through a relay that is down at first; the
    // retry would be minutes away (minimal_backoff_time).
    let relay = free_port();
    let (dir, smtp) = site(
        "flush",
        &format!(
            "transport_maps = inline:{{ example.net=smtp:[127.0.0.1]:{relay} }}\nfast_flush_domains = example.net\n"
        ),
    );
    let _daemon = common::start_mtad(&dir, smtp);
    let out = sendmail(
        &dir,
        &["-f", "alice@example.com", "gina@example.net"],
        "Subject: one\n\n1\n",
    );
    assert!(out.status.success(), "{out:?}");
    common::wait_for_log(&dir, "to=<gina@example.net>, relay=none");
    common::wait_for_log(&dir, "status=deferred (connect to 127.0.0.1[127.0.0.1]:");

    // mailq (and sendmail -bp) list it, with the reason.
    let mailq = Command::new(MTAD)
        .args(["mailq", "-c", &dir.display().to_string()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&mailq.stdout);
    assert!(listing.contains("alice@example.com"), "{listing}");
    assert!(listing.contains("gina@example.net"), "{listing}");
    assert!(listing.contains("Connection refused"), "{listing}");
    let bp = sendmail(&dir, &["-bp"], "");
    assert_eq!(String::from_utf8_lossy(&bp.stdout), listing);

    // qshape: one recipient at example.net, in the first age bucket.
    let shape = Command::new(MTAD)
        .args(["qshape", "-c", &dir.display().to_string(), "deferred"])
        .output()
        .unwrap();
    let shape = String::from_utf8_lossy(&shape.stdout).into_owned();
    let row = |name: &str| {
        shape
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
    };
    assert_eq!(row("TOTAL"), "TOTAL 1 1 0 0 0 0 0 0 0 0 0", "{shape}");
    assert_eq!(
        row("example.net"),
        "example.net 1 1 0 0 0 0 0 0 0 0 0",
        "{shape}"
    );

    // The relay comes up; postqueue -f sends it now.
    let (_sink, _) = sink_at(&dir.join("sink"), &[], relay);
    let flush = Command::new(MTAD)
        .args(["postqueue", "-c", &dir.display().to_string(), "-f"])
        .output()
        .unwrap();
    assert!(flush.status.success(), "{flush:?}");
    let got = wait_for_files(&dir.join("sink"), 1);
    assert!(
        got[0].contains("X-Rcpt-Args: <gina@example.net>"),
        "{}",
        got[0]
    );

    // A site not in fast_flush_domains is refused; sendmail -qR for one
    // that is works like postqueue -s.
    let refused = Command::new(MTAD)
        .args([
            "postqueue",
            "-c",
            &dir.display().to_string(),
            "-s",
            "example.info",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not in fast_flush_domains"));
    let q = sendmail(&dir, &["-qRexample.net"], "");
    assert!(q.status.success(), "{q:?}");
}
