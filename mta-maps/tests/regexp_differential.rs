//! Differential test: `regexp:` and `pcre:` tables against Debian's
//! `postmap -q -`, over a corpus of tables that covers every feature of
//! `regexp_table(5)` and `pcre_table(5)` and keys full of corner cases.
//!
//! For every table, both sides must print the same `key<TAB>value` lines
//! for the same keys, and warn about the same lines of the table. Keys
//! with a newline cannot go through `-q -`; those go one by one through
//! `postmap -q KEY`.
//!
//! Postfix reads an empty `main.cf` with `compatibility_level = 3.6`, so
//! that `smtputf8_enable` is on as in any current installation.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mta_maps::Map;
use mta_maps::pcre::PcreTable;
use mta_maps::regexp::{RegexpTable, Warning};

const POSTMAP: &str = "/usr/sbin/postmap";

mod common;

fn postmap_available() -> bool {
    common::oracle_available(POSTMAP)
}

/// Keys every table is tried with.
const KEYS: &[&str] = &[
    "",
    " ",
    "a",
    "A",
    "ab",
    "abc",
    "ABC",
    "abcd",
    "xxy",
    "aaa",
    "b",
    "user@example.com",
    "User@Example.COM",
    "postmaster@example.com",
    "Postmaster@example.org",
    "owner-list-outgoing@example.com",
    "list-outgoing@example.com",
    "list-outgoing@",
    "a%b@c",
    "a!b@c",
    "joe+tag@example.com",
    "joe+@example.com",
    "friend@my.domain",
    "friend@example.com",
    "Subject: make money fast",
    "subject: MAKE MONEY FAST now",
    "To: friend@public.com",
    "To: friend@publicXcom",
    "mail.example.com",
    "host-1-2-3-4.dyn.example.net",
    "1.2.3.4",
    "10.0.0.1",
    "[192.168.1.1]",
    "a.b.c.d.e",
    "with space",
    "tab\there",
    "trailing ",
    "cr\r",
    "$1",
    "${1}",
    "$$",
    "a/b",
    "a\\b",
    "a.b",
    "axb",
    "a^b",
    "a$b",
    "(a)",
    "a)",
    "[a]",
    "a{2}",
    "aa",
    "a+b",
    "aab",
    "a|b",
    "*a",
    "+a",
    "?a",
    "-",
    "_",
    "`",
    "{",
    "]-a",
    "AZ",
    "az",
    "Az",
    "word boundary",
    "wordboundary",
    "x-y",
    "0123456789",
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3",
    "very.long.host.name.with.many.labels.example.co.uk",
    "é",
    "café@exämple.com",
    "ÉCOLE",
];

/// Keys with a line break, for the `m` flag; asked one at a time.
const MULTILINE_KEYS: &[&str] = &["a\nb", "b\na", "a\n", "abc\nxyz", "Subject: x\nTo: y"];

/// The regexp corpus: file name, table text, and extra keys.
fn regexp_corpus() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        (
            "manual",
            "\
# Disallow sender-specified routing. This is a must if you relay mail
# for other domains.
/[%!@].*[%!@]/       550 Sender-specified routing rejected

# Postmaster is OK, that way they can talk to us about how to fix
# their problem.
/^postmaster@/       OK

# Protect your outgoing majordomo exploders
if !/^owner-/
/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead
endif
/^Subject: make money fast/     REJECT
/^To: friend@public\\.com/       REJECT
~^[[:alnum:]+/]{60,}$~          OK
"
            .to_string(),
            vec![],
        ),
        (
            "flags",
            "\
/^abc$/ insensitive
/^ABC$/i sensitive
/^Ab$/ii toggled-twice
/^a+b$/x basic-plus-is-literal
/^a\\+b$/x basic-repeat
/^\\(a\\)\\1$/x basic-backref $1
/^a\\{2\\}$/x basic-interval
/^a{2}$/x basic-brace-is-literal
/^a\\|^x/x basic-alternation
/^*a/x basic-star-first
/^b$/m multi-line
/a.b/m dot-stops-at-newline
/a.b/ dot-takes-newline
/^b/ single-line
/a[^x]b/ class-takes-newline
/a[^x]b/m class-stops-at-newline
/^a\\nb/ backslash-n-is-n
/x/q unknown-flag
/x/x/ slash-flag
"
            .to_string(),
            vec!["a\\nb", "anb", "a{2}x"],
        ),
        (
            "conditions",
            "\
if /@example\\.com$/
if !/^postmaster@/
/^(abuse|spam)@/ 550 no
/^([a-z]+)@/ user $1
endif
/^postmaster@/ pm
endif
!/@/ local
!!/^x/ double-negation
! ! /^y/ spaced-negation
IF /^z/
/z/ upper-case-keywords
ENDIF
if/^w/
/w/ no-space-after-if
endif
if !/^v/
if /^u/
/u/ nested $$
endif
endif
"
            .to_string(),
            vec!["abuse@example.com", "spam@example.com", "x@y", "y@x", "z@z", "w", "u", "v", "vu"],
        ),
        (
            "mistakes",
            "\
endif
if /a/ extra text
/^a/ in-if-with-extra
endif trailing
if /b(/
/^b/ in-bad-if
endif
if /c/q
/^c/ in-bad-flag-if
endif
if
/^d/ after-empty-if
/x(/ bad-regex
/x/
/^x/ after-empty-result
/(x)/ $2
!/(x)/ $1
/(x)/ $0
/(x)/ ${1
/(x)/ $(1}
/(x)/ $1x
/(x)/ x$
/(x)/ ${ 1}
/(x)/ ${}
/y$/ $$1
1x1 unrecognized
\\x\\ backslash-delimiter
{x} brace-delimiter
!
if /e/
if /f/
/^e/ unclosed
"
            .to_string(),
            vec!["ef", "e", "x", "c", "d", "y", "by"],
        ),
        (
            "substitutions",
            "\
/^([a-z])([a-z])([a-z])([a-z])([a-z])([a-z])([a-z])([a-z])([a-z])([a-z])([a-z])([a-z])/ $1 ${2} $(3) $10 ${12} $$ $1-$2. $$1 $(1))
/^(a)|(b)$/ [$1][$2]
/^(x)?y(z)?$/ [$1][$2]
/^([^@]+)@(.*)$/ user=$1 domain=$2 again=${1}@${2}
"
            .to_string(),
            vec!["abcdefghijklmn", "y", "xy", "yz", "xyz"],
        ),
        (
            "continuations",
            "/^a/ first  \n\t   continued\t  \n# comment inside\n\n   more  \n/^b/\n only-continuation\n/^c/ crlf\r\n/^d/\r\n  /^e/ indented-after-blank\n"
                .to_string(),
            vec!["a", "b", "c", "d", "e"],
        ),
        (
            "indented-start",
            "  /^a/ first line indented\n  /^b/ continues it\n/^c/ kept\n".to_string(),
            vec!["c"],
        ),
        (
            "leftmost-longest",
            "\
/^(a|ab)(c|bcd)(d*)$/ 1=$1 2=$2 3=$3
/^x*(xy)?$/ xy=[$1]
/(a|ab)(b*)x/ $1,$2
/^((q)|r)*$/ $1,$2
/^(s?)*$/ [$1]
/^(t{0,2})(t*)$/ $1,$2
/u$|(u)/ [$1]
/^v|(v)/ [$1]
/(w)(k*)|(w)$/ $1,$2,$3
/(m*)*{2}n/ [$1]
/(m*)*{1}o/ [$1]
/((p*)+)*g/ [$1|$2]
/(h*){1,2}j/ [$1]
/^(.)\\1$/ double $1
/(fo|foo)(o*)bar/ $1+$2
"
            .to_string(),
            vec![
                "abcd", "abx", "abbx", "qr", "rq", "qq", "ss", "ttt", "u", "v", "w", "mmn", "mmo",
                "ppg", "hj", "Hj", "zz", "zZ", "fooobar", "foobar", "fobar",
            ],
        ),
        (
            "brackets",
            "\
/^[`-~]+$/ backtick-to-tilde
/^[a-Z]+$/ a-to-Z
/^[[:lower:]]+$/ lower-is-alpha
/^[[:upper:]]$/i upper-sensitive
/^[]a-]+$/ bracket-first
/^[\\]+$/ backslash-in-class
/^[[.-.][=q=]]+$/ collating
/^[^[:alnum:]]+$/ not-alnum
/^[[:digit:].]+$/ digits-and-dots
/^[[:space:][:punct:]]+$/ space-punct
/[z-a]/ bad-range
/[_-c]/ bad-range-case
/[[:foo:]]/ bad-class
/[[.ab.]]/ bad-collating
/[a/ unterminated
/^\\w\\W\\s\\S$/ gnu-classes
"
            .to_string(),
            vec!["{|}", "qQ", "B", "Z", "-q", "\\\\", "a]-", "!?", "1.2", " ;", "a- b"],
        ),
        (
            "delimiters",
            "|a/b| pipe\n#c# comment\n,x\\,y, escaped-comma\n\"q\" quote\n.a\\.b. dot-delimited\n!1a1 letter-after-bang\n%w% percent\n~v~ tilde\n"
                .to_string(),
            vec!["a/b", "x,y", "q", "a.b", "axb", "w", "v", "1"],
        ),
        (
            "anchors",
            "\
/\\<word\\>/ whole-word
/\\bbound/ boundary
/\\Bary\\b/ not-boundary
/\\`a\\'/ buffer
/^a^b$/ caret-inside
/^a^b$/x caret-literal-basic
/a$b/x dollar-literal-basic
/^\\(^c\\)$/x caret-after-group
/(^|\\.)example\\.com$/ domain
/^[0-9]+(\\.[0-9]+){3}$/ ipv4
/^\\[.*\\]$/ literal
"
            .to_string(),
            vec!["word", "a word b", "words", "boundary", "unboundary", "c", "example.com", "a.example.com", "aexample.com"],
        ),
        (
            "syntax-errors",
            "\
/a{/ brace
/a{1x}/ badbr
/a{2,1}/ badbr2
/a{32768}/ too-big
/*a/ star-first
/a|*b/ star-after-bar
/^*/ star-after-anchor
/\\1/ no-group
/(a)|\\1/ group-in-other-branch
/a\\)/x unmatched-basic
/a*\\{2\\}/x dup-after-dup
/a**/ ok-star-star
/a+*/ ok-plus-star
/()/ ok-empty-group
/a|/ ok-empty-branch
/x{2}{3}/ ok-interval-twice
/a{,}/ ok-open-interval
/a)/ ok-paren-literal
"
            .to_string(),
            vec!["a)", "xxxxxx"],
        ),
    ]
}

/// The pcre corpus.
fn pcre_corpus() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        (
            "manual",
            "\
# Protect your outgoing majordomo exploders
/^(?!owner-)(.*)-outgoing@(.*)/ 550 Use ${1}@${2} instead

# Bounce friend@whatever, except when whatever is our domain (you would
# be better just bouncing all friend@ mail - this is just an example).
/^(friend@(?!my\\.domain$).*)$/  550 Stick this in your pipe $1

# A multi-line entry. The text is sent as one line.
#
/^noddy@my\\.domain$/
 550 This user is a funny one. You really don't want to send mail to
 them as it only makes their head spin.
/^Subject: make money fast/     REJECT
~^[[:alnum:]+/]{60,}$~          OK
"
            .to_string(),
            vec!["noddy@my.domain"],
        ),
        (
            "features",
            "\
/(?<=@)ex(?=ample)/ look-around
/^(.+?)(\\+.*)?@/ lazy $1|$2
/^(?<user>\\w+)@(?P<host>\\w+)\\./ named $2 $1
/^(\\w)\\1/ backref $1
/(?i:A)b(?-i)C/ inline-options
/^\\d+(?:\\.\\d+){3}$/ ipv4
/a++b/ possessive
/(?|(x)|(y))z/ branch-reset $1
/\\bfriend\\b/ word
"
            .to_string(),
            vec!["joe@example", "aabC", "aabc", "xz", "yz", "aab"],
        ),
        (
            "flags",
            "\
/^abc$/ ci
/^ABC$/i cs
/^a.b$/s no-dotall
/^a.b$/ dotall
/^b$/m multi
/^a b $/x extended
/b/A anchored
/^a$/E end-only
/^a$/ dollar
/(a+)/U ungreedy [$1]
/(c+?)/U ungreedy-lazy [$1]
/x/X obsolete
/x/q unknown
/(*LIMIT_MATCH=100000)(d+)/U verb-first [$1]
"
            .to_string(),
            vec!["ba", "ab", "caaa", "cc", "ddd", "x"],
        ),
        (
            "conditions-and-mistakes",
            "\
if /@example\\.com$/
!/^postmaster@/ not-pm
endif
if /(/
/^q/ in-bad-if
endif
/a(/ bad
/(a)/ $2
!/(a)/ $1
/a/ $0
/([a-z])$/
 last $1
/[[:foo:]]/ bad-class
/a{2,1}/ bad-quantifier
"
            .to_string(),
            vec!["q"],
        ),
    ]
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mta-regexp-diff-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `postmap -q - TYPE:FILE` over `keys`: its output and the lines
/// it warned about while opening the table.
fn postmap_batch(config: &Path, map: &str, keys: &[&str]) -> (String, BTreeSet<usize>) {
    let mut child = Command::new(POSTMAP)
        .args(["-c", config.to_str().unwrap(), "-q", "-", map])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run postmap");
    let mut input = Vec::new();
    for key in keys {
        input.extend_from_slice(key.as_bytes());
        input.push(b'\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("fatal"),
        "postmap failed on {map}: {stderr}"
    );
    (
        String::from_utf8(out.stdout).expect("utf-8 output"),
        warned_lines(&stderr),
    )
}

/// Runs `postmap -q KEY TYPE:FILE`: the value, if found.
fn postmap_one(config: &Path, map: &str, key: &str) -> Option<String> {
    let out = Command::new(POSTMAP)
        .args(["-c", config.to_str().unwrap(), "-q", key, map])
        .output()
        .expect("run postmap");
    out.status.success().then(|| {
        let text = String::from_utf8(out.stdout).unwrap();
        text.strip_suffix('\n').unwrap_or(&text).to_string()
    })
}

/// The line numbers in Postfix's "map FILE, line N: ..." warnings.
fn warned_lines(stderr: &str) -> BTreeSet<usize> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(", line ")? + 7..];
            rest[..rest.find(':')?].parse().ok()
        })
        .collect()
}

fn our_output(table: &dyn Map, keys: &[&str]) -> String {
    let mut out = String::new();
    for key in keys {
        if let Some(value) = table.lookup(key).now(table.name()).expect("lookup") {
            out.push_str(&format!("{key}\t{value}\n"));
        }
    }
    out
}

fn our_lines(warnings: &[Warning]) -> BTreeSet<usize> {
    warnings.iter().filter_map(|w| w.line).collect()
}

type Opener = fn(&Path, &str) -> (Box<dyn Map>, Vec<Warning>);

fn compare(kind: &str, corpus: Vec<(&'static str, String, Vec<&'static str>)>, open: Opener) {
    let dir = scratch_dir(kind);
    // An empty main.cf would mean compatibility level 0 and
    // smtputf8_enable = no; current installations have 3.6 and yes.
    std::fs::write(dir.join("main.cf"), "compatibility_level = 3.6\n").unwrap();
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, text, extra) in corpus {
        let path = dir.join(name);
        std::fs::write(&path, &text).unwrap();
        let map = format!("{kind}:{}", path.display());
        let keys: Vec<&str> = KEYS.iter().copied().chain(extra).collect();
        let (theirs, their_lines) = postmap_batch(&dir, &map, &keys);
        let (table, warnings) = open(&path, &map);
        let ours = our_output(table.as_ref(), &keys);
        compared += keys.len();
        if theirs != ours {
            failures.push(format!(
                "{map}: values differ\n--- postmap\n{theirs}--- ours\n{ours}"
            ));
        }
        // Postfix's warning about an indented first line has no line number.
        let ours_warned = our_lines(&warnings);
        let ours_warned: BTreeSet<usize> = ours_warned
            .into_iter()
            .filter(|&n| {
                !warnings.iter().any(|w| {
                    w.line == Some(n) && w.message.starts_with("logical line must not start")
                })
            })
            .collect();
        if their_lines != ours_warned {
            failures.push(format!(
                "{map}: warned lines differ: postmap {their_lines:?}, ours {ours_warned:?}\nours: {warnings:#?}"
            ));
        }
        for key in MULTILINE_KEYS {
            let theirs = postmap_one(&dir, &map, key);
            let ours = table
                .lookup(key)
                .now(&map)
                .expect("lookup")
                .map(|v| v.into_owned());
            compared += 1;
            if theirs != ours {
                failures.push(format!(
                    "{map}: key {key:?}: postmap {theirs:?}, ours {ours:?}"
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("{kind}: {compared} lookups identical to postmap");
}

#[test]
fn regexp_tables_match_postmap() {
    if !postmap_available() {
        return;
    }
    compare("regexp", regexp_corpus(), |path, map| {
        let (t, w) = RegexpTable::open(path, map).expect("open");
        (Box::new(t), w)
    });
}

/// Whether Postfix has its `pcre` table type (the `postfix-pcre`
/// package); says why not, and fails in CI.
fn pcre_available() -> bool {
    // One directory per caller: tests run in parallel.
    let dir = scratch_dir(&format!("types-{:?}", std::thread::current().id()));
    std::fs::write(dir.join("main.cf"), "").unwrap();
    let out = Command::new("/usr/sbin/postconf")
        .args(["-c", dir.to_str().unwrap(), "-m"])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    if out.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == "pcre")
    }) {
        return true;
    }
    let why = "skipped: Postfix lacks pcre tables (run tools/install-peers.sh for postfix-pcre)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
    false
}

#[test]
fn pcre_tables_match_postmap() {
    if !postmap_available() || !pcre_available() {
        return;
    }
    compare("pcre", pcre_corpus(), |path, map| {
        let (t, w) = PcreTable::open(path, map).expect("open");
        (Box::new(t), w)
    });
}

/// A substitution that splits a UTF-8 character: Postfix (with
/// `smtputf8_enable = yes`) fails the query, and so do we.
#[test]
fn split_characters_fail_on_both_sides() {
    if !postmap_available() {
        return;
    }
    let dir = scratch_dir("utf8");
    std::fs::write(dir.join("main.cf"), "compatibility_level = 3.6\n").unwrap();
    let kinds: &[&str] = if pcre_available() {
        &["regexp", "pcre"]
    } else {
        &["regexp"]
    };
    for &kind in kinds {
        let path = dir.join(kind);
        std::fs::write(&path, "/^(.)/ first $1\n").unwrap();
        let map = format!("{kind}:{}", path.display());
        let out = Command::new(POSTMAP)
            .args(["-c", dir.to_str().unwrap(), "-q", "\u{e9}t\u{e9}", &map])
            .output()
            .expect("run postmap");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("non-UTF-8 value"));
        let (table, _): (Box<dyn Map>, _) = if kind == "regexp" {
            let (t, w) = RegexpTable::open(&path, &map).unwrap();
            (Box::new(t), w)
        } else {
            let (t, w) = PcreTable::open(&path, &map).unwrap();
            (Box::new(t), w)
        };
        let err = table.lookup("\u{e9}t\u{e9}").now(&map).unwrap_err();
        assert!(err.to_string().contains("non-UTF-8 value"), "{err}");
        assert_eq!(postmap_one(&dir, &map, "ete").as_deref(), Some("first e"));
        assert_eq!(
            table.lookup("ete").now(&map).unwrap().as_deref(),
            Some("first e")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
