//! The systemd unit of `examples/systemd` is valid: `systemd-analyze
//! verify` accepts it with the binary path pointed at the mtad under
//! test, and its commands are mtad's own (`check`, the daemon, SIGHUP for
//! reload).

use std::process::Command;

const MTAD: &str = env!("CARGO_BIN_EXE_mtad");

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/mtad.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStartPre=/usr/local/sbin/mtad check -c /etc/mta\n"));
    assert!(unit.contains("ExecStart=/usr/local/sbin/mtad -c /etc/mta\n"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID\n"));
    let have = Command::new("systemd-analyze").arg("--version").output();
    if have.map(|o| !o.status.success()).unwrap_or(true) {
        if std::env::var_os("CI").is_some() {
            panic!("systemd-analyze is not installed: CI must install systemd");
        }
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("mtad-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mtad.service");
    std::fs::write(&path, unit.replace("/usr/local/sbin/mtad", MTAD)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{said}");
    // Warnings about this unit (not about others on the machine) fail.
    assert!(!said.contains("mtad.service:"), "{said}");
}
