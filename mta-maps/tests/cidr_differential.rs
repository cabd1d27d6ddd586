//! Differential test: Debian's `postmap -q - cidr:FILE` and
//! [`CidrTable`] answer the same keys over the same tables, and warn about
//! the same lines in the same words.
//!
//! Needs `/usr/sbin/postmap` (`tools/install-peers.sh`). Without it the
//! test says so on standard error and passes, except under CI (`CI` set),
//! where a missing oracle is a failure.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use mta_maps::cidr::CidrTable;

const POSTMAP: &str = "/usr/sbin/postmap";

mod common;
use common::Scratch;

fn oracle_available() -> bool {
    common::oracle_available(POSTMAP)
}

/// What a run prints: the `key<TAB>value` lines and the warnings.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    found: String,
    warnings: Vec<String>,
}

fn postfix_answers(scratch: &Scratch, table: &Path, keys: &[String]) -> Answers {
    let mut child = Command::new(POSTMAP)
        .arg("-q")
        .arg("-")
        .arg(format!("cidr:{}", table.display()))
        .env("MAIL_CONFIG", &scratch.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = keys.iter().map(|k| format!("{k}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    Answers {
        found: String::from_utf8_lossy(&output.stdout).into_owned(),
        warnings: stderr
            .lines()
            .filter_map(|l| l.strip_prefix("postmap: warning: "))
            .map(str::to_string)
            .collect(),
    }
}

fn our_answers(table: &Path, keys: &[String]) -> Answers {
    let t = CidrTable::open(table).unwrap();
    let mut found = String::new();
    for key in keys {
        if let Some(value) = t.find(key) {
            writeln!(found, "{key}\t{value}").unwrap();
        }
    }
    let file = table.display().to_string();
    Answers {
        found,
        warnings: t
            .warnings()
            .iter()
            .map(|w| {
                // Postfix's line reader words this one without "cidr map"
                // and without a line number.
                if w.message
                    .starts_with("logical line must not start with whitespace")
                {
                    format!("{file}: {}", w.message)
                } else {
                    w.to_string()
                }
            })
            .collect(),
    }
}

fn compare(scratch: &Scratch, name: &str, text: &str, keys: &[String]) {
    let path = scratch.dir.join(format!("{name}.cidr"));
    std::fs::write(&path, text).unwrap();
    let theirs = postfix_answers(scratch, &path, keys);
    let ours = our_answers(&path, keys);
    assert_eq!(
        ours.warnings, theirs.warnings,
        "warnings differ for table {name}:\n{text}"
    );
    if ours.found != theirs.found {
        let theirs_lines: Vec<&str> = theirs.found.lines().collect();
        let ours_lines: Vec<&str> = ours.found.lines().collect();
        let only_theirs: Vec<&&str> = theirs_lines
            .iter()
            .filter(|l| !ours_lines.contains(l))
            .take(10)
            .collect();
        let only_ours: Vec<&&str> = ours_lines
            .iter()
            .filter(|l| !theirs_lines.contains(l))
            .take(10)
            .collect();
        panic!(
            "answers differ for table {name}:\n{text}\nonly postmap: {only_theirs:?}\nonly ours: {only_ours:?}\npostmap: {:?}\nours: {:?}",
            theirs.found.chars().take(3000).collect::<String>(),
            ours.found.chars().take(3000).collect::<String>()
        );
    }
}

/// Keys that probe address syntax, whatever the table.
fn syntax_keys() -> Vec<String> {
    [
        "0.0.0.0",
        "255.255.255.255",
        "1.2.3.4",
        "01.2.3.4",
        "1.2.3.04",
        "010.0.0.1",
        "1.2.3.256",
        "1.2.3",
        "1.2.3.4.",
        ".1.2.3.4",
        "1.2.3.4.5",
        "1..3.4",
        "0x1.2.3.4",
        "1.2.3.4/32",
        "[1.2.3.4]",
        "[::1]",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1.2.3.4\t",
        "1.2.3.4:25",
        "1.2.3.-4",
        "+1.2.3.4",
        "1.2.3.4%eth0",
        "١.٢.٣.٤",
        "::",
        "::1",
        ":::",
        ":",
        "::1:",
        ":1::",
        "1::",
        "1::2::3",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1::3:4:5:6:7:8",
        "::1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8::",
        "12345::",
        "01234::",
        "0000:0000::",
        "::ffff:1.2.3.4",
        "::FFFF:1.2.3.4",
        "::ffff:01.2.3.4",
        "::ffff:1.2.3",
        "::1.2.3.4",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "::1.2.3.4:5",
        "::1a.2.3.4",
        "::ffff:1.2.3.4.5",
        "2001:db8::1",
        "2001:DB8::1",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        "2001:db8::1%eth0",
        "fe80::1%1",
        "IPv6:::1",
        "g::1",
        "2001:db8:::1",
        "2001:db8::1/128",
        "foo",
        "-",
        "localhost",
        "1.2.3.4\r",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A small deterministic random number generator (xorshift), so that
/// the generated corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random network: a v4 or v6 prefix drawn from a few neighbourhoods,
/// so that rules nest and overlap; `host` sets host bits sometimes.
fn random_network(rng: &mut Rng) -> (bool, u128, u8) {
    if rng.below(3) > 0 {
        let bases = [0x0a00_0000u32, 0x0a01_0000, 0xc000_0200, 0, 0xffff_ff00];
        let base = bases[rng.below(bases.len() as u64) as usize];
        let len = [0u8, 8, 16, 20, 24, 28, 31, 32][rng.below(8) as usize];
        let addr = base ^ (rng.next() as u32 & 0x00ff_ffff & (rng.next() as u32 | 0x0000_ffff));
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        (false, u128::from(addr & mask), len)
    } else {
        let bases = [
            0x2001_0db8u128 << 96,
            0xffffu128 << 32,
            0,
            0xfe80u128 << 112,
        ];
        let base = bases[rng.below(bases.len() as u64) as usize];
        let len = [0u8, 16, 32, 48, 64, 96, 112, 120, 127, 128][rng.below(10) as usize];
        let noise = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> rng.below(128);
        let addr = base ^ (noise & ((1u128 << 96) - 1));
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        (true, addr & mask, len)
    }
}

fn network_text(v6: bool, addr: u128, len: u8) -> String {
    if v6 {
        format!("{}/{len}", Ipv6Addr::from(addr))
    } else {
        format!("{}/{len}", Ipv4Addr::from(addr as u32))
    }
}

/// Keys around a network's edges: its first and last address and their
/// neighbours.
fn edge_keys(v6: bool, addr: u128, len: u8, keys: &mut Vec<String>) {
    let bits = if v6 { 128 } else { 32 };
    let max = if v6 { u128::MAX } else { u128::from(u32::MAX) };
    let host = if len == 0 {
        max
    } else {
        (1u128 << (bits - u32::from(len))) - 1
    };
    let last = addr | host;
    for a in [
        addr.wrapping_sub(1),
        addr,
        addr + 1,
        last.wrapping_sub(1),
        last,
        last.wrapping_add(1),
    ] {
        if a > max {
            continue;
        }
        keys.push(if v6 {
            Ipv6Addr::from(a).to_string()
        } else {
            Ipv4Addr::from(a as u32).to_string()
        });
    }
}

/// A random table with `rules` lines: plain and negated rules, nested
/// `if`/`endif` blocks, and a few bad lines; with keys at every edge.
fn random_table(rng: &mut Rng, rules: usize) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut keys = Vec::new();
    let mut depth = 0;
    for i in 0..rules {
        let (v6, addr, len) = random_network(rng);
        edge_keys(v6, addr, len, &mut keys);
        let net = network_text(v6, addr, len);
        let bang = if rng.below(5) == 0 { "!" } else { "" };
        match rng.below(20) {
            0 | 1 => {
                writeln!(text, "if {bang}{net}").unwrap();
                depth += 1;
            }
            2 | 3 if depth > 0 => {
                writeln!(text, "endif").unwrap();
                depth -= 1;
            }
            4 => writeln!(text, "{bang}{net}/7 bad-{i}").unwrap(),
            5 => writeln!(text, "# comment {i}\n{bang}{net}\n  continued-{i}").unwrap(),
            _ => writeln!(text, "{bang}{net} rule-{i}").unwrap(),
        }
    }
    for _ in 0..depth {
        if rng.below(2) == 0 {
            writeln!(text, "endif").unwrap();
        }
    }
    for _ in 0..50 {
        keys.push(Ipv4Addr::from(rng.next() as u32).to_string());
        keys.push(
            Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())).to_string(),
        );
    }
    (text, keys)
}

/// Random lines made of the pieces rules are made of, to exercise the
/// rule parser and its warnings.
fn random_syntax_table(rng: &mut Rng, lines: usize) -> String {
    const PIECES: &[&str] = &[
        "1.2.3.4",
        "1.2.3.0",
        "10.0.0.0",
        "0.0.0.0",
        "::1",
        "2001:db8::",
        "::ffff:1.2.3.4",
        "/",
        "/24",
        "/8",
        "/33",
        "/0",
        "/128",
        "/280",
        "[",
        "]",
        "!",
        " ",
        "  ",
        "\t",
        "if",
        "IF",
        "endif",
        "x",
        "#",
        "01",
        ".",
        ":",
        "-",
        "\u{e9}",
        "\n ",
        "\n\t",
        "\n\n ",
        "\n#c\n ",
        "\u{b}",
        "\u{c}",
        "\r",
        " ok",
        " ok",
        " ok",
        "\n",
    ];
    let mut text = String::new();
    for _ in 0..lines {
        if rng.below(12) == 0 {
            text.push(' ');
        }
        for _ in 0..=rng.below(6) {
            text.push_str(PIECES[rng.below(PIECES.len() as u64) as usize]);
        }
        text.push('\n');
    }
    text
}

/// Hand-written tables: the manual's example and every rule form and
/// problem found while studying `postmap`.
const TABLES: &[(&str, &str)] = &[
    (
        "manual",
        "# Rule order matters. Put more specific allowlist entries\n\
         # before more general denylist entries.\n\
         192.168.1.1             OK\n\
         192.168.0.0/16          REJECT\n\
         2001:db8::1             OK\n\
         2001:db8::/32           REJECT\n",
    ),
    (
        "forms",
        "[172.16.0.0/12] bracket\n\
         [172.17.0.0]/16 bracket2\n continued\n\
         172.18.0.0/16 multi\n  line value\n\n# comment inside\n  and more\n\
         ::ffff:1.2.3.4 mapped\n\
         ::ffff:0:0/96 mappedall\n\
         1.2.8.0/024 leading-zero-mask\n\
         1.2.9.0/280 wrapped-mask\n\
         ::/384 wrapped-v6-mask\n\
         1.2.3.5 v # not a comment\n\
         1.2.3.6\tx\x0b\x0c \r\n\
         0.0.0.0/0 all4\n\
         ::/0 all6\n",
    ),
    (
        "bad-lines",
        " 9.9.9.9 leading-space\n  cont\n\
         10.0.0.1/8 hostbits\n\
         10.0.0.0/33 badprefix\n\
         10.0.0.0 \n\
         10.0.0.0/ emptyprefix\n\
         10.0.0.0/x badp\n\
         010.0.0.1 octal\n\
         1.2.3 short\n\
         [1.2.3.0/24 a\n\
         1.2.4.0/24] b\n\
         [[1.2.5.0]] c\n\
         [1.2.7.0/24]x e\n\
         1.2.9.0/+24 g\n\
         1.2.10.0/ 24 h\n\
         [1.2.12.0/24 ] j\n\
         [ 1.2.13.0 ] k\n\
         1.2.14.0/24extra l\n\
         [1.2.3.0/24]/8 m\n\
         1.2.3.4/0 n\n\
         [1.2.3]/24 o\n\
         1.2.3.0/99999999999999999999999 p\n\
         1.2.3.0/-1 q\n\
         1.2.3.0/4294967320 r\n\
         1.2.3.0/6442450968 s\n\
         1.2.3.0/18446744073709551384 t\n\
         1.2.3.0/2147483648 u\n\
         2001:db8::1/32 v\n\
         2001:db8::/129 w\n\
         ::1.2.3.5/127 x\n\
         ::ffff:0.0.0.3/127 y\n\
         0:0:0:0:1:ffff:1.2.3.5/127 z\n\
         0:0:1:0:0:0:0:1/127 aa\n\
         fe80::1%eth0 bb\n\
         1.2.3.4]] cc\n\
         [1.2.3.4/32/] dd\n\
         []/8 ee\n\
         [] ff\n\
         1.2.3.0/2/4 gg\n\
         1.2.3/x hh\n\
         1.2.3/33 ii\n\
         caf\u{e9} jj\n\
         !\n\
         ! \n\
         !1.2.3.4\n\
         ! y\n\
         /8 kk\n",
    ),
    (
        "leading-space-long",
        " 1.2.3.4 a line long enough to be cut short in the warning   \n  cont  \n1.2.3.4 ok\n",
    ),
    ("leading-space-trailing", "\t1.2.3.4 x \t\n1.2.3.5 y\n"),
    (
        "negation",
        "!1.2.3.0/24 not-v4\n\
         !2001:db8::/32 not-v6\n\
         !! 1.2.3.4 double\n\
         ! ! 1.2.3.5 double-spaced\n\
         1.2.3.0/24 in\n",
    ),
    (
        "if-blocks",
        "if 10.0.0.0/8\n\
         if !10.1.0.0/16\n\
         10.0.0.0/8 ten-not-ten-one\n\
         endif\n\
         10.1.2.3 ten-one-two-three\n\
         endif\n\
         If!1.0.0.0/8\n\
         if ::/0\n\
         ::/0 never\n\
         endif\n\
         0.0.0.0/0 not-one\n\
         eNdIf\n\
         if !2001:db8::/32\n\
         ::/0 v6-outside\n\
         endif\n\
         ::/0 v6-inside\n\
         1.0.0.0/8 one\n",
    ),
    (
        "if-problems",
        "endif\n\
         1.2.3.4 a\n\
         endif x\n\
         if\n\
         if 1.2.3.0/24 extra\n\
         1.2.3.5 b\n\
         endif\n\
         if 1.2.3.0/33\n\
         1.2.3.6 inbad\n\
         endif\n\
         if !\n\
         1.2.3.7 x\n\
         endif\n\
         if-x\n\
         if_x\n\
         if.1\n\
         if/8\n\
         if#\n\
         endif.\n\
         endif_\n\
         endif#\n\
         endif!\n\
         endif1 z\n\
         ifx y\n\
         If\u{e9} x\n\
         if 1.2.3.4 extra\n\
         endif\n\
         if 1.0.0.0/8\n\
         if 1.2.0.0/16\n\
         if[1.2.3.0/24]\n\
         0.0.0.0/0 in\n",
    ),
];

#[test]
fn postmap_and_cidr_table_agree() {
    if !oracle_available() {
        return;
    }
    let scratch = Scratch::new("cidr-diff");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (name, text) in TABLES {
        let mut keys = syntax_keys();
        for a in 0..=12u32 {
            for b in [0u32, 1, 3, 4, 5, 6, 7, 255] {
                keys.push(format!("1.2.{a}.{b}"));
            }
        }
        for k in [
            "172.16.0.1",
            "172.17.1.1",
            "172.18.0.1",
            "172.31.255.255",
            "172.32.0.0",
            "10.0.0.1",
            "10.1.2.3",
            "10.1.2.4",
            "10.2.0.1",
            "10.255.255.255",
            "1.0.0.1",
            "2.0.0.1",
            "192.168.1.1",
            "192.168.9.9",
            "2001:db8::1",
            "2001:db8::2",
            "2001:db9::",
            "::ffff:5.5.5.5",
            "::ffff:0.0.0.2",
        ] {
            keys.push(k.to_string());
        }
        compare(&scratch, name, text, &keys);
    }
    for i in 0..40 {
        let (text, keys) = random_table(&mut rng, 10 + i * 3);
        compare(&scratch, &format!("random-{i}"), &text, &keys);
    }
    let mut keys = syntax_keys();
    keys.extend(
        [
            "10.0.0.1",
            "1.2.3.5",
            "0.0.0.1",
            "::2",
            "2001:db8::1",
            "::ffff:1.2.3.5",
        ]
        .map(String::from),
    );
    for i in 0..40 {
        let text = random_syntax_table(&mut rng, 80);
        compare(&scratch, &format!("syntax-{i}"), &text, &keys);
    }
    let (text, mut keys) = random_table(&mut rng, 3000);
    keys.truncate(6000);
    compare(&scratch, "random-large", &text, &keys);
}
