//! Debian's stock `master.cf` (`/usr/share/postfix/master.cf.dist`, from
//! the `postfix` package) works with mtad unchanged but for the port of
//! its `smtp inet` line (a test may not bind port 25): `mtad check`
//! passes, every service it does not run as its own gets one
//! informational line saying why, mail is accepted and delivered, and
//! Postfix's default `local_recipient_maps` (`proxy:unix:passwd.byname
//! $alias_maps`) refuses unknown local users at RCPT.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Running, free_port, send, wait_for_files, wait_for_port};

const MTAD: &str = env!("CARGO_BIN_EXE_mtad");
const STOCK: &str = "/usr/share/postfix/master.cf.dist";

#[test]
fn debians_master_cf_runs_unchanged() {
    if !Path::new(STOCK).exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{STOCK} is missing: CI must install postfix");
        }
        eprintln!("skipped: {STOCK} is missing (install postfix)");
        return;
    }
    let smtp = free_port();
    let stock = std::fs::read_to_string(STOCK).unwrap();
    let dir = common::compiled_site("stock", |_| {
        let line = stock
            .lines()
            .find(|l| l.starts_with("smtp ") && l.contains(" inet "))
            .expect("the stock smtp inet line")
            .to_owned();
        stock.replacen(
            &line,
            &line.replacen("smtp ", &format!("127.0.0.1:{smtp} "), 1),
            1,
        )
    });
    let c = dir.display().to_string();
    let check = Command::new(MTAD)
        .args(["check", "-c", &c])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let log = std::fs::File::create(dir.join("mtad.log")).unwrap();
    let _daemon = Running(
        Command::new(MTAD)
            .args(["-c", &c])
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    wait_for_port(smtp, "mtad");
    let log = std::fs::read_to_string(dir.join("mtad.log")).unwrap();
    for (service, program) in [
        ("tlsmgr", "tlsmgr"),
        ("flush", "flush"),
        ("proxymap", "proxymap"),
        ("showq", "showq"),
        ("anvil", "anvil"),
        ("scache", "scache"),
        ("postlog", "postlogd"),
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains(&format!(": service {service}/"))
                    && l.contains(&format!("({program}): "))
            })
            .collect();
        assert_eq!(lines.len(), 1, "{service}: {log}");
        assert!(!lines[0].contains("warning"), "{}", lines[0]);
    }
    assert!(!log.contains("proxy:unix:passwd.byname"), "{log}");
    assert!(!log.contains("]: error: "), "{log}");

    let r = send(
        smtp,
        "carol@example.org",
        "bob@example.com",
        "Subject: stock\n\nfrom the stock master.cf\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let got = wait_for_files(&dir.join("state/mail/example.com/bob/new"), 1);
    assert!(got[0].contains("from the stock master.cf"), "{}", got[0]);
    // A local user that does not exist, at $myhostname.
    let (mut reader, mut writer) = common::smtp_session(smtp);
    let until = Instant::now() + Duration::from_secs(5);
    let mut say = |line: &str| common::say(&mut reader, &mut writer, line);
    assert!(say("EHLO client.example.org").starts_with("250"));
    assert!(say("MAIL FROM:<carol@example.org>").starts_with("250"));
    let r = say("RCPT TO:<no-such-user@mail.example.com>");
    assert!(
        r.starts_with("550 5.1.1 <no-such-user@mail.example.com>: Recipient address rejected: User unknown in local recipient table"),
        "{r}"
    );
    let r = say("RCPT TO:<root@mail.example.com>");
    assert!(r.starts_with("250"), "{r}");
    assert!(Instant::now() < until);
}
