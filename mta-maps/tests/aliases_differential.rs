//! Differential test: Debian's `postalias` and [`mta_maps::aliases`]
//! read the same alias files into the same names and stored values, and
//! skip the same lines.
//!
//! Each file is built with `postalias hash:FILE` in a scratch directory;
//! the whole table (`postalias -s`) and a query for every name (`postalias
//! -q -`) are compared with what [`parse`] gives (names, and values as
//! `render_value` writes them), keys folded as `postalias` folds them.
//!
//! Needs `/usr/sbin/postalias` (`tools/install-peers.sh`). Without it the
//! test says so on standard error and passes, except under CI (`CI` set),
//! where a missing oracle is a failure.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use mta_maps::aliases::{AliasFile, parse};
use mta_maps::key::Folding;

const POSTALIAS: &str = "/usr/sbin/postalias";

mod common;
use common::Scratch;

fn oracle_available() -> bool {
    common::oracle_available(POSTALIAS)
}

// Scratch directories hold an empty `main.cf`: with no
// `compatibility_level`, Postfix folds keys as ASCII; the names below are
// ASCII or already lower case, so that either folding agrees.
trait Postalias {
    fn postalias(&self, args: &[&str], input: &str) -> (String, String);
}

impl Postalias for Scratch {
    fn postalias(&self, args: &[&str], input: &str) -> (String, String) {
        let mut child = Command::new(POSTALIAS)
            .args(args)
            .current_dir(&self.dir)
            .env("MAIL_CONFIG", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// The entries Postfix adds to every alias table on its own.
fn is_postfix_extra(key: &str) -> bool {
    key == "@" || key == "YP_LAST_MODIFIED" || key == "YP_MASTER_NAME"
}

fn compare(scratch: &Scratch, name: &str, text: &str) {
    std::fs::write(scratch.dir.join(name), text).unwrap();
    let (_, build_errors) = scratch.postalias(&[&format!("hash:{name}")], "");
    let (dump, _) = scratch.postalias(&["-s", &format!("hash:{name}")], "");

    let ours: AliasFile = parse(text, name);
    let (unique, duplicates) = ours.unique_entries(Folding::Lower);

    // Skipped lines, in the parser's words (`FILE, line N: ...`); the
    // leading-white-space one is worded without a line number by Postfix.
    let their_warnings: Vec<String> = build_errors
        .lines()
        .filter_map(|l| l.strip_prefix("postalias: warning: "))
        .filter(|l| l.starts_with(&format!("{name}, line ")) || l.starts_with(&format!("{name}: ")))
        .map(str::to_string)
        .collect();
    let our_warnings: Vec<String> = ours
        .warnings
        .iter()
        .map(|w| {
            if w.message
                .starts_with("logical line must not start with whitespace")
            {
                format!("{name}: {}", w.message)
            } else {
                w.to_string()
            }
        })
        .collect();
    assert_eq!(
        our_warnings, their_warnings,
        "warnings differ for {name}:\n{text}"
    );

    // Duplicates: Postfix names the database, not the line.
    let their_duplicates: Vec<String> = build_errors
        .lines()
        .filter_map(|l| {
            l.strip_prefix(&format!("postalias: warning: {name}.db: duplicate entry: "))
        })
        .map(str::to_string)
        .collect();
    let mut our_duplicates: Vec<String> = duplicates
        .iter()
        .filter_map(|w| w.message.strip_prefix("duplicate entry: "))
        .map(str::to_string)
        .collect();
    // Postfix adds its own `@` entry after the file's; a file that names
    // `@` (as `\@`) makes that one a duplicate.
    if unique.iter().any(|e| e.key(Folding::Lower) == "@") {
        our_duplicates.push("\"@\"".to_string());
    }
    assert_eq!(
        our_duplicates, their_duplicates,
        "duplicates differ for {name}:\n{text}"
    );

    // The whole table. (Split at line feeds only: values may end in a
    // carriage return, which `str::lines` would drop.)
    let theirs: BTreeMap<String, String> = dump
        .split('\n')
        .filter_map(|l| l.split_once(":\t"))
        .filter(|(k, _)| !is_postfix_extra(k) || unique.iter().any(|e| e.key(Folding::Lower) == *k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mine: BTreeMap<String, String> = unique
        .iter()
        .map(|e| (e.key(Folding::Lower).into_owned(), e.value.clone()))
        .collect();
    for (key, value) in &theirs {
        assert_eq!(
            mine.get(key),
            Some(value),
            "postalias has {key:?} = {value:?}; ours differs, in {name}:\n{text}"
        );
    }
    for (key, value) in &mine {
        assert!(
            theirs.contains_key(key),
            "we have {key:?} = {value:?}; postalias has no such key, in {name}:\n{text}"
        );
    }

    // A query for every name, as the brief of `postalias -q -` prints it.
    let keys: Vec<&String> = mine.keys().filter(|k| !k.is_empty()).collect();
    let input: String = keys.iter().map(|k| format!("{k}\n")).collect();
    let (answers, _) = scratch.postalias(&["-q", "-", &format!("hash:{name}")], &input);
    let expected: String = keys
        .iter()
        .map(|k| format!("{k}:\t{}\n", mine[*k]))
        .collect();
    if answers != expected {
        let theirs: Vec<&str> = answers.split('\n').collect();
        let ours: Vec<&str> = expected.split('\n').collect();
        let only_theirs: Vec<&&str> = theirs.iter().filter(|l| !ours.contains(l)).collect();
        let only_ours: Vec<&&str> = ours.iter().filter(|l| !theirs.contains(l)).collect();
        panic!(
            "query answers differ for {name}:\n{text}\nonly postalias: {only_theirs:?}\nonly ours: {only_ours:?}"
        );
    }
}

const FILES: &[(&str, &str)] = &[
    (
        "manual",
        "# Basic system aliases -- these MUST be present.\n\
         MAILER-DAEMON:\tpostmaster\n\
         postmaster:\troot\n\
         \n\
         # General redirections for pseudo accounts.\n\
         bin:\t\troot\n\
         daemon:\t\troot\n\
         devnull:\t/dev/null\n\
         blackhole:\t\"|exit 0\"\n\
         unknown:\t\"|exit 67\"\n\
         owner-list:\tadmin\n\
         list:\t:include:/etc/mail/list.members\n\
         root:\tjoe, jane@example.com\n",
    ),
    (
        "forms",
        "# comment\n\
         Root:   Joe ,  Jane@Example.COM,\"|/usr/bin/prog arg\",/var/mail/file, :include:/etc/list\n\
         multi: a,\n  b\n\t, c\n\
         \"quoted name\": x\n\
         \"with:colon\": y\n\
         \"@at\": z\n\
         dup: first\n\
         DUP: second\n\
         nocolon value\n leading: ws\n\
         empty:\n\
         emptyws:    \n\
         colonspace : v\n\
         a:b:c\n\
         \"unterminated: q\n\
         pipe: |cmd  arg\n\
         quoted: \"a b\"@example.com, \"x, y\"\n\
         trailing: t,\n\
         commas: ,a,,b,\n",
    ),
    (
        "tokens",
        "x1: a b, c\n\
         x2: Joe Smith <joe@example.com>\n\
         x3: joe (Joe Smith)\n\
         x4: \"joe\"\n\
         x5: a\\,b, c\n\
         x6: <joe@example.com>\n\
         x7: a ,b\n\
         x8: a;b\n\
         x9: a:b\n\
         x10: @x\n\
         x11: \"|cmd, with comma\"\n\
         x12: (comment, with comma) a\n\
         x13: a,    # not a comment\n\
         x15: \"unterminated\n\
         x16: <a@b>, <c@d\n\
         x17: a , , b\n\
         x18: a(b)c, d\n\
         x19:a\n\
         x20:\t \"a\"  \"b\"\n\
         x21: \"a\\\"b\"\n\
         x22: [1.2.3.4]\n\
         x23: a@[1.2.3.4]\n\
         x24: a.b..c\n\
         x25: a  .  b\n\
         x26: \"a b\" c, d\n\
         x27: \\a\n\
         x28: a@b@c\n\
         x29: a b c , d   e\n\
         e12: (a (nested) c)\n\
         e13: (unbalanced\n\
         e14: a)b\n\
         e16: [ 1.2.3.4 ]\n\
         e17: [a\\]b]\n\
         e18: [unterminated\n\
         e19: (a\\)b)\n\
         e20: a\\\n\
         e21: \"a\\\n\
         e22: a\tb\n\
         e23: \"tab\tin\"\n\
         e24: [a[b]\n\
         e25: \"a\"b\"c\"\n\
         e26: \u{e9},\u{fc}@x\n\
         e27: a\\\u{e9}\n\
         e30: \"\",x\n\
         e31: ()\n\
         e32: []\n\
         e37: a\\ \n\
         e38: a\"b\n\
         e39: ((()))\n\
         e41: (a\"b)c\n\
         e42: [\"a]b\"]\n\
         e44: (a\n b)\n\
         w1: \"a\t\tb\"\n\
         w3: (a  b\tc)\n\
         w4: a\\\tb\n\
         w5: [a  b\tc]\n\
         w6: a\u{1}b\n\
         w7: a\u{7f}b\n\
         w9: a\rb\n\
         w12: a\\\"b\"c\n\
         p1: a\\%b\n\
         p2: a % b ! c | d / e = f ? g & h\n\
         p3: a\\!b, a\\|b, a\\/b, a\\=b\n\
         p4: a # b $ c ' d * e + f - g ^ h _ i ` j { k } l ~ m\n\
         b1: a \\\n\
         b2: () \\\n\
         b6: \\ \\\n\
         b7: (a\\\n\
         b8: [a\\\n",
    ),
    (
        "names",
        "a . b: v1\n\
         \"a\\\"b\": v2\n\
         x<y: v3\n\
         [a:b]: v4\n\
         x,y: v5\n\
         (c): v6\n\
         a@b: v7\n\
         \"a\"\"b\": v8\n\
         a\\ b: v9\n\
         \"x\\\\y\": v10\n\
         n1 : \"\": v11\n\
         n2:\n\
         n3:,\n\
         n4: \"\"\n\
         n5: ()\n\
         n6:    ,\n\
         \\: v12\n\
         a#b: v7\n\
         tab\t:\tv8\n\
         a(c)b: v10\n\
         <ang>: v11\n \
         a.b. : v12\n\
         a  b: v13\n\
         \"x,y\": v1\n\
         x;y: v2\n\
         x(,)y: v3\n\
         \"a b\"@c: v4\n\
         a,: v5\n\
         ,a: v6\n\
         @: v8\n\
         m: @\n\
         b<c>: v9\n\
         a (x: y) b: v10\n\
         a[x:y]: v11\n\
         \"q:z\": v12\n\
         x@\"y\": v13\n\
         x%y: v14\n\
         x!y: v15\n\
         \"p%q\": v1\n\
         p(%)q: v2\n\
         r\\%s: v3\n\
         r\\@s: v4\n\
         %: v7\n\
         x.%: v8\n\
         x\"%\": v9\n\
         [%]: v10\n\
         [@]: v11\n\
         x%: v12\n\
         \u{e9}cole: v13\n\
         \\@: at\n\
         MixedCase: v14\n\
         mixedcase: v15\n",
    ),
    (
        "leading-space",
        "  lead: x\n cont\na:\n b\n#c\n  c\nbb: \\ \n",
    ),
];

/// A small deterministic random number generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Random lines built from the pieces RFC 822 text is made of.
fn random_file(rng: &mut Rng, lines: usize) -> String {
    const PIECES: &[&str] = &[
        "a",
        "b",
        "Cd",
        "x.y",
        "\"q r\"",
        "\"q",
        "\\,",
        "\\",
        "\\\\",
        "(c)",
        "(u",
        "((n) m)",
        "[d]",
        "[u",
        "<",
        ">",
        "@",
        ",",
        ", ",
        ";",
        ":",
        ".",
        "%",
        "!",
        "|",
        "/",
        "#",
        " ",
        "  ",
        "\t",
        "\u{e9}",
        "\"\"",
        "\\\"",
        "|cmd arg",
        "/var/x",
        ":include:/f",
        "-",
        "=",
        "\r",
        "\u{b}",
        "\u{c}",
        "AB",
        "\n ",
        "\n\t",
        "\n#c\n ",
        "\n\n  ",
        "\\\t",
        "\\ ",
    ];
    let mut text = String::new();
    for i in 0..lines {
        if rng.next().is_multiple_of(10) {
            text.push(' ');
        }
        // Mostly a plain unique name, so that most lines make entries.
        if !rng.next().is_multiple_of(4) {
            text.push_str(&format!("n{i}"));
        }
        for _ in 0..rng.next() % 3 {
            text.push_str(rng.pick(PIECES));
        }
        if !rng.next().is_multiple_of(8) {
            text.push(':');
        }
        for _ in 0..rng.next() % 8 {
            text.push_str(rng.pick(PIECES));
        }
        text.push('\n');
    }
    text
}

#[test]
fn postalias_and_alias_parser_agree() {
    if !oracle_available() {
        return;
    }
    let scratch = Scratch::new("aliases-diff");
    for (name, text) in FILES {
        compare(&scratch, name, text);
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..40 {
        let text = random_file(&mut rng, 80);
        compare(&scratch, &format!("random-{i}"), &text);
    }
}
