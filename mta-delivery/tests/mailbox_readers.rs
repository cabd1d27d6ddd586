//! What the mailbox writers produce, read back by a reader that is not
//! ours: Python's `mailbox` module (its `mbox` and `Maildir` classes).
//! Eight threads appending to one mbox at once never interleave, and
//! every message comes back whole.
//!
//! Needs `python3`; without it the test prints why it is skipped, or
//! fails when `CI` is set.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mta_core::address::ReversePath;
use mta_delivery::maildir::{Maildir, MaildirOptions};
use mta_delivery::mbox::{LockMethod, Mbox, MboxOptions};

fn python() -> bool {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import mailbox")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 is not installed: CI must install it");
        }
        eprintln!("skipped: python3 is not installed");
    }
    ok
}

/// Body lines per message: enough that one message takes several writes
/// (more than the writer's 64 KiB buffer), so interleaving could show.
const LINES: usize = 4000;

/// A message whose every body line names it, so that a torn or
/// interleaved one shows.
fn message(thread: usize, n: usize) -> Vec<u8> {
    let tag = format!("t{thread}m{n}");
    let mut m = format!("Subject: {tag}\nFrom: bob@example.org\n\n").into_bytes();
    for line in 0..LINES {
        m.extend_from_slice(format!("{tag} line {line}\n").as_bytes());
    }
    // A body line that mbox must quote.
    m.extend_from_slice(format!("From the desk of {tag}\n").as_bytes());
    m
}

const READ_MBOX: &str = r#"
import mailbox, sys
box = mailbox.mbox(sys.argv[1], create=False)
for msg in box:
    tag = msg["Subject"]
    body = msg.get_payload()
    lines = body.split("\n")
    n = int(sys.argv[2])
    ok = all(l.startswith(tag + " line ") for l in lines[:n]) and lines[n] == ">From the desk of " + tag
    print(tag, "ok" if ok else "BAD", msg.get_from().split(" ")[0])
"#;

#[test]
fn concurrent_mbox_deliveries_never_interleave() {
    // fcntl alone is virtual_mailbox_lock's default: its locks do not
    // keep threads of one process apart, the writer's own lock must.
    for (name, locks) in [
        ("fcntl", vec![LockMethod::Fcntl]),
        ("both", vec![LockMethod::Fcntl, LockMethod::Dotlock]),
    ] {
        concurrent_appends(name, locks);
    }
}

fn concurrent_appends(name: &str, locks: Vec<LockMethod>) {
    if !python() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mta-readers-mbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("alice");
    let options = Arc::new(MboxOptions {
        locks,
        lock_attempts: 200,
        lock_delay: Duration::from_millis(5),
        ..MboxOptions::default()
    });
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            let options = Arc::clone(&options);
            std::thread::spawn(move || {
                let sender = ReversePath::Mailbox("bob@example.org".parse().unwrap());
                for n in 0..25 {
                    Mbox::new(&path)
                        .deliver(
                            &sender,
                            b"Return-Path: <bob@example.org>\n",
                            &message(t, n)[..],
                            SystemTime::now(),
                            &options,
                        )
                        .unwrap_or_else(|e| panic!("thread {t} message {n}: {e}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let out = Command::new("python3")
        .args([
            "-c",
            READ_MBOX,
            &path.display().to_string(),
            &LINES.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 200, "{text}");
    let mut tags: Vec<&str> = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f[1..], ["ok", "bob@example.org"], "{l}");
            f[0]
        })
        .collect();
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 200, "every message once");
    std::fs::remove_dir_all(&dir).unwrap();
}

const READ_MAILDIR: &str = r#"
import mailbox, os, sys
box = mailbox.Maildir(sys.argv[1], factory=None, create=False)
print("folders", ",".join(sorted(box.list_folders())))
for key, msg in sorted(box.iteritems(), key=lambda kv: kv[1]["Subject"]):
    name = os.path.basename(box._lookup(key))
    size = int(name.split(",S=")[1].split(":")[0].split(",")[0])
    path = os.path.join(sys.argv[1], box._lookup(key))
    print(msg["Subject"], size == os.path.getsize(path), msg["Return-Path"])
sub = box.get_folder("Lists")
print("Lists", len(sub))
"#;

#[test]
fn maildir_and_its_folders_read_back_by_python() {
    if !python() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mta-readers-maildir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = dir.join("alice");
    let options = MaildirOptions {
        hostname: "mail.example.com".into(),
        size_limit: 0,
        owner: None,
        cancel: None,
    };
    for n in 0..3 {
        Maildir::new(&base)
            .deliver(
                b"Return-Path: <bob@example.org>\n",
                &message(0, n)[..],
                SystemTime::now(),
                &options,
            )
            .unwrap();
    }
    Maildir::new(base.join(".Lists"))
        .deliver(b"", &message(1, 0)[..], SystemTime::now(), &options)
        .unwrap();
    let out = Command::new("python3")
        .args(["-c", READ_MAILDIR, &base.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "folders Lists\n\
         t0m0 True <bob@example.org>\n\
         t0m1 True <bob@example.org>\n\
         t0m2 True <bob@example.org>\n\
         Lists 1\n"
    );
    assert!(Path::new(&base.join(".Lists/maildirfolder")).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
