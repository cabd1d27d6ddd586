//! Differential test: `mtad postmap` against Debian's `postmap`: build the
//! same sources, query the same corner-case keys, compare output, warnings
//! that matter, and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const POSTMAP: &str = "/usr/sbin/postmap";
const POSTALIAS: &str = "/usr/sbin/postalias";

fn postfix_available() -> bool {
    if Path::new(POSTMAP).exists() {
        return true;
    }
    let why = "skipped: Debian's postfix is not installed (run tools/install-peers.sh)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
    false
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/postmap")
        .join(name)
}

/// A scratch directory with a main.cf for Postfix's postmap (which will
/// not run without one) and copies of the sources.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtad-postmap-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.cf"), "compatibility_level = 3.6\n").unwrap();
    std::fs::write(dir.join("master.cf"), "").unwrap();
    dir
}

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn run(program: &str, args: &[&str], dir: &Path, stdin: &str) -> Run {
    let mut cmd = Command::new(program);
    if program != POSTMAP && program != POSTALIAS {
        cmd.arg("postmap");
    }
    let mut child = cmd
        .args(["-c", dir.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run postmap");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// The distinct warnings, with program names and `.db`/`.fst` suffixes
/// made comparable (Postfix names its `FILE.db`, mtad its `FILE.fst`).
fn warnings(stderr: &str) -> Vec<String> {
    let mut w: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("postmap: warning: "))
        .map(|l| l.replace(".db:", ":").replace(".fst:", ":"))
        .collect();
    w.sort();
    w.dedup();
    w
}

#[test]
fn hash_tables_build_and_answer_like_postfix() {
    if !postfix_available() {
        return;
    }
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let keys = std::fs::read_to_string(data("keys.txt")).unwrap();
    let mut compared = 0;
    // Build flags, then query flags.
    for (build_flags, query_flags) in [
        (&[][..], &[][..]),
        (&["-r"], &[]),
        (&["-f"], &["-f"]),
        (&["-f"], &[]),
    ] {
        let pdir = scratch(&format!(
            "p{}{}",
            build_flags.join(""),
            query_flags.join("")
        ));
        let mdir = scratch(&format!(
            "m{}{}",
            build_flags.join(""),
            query_flags.join("")
        ));
        for dir in [&pdir, &mdir] {
            for src in ["aliases-like.src", "second.src"] {
                std::fs::copy(data(src), dir.join(src)).unwrap();
            }
        }
        let table = |dir: &Path, src: &str| format!("hash:{}", dir.join(src).display());
        for src in ["aliases-like.src", "second.src"] {
            let mut args: Vec<&str> = build_flags.to_vec();
            let (pt, mt) = (table(&pdir, src), table(&mdir, src));
            args.push(&pt);
            let theirs = run(POSTMAP, &args, &pdir, "");
            args.pop();
            args.push(&mt);
            let ours = run(mtad, &args, &mdir, "");
            assert_eq!(
                (ours.code, theirs.code),
                (0, 0),
                "build {src} {build_flags:?}: {}",
                ours.stderr
            );
            assert_eq!(
                warnings(&ours.stderr)
                    .iter()
                    .map(|w| w.replace(&mdir.display().to_string(), "DIR"))
                    .collect::<Vec<_>>(),
                warnings(&theirs.stderr)
                    .iter()
                    .map(|w| w.replace(&pdir.display().to_string(), "DIR"))
                    .collect::<Vec<_>>(),
                "build warnings for {src} {build_flags:?}"
            );
        }
        // One table, then two searched in order.
        for sources in [
            &["aliases-like.src"][..],
            &["second.src", "aliases-like.src"],
        ] {
            let mut pargs: Vec<String> = query_flags.iter().map(|s| s.to_string()).collect();
            pargs.extend(["-q".to_string(), "-".to_string()]);
            let mut margs = pargs.clone();
            pargs.extend(sources.iter().map(|s| table(&pdir, s)));
            margs.extend(sources.iter().map(|s| table(&mdir, s)));
            let pargs: Vec<&str> = pargs.iter().map(String::as_str).collect();
            let margs: Vec<&str> = margs.iter().map(String::as_str).collect();
            let theirs = run(POSTMAP, &pargs, &pdir, &keys);
            let ours = run(mtad, &margs, &mdir, &keys);
            assert_eq!(ours.code, theirs.code, "{}", ours.stderr);
            assert_eq!(
                ours.stdout, theirs.stdout,
                "-q - {sources:?} built {build_flags:?} queried {query_flags:?}"
            );
            compared += theirs.stdout.lines().count();
            // Single queries: value and exit status.
            for key in ["Abuse@Example.COM", "missing@example.com", "x", ""] {
                let mut p = pargs.clone();
                let mut m = margs.clone();
                let qp = p.iter().position(|a| *a == "-").unwrap();
                p[qp] = key;
                m[qp] = key;
                let (t, o) = (run(POSTMAP, &p, &pdir, ""), run(mtad, &m, &mdir, ""));
                assert_eq!(
                    (o.code, o.stdout),
                    (t.code, t.stdout),
                    "-q {key:?} {sources:?}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&pdir);
        let _ = std::fs::remove_dir_all(&mdir);
    }
    assert!(compared > 40, "compared only {compared} answers");
    eprintln!("{compared} postmap answers identical");
}

#[test]
fn texthash_inline_and_static_answer_like_postfix() {
    if !postfix_available() {
        return;
    }
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let keys = std::fs::read_to_string(data("keys.txt")).unwrap();
    let dir = scratch("text");
    std::fs::copy(data("aliases-like.src"), dir.join("t")).unwrap();
    let texthash = format!("texthash:{}", dir.join("t").display());
    // Pattern tables through mtad's registry (their own differential tests
    // in mta-maps go much deeper).
    std::fs::write(
        dir.join("re"),
        "/^postmaster@/ pm $0\n/^(.*)@example\\.org$/ org:$1\nif !/^x/\n/(.)(.)$/ tail $2$1\nendif\n",
    )
    .unwrap();
    std::fs::write(dir.join("cidr"), "192.0.2.0/24 doc\n!10.0.0.0/8 not-ten\n").unwrap();
    let regexp = format!("regexp:{}", dir.join("re").display());
    let pcre = format!("pcre:{}", dir.join("re").display());
    let cidr = format!("cidr:{}", dir.join("cidr").display());
    let cidr_keys = "192.0.2.1\n10.1.1.1\n203.0.113.9\n::1\nnot-an-address\n";
    let theirs = run(POSTMAP, &["-q", "-", &cidr], &dir, cidr_keys);
    let ours = run(mtad, &["-q", "-", &cidr], &dir, cidr_keys);
    assert_eq!(
        (ours.code, &ours.stdout),
        (theirs.code, &theirs.stdout),
        "{cidr}: {}",
        ours.stderr
    );
    for table in [
        regexp.as_str(),
        pcre.as_str(),
        texthash.as_str(),
        "inline:{ x=1, X=2, {y = 2 , 3}, postmaster@example.com=pm }",
        "static:{ the same  for all }",
        "static:5000",
    ] {
        let theirs = run(POSTMAP, &["-q", "-", table], &dir, &keys);
        let ours = run(mtad, &["-q", "-", table], &dir, &keys);
        assert_eq!(
            (ours.code, &ours.stdout),
            (theirs.code, &theirs.stdout),
            "{table}: {}",
            ours.stderr
        );
        // regexp and pcre word their warnings per line, not as Postfix's
        // pairs; their own differential tests compare the lines warned.
        if !table.starts_with("regexp:") && !table.starts_with("pcre:") {
            assert_eq!(
                warnings(&ours.stderr),
                warnings(&theirs.stderr),
                "{table} warnings"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn incremental_mode_adds_to_a_table() {
    if !postfix_available() {
        return;
    }
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let keys = "x\nnew\nextra\nNEW2\n";
    let mut outputs = Vec::new();
    for program in [POSTMAP, mtad] {
        let dir = scratch(if program == POSTMAP { "ip" } else { "im" });
        std::fs::copy(data("second.src"), dir.join("s")).unwrap();
        let table = format!("hash:{}", dir.join("s").display());
        assert_eq!(run(program, &[&table], &dir, "").code, 0);
        assert_eq!(
            run(
                program,
                &["-i", &table],
                &dir,
                "new value\nx replaced-not\nNEW2 v\n"
            )
            .code,
            0
        );
        outputs.push(run(program, &["-q", "-", &table], &dir, keys).stdout);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(outputs[1], outputs[0]);
}

#[test]
fn postalias_builds_and_answers_like_postfix() {
    if !postfix_available() {
        return;
    }
    let mtad = env!("CARGO_BIN_EXE_mtad");
    let keys = "postmaster\nroot\nROOT\nmailer-daemon\nlist\narchive\npipe\nspaced\ncontinued\nquoted name\ndup\nnocolon\n@\nnone\n";
    let mut answers = Vec::new();
    let mut dumps = Vec::new();
    for ours in [false, true] {
        let dir = scratch(if ours { "am" } else { "ap" });
        std::fs::copy(data("aliases"), dir.join("aliases")).unwrap();
        let table = format!("hash:{}", dir.join("aliases").display());
        let tool = |args: &[&str], stdin: &str| {
            if ours {
                let mut child = Command::new(mtad)
                    .arg("postalias")
                    .args(args)
                    .args(["-c", dir.to_str().unwrap()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(stdin.as_bytes())
                    .unwrap();
                String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
            } else {
                run(POSTALIAS, args, &dir, stdin).stdout
            }
        };
        tool(&[&table], "");
        answers.push(tool(&["-q", "-", &table], keys));
        let mut dump: Vec<String> = tool(&["-s", &table], "")
            .lines()
            .filter(|l| !l.starts_with("YP_"))
            .map(str::to_string)
            .collect();
        dump.sort();
        dumps.push(dump);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(answers[1], answers[0], "postalias -q -");
    assert_eq!(
        dumps[1], dumps[0],
        "postalias -s (without Postfix's NIS YP_ entries)"
    );
}
