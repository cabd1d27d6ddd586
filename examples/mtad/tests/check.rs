//! `mtad check`: a good configuration passes; a bad one fails, naming each
//! problem with its file and line.

use std::path::PathBuf;
use std::process::Command;

mod common;

fn compiled_site(name: &str) -> PathBuf {
    common::compiled_site(name, |master| master)
}

#[test]
fn check_names_every_problem_with_file_and_line() {
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let site = compiled_site("good");
    let ok = Command::new(mtad)
        .args(["check", "-c", site.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Without its compiled tables the same site fails, naming the table.
    std::fs::remove_file(site.join("virtual.fst")).unwrap();
    let missing = Command::new(mtad)
        .args(["check", "-c", site.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    let _ = std::fs::remove_dir_all(&site);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("virtual.fst: No such file or directory"),
        "{stderr}"
    );
    assert!(stderr.contains("run \"mtad postmap hash:"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("mtad-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.cf"),
        "myorigin = /nonexistent/mailname\nsmtpd_helo_required = maybe\nmessage_size_limit = 10M\nbogus = 1\n\
         smtpd_sender_restriction = reject_unknown_sender_domain\n",
    )
    .unwrap();
    std::fs::write(dir.join("master.cf"), "").unwrap();
    let bad = Command::new(mtad)
        .args(["check", "-c", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    let main_cf = dir.join("main.cf").display().to_string();
    for expected in [
        format!(
            "{main_cf}, line 1: parameter myorigin: open /nonexistent/mailname: No such file or directory"
        ),
        format!("{main_cf}, line 2: parameter smtpd_helo_required: bad boolean value \"maybe\""),
        format!("{main_cf}, line 3: parameter message_size_limit: bad integer value \"10M\""),
        format!("{main_cf}: unused parameter: bogus=1"),
        // Seed 004's misspelling is an unknown parameter, as in Postfix.
        format!(
            "{main_cf}: unused parameter: smtpd_sender_restriction=reject_unknown_sender_domain"
        ),
        "3 configuration error(s)".to_string(),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_refuses_an_open_relay_and_names_the_rule() {
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let site = compiled_site("relay");
    let ok = Command::new(mtad)
        .args(["check", "-c", site.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&site);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    // The reference site is safe: smtpd_relay_restrictions' default
    // (compatibility level 3.6) refuses relaying first.
    assert!(stderr.contains("relay control: safe: "), "{stderr}");
    assert!(
        stderr.contains("\"defer_unauth_destination\" in smtpd_relay_restrictions"),
        "{stderr}"
    );

    let dir = std::env::temp_dir().join(format!("mtad-relay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.cf"),
        "compatibility_level = 3.6\nmynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit\n",
    )
    .unwrap();
    std::fs::write(dir.join("master.cf"), "smtp inet n - n - - smtpd\n").unwrap();
    let bad = Command::new(mtad)
        .args(["check", "-c", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("smtpd_recipient_restrictions"), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    // The daemon refuses to start on it too.
    let run = Command::new(mtad)
        .args(["-c", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("OPEN RELAY"), "{stderr}");
}

#[test]
fn check_refuses_what_mtad_does_not_do_and_warns_of_stale_tables() {
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let site = compiled_site("unsupported");
    let run = || {
        Command::new(mtad)
            .args(["check", "-c", site.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // A table edited after postmap: a warning that says what to run.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let vmailbox = std::fs::read_to_string(site.join("vmailbox")).unwrap();
    std::fs::write(
        site.join("vmailbox"),
        format!("{vmailbox}grace@example.com example.com/grace/\n"),
    )
    .unwrap();
    let stale = run();
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(stale.status.success(), "{stderr}");
    assert!(
        stderr.contains("vmailbox is newer than") && stderr.contains("run \"mtad postmap hash:"),
        "{stderr}"
    );
    // A Milter and an override of a feature mtad lacks: refused, with
    // file and line; left at its default, a listed parameter is fine.
    let main_cf = std::fs::read_to_string(site.join("main.cf")).unwrap();
    let lines = main_cf.lines().count();
    std::fs::write(
        site.join("main.cf"),
        format!("{main_cf}smtpd_milters = inet:127.0.0.1:8891\ndelay_warning_time = 0h\n"),
    )
    .unwrap();
    let master = std::fs::read_to_string(site.join("master.cf")).unwrap();
    std::fs::write(
        site.join("master.cf"),
        master.replacen(
            "  -o syslog_name=postfix/submission",
            "  -o syslog_name=postfix/submission\n  -o smtpd_proxy_filter=127.0.0.1:10025",
            1,
        ),
    )
    .unwrap();
    let refused = run();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let _ = std::fs::remove_dir_all(&site);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "main.cf, line {}: smtpd_milters = inet:127.0.0.1:8891: not supported by mtad (Milter applications in smtpd)",
            lines + 1
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("-o smtpd_proxy_filter=127.0.0.1:10025: not supported by mtad"),
        "{stderr}"
    );
    assert!(!stderr.contains("delay_warning_time"), "{stderr}");
}
