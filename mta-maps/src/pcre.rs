//! `pcre:` tables: Postfix's Perl-compatible regular expression tables,
//! as `pcre_table(5)` describes them, matched with PCRE2 itself (the
//! `pcre2` crate).
//!
//! # What this module does
//!
//! The file syntax is the one of `regexp:` tables, read by the same code
//! (see [`crate::regexp`]): rules `/pattern/flags result` and
//! `!/pattern/flags result`, any delimiter, `if`/`endif` blocks, comments,
//! continuation lines, `$n`/`${n}`/`$(n)`/`$$` in results, the first
//! matching rule wins, and the same warnings for bad rules, which are
//! skipped. What differs is the pattern language and the flags:
//!
//! - patterns are PCRE2 patterns: look-ahead and look-behind, lazy
//!   quantifiers, named groups (referred to by number in results: Postfix
//!   does not substitute group names), back-references, and so on;
//! - flags, each toggling an option: `i` (`PCRE2_CASELESS`, on by
//!   default), `m` (`PCRE2_MULTILINE`), `s` (`PCRE2_DOTALL`, on by
//!   default), `x` (`PCRE2_EXTENDED`), `A` (`PCRE2_ANCHORED`), `E`
//!   (`PCRE2_DOLLAR_ENDONLY`), `U` (`PCRE2_UNGREEDY`); `X` is accepted
//!   with a warning and does nothing, as in Postfix built with PCRE2;
//! - a pattern PCRE2 refuses is reported as Postfix reports it: `error in
//!   regex at offset N: MESSAGE`;
//! - a match that fails inside PCRE2 (its match limit, for a pattern that
//!   backtracks catastrophically) makes the rule not match, and the search
//!   goes on with the next rule, as in Postfix (which logs a warning; a
//!   [`Map`] has nowhere to log it).
//!
//! Matching works on bytes, not UTF-8 characters (Postfix does not turn
//! on PCRE2's UTF mode): `.` matches one byte. A substitution whose
//! result would not be UTF-8 is a lookup error, as in Postfix with
//! `smtputf8_enable = yes`. Keys are matched whole and as given
//! ([`KeyKind::Pattern`]), up to a first NUL byte (Postfix passes C
//! strings).
//!
//! # How the flags without a `pcre2` builder option are done
//!
//! The `pcre2` crate sets only some compile options. `U` is done by
//! starting the pattern with `(?U)` (after any leading `(*VERB)` items,
//! which must come first). `A` is done at match time: a match must
//! start at offset 0, which PCRE2 finds first when there is one, so the
//! result is the same as an anchored match, except for patterns that use
//! `\K` to move the start of the reported match. `E` (ignored with `m`,
//! as in PCRE2) is done by rewriting each `$` that is an assertion (not
//! escaped, not in a class, not in a comment or `\Q...\E`) as `(?:\z)`;
//! an inline `(?m)` inside such a pattern is not taken into account.
//!
//! # What it does not do
//!
//! There is no single automaton for all rules here: PCRE features
//! (look-around, back-references) are beyond the `regex` crate, so rules
//! are tried one by one as Postfix does, with PCRE2's JIT compiler when
//! the platform has it.
//!
//! # Example
//!
//! ```
//! use mta_maps::pcre::PcreTable;
//! use mta_maps::Map;
//!
//! let text = "\
//! ## Protect your outgoing majordomo exploders
//! /^(?!owner-)(.*)-outgoing@(.*)/ 550 Use ${1}@${2} instead
//! ";
//! let (table, warnings) = PcreTable::parse(text, "pcre:/etc/mta/access");
//! assert!(warnings.is_empty());
//! let value = table.lookup("list-outgoing@example.com").now(table.name()).unwrap();
//! assert_eq!(value.as_deref(), Some("550 Use list@example.com instead"));
//! let value = table.lookup("owner-list-outgoing@example.com").now(table.name()).unwrap();
//! assert_eq!(value, None);
//! ```

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use pcre2::bytes::{Regex, RegexBuilder};

use crate::regexp::{
    PatternSyntax, Program, Warning, c_string, file_of, read_source, shown, utf8_value,
};
use crate::{KeyKind, Lookup, LookupResult, Map, MapError};

/// The stack the JIT-compiled matcher may use, per match. PCRE2's own
/// default (32 KiB) makes some ordinary patterns fail on long keys; this
/// is what the interpreter could reach as well.
const JIT_STACK: usize = 1024 * 1024;

/// The options a rule's flag letters set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    caseless: bool,
    multi_line: bool,
    dotall: bool,
    extended: bool,
    anchored: bool,
    dollar_end_only: bool,
    ungreedy: bool,
}

/// One compiled rule pattern.
struct Pattern {
    regex: Regex,
    /// `A`: the match must start at offset 0.
    anchored: bool,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pattern")
            .field("regex", &self.regex.as_str())
            .field("anchored", &self.anchored)
            .finish()
    }
}

impl Pattern {
    /// Whether the pattern matches `hay`; a failure inside PCRE2 counts as
    /// no match, as in Postfix.
    fn is_match(&self, hay: &[u8]) -> bool {
        if self.anchored {
            matches!(self.regex.find(hay), Ok(Some(m)) if m.start() == 0)
        } else {
            self.regex.is_match(hay).unwrap_or(false)
        }
    }
}

/// The flag letters of `pcre:` rules and the PCRE2 compiler.
struct PcreSyntax;

impl PatternSyntax for PcreSyntax {
    type Flags = Flags;
    type Pattern = Pattern;

    fn flags(&self, letters: &[u8], notes: &mut Vec<String>) -> Result<Flags, String> {
        let mut f = Flags {
            caseless: true,
            multi_line: false,
            dotall: true,
            extended: false,
            anchored: false,
            dollar_end_only: false,
            ungreedy: false,
        };
        for &c in letters {
            match c {
                b'i' => f.caseless = !f.caseless,
                b'm' => f.multi_line = !f.multi_line,
                b's' => f.dotall = !f.dotall,
                b'x' => f.extended = !f.extended,
                b'A' => f.anchored = !f.anchored,
                b'E' => f.dollar_end_only = !f.dollar_end_only,
                b'U' => f.ungreedy = !f.ungreedy,
                b'X' => notes.push("ignoring obsolete regexp option \"X\"".to_string()),
                _ => {
                    return Err(format!(
                        "unknown regexp option \"{}\": skipping this rule",
                        shown(&[c])
                    ));
                }
            }
        }
        Ok(f)
    }

    fn compile(&mut self, pattern: &[u8], f: Flags) -> Result<Pattern, String> {
        let Ok(text) = std::str::from_utf8(pattern) else {
            return Err("pattern is not UTF-8 text: skipping this rule".to_string());
        };
        let mut builder = RegexBuilder::new();
        builder
            .caseless(f.caseless)
            .multi_line(f.multi_line)
            .dotall(f.dotall)
            .extended(f.extended)
            .jit_if_available(true)
            .max_jit_stack_size(Some(JIT_STACK));
        let mut rewritten = if f.dollar_end_only && !f.multi_line {
            end_only_dollars(text, f.extended)
        } else {
            text.to_string()
        };
        if f.ungreedy {
            let at = leading_verbs(&rewritten);
            rewritten.insert_str(at, "(?U)");
        }
        // The rewriting is checked against the pattern as written, which
        // decides what is an error (`$*` is one, `(?:\z)*` would not be).
        if rewritten != text {
            builder.build(text).map_err(|e| compile_error(&e))?;
        }
        match builder.build(&rewritten) {
            Ok(regex) => Ok(Pattern {
                regex,
                anchored: f.anchored,
            }),
            Err(e) => Err(compile_error(&e)),
        }
    }

    fn groups(pattern: &Pattern) -> usize {
        pattern.regex.captures_len().saturating_sub(1)
    }
}

/// Postfix's wording for a pattern PCRE2 refuses.
fn compile_error(e: &pcre2::Error) -> String {
    // The crate's message is "PCRE2: error compiling pattern at offset N:
    // MESSAGE"; Postfix prints the offset and PCRE2's own message.
    let text = e.to_string();
    let message = text
        .split_once(": ")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once(": "))
        .map_or(text.as_str(), |(_, m)| m);
    match e.offset() {
        Some(offset) => format!("error in regex at offset {offset}: {message}"),
        None => format!("error in regex: {message}"),
    }
}

/// Where the pattern proper starts, after the `(*VERB)` items (such as
/// `(*UTF)` or `(*LIMIT_MATCH=100)`) that PCRE2 accepts only first.
fn leading_verbs(pattern: &str) -> usize {
    let mut at = 0;
    while pattern[at..].starts_with("(*") {
        let Some(close) = pattern[at..].find(')') else {
            break;
        };
        // Only names in capitals, digits, `_` and `=` are such verbs.
        let name = &pattern[at + 2..at + close];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'=')
        {
            break;
        }
        at += close + 1;
    }
    at
}

/// Rewrites each `$` assertion as `(?:\z)`, for `PCRE2_DOLLAR_ENDONLY`,
/// which the `pcre2` crate cannot set. Escapes, classes, `\Q...\E`,
/// `(?#...)` comments and, with `x`, `#` comments are copied unchanged.
fn end_only_dollars(pattern: &str, extended: bool) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1) == Some(&b'Q') => {
                // Quoted to the next \E, or to the end.
                i = match pattern[i + 2..].find("\\E") {
                    Some(e) => i + 2 + e + 2,
                    None => b.len(),
                };
            }
            b'\\' => i += 2,
            b'[' => {
                // A class: `]` right after `[` or `[^` is a member;
                // `[:name:]` items and escapes do not end it.
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                while i < b.len() && b[i] != b']' {
                    if b[i] == b'\\' {
                        i += 2;
                    } else if b[i] == b'[' && b.get(i + 1) == Some(&b':') {
                        i = pattern[i + 2..].find(":]").map_or(i + 1, |e| i + 2 + e + 2);
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'(' if b.get(i + 1) == Some(&b'?') && b.get(i + 2) == Some(&b'#') => {
                i = pattern[i..].find(')').map_or(b.len(), |e| i + e + 1);
            }
            b'#' if extended => {
                i = pattern[i..].find('\n').map_or(b.len(), |e| i + e + 1);
            }
            b'$' => {
                out.push_str(&pattern[copied..i]);
                out.push_str(r"(?:\z)");
                i += 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&pattern[copied.min(b.len())..]);
    out
}

/// A `pcre:` table: an ordered list of PCRE rules, read from a file in
/// `pcre_table(5)` format.
///
/// Lookups never block, and allocate only to return a substituted
/// result. See the [module documentation](self) for the exact semantics.
pub struct PcreTable {
    name: String,
    file: String,
    program: Program<Pattern>,
}

impl fmt::Debug for PcreTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcreTable")
            .field("name", &self.name)
            .field("rules", &self.program.rule_count())
            .finish()
    }
}

impl PcreTable {
    /// Reads the table source file at `path`. `name` is the table as
    /// `pcre:/path`, which [`Map::name`] returns.
    ///
    /// Bad rules do not make the table fail: they are skipped and
    /// reported in the returned warnings, as Postfix logs them. Only a
    /// file that cannot be read is an error.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_maps::pcre::PcreTable;
    /// use mta_maps::Map;
    ///
    /// let path = std::env::temp_dir().join(format!("pcre-doc-{}", std::process::id()));
    /// std::fs::write(&path, "/^(friend@(?!my\\.domain$).*)$/ 550 Stick this in your pipe $1\n").unwrap();
    /// let name = format!("pcre:{}", path.display());
    /// let (table, warnings) = PcreTable::open(&path, &name).unwrap();
    /// assert!(warnings.is_empty());
    /// assert_eq!(table.lookup("friend@example.com").now(&name).unwrap().as_deref(),
    ///            Some("550 Stick this in your pipe friend@example.com"));
    /// assert_eq!(table.lookup("friend@my.domain").now(&name).unwrap(), None);
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn open(path: &Path, name: &str) -> Result<(PcreTable, Vec<Warning>), MapError> {
        let text = read_source(path)?;
        Ok(Self::build(&text, name, &path.display().to_string()))
    }

    /// Reads a table from `text`, as if it were the content of its file.
    /// `name` is the table as `pcre:/path`; messages name the part after
    /// `pcre:`.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_maps::pcre::PcreTable;
    /// use mta_maps::Map;
    ///
    /// let (table, warnings) = PcreTable::parse(
    ///     "/^(?<user>[^@]+?)(?:\\+.*)?@example\\.com$/ $1\n/(/ broken\n",
    ///     "pcre:/etc/mta/virtual",
    /// );
    /// assert_eq!(warnings[0].to_string(),
    ///            "/etc/mta/virtual, line 2: error in regex at offset 1: missing closing parenthesis");
    /// assert_eq!(table.lookup("joe+lists@example.com").now("t").unwrap().as_deref(), Some("joe"));
    /// ```
    pub fn parse(text: &str, name: &str) -> (PcreTable, Vec<Warning>) {
        Self::build(text.as_bytes(), name, &file_of(name, "pcre"))
    }

    fn build(text: &[u8], name: &str, file: &str) -> (PcreTable, Vec<Warning>) {
        let (program, warnings) = Program::parse(text, file, &mut PcreSyntax);
        (
            PcreTable {
                name: name.to_string(),
                file: file.to_string(),
                program,
            },
            warnings,
        )
    }

    /// How many rules the table has (`if` conditions not counted).
    pub fn len(&self) -> usize {
        self.program.rule_count()
    }

    /// Whether the table has no rule.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find<'a>(&'a self, key: &str) -> LookupResult<'a> {
        let hay = c_string(key);
        let patterns = &self.program.patterns;
        let rule = self
            .program
            .first_rule(|p| Ok::<bool, std::convert::Infallible>(patterns[p].is_match(hay)));
        let Ok(Some(rule)) = rule else {
            return Ok(None);
        };
        if let Some(literal) = rule.template.literal() {
            return Ok(Some(Cow::Borrowed(literal)));
        }
        let pattern = &patterns[rule.pattern];
        let caps = match pattern.regex.captures(hay) {
            Ok(Some(caps)) if !pattern.anchored || caps.get(0).is_some_and(|m| m.start() == 0) => {
                caps
            }
            // Matched a moment ago; PCRE2 can only fail now on a limit.
            _ => return Ok(None),
        };
        let value = rule
            .template
            .expand(hay, |n| caps.get(n).map(|m| (m.start(), m.end())));
        utf8_value(value, key, &self.file, rule.line)
    }
}

impl Map for PcreTable {
    fn lookup<'a>(&'a self, key: &'a str) -> Lookup<'a> {
        Lookup::ready(self.find(key))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn key_kind(&self) -> KeyKind {
        KeyKind::Pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(text: &str) -> (PcreTable, Vec<String>) {
        let (t, w) = PcreTable::parse(text, "pcre:/etc/mta/p");
        (t, w.iter().map(ToString::to_string).collect())
    }

    #[track_caller]
    fn check(text: &str, cases: &[(&str, Option<&str>)]) {
        let (t, w) = table(text);
        for (key, want) in cases {
            let got = t.lookup(key).now("p").expect("lookup");
            assert_eq!(
                got.as_deref(),
                *want,
                "key {key:?} in\n{text}\nwarnings {w:?}"
            );
        }
    }

    #[test]
    fn manual_examples() {
        let text = "\
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
";
        let (t, w) = table(text);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(t.len(), 3);
        assert_eq!(t.key_kind(), KeyKind::Pattern);
        check(
            text,
            &[
                (
                    "list-outgoing@example.com",
                    Some("550 Use list@example.com instead"),
                ),
                ("owner-list-outgoing@example.com", None),
                (
                    "friend@example.com",
                    Some("550 Stick this in your pipe friend@example.com"),
                ),
                ("friend@my.domain", None),
                (
                    "noddy@my.domain",
                    Some(
                        "550 This user is a funny one. You really don't want to send mail to them as it only makes their head spin.",
                    ),
                ),
            ],
        );
    }

    #[test]
    fn pcre_features() {
        check(
            "/(?<=@)ex(?=ample)/ around\n",
            &[("joe@example", Some("around")), ("example", None)],
        );
        check(
            "/^(.+?)(\\+.*)?@/ lazy $1\n",
            &[("joe+tag@x", Some("lazy joe"))],
        );
        check(
            "/^(?<user>\\w+)@(?P<host>\\w+)$/ $2 $1\n",
            &[("joe@host", Some("host joe"))],
        );
        check("/^(a)?b$/ [$1]\n", &[("b", Some("[]"))]);
        check(
            "/^(\\w)\\1$/ double\n",
            &[("aa", Some("double")), ("aA", Some("double"))],
        );
        // Bytes, not characters: `.` is one byte.
        check("/^..$/ two\n", &[("é", Some("two"))]);
    }

    #[test]
    fn flags() {
        check("/^ab$/ ci\n", &[("AB", Some("ci"))]);
        check("/^ab$/i cs\n", &[("AB", None), ("ab", Some("cs"))]);
        check("/^a.b$/ dotall\n", &[("a\nb", Some("dotall"))]);
        check("/^a.b$/s no-dotall\n", &[("a\nb", None)]);
        check("/^b$/m multi\n", &[("a\nb", Some("multi"))]);
        check("/^b$/ single\n", &[("a\nb", None)]);
        check("/^a b $/x extended\n", &[("ab", Some("extended"))]);
        check("/b/A anchored\n", &[("ab", None), ("ba", Some("anchored"))]);
        check("/^a$/ dollar\n", &[("a\n", Some("dollar"))]);
        check(
            "/^a$/E end-only\n",
            &[("a\n", None), ("a", Some("end-only"))],
        );
        check(
            "/^a$/Em end-only-ignored\n",
            &[("a\n", Some("end-only-ignored"))],
        );
        check("/(a+)/U [$1]\n", &[("aaa", Some("[a]"))]);
        check("/(a+?)/U [$1]\n", &[("aaa", Some("[aaa]"))]);
        check("/(*LIMIT_MATCH=1000)(a+)/U [$1]\n", &[("aaa", Some("[a]"))]);
        let (t, w) = table("/a/X x\n/a/q y\n");
        assert_eq!(
            w,
            [
                "/etc/mta/p, line 1: ignoring obsolete regexp option \"X\"",
                "/etc/mta/p, line 2: unknown regexp option \"q\": skipping this rule",
            ]
        );
        assert_eq!(t.lookup("a").now("p").unwrap().as_deref(), Some("x"));
    }

    #[test]
    fn errors_are_reported_as_postfix_does() {
        let (_, w) = table("/a(/ x\n/$*/E y\n/(a)/ $2\n!/(a)/ $1\n/a/ $0\n");
        assert_eq!(
            w,
            [
                "/etc/mta/p, line 1: error in regex at offset 2: missing closing parenthesis",
                "/etc/mta/p, line 2: error in regex at offset 1: quantifier does not follow a repeatable item",
                "/etc/mta/p, line 3: out of range replacement index \"2\": skipping this rule",
                "/etc/mta/p, line 4: $number found in negative match replacement text: skipping this rule",
                "/etc/mta/p, line 5: out-of-range replacement index \"0\": bad replacement syntax: skipping this rule",
            ]
        );
    }

    #[test]
    fn shared_file_syntax() {
        let text = "\
if /@example\\.com$/
!/^postmaster@/ not-pm
endif
/^(.)/
 first $1
";
        check(
            text,
            &[
                ("joe@example.com", Some("not-pm")),
                ("postmaster@example.com", Some("first p")),
            ],
        );
    }

    #[test]
    fn catastrophic_backtracking_is_no_match() {
        let key = format!("{}b", "a".repeat(40));
        check(
            "/^(a|aa)+$/ slow\n/b$/ next\n",
            &[(key.as_str(), Some("next"))],
        );
    }

    #[test]
    fn end_only_rewrites_assertions_only() {
        assert_eq!(end_only_dollars(r"a$", false), r"a(?:\z)");
        assert_eq!(
            end_only_dollars(r"a\$[$]\Q$\E$", false),
            r"a\$[$]\Q$\E(?:\z)"
        );
        assert_eq!(end_only_dollars("a# $\n$", true), "a# $\n(?:\\z)");
        assert_eq!(end_only_dollars("a(?#$)$", false), "a(?#$)(?:\\z)");
        assert_eq!(end_only_dollars(r"[]$]$", false), r"[]$](?:\z)");
        assert_eq!(
            end_only_dollars(r"[[:alpha:]$]$", false),
            r"[[:alpha:]$](?:\z)"
        );
    }

    #[test]
    fn verbs_stay_first() {
        assert_eq!(leading_verbs("(*UTF)(*LIMIT_MATCH=10)abc"), 23);
        assert_eq!(leading_verbs("abc"), 0);
        assert_eq!(leading_verbs("(*a)"), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn any_table_text_parses_and_answers(text in "[ -~\t\n]{0,200}", key in "[ -~]{0,20}") {
            let (t, w) = PcreTable::parse(&text, "pcre:/p");
            for w in &w {
                prop_assert!(w.to_string().starts_with("/p"));
            }
            let _ = t.lookup(&key).now("p");
        }

        #[test]
        fn rewriting_never_panics(pattern in "[ -~\n]{0,40}", extended: bool) {
            let _ = end_only_dollars(&pattern, extended);
            let _ = leading_verbs(&pattern);
        }
    }
}
