//! The reference site as mtad's tests use it: copied to a scratch
//! directory and its tables compiled, as an administrator leaves it after
//! `postmap` and `postalias` (the repository keeps only the sources).

use std::path::PathBuf;
use std::process::Command;

/// `examples/small-office` copied to a scratch directory named after
/// `name`, with `master.cf` passed through `edit_master` and the hash
/// tables compiled by mtad itself.
pub(crate) fn compiled_site(name: &str, edit_master: impl Fn(String) -> String) -> PathBuf {
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../small-office");
    let dir = std::env::temp_dir().join(format!("mtad-site-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "main.cf",
        "vmailbox",
        "virtual",
        "aliases",
        "header_checks",
        "body_checks",
        "sasl_passwd",
        "sender_logins",
    ] {
        std::fs::copy(source.join(f), dir.join(f)).unwrap();
    }
    let master = std::fs::read_to_string(source.join("master.cf")).unwrap();
    // The smtps service moves to a free port unless the test moved it.
    let master = edit_master(master);
    let smtps = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let master = master.replace("127.0.0.1:4650 ", &format!("127.0.0.1:{smtps} "));
    std::fs::write(dir.join("master.cf"), master).unwrap();
    let c = dir.display().to_string();
    for (tool, table) in [
        ("postmap", "vmailbox"),
        ("postmap", "virtual"),
        ("postalias", "aliases"),
    ] {
        let status = Command::new(mtad)
            .args([tool, "-c", &c, &format!("hash:{c}/{table}")])
            .status()
            .unwrap();
        assert!(status.success(), "{tool} {table}");
    }
    dir
}
