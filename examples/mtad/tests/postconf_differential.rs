//! Differential test: `mtad postconf` against Debian's `postconf` over a
//! corpus of `main.cf` files, in every output mode, for every parameter.
//!
//! Both programs read the same directory. mtad's deliberate deviations
//! (`mta_core::config::registry::DEVIATIONS`) are set back to Postfix's
//! values in a prelude, so that every other line, expanded or not, must be
//! byte-identical; `-d` ignores `main.cf`, so there the deviation lines
//! are checked against mtad's own defaults instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use mta_core::config::registry::{self, DEVIATIONS};

const POSTCONF: &str = "/usr/sbin/postconf";
const DEBIAN_MASTER_CF: &str = "/usr/share/postfix/master.cf.dist";

/// Returns false (after saying why) when Postfix is not installed; fails
/// in CI, where it must be.
fn postfix_available() -> bool {
    if Path::new(POSTCONF).exists() && Path::new(DEBIAN_MASTER_CF).exists() {
        return true;
    }
    let why =
        "skipped: Debian's postfix is not installed (run ../shared/tools/install-test-peers.sh)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
    false
}

fn corpus() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("../small-office/main.cf")];
    let dir = root.join("tests/data/postconf");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    entries.sort();
    files.extend(entries);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("corpus file");
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect()
}

/// The master.cf both programs read: Debian's stock one, whose delivery
/// services bring their per-service parameters.
fn install_master_cf(dir: &Path) {
    std::fs::copy(DEBIAN_MASTER_CF, dir.join("master.cf")).unwrap();
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtad-postconf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stdout_of(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .expect("run postconf");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Drops the `process_id` line, which differs between any two runs.
fn without_pid(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with("process_id = "))
        .map(str::to_string)
        .collect()
}

#[test]
fn postconf_output_matches_postfix() {
    if !postfix_available() {
        return;
    }
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let prelude: String = DEVIATIONS
        .iter()
        .filter(|d| d.name != "config_directory")
        .map(|d| {
            format!(
                "{} = {}\n",
                d.name,
                registry::postfix_default(d.name).unwrap().default
            )
        })
        .collect();
    let mut compared = 0usize;
    let mut failures = Vec::new();
    for (name, text) in corpus() {
        let dir = scratch_dir(&name);
        std::fs::write(dir.join("main.cf"), format!("{prelude}{text}")).unwrap();
        install_master_cf(&dir);
        let d = dir.to_str().unwrap();
        for mode in [
            &[][..],
            &["-n"],
            &["-x"],
            &["-nx"],
            &["-f"],
            &["-fx"],
            &["-h", "myhostname", "mydomain"],
            &["-M"],
            &["-Mf"],
            &["-F"],
            &["-P"],
        ] {
            let args: Vec<&str> = ["-c", d].iter().chain(mode).copied().collect();
            let theirs = without_pid(&stdout_of(POSTCONF, &args));
            let mut ours_args = vec!["postconf"];
            ours_args.extend(&args);
            let ours = without_pid(&stdout_of(mtad, &ours_args));
            compared += theirs.len();
            if ours != theirs {
                let diff: Vec<String> = theirs
                    .iter()
                    .filter(|l| !ours.contains(l))
                    .map(|l| format!("  postfix: {l}"))
                    .chain(
                        ours.iter()
                            .filter(|l| !theirs.contains(l))
                            .map(|l| format!("  mtad:    {l}")),
                    )
                    .take(20)
                    .collect();
                failures.push(format!("{name} {mode:?}:\n{}", diff.join("\n")));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        failures.is_empty(),
        "postconf output differs:\n{}",
        failures.join("\n")
    );
    // Every corpus file lists the whole registry at least twice (plain, -x).
    assert!(compared > 2 * 1000, "compared only {compared} lines");
    eprintln!("compared {compared} postconf output lines: identical");
}

#[test]
fn postconf_defaults_match_postfix_apart_from_deviations() {
    if !postfix_available() {
        return;
    }
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let dir = scratch_dir("defaults");
    std::fs::write(dir.join("main.cf"), "").unwrap();
    install_master_cf(&dir);
    let d = dir.to_str().unwrap();
    let theirs = without_pid(&stdout_of(POSTCONF, &["-c", d, "-d"]));
    let ours = without_pid(&stdout_of(mtad, &["postconf", "-c", d, "-d"]));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ours.len(), theirs.len(), "same number of parameters");
    for (o, t) in ours.iter().zip(&theirs) {
        let name = t.split(" =").next().unwrap();
        match DEVIATIONS.iter().find(|dev| dev.name == name) {
            Some(dev) => assert_eq!(o, &format!("{name} = {}", dev.default)),
            None => assert_eq!(o, t),
        }
    }
    eprintln!("{} defaults compared", theirs.len());
}

#[test]
fn postconf_edit_keeps_comments_and_order() {
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let dir = scratch_dir("edit");
    let main_cf = dir.join("main.cf");
    std::fs::write(
        &main_cf,
        "# site\nmyhostname = old.example\n  # note\nmydomain = example\n",
    )
    .unwrap();
    let out = Command::new(mtad)
        .args([
            "postconf",
            "-c",
            dir.to_str().unwrap(),
            "-e",
            "myhostname=new.example",
            "relayhost = [smtp.example]:587",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&main_cf).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        text,
        "# site\nmyhostname = new.example\n  # note\nmydomain = example\nrelayhost = [smtp.example]:587\n"
    );
}

#[test]
fn small_office_settings_are_listed() {
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../small-office");
    let out = stdout_of(mtad, &["postconf", "-n", "-c", dir.to_str().unwrap()]);
    for line in [
        "virtual_mailbox_domains = example.com, example.org",
        "smtpd_helo_required = yes",
        "strict_rfc821_envelopes = yes",
        "disable_vrfy_command = yes",
        "mydestination = $myhostname, localhost",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
}
