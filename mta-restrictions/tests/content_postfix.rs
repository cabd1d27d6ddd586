//! Differential test: the same messages through a throwaway Postfix
//! instance (Debian's 3.7, started with `tests/content_oracle/start-postfix.sh`)
//! and through `ContentFilter`, with the same tables
//! (`tests/content_oracle/*_checks`). Compared: the reply to the end of DATA
//! (250 or the rejection text), and the cleanup log lines of the actions
//! (`reject:`, `warning:`, `hold:`, ...) without their syslog prefix and
//! queue ID.
//!
//! Needs root and `/usr/sbin/postfix`. Without them the test prints why
//! it is skipped, or fails when `CI` is set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mta_maps::registry::{OpenContext, Registry};
use mta_restrictions::content::{
    ContentFilter, ContentLimits, ContentTables, MessageContext, Piece,
};

const BODY_CHECKS_SIZE_LIMIT: usize = 200;

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/content_oracle")
}

fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("postfix differential test cannot run: {reason}");
    }
    eprintln!("SKIPPED postfix differential test: {reason}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

struct Instance {
    dir: PathBuf,
    port: u16,
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

fn start() -> Result<Instance, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let dir = std::env::temp_dir().join(format!("mta-content-oracle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = oracle_dir();
    let out = Command::new(o.join("start-postfix.sh"))
        .arg(&dir)
        .arg(port.to_string())
        .arg(o.join("header_checks"))
        .arg(o.join("body_checks"))
        .arg(format!(
            "mime_header_checks = regexp:{}",
            o.join("mime_header_checks").display()
        ))
        .arg(format!(
            "nested_header_checks = regexp:{}",
            o.join("nested_header_checks").display()
        ))
        .arg(format!("body_checks_size_limit = {BODY_CHECKS_SIZE_LIMIT}"))
        .output()
        .map_err(|e| format!("start-postfix.sh: {e}"))?;
    let instance = Instance { dir, port };
    if !out.status.success() {
        return Err(format!(
            "start-postfix.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("postfix did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(instance)
}

fn read_reply(r: &mut impl BufRead) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("reply");
        all.push_str(line.trim_end());
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return all;
        }
        all.push(' ');
    }
}

/// Sends `message` (CRLF) and returns the reply to the end of DATA.
fn send(port: u16, message: &[u8]) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    read_reply(&mut r);
    for c in [
        "EHLO client.example.org",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<b@example.com>",
        "DATA",
    ] {
        w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        read_reply(&mut r);
    }
    let mut data = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    w.write_all(&data).unwrap();
    let reply = read_reply(&mut r);
    w.write_all(b"QUIT\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    reply
}

/// The cleanup action lines logged since `from`, normalised.
fn cleanup_lines(log: &Path, from: usize) -> (Vec<String>, usize) {
    let text = std::fs::read(log).unwrap_or_default();
    let new = String::from_utf8_lossy(&text[from.min(text.len())..]).to_string();
    let mut lines = Vec::new();
    for l in new.lines() {
        let Some(i) = l.find("postfix/cleanup[") else {
            continue;
        };
        let Some(j) = l[i..].find("]: ") else {
            continue;
        };
        let mut rest = &l[i + j + 3..];
        let mut warning = false;
        if let Some(r) = rest.strip_prefix("warning: ") {
            warning = true;
            rest = r;
        }
        // Drop the queue ID.
        if let Some(k) = rest.find(": ")
            && rest[..k].bytes().all(|b| b.is_ascii_hexdigit())
            && k >= 8
        {
            rest = &rest[k + 2..];
        }
        if rest.starts_with("message-id=") {
            continue;
        }
        lines.push(if warning {
            format!("warning: {rest}")
        } else {
            rest.to_string()
        });
    }
    (lines, text.len())
}

fn corpus() -> Vec<(&'static str, String)> {
    let x = "0123456789".repeat(10);
    let long_header = format!("X-Long: {x}\n {x}\n {x} END");
    let mut v: Vec<(&str, String)> = vec![
        ("plain", "Subject: hello\n\nNothing to see.\n".into()),
        ("spam subject", "Subject: FREE OFFER!! today only\n\nBuy.\n".into()),
        ("spamware", "Subject: hi\nX-Mailer: Some Spamware Tool 2.1\n\nhi\n".into()),
        ("warn with group", "Subject: hi\nX-Warn: this one\nX-WarnBare: 1\n\nhi\n".into()),
        ("info hold redirect filter bcc", "Subject: hi\nX-Info: 1\nX-Hold: 1\nX-Redirect: 1\nX-Filter: 1\nX-Bcc: 1\n\nhi\n".into()),
        ("bad actions", "Subject: hi\nX-Bad: 1\nX-BadPrepend: 1\nX-BadRedirect: 1\nX-BadFilter: 1\n\nhi\n".into()),
        ("line actions", "Subject: hi\nX-Prepend: 1\nX-Replace: 1\nX-Strip: 1\nX-Ignore: 1\nX-Dunno: 1\n\ndrop me\nhi\n".into()),
        ("discard stops", "Subject: hi\nX-Discard: 1\nX-Warn: unseen\n\nstop here\n".into()),
        ("temporary reject", "Subject: hi\nX-Temp: 1\n\nhi\n".into()),
        ("2.x.x reject", "Subject: hi\nX-Dsn2: 1\n\nhi\n".into()),
        ("pass", "Subject: hi\nX-Pass: 1\nX-Warn: unseen\n\nstop here\n".into()),
        ("folded", "Subject: hi\nX-Folded: a\n\tb\n\nhi\n".into()),
        ("long header cut at the limit", format!("Subject: hi\n{long_header}\n\nhi\n")),
        ("body line rule", "Subject: x\n\nbody warn one\nContent-Disposition: attachment; filename=\"x.exe\"\n".into()),
        ("body reject", "Subject: x\n\nfirst\nstop here please\nbody warn after\n".into()),
        (
            "exe attachment in a MIME header",
            "Subject: report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\nContent-Type: text/plain\n\nsee attached\n--XYZ\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"x.exe\"\n\nTVqQAAMAAAAEAAAA\n--XYZ--\n".into(),
        ),
        (
            "exe name on a folded line",
            "Subject: report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\nContent-Type: application/octet-stream;\n\tname=\"invoice.pdf.scr\"\n\nTVqQ\n--XYZ--\n".into(),
        ),
        (
            "classes",
            "Content-Type: multipart/mixed; boundary=B1\nSubject: x\n\nbody warn preamble\n--B1\nX-Part: p1\nContent-Type: message/rfc822\n\nX-Nest: n1\nX-Part: in nested\nSubject: nested ok\n\nbody warn nested body\n--B1\nX-Part: p2\n\nbody warn part2\n--B1--\nbody warn epilogue\n".into(),
        ),
        (
            "nested reject",
            "Content-Type: message/rfc822\n\nSubject: nested reject\n\nhi\n".into(),
        ),
        (
            "no MIME-Version",
            "Content-Type: multipart/mixed; boundary=q\n\n--q\nX-Part: without mime-version\n\nbody warn x\n--q--\n".into(),
        ),
    ];
    // body_checks_size_limit: which lines are seen per segment.
    let filler = "filler line of forty bytes 0123456789ab";
    let mut sized = String::from("Content-Type: multipart/mixed; boundary=S\n\n");
    for i in 0..6 {
        sized.push_str(&format!("body warn pre{i} {filler}\n"));
    }
    sized.push_str("--S\n\n");
    for i in 0..6 {
        sized.push_str(&format!("body warn part{i} {filler}\n"));
    }
    sized.push_str("--S--\nbody warn epi\n");
    v.push(("size limit per segment", sized));
    v.push((
        "long body line pieces",
        format!("Subject: x\n\nbody warn {}\n", "y".repeat(5000)),
    ));
    v
}

#[test]
fn same_verdicts_and_log_lines_as_postfix() {
    if !Path::new("/usr/sbin/postfix").exists() {
        return skip("/usr/sbin/postfix is not installed");
    }
    if !is_root() {
        return skip("starting a Postfix instance needs root");
    }
    let instance = match start() {
        Ok(i) => i,
        Err(e) => return skip(&e),
    };
    let o = oracle_dir();
    let registry = Registry::new(OpenContext::default());
    let reference = |name: &str| format!("regexp:{}", o.join(name).display());
    let tables = ContentTables::open(
        &registry,
        &reference("header_checks"),
        &reference("mime_header_checks"),
        &reference("nested_header_checks"),
        &reference("body_checks"),
    )
    .expect("tables");
    assert!(registry.take_warnings().is_empty());
    let limits = ContentLimits {
        body_checks_size_limit: BODY_CHECKS_SIZE_LIMIT,
        ..ContentLimits::default()
    };
    let context = MessageContext {
        queue_id: None,
        client: "localhost[127.0.0.1]".into(),
        sender: Some("a@example.org".into()),
        recipient: Some("b@example.com".into()),
        protocol: Some("ESMTP".into()),
        helo: Some("client.example.org".into()),
    };
    let log = instance.dir.join("log/maillog");
    let (_, mut offset) = cleanup_lines(&log, 0);
    let mut failures = Vec::new();
    for (name, message) in corpus() {
        let message = message.replace('\n', "\r\n");
        let postfix_reply = send(instance.port, message.as_bytes());
        // Let postlogd write the cleanup lines.
        std::thread::sleep(Duration::from_millis(400));
        let (postfix_log, new_offset) = cleanup_lines(&log, offset);
        offset = new_offset;

        let mut filter = ContentFilter::new(&tables, limits, context.clone());
        let mut sink = |_: Piece<'_>| {};
        // Postfix's smtpd puts a Received: header first; it matches no rule.
        filter.feed(b"Received: from client.example.org\r\n", &mut sink);
        for chunk in message.as_bytes().chunks(37) {
            filter.feed(chunk, &mut sink);
        }
        let mut verdict = filter.finish(&mut sink);
        // Postfix's logger cuts a record at 2048 bytes with its syslog
        // prefix; that is logging, not content inspection.
        for (ours, theirs) in verdict.log.iter_mut().zip(&postfix_log) {
            if theirs.len() > 1900 && ours.starts_with(theirs.as_str()) {
                ours.truncate(theirs.len());
            }
        }
        let ours_reply = match verdict.reply() {
            None => "250".to_string(),
            Some(r) => r.expect("reply").to_string(),
        };
        let postfix_short = if postfix_reply.starts_with("250") {
            "250".to_string()
        } else {
            postfix_reply.clone()
        };
        if ours_reply != postfix_short || verdict.log != postfix_log {
            for (a, b) in postfix_log.iter().zip(&verdict.log) {
                if a != b {
                    let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
                    eprintln!(
                        "{name}: first difference at byte {common}: postfix {} bytes, ours {} bytes: postfix ...{:?} ours ...{:?}",
                        a.len(),
                        b.len(),
                        &a[common.saturating_sub(20)..(common + 40).min(a.len())],
                        &b[common.saturating_sub(20)..(common + 40).min(b.len())]
                    );
                }
            }
            failures.push(format!(
                "{name}:\n  postfix: {postfix_short}\n    {}\n  ours:    {ours_reply}\n    {}",
                postfix_log.join("\n    "),
                verdict.log.join("\n    ")
            ));
        } else {
            eprintln!(
                "same: {name}: {ours_reply} ({} log lines)",
                verdict.log.len()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "differences from Postfix:\n{}",
        failures.join("\n")
    );
}
