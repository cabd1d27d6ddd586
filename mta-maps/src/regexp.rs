//! `regexp:` tables: Postfix's POSIX regular expression tables, as
//! `regexp_table(5)` describes them, and the table file syntax that
//! `pcre:` tables share.
//!
//! # What this module does
//!
//! It reads a table source file (or text) into a [`RegexpTable`], which
//! answers lookups through the [`Map`] trait exactly as Postfix's
//! `regexp:` table does:
//!
//! - rules `/pattern/flags result` and `!/pattern/flags result` (the
//!   result is used when the pattern does *not* match), with any
//!   delimiter, any number of `!` and white space before it;
//! - flags `i` (toggles case-insensitive matching, which is the
//!   default), `x` (toggles extended syntax, on by default: off means
//!   POSIX *basic* syntax, `\(` `\)` `\{` `\}` `\|` `\+` `\?`), `m` (toggles
//!   `REG_NEWLINE`: `^` and `$` also match at line breaks, and `.` and
//!   `[^...]` stop matching a newline); a flag given twice toggles back;
//! - `if /pattern/flags` and `if !/pattern/flags` blocks closed by
//!   `endif`, nested to any depth, keywords in any case;
//! - comments, blank lines, and continuation lines that start with
//!   white space (joined without the line break; comment and blank lines
//!   inside a continued line are dropped, as Postfix does);
//! - results with `$1`, `${1}`, `$(1)` (any group number the pattern has,
//!   not only 1 to 9) and `$$`; a group that did not take part in the
//!   match gives the empty string; the first matching rule wins.
//!
//! Keys are matched whole and as given ([`KeyKind::Pattern`]); case is
//! never folded before matching. Postfix reads keys as C strings, so a
//! key is matched only up to its first NUL byte.
//!
//! Bad rules are not fatal, as in Postfix: each one yields a [`Warning`]
//! naming the file and line (`FILE, line N: ...`) and is skipped. The
//! checks and what each one does, all taken from Postfix 3.7's `postmap`:
//! a bad regular expression (the rule, or the `if` with its whole
//! condition, is dropped: the rules of a dropped `if` then apply
//! unconditionally and its `endif` is reported as unmatched); a missing
//! closing delimiter; an unknown flag; a `$` reference that is not a
//! number, is 0, is unterminated, or names a group the pattern lacks; a
//! `$n` in a negated rule; an `endif` without `if` (ignored); an `if`
//! without `endif` (closed at the end of the file); extra text after
//! `if` or `endif` (ignored); a first line that starts with white space
//! (skipped). A rule without a result is kept with an empty result.
//!
//! # What it does not do
//!
//! It does not log: warnings are returned to the caller, which prints
//! them. It does not decide what a result means (`REJECT`, a
//! transport...). Results are Rust strings: a substitution that would
//! produce bytes that are not UTF-8 (a group that splits a multi-byte
//! character, since matching works on bytes as Postfix's C-locale
//! matcher does) is a lookup error, as it is in Postfix with
//! `smtputf8_enable = yes`.
//!
//! # Speed: a few automata for all rules
//!
//! Postfix tries the rules one by one. This table compiles the patterns
//! of the file (rules and `if` conditions alike) into `regex::bytes`
//! `RegexSet`s, a few hundred patterns each (one automaton for a
//! thousand patterns is slower: its lazily built states are sets of
//! positions in every pattern, costly to build, and varied keys keep
//! needing new ones). One pass of a set over the key tells which of its
//! patterns match anywhere in it. The rules are then walked in file
//! order using those bits: an `if` whose condition fails skips to its
//! `endif`, a negated rule hits when its bit is clear, an `if !` enters
//! when it is clear, and the first hit wins. A set runs only when the
//! walk first needs one of its patterns, so a key taken by an early rule
//! does not pay for the later ones. "Does pattern N match anywhere"
//! does not depend on how a matcher chooses among matches, so the walk
//! gives exactly Postfix's first match. Only the rule that wins, and
//! only when its result has `$n`, is then matched on its own to find the
//! groups. On a 1,000-rule table whose results use `$1`, this answers
//! 100,000 keys 21 to 27 times faster than Postfix's `postmap` does,
//! whole process against whole process (`bench/postmap.sh`).
//!
//! # Leftmost-longest and `$n`
//!
//! POSIX matchers choose the leftmost-*longest* match, where the `regex`
//! crate (like Perl) chooses the leftmost match that comes *first* in the
//! pattern's order of preference. Whether a rule matches is the same
//! either way, but the text of `$n` can differ when a pattern can match
//! from the same start in several ways: alternations such as
//! `(a|ab)(c|bcd)`, and quantifiers followed by something that could take
//! the same text, such as `^x*(xy)?` on `xxy` (Postfix gives `$1` = `xy`,
//! leftmost-first an empty `$1`).
//!
//! So the groups are not taken from the `regex` crate. This module has
//! its own matcher for the rule that won, built to give what glibc's
//! `regexec` (Postfix's matcher on Linux) was observed to give, in
//! thousands of random patterns compared with `postmap`:
//!
//! - the match is the leftmost, and then the longest;
//! - among the ways to match exactly that text, a way that consumes a
//!   character after its last assertion wins over one that ends with an
//!   assertion (`a$|(a)` gives `$1` = `a`, `^a|(a)` an empty `$1`);
//! - otherwise the walk through the pattern takes, at each fork, the
//!   first way that can still end there (earlier alternatives first,
//!   quantifiers greedy), except that a way back to a point already
//!   passed since the last character takes the other branch: an
//!   iteration that matches nothing is taken once, then the loop is left;
//! - a group that matches nothing in an optional copy of itself (glibc
//!   marks the first optional copy of a repeated group, not the copies
//!   it duplicates from it) puts back every group as it was when a group
//!   last matched some text; elsewhere an empty match is recorded.
//!
//! The matcher first searches for the start and end, remembering which
//! (instruction, position) pairs failed, then lists the pairs reachable
//! from the start, marks backwards those that can still reach the end
//! (in one pass per position when the pattern has no loop that consumes
//! nothing), then walks once: its work is bounded by the pattern's size
//! times the key's length ([`MAX_MATCH_MEMORY_BITS`]), and is usually
//! far less, since few pairs are reachable.
//!
//! Back-references (`\1` to `\9`) are beyond the `regex` crate: such
//! patterns stay out of the sets and this module's matcher tries them
//! one by one, by backtracking under a step budget
//! ([`MAX_BACKREF_STEPS`]). Their groups do not always come out as
//! glibc's do: glibc itself is not consistent there (a rule with a
//! back-reference can match or not depending on whether its result uses
//! `$n`).

//! # Example
//!
//! ```
//! use mta_maps::regexp::RegexpTable;
//! use mta_maps::Map;
//!
//! let text = "\
//! ## Protect the outgoing majordomo exploders
//! if !/^owner-/
//! /^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead
//! endif
//! ";
//! let (table, warnings) = RegexpTable::parse(text, "regexp:/etc/mta/access");
//! assert!(warnings.is_empty());
//! let value = table.lookup("list-outgoing@example.com").now(table.name()).unwrap();
//! assert_eq!(value.as_deref(), Some("550 Use list@example.com instead"));
//! let value = table.lookup("owner-list-outgoing@example.com").now(table.name()).unwrap();
//! assert_eq!(value, None);
//! ```

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use regex::bytes::{RegexSet, RegexSetBuilder};

use crate::{KeyKind, Lookup, LookupResult, Map, MapError};

/// The longest logical line (a rule with its continuation lines) that a
/// table may have, in bytes. A longer one is reported and skipped, so
/// that a runaway file cannot make one pattern arbitrarily large.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// How deeply groups and repetitions may nest in one regular
/// expression. Deeper patterns are refused with glibc's "Regular
/// expression too big"; the limit keeps the compiler's recursion
/// bounded.
pub const MAX_NESTING: usize = 200;

/// The most instructions one compiled regular expression may have
/// (counted repetitions such as `a{1000}` copy their operand). A bigger
/// pattern is refused with "Regular expression too big", as glibc
/// refuses its own oversized patterns (glibc accepts somewhat bigger
/// ones; Postfix tables have no use for them).
pub const MAX_PROGRAM_LEN: usize = 100_000;

/// The most steps the matcher may take for one rule with
/// back-references on one key, since such patterns can need exponential
/// time. A rule that runs out counts as not matching (Postfix skips a
/// rule whose matcher fails, too).
pub const MAX_BACKREF_STEPS: u64 = 10_000_000;

/// The most memory, in bits, that finding the groups of one match may
/// use (one bit per pattern instruction per key byte). A larger case
/// fails the lookup with a temporary error instead of exhausting memory.
pub const MAX_MATCH_MEMORY_BITS: usize = 1 << 28;

/// The compiled size the `regex` crate may give the combined set of a
/// table's patterns. Patterns that do not fit are matched one by one by
/// this module's own matcher instead.
const SET_SIZE_LIMIT: usize = 256 * 1024 * 1024;

/// How many patterns go into one `RegexSet`. One automaton for all is
/// slower on big tables: its states are sets of positions in every
/// pattern, so building each new one costs in proportion to the whole
/// table, and keys that differ keep needing new ones.
const SET_CHUNK: usize = 256;

/// A problem found while reading a table: what Postfix would log as a
/// warning. The rule concerned was skipped or repaired as the message
/// says; the table is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warning {
    /// The table's source, as messages name it (the file name).
    pub file: String,
    /// The line the problem is on (the first line of a continued
    /// logical line), when there is one.
    pub line: Option<usize>,
    /// What is wrong and what was done about it.
    pub message: String,
}

impl Warning {
    pub(crate) fn new(file: &str, line: usize, message: impl Into<String>) -> Warning {
        Warning {
            file: file.to_string(),
            line: Some(line),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}, line {}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Text for messages: the bytes as UTF-8 where they are, escaped where
/// not.
pub(crate) fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// White space as C's `isspace` in the C locale: what Postfix skips.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_space(*first) {
            break;
        }
        s = rest;
    }
    s
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if !is_space(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// The part of a key that Postfix sees: it passes keys as C strings.
pub(crate) fn c_string(key: &str) -> &[u8] {
    let bytes = key.as_bytes();
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

/// The file name that messages use for a table called `name`: Postfix
/// names the file, without the table type.
pub(crate) fn file_of(name: &str, kind: &str) -> String {
    name.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(name)
        .to_string()
}

/// Reads a table's source file, for `open` of both table types.
pub(crate) fn read_source(path: &Path) -> Result<Vec<u8>, MapError> {
    std::fs::read(path)
        .map_err(|e| MapError::config(path.display().to_string(), format!("open: {e}")))
}

/// One logical line of a table: a line that starts with non-white-space
/// text, plus the continuation lines after it.
#[derive(Debug)]
pub(crate) struct LogicalLine {
    /// The number of its first physical line.
    pub(crate) number: usize,
    /// The text, continuation lines joined without their line breaks,
    /// trailing white space removed.
    pub(crate) text: Vec<u8>,
}

/// Splits table text into logical lines the way Postfix's table readers
/// do, reporting the lines they reject.
pub(crate) fn logical_lines(
    text: &[u8],
    file: &str,
    warnings: &mut Vec<Warning>,
) -> Vec<LogicalLine> {
    struct Pending {
        number: usize,
        text: Vec<u8>,
        indented: bool,
        too_long: bool,
    }
    fn finish(p: Pending, file: &str, out: &mut Vec<LogicalLine>, warnings: &mut Vec<Warning>) {
        let text = trim_end(&p.text);
        if p.too_long {
            warnings.push(Warning::new(
                file,
                p.number,
                format!("line longer than {MAX_LINE_LEN} bytes: skipping this rule"),
            ));
        } else if p.indented {
            warnings.push(Warning::new(
                file,
                p.number,
                format!(
                    "logical line must not start with whitespace: \"{}\"",
                    shown(text)
                ),
            ));
        } else {
            out.push(LogicalLine {
                number: p.number,
                text: text.to_vec(),
            });
        }
    }

    let mut out = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut lines = text.split(|&b| b == b'\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        // A final newline ends the last line; it does not start another.
        if line.is_empty() && lines.peek().is_none() {
            break;
        }
        let content = trim_start(line);
        if content.is_empty() || content[0] == b'#' {
            // Blank lines and comments vanish even inside a continued
            // line, as they do in Postfix.
            continue;
        }
        let indented = content.len() != line.len();
        match pending.as_mut() {
            Some(p) if indented => {
                if p.text.len() + line.len() > MAX_LINE_LEN {
                    p.too_long = true;
                } else {
                    p.text.extend_from_slice(line);
                }
            }
            _ => {
                if let Some(p) = pending.take() {
                    finish(p, file, &mut out, warnings);
                }
                let too_long = line.len() > MAX_LINE_LEN;
                pending = Some(Pending {
                    number: index + 1,
                    text: if too_long { Vec::new() } else { line.to_vec() },
                    indented,
                    too_long,
                });
            }
        }
    }
    if let Some(p) = pending.take() {
        finish(p, file, &mut out, warnings);
    }
    out
}

/// A pattern as written in a rule or `if`, before compiling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PatternText<'a> {
    /// Whether an odd number of `!` came before it.
    pub(crate) negated: bool,
    /// The text between the delimiters, backslashes kept.
    pub(crate) pattern: &'a [u8],
    /// The flag letters after the closing delimiter.
    pub(crate) flags: &'a [u8],
}

/// One statement of a table file.
#[derive(Debug)]
pub(crate) enum Statement<'a> {
    /// `if /pattern/flags`, with the text after it that Postfix ignores.
    If(PatternText<'a>, &'a [u8]),
    /// `endif`, with the text after it that Postfix ignores.
    Endif(&'a [u8]),
    /// `/pattern/flags result`.
    Rule(PatternText<'a>, &'a [u8]),
}

/// Whether `line` starts with `keyword` (in any case) as a whole word.
fn keyword<'a>(line: &'a [u8], keyword: &str) -> Option<&'a [u8]> {
    let k = keyword.len();
    if line.len() >= k
        && line[..k].eq_ignore_ascii_case(keyword.as_bytes())
        && !line.get(k).is_some_and(|b| b.is_ascii_alphanumeric())
    {
        Some(&line[k..])
    } else {
        None
    }
}

/// Reads `[!...] DELIM pattern DELIM flags` from the start of `text`;
/// returns the pattern and the rest of the line.
fn pattern_text(text: &[u8]) -> Result<(PatternText<'_>, &[u8]), String> {
    let mut negated = false;
    let mut p = trim_start(text);
    while let [b'!', rest @ ..] = p {
        negated = !negated;
        p = trim_start(rest);
    }
    let Some((&delimiter, body)) = p.split_first() else {
        return Err("no regexp: skipping this rule".to_string());
    };
    // A backslash protects the next byte (the delimiter included) and
    // stays in the pattern: regular expressions give `\/` its meaning.
    let mut i = 0;
    let end = loop {
        match body.get(i) {
            None => {
                return Err(format!(
                    "no closing regexp delimiter \"{}\": skipping this rule",
                    shown(&[delimiter])
                ));
            }
            Some(b'\\') if i + 1 < body.len() => i += 2,
            Some(&b) if b == delimiter => break i,
            Some(_) => i += 1,
        }
    };
    let pattern = &body[..end];
    let after = &body[end + 1..];
    let flags_len = after
        .iter()
        .position(|&b| is_space(b))
        .unwrap_or(after.len());
    Ok((
        PatternText {
            negated,
            pattern,
            flags: &after[..flags_len],
        },
        trim_start(&after[flags_len..]),
    ))
}

/// Classifies one logical line. An `Err` is the warning for a line
/// that is skipped.
pub(crate) fn statement(line: &[u8]) -> Result<Statement<'_>, String> {
    if let Some(rest) = keyword(line, "if") {
        let (pattern, extra) = pattern_text(rest)?;
        return Ok(Statement::If(pattern, extra));
    }
    if let Some(rest) = keyword(line, "endif") {
        return Ok(Statement::Endif(trim_start(rest)));
    }
    if line.first().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return Err("ignoring unrecognized request".to_string());
    }
    let (pattern, result) = pattern_text(line)?;
    Ok(Statement::Rule(pattern, result))
}

/// A rule's result, split at its `$n` references.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    parts: Vec<Part>,
    /// The whole result, when it has no reference to substitute.
    literal: Option<String>,
    /// The highest group number referred to (0 when none).
    max_group: usize,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Group(usize),
}

impl Template {
    /// Parses a result. `Err` is the reason the rule is skipped.
    pub(crate) fn parse(result: &[u8]) -> Result<Template, String> {
        let Ok(text) = std::str::from_utf8(result) else {
            return Err("result is not UTF-8 text: skipping this rule".to_string());
        };
        let bad = |why: String| Err(format!("{why}: bad replacement syntax: skipping this rule"));
        let bytes = text.as_bytes();
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut max_group = 0;
        let mut i = 0;
        while i < bytes.len() {
            let Some(dollar) = bytes[i..].iter().position(|&b| b == b'$') else {
                literal.push_str(&text[i..]);
                break;
            };
            literal.push_str(&text[i..i + dollar]);
            i += dollar + 1;
            let name = match bytes.get(i) {
                Some(b'$') => {
                    literal.push('$');
                    i += 1;
                    continue;
                }
                Some(&open @ (b'{' | b'(')) => {
                    let close = if open == b'{' { b'}' } else { b')' };
                    // The closing bracket is the one that balances the
                    // opening one; other brackets are just text.
                    let mut depth = 0usize;
                    let mut end = None;
                    for (j, &b) in bytes.iter().enumerate().skip(i) {
                        if b == open {
                            depth += 1;
                        } else if b == close {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                    }
                    let Some(end) = end else {
                        return bad(format!("truncated macro reference: \"{text}\""));
                    };
                    let name = &text[i + 1..end];
                    i = end + 1;
                    name
                }
                _ => {
                    let len = bytes[i..]
                        .iter()
                        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
                        .unwrap_or(bytes.len() - i);
                    let name = &text[i..i + len];
                    i += len;
                    name
                }
            };
            if name.is_empty() {
                return bad(format!("empty macro name: \"{text}\""));
            }
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return bad(format!("non-numeric replacement index \"{name}\""));
            }
            // Saturating: an absurd number is simply out of range later.
            let n = name.bytes().fold(0usize, |n, d| {
                n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
            });
            if n == 0 {
                return bad(format!("out-of-range replacement index \"{name}\""));
            }
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Group(n));
            max_group = max_group.max(n);
        }
        if parts.is_empty() {
            return Ok(Template {
                parts,
                literal: Some(literal),
                max_group,
            });
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            parts,
            literal: None,
            max_group,
        })
    }

    /// The whole result, when it has nothing to substitute.
    pub(crate) fn literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    /// The highest `$n` used, 0 for none.
    pub(crate) fn max_group(&self) -> usize {
        self.max_group
    }

    /// The result with every `$n` replaced by the text of group `n` of
    /// `subject` (`group(n)` gives its span, `None` when the group did
    /// not take part).
    pub(crate) fn expand(
        &self,
        subject: &[u8],
        group: impl Fn(usize) -> Option<(usize, usize)>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Group(n) => {
                    if let Some((start, end)) = group(*n) {
                        out.extend_from_slice(&subject[start..end]);
                    }
                }
            }
        }
        out
    }
}

/// A table's statements in file order, with the `if` blocks resolved.
#[derive(Debug)]
pub(crate) struct Program<P> {
    /// The compiled patterns, of rules and `if` conditions alike.
    pub(crate) patterns: Vec<P>,
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    /// An `if`: when its condition fails, the walk continues at `end`,
    /// the node after the matching `endif`.
    If {
        pattern: usize,
        negated: bool,
        end: usize,
    },
    Rule(Rule),
}

/// One rule of a table.
#[derive(Debug)]
pub(crate) struct Rule {
    /// Its pattern, an index into [`Program::patterns`].
    pub(crate) pattern: usize,
    /// Whether the rule applies when the pattern does not match.
    pub(crate) negated: bool,
    /// Its result.
    pub(crate) template: Template,
    /// The line it starts on, for messages.
    pub(crate) line: usize,
}

/// What a table type adds to the shared file syntax: its flags and its
/// pattern compiler.
pub(crate) trait PatternSyntax {
    /// The options that flag letters set.
    type Flags;
    /// The compiled form of one pattern.
    type Pattern;
    /// Reads the flag letters after a pattern. Warnings about flags that
    /// are still accepted go to `notes`; `Err` is the reason the rule
    /// is skipped.
    fn flags(&self, letters: &[u8], notes: &mut Vec<String>) -> Result<Self::Flags, String>;
    /// Compiles `pattern`; `Err` is the reason the rule is skipped.
    fn compile(&mut self, pattern: &[u8], flags: Self::Flags) -> Result<Self::Pattern, String>;
    /// How many capturing groups the pattern has.
    fn groups(pattern: &Self::Pattern) -> usize;
}

impl<P> Program<P> {
    /// Parses table text into a program, reporting what Postfix would
    /// warn about.
    pub(crate) fn parse<S: PatternSyntax<Pattern = P>>(
        text: &[u8],
        file: &str,
        syntax: &mut S,
    ) -> (Program<P>, Vec<Warning>) {
        let mut warnings = Vec::new();
        let mut program = Program {
            patterns: Vec::new(),
            nodes: Vec::new(),
        };
        // Node indices of the `if`s still open, with their lines.
        let mut open: Vec<(usize, usize)> = Vec::new();
        for line in logical_lines(text, file, &mut warnings) {
            let number = line.number;
            let mut warn = |message: String| warnings.push(Warning::new(file, number, message));
            let statement = match statement(&line.text) {
                Ok(s) => s,
                Err(why) => {
                    warn(why);
                    continue;
                }
            };
            match statement {
                Statement::Endif(extra) => match open.pop() {
                    None => warn("ignoring ENDIF without matching IF".to_string()),
                    Some((index, _)) => {
                        if !extra.is_empty() {
                            warn("ignoring extra text after ENDIF".to_string());
                        }
                        let after = program.nodes.len();
                        if let Node::If { end, .. } = &mut program.nodes[index] {
                            *end = after;
                        }
                    }
                },
                Statement::If(p, extra) => {
                    let mut notes = Vec::new();
                    let compiled = syntax
                        .flags(p.flags, &mut notes)
                        .and_then(|flags| syntax.compile(p.pattern, flags));
                    for note in notes {
                        warn(note);
                    }
                    let pattern = match compiled {
                        Ok(c) => c,
                        Err(why) => {
                            warn(why);
                            continue;
                        }
                    };
                    if !extra.is_empty() {
                        warn(format!(
                            "ignoring extra text after IF statement: \"{}\"",
                            shown(extra)
                        ));
                        warn(
                            "do not prepend whitespace to statements between IF and ENDIF"
                                .to_string(),
                        );
                    }
                    program.patterns.push(pattern);
                    open.push((program.nodes.len(), number));
                    program.nodes.push(Node::If {
                        pattern: program.patterns.len() - 1,
                        negated: p.negated,
                        end: usize::MAX,
                    });
                }
                Statement::Rule(p, result) => {
                    let mut notes = Vec::new();
                    let compiled = match Self::rule(syntax, p, result, &mut notes) {
                        Ok(c) => c,
                        Err(why) => {
                            for note in notes {
                                warn(note);
                            }
                            warn(why);
                            continue;
                        }
                    };
                    for note in notes {
                        warn(note);
                    }
                    let (pattern, template) = compiled;
                    program.patterns.push(pattern);
                    program.nodes.push(Node::Rule(Rule {
                        pattern: program.patterns.len() - 1,
                        negated: p.negated,
                        template,
                        line: number,
                    }));
                }
            }
        }
        // Innermost first, as Postfix reports them.
        let after = program.nodes.len();
        while let Some((index, line)) = open.pop() {
            warnings.push(Warning::new(file, line, "IF has no matching ENDIF"));
            if let Node::If { end, .. } = &mut program.nodes[index] {
                *end = after;
            }
        }
        (program, warnings)
    }

    /// Compiles one rule, checking in Postfix's order: flags, result
    /// syntax, `$n` in a negated rule, the pattern, the group numbers.
    fn rule<S: PatternSyntax<Pattern = P>>(
        syntax: &mut S,
        p: PatternText<'_>,
        result: &[u8],
        notes: &mut Vec<String>,
    ) -> Result<(P, Template), String> {
        let flags = syntax.flags(p.flags, notes)?;
        if result.is_empty() {
            notes.push("no replacement text: using empty string".to_string());
        }
        let template = Template::parse(result)?;
        if p.negated && template.max_group() > 0 {
            return Err(
                "$number found in negative match replacement text: skipping this rule".to_string(),
            );
        }
        let pattern = syntax.compile(p.pattern, flags)?;
        if template.max_group() > S::groups(&pattern) {
            return Err(format!(
                "out of range replacement index \"{}\": skipping this rule",
                template.max_group()
            ));
        }
        Ok((pattern, template))
    }

    /// The number of rules (not counting `if` conditions).
    pub(crate) fn rule_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n, Node::Rule(_)))
            .count()
    }

    /// The first rule that applies, in file order, given which patterns
    /// match.
    pub(crate) fn first_rule<E>(
        &self,
        mut matches: impl FnMut(usize) -> Result<bool, E>,
    ) -> Result<Option<&Rule>, E> {
        let mut i = 0;
        while let Some(node) = self.nodes.get(i) {
            match node {
                Node::If {
                    pattern,
                    negated,
                    end,
                } => {
                    if matches(*pattern)? != *negated {
                        i += 1;
                    } else {
                        i = *end;
                    }
                }
                Node::Rule(rule) => {
                    if matches(rule.pattern)? != rule.negated {
                        return Ok(Some(rule));
                    }
                    i += 1;
                }
            }
        }
        Ok(None)
    }
}

/// Turns an expanded result into the lookup's value: Postfix refuses
/// values that are not UTF-8 when `smtputf8_enable` is on, and Rust
/// strings cannot hold them at all.
pub(crate) fn utf8_value<'a>(
    value: Vec<u8>,
    key: &str,
    file: &str,
    line: usize,
) -> LookupResult<'a> {
    match String::from_utf8(value) {
        Ok(s) => Ok(Some(Cow::Owned(s))),
        Err(e) => Err(MapError::config(
            format!("{file}, line {line}"),
            format!(
                "key \"{key}\": non-UTF-8 value \"{}\": malformed UTF-8 or invalid codepoint",
                shown(e.as_bytes())
            ),
        )),
    }
}

/// POSIX regular expressions as glibc's `regcomp`/`regexec` read and
/// match them in the C locale, which is what Postfix's `regexp:` tables
/// use on Linux: byte-oriented, extended or basic syntax with the GNU
/// extensions (`\w`, `\b`, `\<`, back-references...).
mod posix {
    use std::fmt::Write as _;

    use super::{MAX_BACKREF_STEPS, MAX_MATCH_MEMORY_BITS, MAX_NESTING, MAX_PROGRAM_LEN};

    /// glibc's `RE_DUP_MAX`: the largest count in `{m,n}`.
    const DUP_MAX: u32 = 0x7fff;

    /// Longest name inside `[:...:]`, `[=...=]` or `[. ... .]`, as glibc
    /// reads it.
    const MAX_BRACKET_NAME: usize = 31;

    // glibc's messages, which Postfix prints for a bad pattern.
    const EBRACK: &str = "Unmatched [, [^, [:, [., or [=";
    const EPAREN: &str = "Unmatched ( or \\(";
    const EBRACE: &str = "Unmatched \\{";
    const BADBR: &str = "Invalid content of \\{\\}";
    const ERANGE: &str = "Invalid range end";
    const ECTYPE: &str = "Invalid character class name";
    const ECOLLATE: &str = "Invalid collation character";
    const EESCAPE: &str = "Trailing backslash";
    const ESUBREG: &str = "Invalid back reference";
    const BADRPT: &str = "Invalid preceding regular expression";
    const ESIZE: &str = "Regular expression too big";

    /// The `regcomp` flags a rule's flag letters give.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Syntax {
        /// `REG_ICASE`.
        pub(super) icase: bool,
        /// `REG_EXTENDED`.
        pub(super) extended: bool,
        /// `REG_NEWLINE`.
        pub(super) newline: bool,
    }

    /// A set of bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct ByteSet([u64; 4]);

    impl ByteSet {
        const EMPTY: ByteSet = ByteSet([0; 4]);

        fn insert(&mut self, b: u8) {
            self.0[usize::from(b >> 6)] |= 1 << (b & 63);
        }

        fn insert_range(&mut self, lo: u8, hi: u8) {
            for b in lo..=hi {
                self.insert(b);
            }
        }

        fn contains(&self, b: u8) -> bool {
            self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
        }

        fn complement(self) -> ByteSet {
            ByteSet(self.0.map(|w| !w))
        }

        fn remove(&mut self, b: u8) {
            self.0[usize::from(b >> 6)] &= !(1 << (b & 63));
        }

        fn from_fn(f: impl Fn(u8) -> bool) -> ByteSet {
            let mut s = ByteSet::EMPTY;
            for b in 0..=255u8 {
                if f(b) {
                    s.insert(b);
                }
            }
            s
        }

        /// The set as a `regex` crate class of bytes.
        fn write_class(&self, out: &mut String) {
            let mut ranges = Vec::new();
            let mut b = 0u16;
            while b < 256 {
                if self.contains(b as u8) {
                    let lo = b;
                    while b + 1 < 256 && self.contains((b + 1) as u8) {
                        b += 1;
                    }
                    ranges.push((lo as u8, b as u8));
                }
                b += 1;
            }
            match ranges.as_slice() {
                [] => out.push_str(r"[^\x00-\xFF]"),
                [(lo, hi)] if lo == hi => {
                    let _ = write!(out, r"\x{lo:02X}");
                }
                _ => {
                    out.push('[');
                    for (lo, hi) in ranges {
                        if lo == hi {
                            let _ = write!(out, r"\x{lo:02X}");
                        } else {
                            let _ = write!(out, r"\x{lo:02X}-\x{hi:02X}");
                        }
                    }
                    out.push(']');
                }
            }
        }
    }

    fn is_word(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'_'
    }

    /// A character class of the C locale.
    fn class(name: &[u8]) -> Option<fn(u8) -> bool> {
        Some(match name {
            b"alpha" => |b: u8| b.is_ascii_alphabetic(),
            b"upper" => |b: u8| b.is_ascii_uppercase(),
            b"lower" => |b: u8| b.is_ascii_lowercase(),
            b"digit" => |b: u8| b.is_ascii_digit(),
            b"xdigit" => |b: u8| b.is_ascii_hexdigit(),
            b"alnum" => |b: u8| b.is_ascii_alphanumeric(),
            b"space" => |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c),
            b"blank" => |b: u8| matches!(b, b' ' | b'\t'),
            b"punct" => |b: u8| b.is_ascii_punctuation(),
            b"print" => |b: u8| (0x20..0x7f).contains(&b),
            b"graph" => |b: u8| b.is_ascii_graphic(),
            b"cntrl" => |b: u8| b.is_ascii_control(),
            _ => return None,
        })
    }

    /// Zero-width assertions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Assertion {
        /// `^`: the start, or after a newline with `REG_NEWLINE`.
        LineStart,
        /// `$`: the end, or before a newline with `REG_NEWLINE`.
        LineEnd,
        /// `\``.
        TextStart,
        /// `\'`.
        TextEnd,
        /// `\b`.
        WordBoundary,
        /// `\B`.
        NotWordBoundary,
        /// `\<`.
        WordStart,
        /// `\>`.
        WordEnd,
    }

    #[derive(Debug)]
    enum Ast {
        Empty,
        Bytes(ByteSet),
        Assert(Assertion),
        Group(usize, Box<Ast>),
        Concat(Vec<Ast>),
        Alternate(Vec<Ast>),
        Repeat(Box<Ast>, u32, Option<u32>),
        Backref(usize),
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Token {
        End,
        Bytes(ByteSet),
        Assert(Assertion),
        Open,
        Close,
        Alternate,
        Star,
        Plus,
        Question,
        OpenBrace,
        Backref(usize),
    }

    struct Parser<'a> {
        re: &'a [u8],
        pos: usize,
        syntax: Syntax,
        groups: usize,
        /// Groups closed so far, as back-references may name them
        /// (bit n for group n, up to 9).
        completed: u16,
        has_backrefs: bool,
        /// Whether the last token opened a group or an alternative: in
        /// basic syntax `^` is an anchor only there and at the start.
        after_open: bool,
    }

    /// What a bracket expression item is.
    enum Item {
        Byte(u8),
        Collating(u8),
        Equivalence(u8),
        Class(fn(u8) -> bool),
    }

    impl Parser<'_> {
        fn upper(&self, b: u8) -> u8 {
            if self.syntax.icase {
                b.to_ascii_uppercase()
            } else {
                b
            }
        }

        /// The bytes that match literal byte `b`.
        fn literal(&self, b: u8) -> ByteSet {
            if self.syntax.icase {
                let u = b.to_ascii_uppercase();
                ByteSet::from_fn(|c| c.to_ascii_uppercase() == u)
            } else {
                let mut s = ByteSet::EMPTY;
                s.insert(b);
                s
            }
        }

        fn dot(&self) -> ByteSet {
            let mut s = ByteSet::EMPTY.complement();
            // glibc's dot never matches NUL (keys cannot hold one anyway).
            s.remove(0);
            if self.syntax.newline {
                s.remove(b'\n');
            }
            s
        }

        /// Reads the token at the current position, returning it and its
        /// length. Brackets are read whole here.
        fn peek(&self) -> Result<(Token, usize), &'static str> {
            let re = self.re;
            let Some(&c) = re.get(self.pos) else {
                return Ok((Token::End, 0));
            };
            let ere = self.syntax.extended;
            let tok = match c {
                b'\\' => {
                    let Some(&d) = re.get(self.pos + 1) else {
                        return Err(EESCAPE);
                    };
                    let tok = match d {
                        b'1'..=b'9' => Token::Backref(usize::from(d - b'0')),
                        b'<' => Token::Assert(Assertion::WordStart),
                        b'>' => Token::Assert(Assertion::WordEnd),
                        b'b' => Token::Assert(Assertion::WordBoundary),
                        b'B' => Token::Assert(Assertion::NotWordBoundary),
                        b'`' => Token::Assert(Assertion::TextStart),
                        b'\'' => Token::Assert(Assertion::TextEnd),
                        b'w' => Token::Bytes(ByteSet::from_fn(is_word)),
                        b'W' => Token::Bytes(ByteSet::from_fn(|b| !is_word(b))),
                        b's' => {
                            Token::Bytes(ByteSet::from_fn(|b| b.is_ascii_whitespace() || b == 0x0b))
                        }
                        b'S' => Token::Bytes(ByteSet::from_fn(|b| {
                            !(b.is_ascii_whitespace() || b == 0x0b)
                        })),
                        b'(' if !ere => Token::Open,
                        b')' if !ere => Token::Close,
                        b'|' if !ere => Token::Alternate,
                        b'{' if !ere => Token::OpenBrace,
                        b'+' if !ere => Token::Plus,
                        b'?' if !ere => Token::Question,
                        _ => Token::Bytes(self.literal(d)),
                    };
                    return Ok((tok, 2));
                }
                b'[' => {
                    let (set, len) = self.bracket()?;
                    return Ok((Token::Bytes(set), len));
                }
                b'.' => Token::Bytes(self.dot()),
                b'*' => Token::Star,
                b'(' if ere => Token::Open,
                b')' if ere => Token::Close,
                b'|' if ere => Token::Alternate,
                b'+' if ere => Token::Plus,
                b'?' if ere => Token::Question,
                b'{' if ere => Token::OpenBrace,
                b'^' if ere || self.pos == 0 || self.after_open => {
                    Token::Assert(Assertion::LineStart)
                }
                b'$' if ere || {
                    let rest = &re[self.pos + 1..];
                    rest.is_empty() || rest.starts_with(b"\\)") || rest.starts_with(b"\\|")
                } =>
                {
                    Token::Assert(Assertion::LineEnd)
                }
                _ => Token::Bytes(self.literal(c)),
            };
            Ok((tok, 1))
        }

        fn advance(&mut self, tok: Token, len: usize) {
            self.pos += len;
            self.after_open = matches!(tok, Token::Open | Token::Alternate);
        }

        /// Reads a bracket expression at the current position (a `[`).
        fn bracket(&self) -> Result<(ByteSet, usize), &'static str> {
            let re = self.re;
            let mut i = self.pos + 1;
            let negated = re.get(i) == Some(&b'^');
            if negated {
                i += 1;
            }
            let mut set = ByteSet::EMPTY;
            let mut first = true;
            loop {
                let Some(&c) = re.get(i) else {
                    return Err(EBRACK);
                };
                if c == b']' && !first {
                    i += 1;
                    break;
                }
                let was_first = first;
                first = false;
                let (start, len) = Self::bracket_item(re, i, self.syntax.icase)?;
                i += len;
                // A `-` followed by anything but the closing `]` makes a
                // range.
                let range = re.get(i) == Some(&b'-') && re.get(i + 1).is_some_and(|&b| b != b']');
                if range {
                    i += 1;
                    let (end, len) = Self::bracket_item(re, i, self.syntax.icase)?;
                    i += len;
                    let lo = match start {
                        Item::Byte(b) | Item::Collating(b) => self.upper(b),
                        _ => return Err(ERANGE),
                    };
                    let hi = match end {
                        Item::Byte(b) | Item::Collating(b) => self.upper(b),
                        _ => return Err(ERANGE),
                    };
                    if lo > hi {
                        return Err(ERANGE);
                    }
                    set.insert_range(lo, hi);
                    continue;
                }
                match start {
                    Item::Byte(b'-') if !was_first && re.get(i) != Some(&b']') => {
                        return Err(ERANGE);
                    }
                    Item::Byte(b) | Item::Collating(b) | Item::Equivalence(b) => {
                        set.insert(self.upper(b));
                    }
                    Item::Class(f) => {
                        for b in 0..=255u8 {
                            if f(b) {
                                set.insert(b);
                            }
                        }
                    }
                }
            }
            // Case-insensitive brackets compare the upper-case form of
            // the key's byte with upper-cased items (glibc's way: `[`-~]`
            // then does not match `a`).
            let icase = self.syntax.icase;
            let member = |b: u8| {
                let b = if icase { b.to_ascii_uppercase() } else { b };
                set.contains(b) != negated
            };
            let mut result = ByteSet::from_fn(member);
            if negated && self.syntax.newline {
                result.remove(b'\n');
            }
            Ok((result, i - self.pos))
        }

        /// Reads one item of a bracket expression at `i`.
        fn bracket_item(re: &[u8], i: usize, icase: bool) -> Result<(Item, usize), &'static str> {
            let c = re[i];
            if c == b'['
                && let Some(&kind @ (b':' | b'.' | b'=')) = re.get(i + 1)
            {
                let name_start = i + 2;
                let mut j = name_start;
                loop {
                    if j >= re.len() || j - name_start > MAX_BRACKET_NAME {
                        return Err(EBRACK);
                    }
                    if re[j] == kind && re.get(j + 1) == Some(&b']') {
                        break;
                    }
                    j += 1;
                }
                let name = &re[name_start..j];
                let len = j + 2 - i;
                let item = match kind {
                    b':' => {
                        // glibc takes `upper` and `lower` as `alpha` when
                        // ignoring case.
                        let name = match name {
                            b"upper" | b"lower" if icase => b"alpha".as_slice(),
                            other => other,
                        };
                        Item::Class(class(name).ok_or(ECTYPE)?)
                    }
                    b'.' => match name {
                        [b] => Item::Collating(*b),
                        _ => return Err(ECOLLATE),
                    },
                    _ => match name {
                        [b] => Item::Equivalence(*b),
                        _ => return Err(ECOLLATE),
                    },
                };
                return Ok((item, len));
            }
            Ok((Item::Byte(c), 1))
        }

        /// alternatives: branch ( `|` branch )*
        fn alternation(&mut self, depth: usize) -> Result<(Ast, usize), &'static str> {
            let initial = self.completed;
            let (first, mut deepest) = self.branch(depth)?;
            let mut branches = vec![first];
            loop {
                let (tok, len) = self.peek()?;
                if tok != Token::Alternate {
                    break;
                }
                self.advance(tok, len);
                // A back-reference may not name a group of an earlier
                // alternative; afterwards, any group closed in any
                // alternative counts.
                let accumulated = self.completed;
                self.completed = initial;
                let (branch, d) = self.branch(depth)?;
                self.completed |= accumulated;
                deepest = deepest.max(d);
                branches.push(branch);
            }
            if branches.len() == 1 {
                Ok((branches.pop().unwrap_or(Ast::Empty), deepest))
            } else {
                Ok((Ast::Alternate(branches), deepest + 1))
            }
        }

        /// branch: expression*
        fn branch(&mut self, depth: usize) -> Result<(Ast, usize), &'static str> {
            let mut items = Vec::new();
            let mut deepest = 0;
            loop {
                let (tok, _) = self.peek()?;
                match tok {
                    Token::End | Token::Alternate => break,
                    Token::Close if depth > 0 => break,
                    _ => {}
                }
                let (item, d) = self.expression(depth)?;
                deepest = deepest.max(d);
                items.push(item);
            }
            Ok(match items.len() {
                0 => (Ast::Empty, 0),
                1 => (items.pop().unwrap_or(Ast::Empty), deepest),
                _ => (Ast::Concat(items), deepest + 1),
            })
        }

        /// expression: atom followed by any number of repetitions
        fn expression(&mut self, depth: usize) -> Result<(Ast, usize), &'static str> {
            let (tok, len) = self.peek()?;
            let ere = self.syntax.extended;
            let (mut atom, mut d) = match tok {
                Token::Bytes(set) => {
                    self.advance(tok, len);
                    (Ast::Bytes(set), 1)
                }
                Token::Assert(a) => {
                    // Nothing may repeat an anchor: a repetition after one
                    // starts a new expression (an error, or a literal `*`
                    // in basic syntax).
                    self.advance(tok, len);
                    return Ok((Ast::Assert(a), 1));
                }
                Token::Open => {
                    self.advance(tok, len);
                    if depth >= MAX_NESTING {
                        return Err(ESIZE);
                    }
                    self.groups += 1;
                    let index = self.groups;
                    let (inner, d) = if self.peek()?.0 == Token::Close {
                        (Ast::Empty, 0)
                    } else {
                        self.alternation(depth + 1)?
                    };
                    let (close, len) = self.peek()?;
                    if close != Token::Close {
                        return Err(EPAREN);
                    }
                    self.advance(close, len);
                    if index <= 9 {
                        self.completed |= 1 << index;
                    }
                    (Ast::Group(index, Box::new(inner)), d + 1)
                }
                Token::Close => {
                    // Only reached outside any group.
                    if !ere {
                        return Err(EPAREN);
                    }
                    self.advance(tok, len);
                    (Ast::Bytes(self.literal(b')')), 1)
                }
                Token::Backref(n) => {
                    if self.completed & (1 << n) == 0 {
                        return Err(ESUBREG);
                    }
                    self.advance(tok, len);
                    self.has_backrefs = true;
                    (Ast::Backref(n), 1)
                }
                Token::Star | Token::Plus | Token::Question if !ere => {
                    // Basic syntax: a repetition with nothing before it is
                    // an ordinary character.
                    let c = match tok {
                        Token::Star => b'*',
                        Token::Plus => b'+',
                        _ => b'?',
                    };
                    self.advance(tok, len);
                    (Ast::Bytes(self.literal(c)), 1)
                }
                Token::Star | Token::Plus | Token::Question | Token::OpenBrace => {
                    return Err(BADRPT);
                }
                Token::End | Token::Alternate => (Ast::Empty, 0),
            };
            let mut repeated = false;
            loop {
                let (tok, len) = self.peek()?;
                // Basic syntax refuses `*` and `\{` right after another
                // repetition (glibc's RE_CONTEXT_INVALID_DUP); `\+` and
                // `\?` are accepted there.
                if repeated && !ere && matches!(tok, Token::Star | Token::OpenBrace) {
                    return Err(BADRPT);
                }
                repeated = true;
                let (min, max) = match tok {
                    Token::Star => (0, None),
                    Token::Plus => (1, None),
                    Token::Question => (0, Some(1)),
                    Token::OpenBrace => {
                        self.advance(tok, len);
                        self.interval()?
                    }
                    _ => break,
                };
                if tok != Token::OpenBrace {
                    self.advance(tok, len);
                }
                d += 1;
                if d > MAX_NESTING {
                    return Err(ESIZE);
                }
                atom = Ast::Repeat(Box::new(atom), min, max);
            }
            Ok((atom, d))
        }

        /// Reads `m,n}` (or `m,n\}` in basic syntax) after the opening
        /// brace.
        fn interval(&mut self) -> Result<(u32, Option<u32>), &'static str> {
            let re = self.re;
            let ere = self.syntax.extended;
            let mut numbers: [Option<u32>; 2] = [None, None];
            let mut comma = false;
            let mut bad = false;
            loop {
                let Some(&c) = re.get(self.pos) else {
                    return Err(EBRACE);
                };
                if ere && c == b'}' {
                    self.pos += 1;
                    break;
                }
                if !ere && c == b'\\' && re.get(self.pos + 1) == Some(&b'}') {
                    self.pos += 2;
                    break;
                }
                self.pos += if c == b'\\' { 2 } else { 1 };
                match c {
                    b'0'..=b'9' => {
                        let slot = &mut numbers[usize::from(comma)];
                        let n = slot.unwrap_or(0);
                        *slot = Some((n * 10 + u32::from(c - b'0')).min(DUP_MAX + 1));
                    }
                    b',' if !comma => comma = true,
                    _ => bad = true,
                }
            }
            self.after_open = false;
            if bad || (numbers[0].is_none() && !comma) {
                return Err(BADBR);
            }
            let min = numbers[0].unwrap_or(0);
            let max = if comma { numbers[1] } else { Some(min) };
            if min > DUP_MAX || max.is_some_and(|m| m > DUP_MAX) {
                return Err(ESIZE);
            }
            if max.is_some_and(|m| m < min) {
                return Err(BADBR);
            }
            Ok((min, max))
        }
    }

    /// One instruction of a compiled pattern.
    #[derive(Debug, Clone, Copy)]
    enum Inst {
        /// One byte from the set with this index.
        Bytes(u32),
        /// Try the first target, then the second.
        Split(u32, u32),
        Jump(u32),
        /// Group n starts here.
        Open(u32),
        /// Group n ends here; `true` when glibc marks this copy of the
        /// group optional (see [`Regs::close`]).
        Close(u32, bool),
        Assert(Assertion),
        /// Match the text of group n again.
        Backref(u32),
        Match,
    }

    /// A compiled POSIX regular expression.
    #[derive(Debug)]
    pub(super) struct Regex {
        program: Vec<Inst>,
        sets: Vec<ByteSet>,
        groups: usize,
        has_backrefs: bool,
        icase: bool,
        newline: bool,
        /// The same pattern in the `regex` crate's syntax (bytes, no
        /// Unicode), when it has one (not with back-references).
        translated: Option<String>,
        /// For each instruction, its place in an order where each comes
        /// after every instruction it reaches without consuming a byte,
        /// when no such way loops (see [`epsilon_order`]).
        rank: Option<Vec<u32>>,
    }

    /// Orders the program so that every instruction follows all those it
    /// reaches without consuming a byte (through splits, jumps, group
    /// marks and assertions). The table of viable pairs is then filled
    /// for one position in one pass in this order, instead of passing
    /// over the program until nothing changes. `None` when such ways
    /// form a loop (a repetition of something that can match nothing,
    /// as in `(a*)*`): those patterns keep the repeated passes.
    fn epsilon_order(program: &[Inst]) -> Option<Vec<u32>> {
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let successors = |pc: usize| -> [Option<u32>; 2] {
            match program[pc] {
                Inst::Split(a, b) => [Some(a), Some(b)],
                Inst::Jump(to) => [Some(to), None],
                Inst::Open(_) | Inst::Close(..) | Inst::Assert(_) => [Some(pc as u32 + 1), None],
                Inst::Bytes(_) | Inst::Backref(_) | Inst::Match => [None, None],
            }
        };
        let mut state = vec![NEW; program.len()];
        let mut order = Vec::with_capacity(program.len());
        let mut stack: Vec<(u32, usize)> = Vec::new();
        for root in 0..program.len() {
            if state[root] != NEW {
                continue;
            }
            state[root] = OPEN;
            stack.push((root as u32, 0));
            while let Some(&mut (pc, ref mut next)) = stack.last_mut() {
                let succ = successors(pc as usize);
                if let Some(&Some(to)) = succ.get(*next) {
                    *next += 1;
                    match state[to as usize] {
                        NEW => {
                            state[to as usize] = OPEN;
                            stack.push((to, 0));
                        }
                        OPEN => return None,
                        _ => {}
                    }
                } else {
                    state[pc as usize] = DONE;
                    order.push(pc);
                    stack.pop();
                }
            }
        }
        Some(order)
    }

    /// Where the whole match (index 0) and each group matched, `None` for
    /// a group that took no part.
    pub(super) type Spans = Vec<Option<(usize, usize)>>;

    /// The error a compile gives: glibc's message for the problem.
    pub(super) type CompileError = &'static str;

    /// Why a match could not be completed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum MatchError {
        /// The step budget of a pattern with back-references ran out.
        TooManySteps,
        /// The key is too long for this pattern's matcher memory.
        TooLarge,
    }

    impl Regex {
        /// Compiles `re` as `regcomp` would with the given flags.
        pub(super) fn new(re: &[u8], syntax: Syntax) -> Result<Regex, CompileError> {
            let mut parser = Parser {
                re,
                pos: 0,
                syntax,
                groups: 0,
                completed: 0,
                has_backrefs: false,
                after_open: false,
            };
            let (ast, _) = parser.alternation(0)?;
            // Extended syntax takes an unmatched `)` as a character, so
            // only basic syntax can stop early.
            if parser.pos < re.len() {
                return Err(EPAREN);
            }
            let mut compiler = Compiler {
                program: Vec::new(),
                sets: Vec::new(),
            };
            compiler.emit(&ast, Copy::Original)?;
            compiler.push(Inst::Match)?;
            let translated = if parser.has_backrefs {
                None
            } else {
                let mut s = String::new();
                translate(&ast, syntax.newline, &mut s);
                Some(s)
            };
            let rank = epsilon_order(&compiler.program).map(|order| {
                let mut rank = vec![0u32; order.len()];
                for (i, &pc) in order.iter().enumerate() {
                    rank[pc as usize] = i as u32;
                }
                rank
            });
            Ok(Regex {
                rank,
                program: compiler.program,
                sets: compiler.sets,
                groups: parser.groups,
                has_backrefs: parser.has_backrefs,
                icase: syntax.icase,
                newline: syntax.newline,
                translated,
            })
        }

        /// The number of capturing groups.
        pub(super) fn groups(&self) -> usize {
            self.groups
        }

        /// The pattern in the `regex` crate's syntax, if it has one.
        pub(super) fn translated(&self) -> Option<&str> {
            self.translated.as_deref()
        }

        /// Whether the pattern matches anywhere in `hay`.
        pub(super) fn is_match(&self, hay: &[u8]) -> Result<bool, MatchError> {
            let mut m = Matcher::new(self, hay)?;
            Ok(m.leftmost_start()?.is_some())
        }

        /// The spans of the whole match (index 0) and of each group, as
        /// glibc's `regexec` reports them; `None` when there is no match.
        pub(super) fn captures(&self, hay: &[u8]) -> Result<Option<Spans>, MatchError> {
            Matcher::new(self, hay)?.captures()
        }
    }

    /// Which copy of a repeated part is being compiled, which decides the
    /// groups glibc marks optional: it expands `x{m,n}` into copies of
    /// `x`, marks the group that is `x` itself optional in the first
    /// optional copy only, and its copies of a part lose such marks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Copy {
        /// The part as parsed: its own marks hold.
        Original,
        /// A duplicate: no group in it is marked.
        Duplicate,
        /// The first optional copy of a repetition of a group: that
        /// group is marked, and the rest is `Original` or `Duplicate` as
        /// the inner value says.
        Marked(bool),
    }

    struct Compiler {
        program: Vec<Inst>,
        sets: Vec<ByteSet>,
    }

    impl Compiler {
        fn push(&mut self, inst: Inst) -> Result<u32, CompileError> {
            if self.program.len() >= MAX_PROGRAM_LEN {
                return Err(ESIZE);
            }
            self.program.push(inst);
            Ok((self.program.len() - 1) as u32)
        }

        fn here(&self) -> u32 {
            self.program.len() as u32
        }

        fn patch(&mut self, at: u32, inst: Inst) {
            self.program[at as usize] = inst;
        }

        fn emit(&mut self, ast: &Ast, copy: Copy) -> Result<(), CompileError> {
            // Marks apply to the repeated group itself, not to what is
            // inside it.
            let (marked, inner_copy) = match copy {
                Copy::Marked(duplicate) => (
                    true,
                    if duplicate {
                        Copy::Duplicate
                    } else {
                        Copy::Original
                    },
                ),
                other => (false, other),
            };
            match ast {
                Ast::Empty => {}
                Ast::Bytes(set) => {
                    let index = match self.sets.iter().position(|s| s == set) {
                        Some(i) => i,
                        None => {
                            self.sets.push(*set);
                            self.sets.len() - 1
                        }
                    };
                    self.push(Inst::Bytes(index as u32))?;
                }
                Ast::Assert(a) => {
                    self.push(Inst::Assert(*a))?;
                }
                Ast::Backref(n) => {
                    self.push(Inst::Backref(*n as u32))?;
                }
                Ast::Group(n, inner) => {
                    self.push(Inst::Open(*n as u32))?;
                    self.emit(inner, inner_copy)?;
                    self.push(Inst::Close(*n as u32, marked))?;
                }
                Ast::Concat(items) => {
                    for item in items {
                        self.emit(item, inner_copy)?;
                    }
                }
                Ast::Alternate(branches) => {
                    // split L1, next; L1: a; jump end; next: split L2, ...
                    let mut jumps = Vec::new();
                    for (i, branch) in branches.iter().enumerate() {
                        if i + 1 < branches.len() {
                            let split = self.push(Inst::Split(0, 0))?;
                            self.emit(branch, inner_copy)?;
                            jumps.push(self.push(Inst::Jump(0))?);
                            let next = self.here();
                            self.patch(split, Inst::Split(split + 1, next));
                        } else {
                            self.emit(branch, inner_copy)?;
                        }
                    }
                    let end = self.here();
                    for j in jumps {
                        self.patch(j, Inst::Jump(end));
                    }
                }
                Ast::Repeat(inner, min, max) => {
                    self.emit_repeat(inner, *min, *max, inner_copy)?;
                }
            }
            Ok(())
        }

        /// `x{min,max}` as glibc expands it: the first required copy is
        /// `x` itself, the other copies are duplicates, and the first
        /// optional copy is marked.
        fn emit_repeat(
            &mut self,
            inner: &Ast,
            min: u32,
            max: Option<u32>,
            copy: Copy,
        ) -> Result<(), CompileError> {
            let duplicate = copy == Copy::Duplicate;
            for i in 0..min {
                let c = if i == 0 { copy } else { Copy::Duplicate };
                self.emit(inner, c)?;
            }
            if max == Some(min) {
                return Ok(());
            }
            // The first optional copy is `x` itself when nothing is
            // required, a fresh duplicate otherwise; it is marked unless
            // the whole repetition is itself a duplicate.
            let first = if duplicate {
                Copy::Duplicate
            } else {
                Copy::Marked(min > 0)
            };
            match max {
                None => self.emit_loop(inner, first),
                Some(max) => {
                    // Nested optional copies: (x(x(x)?)?)?
                    let mut splits = Vec::new();
                    for i in min..max {
                        splits.push(self.push(Inst::Split(0, 0))?);
                        let c = if i == min { first } else { Copy::Duplicate };
                        self.emit(inner, c)?;
                    }
                    let exit = self.here();
                    for s in splits {
                        self.patch(s, Inst::Split(s + 1, exit));
                    }
                    Ok(())
                }
            }
        }

        /// `x*`: split body, exit; body; jump back. An iteration that
        /// matches nothing is taken once, then the loop is left: the
        /// matcher's rule for instructions passed again does that.
        fn emit_loop(&mut self, inner: &Ast, copy: Copy) -> Result<(), CompileError> {
            let head = self.push(Inst::Split(0, 0))?;
            self.emit(inner, copy)?;
            self.push(Inst::Jump(head))?;
            let exit = self.here();
            self.patch(head, Inst::Split(head + 1, exit));
            Ok(())
        }
    }

    /// Writes `ast` in the `regex` crate's syntax.
    fn translate(ast: &Ast, newline: bool, out: &mut String) {
        match ast {
            Ast::Empty => out.push_str("(?:)"),
            Ast::Bytes(set) => set.write_class(out),
            Ast::Assert(a) => out.push_str(match (a, newline) {
                (Assertion::LineStart, true) => "(?m:^)",
                (Assertion::LineStart, false) | (Assertion::TextStart, _) => r"\A",
                (Assertion::LineEnd, true) => "(?m:$)",
                (Assertion::LineEnd, false) | (Assertion::TextEnd, _) => r"\z",
                (Assertion::WordBoundary, _) => r"\b",
                (Assertion::NotWordBoundary, _) => r"\B",
                (Assertion::WordStart, _) => r"\b{start}",
                (Assertion::WordEnd, _) => r"\b{end}",
            }),
            Ast::Group(_, inner) => {
                out.push_str("(?:");
                translate(inner, newline, out);
                out.push(')');
            }
            Ast::Concat(items) => {
                for item in items {
                    translate(item, newline, out);
                }
            }
            Ast::Alternate(branches) => {
                out.push_str("(?:");
                for (i, b) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push('|');
                    }
                    translate(b, newline, out);
                }
                out.push(')');
            }
            Ast::Repeat(inner, min, max) => {
                out.push_str("(?:");
                translate(inner, newline, out);
                out.push(')');
                let _ = match max {
                    None => write!(out, "{{{min},}}"),
                    Some(max) => write!(out, "{{{min},{max}}}"),
                };
            }
            // Patterns with back-references are never translated.
            Ast::Backref(_) => out.push_str(r"[^\x00-\xFF]"),
        }
    }

    const UNSET: usize = usize::MAX;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// Stop at the first match found.
        Any,
        /// Explore every way and report the longest end.
        Longest,
        /// Stop at the first match (in order of preference) that ends
        /// exactly here; with `true`, only one that consumed a byte after
        /// its last assertion.
        Exact(usize, bool),
    }

    /// The group registers along one way through the pattern, updated as
    /// glibc's `regexec` updates them.
    struct Regs {
        now: Vec<(usize, usize)>,
        /// The registers as they were when a group last ended after
        /// matching some text.
        saved: Vec<(usize, usize)>,
    }

    impl Regs {
        fn new(groups: usize) -> Regs {
            let unset = vec![(UNSET, UNSET); groups + 1];
            Regs {
                now: unset.clone(),
                saved: unset,
            }
        }

        fn open(&mut self, g: usize, pos: usize) {
            self.now[g] = (pos, UNSET);
        }

        /// A group ends at `pos`. A group that matched some text is
        /// recorded and the registers are saved. One that matched nothing
        /// is recorded too, except in a marked (optional) copy when the
        /// group had matched before: then every register goes back to
        /// the saved state, undoing inner groups as well.
        fn close(&mut self, g: usize, pos: usize, marked: bool) {
            if self.now[g].0 < pos {
                self.now[g].1 = pos;
                self.saved.clone_from(&self.now);
            } else if marked && self.saved[g].0 != UNSET {
                self.now.clone_from(&self.saved);
            } else {
                self.now[g].1 = pos;
            }
        }

        fn spans(&self, start: usize, end: usize) -> Spans {
            let mut spans = vec![Some((start, end))];
            spans.extend(
                self.now[1..]
                    .iter()
                    .map(|&(s, e)| (s != UNSET && e != UNSET && s <= e).then_some((s, e))),
            );
            spans
        }
    }

    enum Frame {
        /// Continue at this instruction and position, with the flag "an
        /// assertion since the last byte", and the length and the start
        /// of the current part the list of passed instructions had.
        Explore(u32, usize, bool, usize, usize),
        /// Put a group register back.
        Restore(usize, (usize, usize)),
        /// Put every register back.
        RestoreAll(Box<[(usize, usize)]>, Box<[(usize, usize)]>),
    }

    /// The matcher.
    ///
    /// Where the match starts and ends comes from a backtracking search.
    /// Without back-references it remembers every (instruction,
    /// position) pair it has explored: which ways succeed from one
    /// depends only on that pair, so a second visit can only fail again,
    /// which bounds the work by the pattern's size times the key's
    /// length.
    ///
    /// The groups then come from one walk through the pattern, choosing
    /// at each fork as glibc does: the first way that can still end the
    /// match exactly where it must end, unless the first way starts at an
    /// instruction already passed since the last byte was consumed (then
    /// the second, which is how an iteration that matched nothing is
    /// taken once and the loop left). What "can still end the match" is
    /// computed beforehand, backwards from the end, for every
    /// (instruction, position) pair.
    ///
    /// With back-references what follows a pair also depends on the
    /// groups, so there is no memory and no table: a backtracking search
    /// with the same rules finds everything, under a step budget.
    struct Matcher<'r, 'h> {
        re: &'r Regex,
        hay: &'h [u8],
        visited: Option<Vec<u64>>,
        regs: Regs,
        stack: Vec<Frame>,
        /// The instructions passed on the current way (matching with
        /// back-references); those since the last byte was consumed start
        /// at `since`.
        passed: Vec<u32>,
        since: usize,
        steps: u64,
    }

    fn test_bit(bits: &[u64], bit: usize) -> bool {
        bits[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn set_bit(bits: &mut [u64], bit: usize) {
        bits[bit / 64] |= 1 << (bit % 64);
    }

    impl<'r, 'h> Matcher<'r, 'h> {
        fn new(re: &'r Regex, hay: &'h [u8]) -> Result<Matcher<'r, 'h>, MatchError> {
            let visited = if re.has_backrefs {
                None
            } else {
                Some(vec![0u64; Self::bits(re, hay.len() + 1)?.div_ceil(64)])
            };
            Ok(Matcher {
                re,
                hay,
                visited,
                regs: Regs::new(re.groups),
                stack: Vec::new(),
                passed: Vec::new(),
                since: 0,
                steps: 0,
            })
        }

        /// The bits a table over the program and `positions` needs, two
        /// per pair (with and without the assertion flag).
        fn bits(re: &Regex, positions: usize) -> Result<usize, MatchError> {
            re.program
                .len()
                .checked_mul(2 * positions)
                .filter(|&b| b <= MAX_MATCH_MEMORY_BITS)
                .ok_or(MatchError::TooLarge)
        }

        fn reset(&mut self) {
            if let Some(v) = self.visited.as_mut() {
                v.iter_mut().for_each(|w| *w = 0);
            }
            self.regs = Regs::new(self.re.groups);
        }

        /// The leftmost position where a match starts. Without
        /// back-references the memory is kept from one start to the
        /// next: a pair that failed from one start fails from all.
        fn leftmost_start(&mut self) -> Result<Option<usize>, MatchError> {
            for start in 0..=self.hay.len() {
                if self.visited.is_none() {
                    self.reset();
                }
                if self.run(start, Mode::Any)?.is_some() {
                    return Ok(Some(start));
                }
            }
            Ok(None)
        }

        /// The whole match and the groups, as `regexec` reports them.
        fn captures(&mut self) -> Result<Option<Spans>, MatchError> {
            let Some(start) = self.leftmost_start()? else {
                return Ok(None);
            };
            self.reset();
            let end = self.run(start, Mode::Longest)?.unwrap_or(start);
            // glibc ends the match on the plain final state when some way
            // reaches it, and only otherwise on one reached through an
            // assertion right before the end (`a$|(a)` gives `$1` = `a`).
            for plain in [true, false] {
                self.reset();
                let found = if self.visited.is_some() {
                    self.walk(start, end, plain)?
                } else {
                    self.run(start, Mode::Exact(end, plain))?.is_some()
                };
                if found {
                    return Ok(Some(self.regs.spans(start, end)));
                }
            }
            // Cannot happen: the longest end was reached before.
            Ok(None)
        }

        fn assertion(&self, a: Assertion, pos: usize) -> bool {
            let hay = self.hay;
            let before = pos.checked_sub(1).map(|i| hay[i]);
            let after = hay.get(pos).copied();
            let word_before = before.is_some_and(is_word);
            let word_after = after.is_some_and(is_word);
            match a {
                Assertion::LineStart => pos == 0 || (self.re.newline && before == Some(b'\n')),
                Assertion::LineEnd => pos == hay.len() || (self.re.newline && after == Some(b'\n')),
                Assertion::TextStart => pos == 0,
                Assertion::TextEnd => pos == hay.len(),
                Assertion::WordBoundary => word_before != word_after,
                Assertion::NotWordBoundary => word_before == word_after,
                Assertion::WordStart => !word_before && word_after,
                Assertion::WordEnd => word_before && !word_after,
            }
        }

        /// Whether the text of group `g` occurs again at `pos`; returns
        /// the position after it.
        fn backref(&self, g: usize, pos: usize) -> Option<usize> {
            let (s, e) = self.regs.now[g];
            if s == UNSET || e == UNSET || s > e {
                return None;
            }
            let len = e - s;
            let there = self.hay.get(pos..pos + len)?;
            let same = if self.re.icase {
                there.eq_ignore_ascii_case(&self.hay[s..e])
            } else {
                there == &self.hay[s..e]
            };
            same.then_some(pos + len)
        }

        /// For every (instruction, flag, position) from `start` to `end`:
        /// whether some way from there ends the match exactly at `end`
        /// (with `plain`, without an assertion after the last byte).
        fn viable(&self, start: usize, end: usize, plain: bool) -> Result<Vec<u64>, MatchError> {
            let program = &self.re.program;
            let len = program.len();
            let width = end - start + 1;
            let words = Self::bits(self.re, width)?.div_ceil(64);
            let index = |pc: usize, flag: bool, pos: usize| {
                ((pos - start) * 2 + usize::from(flag)) * len + pc
            };
            // Forward: the pairs reachable from the start, position by
            // position (a handful per position for most patterns). The
            // walk only ever asks about such pairs.
            let mut reached = vec![0u64; words];
            let mut nodes: Vec<(u32, bool)> = Vec::new();
            let mut bounds = Vec::with_capacity(width + 1);
            let mut seeds = vec![(0u32, false)];
            let mut next = Vec::new();
            let mut stack = Vec::new();
            for pos in start..=end {
                bounds.push(nodes.len());
                stack.append(&mut seeds);
                while let Some((pc, flag)) = stack.pop() {
                    let bit = index(pc as usize, flag, pos);
                    if test_bit(&reached, bit) {
                        continue;
                    }
                    set_bit(&mut reached, bit);
                    nodes.push((pc, flag));
                    match program[pc as usize] {
                        Inst::Bytes(set) => {
                            if pos < end && self.re.sets[set as usize].contains(self.hay[pos]) {
                                next.push((pc + 1, false));
                            }
                        }
                        Inst::Split(a, b) => {
                            stack.push((b, flag));
                            stack.push((a, flag));
                        }
                        Inst::Jump(to) => stack.push((to, flag)),
                        Inst::Open(_) | Inst::Close(..) => stack.push((pc + 1, flag)),
                        Inst::Assert(a) => {
                            if self.assertion(a, pos) {
                                stack.push((pc + 1, true));
                            }
                        }
                        Inst::Backref(_) | Inst::Match => {}
                    }
                }
                std::mem::swap(&mut seeds, &mut next);
            }
            bounds.push(nodes.len());
            // Backward: which reachable pairs can still end at `end`.
            let mut table = vec![0u64; words];
            let viable = |table: &[u64], pc: u32, flag: bool, pos: usize| {
                let at = |pc: u32, flag: bool| test_bit(table, index(pc as usize, flag, pos));
                match program[pc as usize] {
                    Inst::Bytes(set) => {
                        pos < end
                            && self.re.sets[set as usize].contains(self.hay[pos])
                            && test_bit(table, index(pc as usize + 1, false, pos + 1))
                    }
                    Inst::Split(a, b) => at(a, flag) || at(b, flag),
                    Inst::Jump(to) => at(to, flag),
                    Inst::Open(_) | Inst::Close(..) => at(pc + 1, flag),
                    // Reached through it only if the assertion held.
                    Inst::Assert(_) => at(pc + 1, true),
                    Inst::Backref(_) => false,
                    Inst::Match => pos == end && !(plain && flag),
                }
            };
            for pos in (start..=end).rev() {
                let list = &mut nodes[bounds[pos - start]..bounds[pos - start + 1]];
                if let Some(rank) = &self.re.rank {
                    // Everything a pair depends on at this position comes
                    // first: pairs with the flag (an assertion leads from
                    // "no flag" to "flag"), then in the program's epsilon
                    // order. One pass.
                    list.sort_unstable_by_key(|&(pc, flag)| (!flag, rank[pc as usize]));
                    for &(pc, flag) in list.iter() {
                        if viable(&table, pc, flag, pos) {
                            set_bit(&mut table, index(pc as usize, flag, pos));
                        }
                    }
                    continue;
                }
                // Loops without a byte: pass until nothing changes.
                loop {
                    let mut changed = false;
                    for &(pc, flag) in list.iter().rev() {
                        let bit = index(pc as usize, flag, pos);
                        if !test_bit(&table, bit) && viable(&table, pc, flag, pos) {
                            set_bit(&mut table, bit);
                            changed = true;
                        }
                    }
                    if !changed {
                        break;
                    }
                }
            }
            Ok(table)
        }

        /// Walks from `start` to `end`, choosing at each fork as glibc
        /// does, and leaves the groups in the registers. False when no
        /// way ends there.
        fn walk(&mut self, start: usize, end: usize, plain: bool) -> Result<bool, MatchError> {
            let table = self.viable(start, end, plain)?;
            let len = self.re.program.len();
            let ok = |pc: u32, flag: bool, pos: usize| {
                test_bit(
                    &table,
                    ((pos - start) * 2 + usize::from(flag)) * len + pc as usize,
                )
            };
            if !ok(0, false, start) {
                return Ok(false);
            }
            let (mut pc, mut pos, mut flag) = (0u32, start, false);
            // Instructions passed since the last byte, as a list to clear
            // and a bit set to test.
            let mut passed: Vec<u32> = Vec::new();
            let mut seen = vec![0u64; len.div_ceil(64)];
            // Every step consumes or passes an instruction, and an
            // instruction is passed at most twice per position.
            let mut budget = 2 * len * (end - start + 1) + len + 1;
            loop {
                budget = budget.checked_sub(1).ok_or(MatchError::TooLarge)?;
                let inst = self.re.program[pc as usize];
                if !matches!(inst, Inst::Bytes(_)) {
                    passed.push(pc);
                    set_bit(&mut seen, pc as usize);
                }
                match inst {
                    Inst::Bytes(_) => {
                        pc += 1;
                        pos += 1;
                        flag = false;
                        for p in passed.drain(..) {
                            seen[p as usize / 64] &= !(1 << (p % 64));
                        }
                    }
                    Inst::Split(a, b) => {
                        let (first, second) = (ok(a, flag, pos), ok(b, flag, pos));
                        pc = if first && second {
                            if test_bit(&seen, a as usize) { b } else { a }
                        } else if first {
                            a
                        } else {
                            b
                        };
                    }
                    Inst::Jump(to) => pc = to,
                    Inst::Open(g) => {
                        self.regs.open(g as usize, pos);
                        pc += 1;
                    }
                    Inst::Close(g, marked) => {
                        self.regs.close(g as usize, pos, marked);
                        pc += 1;
                    }
                    Inst::Assert(_) => {
                        flag = true;
                        pc += 1;
                    }
                    Inst::Backref(_) => return Ok(false),
                    Inst::Match => return Ok(true),
                }
            }
        }

        /// Runs a backtracking search from `start` in `mode`; returns the
        /// end of the match found (for `Longest`, the longest end).
        fn run(&mut self, start: usize, mode: Mode) -> Result<Option<usize>, MatchError> {
            let width = self.hay.len() + 1;
            let memo = self.visited.is_some();
            // Registers matter to the outcome with back-references, and
            // to the result when finding the groups.
            let track = !memo || matches!(mode, Mode::Exact(..));
            let mut best = None;
            self.stack.clear();
            self.passed.clear();
            self.since = 0;
            self.stack.push(Frame::Explore(0, start, false, 0, 0));
            while let Some(frame) = self.stack.pop() {
                let (mut pc, mut pos, mut asserted) = match frame {
                    Frame::Explore(pc, pos, asserted, passed, since) => {
                        self.passed.truncate(passed);
                        self.since = since;
                        (pc, pos, asserted)
                    }
                    Frame::Restore(g, old) => {
                        self.regs.now[g] = old;
                        continue;
                    }
                    Frame::RestoreAll(now, saved) => {
                        self.regs.now.copy_from_slice(&now);
                        self.regs.saved.copy_from_slice(&saved);
                        continue;
                    }
                };
                loop {
                    if let Some(visited) = self.visited.as_mut() {
                        let bit = pc as usize * width + pos;
                        if test_bit(visited, bit) {
                            break;
                        }
                        set_bit(visited, bit);
                    } else {
                        self.steps += 1;
                        if self.steps > MAX_BACKREF_STEPS {
                            return Err(MatchError::TooManySteps);
                        }
                        self.passed.push(pc);
                    }
                    match self.re.program[pc as usize] {
                        Inst::Bytes(set) => match self.hay.get(pos) {
                            Some(&b) if self.re.sets[set as usize].contains(b) => {
                                pc += 1;
                                pos += 1;
                                asserted = false;
                                self.since = self.passed.len();
                            }
                            _ => break,
                        },
                        Inst::Split(first, second) => {
                            // Without memory, a way back to an instruction
                            // already passed at this position takes the
                            // other branch, which also ends empty loops.
                            if !memo && self.passed[self.since..].contains(&first) {
                                pc = second;
                                continue;
                            }
                            let (passed, since) = (self.passed.len(), self.since);
                            self.stack
                                .push(Frame::Explore(second, pos, asserted, passed, since));
                            pc = first;
                        }
                        Inst::Jump(to) => pc = to,
                        Inst::Open(g) => {
                            if track {
                                let g = g as usize;
                                self.stack.push(Frame::Restore(g, self.regs.now[g]));
                                self.regs.open(g, pos);
                            }
                            pc += 1;
                        }
                        Inst::Close(g, marked) => {
                            if track {
                                self.stack.push(Frame::RestoreAll(
                                    self.regs.now.clone().into_boxed_slice(),
                                    self.regs.saved.clone().into_boxed_slice(),
                                ));
                                self.regs.close(g as usize, pos, marked);
                            }
                            pc += 1;
                        }
                        Inst::Assert(a) => {
                            if !self.assertion(a, pos) {
                                break;
                            }
                            asserted = true;
                            pc += 1;
                        }
                        Inst::Backref(g) => match self.backref(g as usize, pos) {
                            Some(next) => {
                                if next > pos {
                                    asserted = false;
                                    self.since = self.passed.len();
                                }
                                pos = next;
                                pc += 1;
                            }
                            None => break,
                        },
                        Inst::Match => match mode {
                            Mode::Any => return Ok(Some(pos)),
                            Mode::Exact(end, plain) if end == pos && !(plain && asserted) => {
                                return Ok(Some(pos));
                            }
                            Mode::Exact(..) => break,
                            Mode::Longest => {
                                if best.is_none_or(|b| pos > b) {
                                    best = Some(pos);
                                }
                                if pos == self.hay.len() {
                                    return Ok(best);
                                }
                                break;
                            }
                        },
                    }
                }
            }
            Ok(best)
        }
    }
}

/// The flag letters of `regexp:` rules and the POSIX compiler.
struct PosixSyntax;

impl PatternSyntax for PosixSyntax {
    type Flags = posix::Syntax;
    type Pattern = posix::Regex;

    fn flags(&self, letters: &[u8], _notes: &mut Vec<String>) -> Result<posix::Syntax, String> {
        let mut syntax = posix::Syntax {
            icase: true,
            extended: true,
            newline: false,
        };
        for &c in letters {
            match c {
                b'i' => syntax.icase = !syntax.icase,
                b'x' => syntax.extended = !syntax.extended,
                b'm' => syntax.newline = !syntax.newline,
                _ => {
                    return Err(format!(
                        "unknown regexp option \"{}\": skipping this rule",
                        shown(&[c])
                    ));
                }
            }
        }
        Ok(syntax)
    }

    fn compile(&mut self, pattern: &[u8], flags: posix::Syntax) -> Result<posix::Regex, String> {
        posix::Regex::new(pattern, flags).map_err(str::to_string)
    }

    fn groups(pattern: &posix::Regex) -> usize {
        pattern.groups()
    }
}

/// A `regexp:` table: an ordered list of POSIX regular expression rules,
/// read from a file in `regexp_table(5)` format.
///
/// Lookups never block. They allocate a little scratch space (the
/// `regex` crate's list of matching patterns), and the result when it has
/// `$n` to substitute; a result without is borrowed from the table. See
/// the [module documentation](self) for the exact semantics.
pub struct RegexpTable {
    name: String,
    file: String,
    program: Program<posix::Regex>,
    /// The patterns that the `regex` crate can take, in file order, a
    /// few hundred to an automaton.
    sets: Vec<RegexSet>,
    /// For each pattern, its set and its index there, or `None` when
    /// this module's own matcher must try it (back-references, or too
    /// big for a set).
    in_set: Vec<Option<(u32, u32)>>,
    /// For each node: how many plain rules (not negated) start there
    /// whose patterns follow each other in one set, so that the walk can
    /// find the first of them that matched at once.
    runs: Vec<u32>,
}

impl fmt::Debug for RegexpTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegexpTable")
            .field("name", &self.name)
            .field("rules", &self.program.rule_count())
            .field("patterns", &self.program.patterns.len())
            .field("sets", &self.sets.len())
            .finish()
    }
}

impl RegexpTable {
    /// Reads the table source file at `path`. `name` is the table as
    /// `regexp:/path`, which [`Map::name`] returns.
    ///
    /// Bad rules do not make the table fail: they are skipped and
    /// reported in the returned warnings, as Postfix logs them. Only a
    /// file that cannot be read is an error.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_maps::regexp::RegexpTable;
    /// use mta_maps::Map;
    ///
    /// let path = std::env::temp_dir().join(format!("regexp-doc-{}", std::process::id()));
    /// std::fs::write(&path, "/^postmaster@/ OK\n/[%!@].*[%!@]/ 550 Sender-specified routing rejected\n").unwrap();
    /// let name = format!("regexp:{}", path.display());
    /// let (table, warnings) = RegexpTable::open(&path, &name).unwrap();
    /// assert!(warnings.is_empty());
    /// assert_eq!(table.lookup("Postmaster@example.com").now(&name).unwrap().as_deref(), Some("OK"));
    /// assert_eq!(table.lookup("a%b@c").now(&name).unwrap().as_deref(),
    ///            Some("550 Sender-specified routing rejected"));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn open(path: &Path, name: &str) -> Result<(RegexpTable, Vec<Warning>), MapError> {
        let text = read_source(path)?;
        Ok(Self::build(&text, name, &path.display().to_string()))
    }

    /// Reads a table from `text`, as if it were the content of its file.
    /// `name` is the table as `regexp:/path`; messages name the part
    /// after `regexp:`.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_maps::regexp::RegexpTable;
    /// use mta_maps::Map;
    ///
    /// let (table, warnings) = RegexpTable::parse(
    ///     "/^(.*)@example\\.com$/ $1\n/(a/ broken\n",
    ///     "regexp:/etc/mta/virtual",
    /// );
    /// assert_eq!(warnings.len(), 1);
    /// assert_eq!(warnings[0].to_string(), "/etc/mta/virtual, line 2: Unmatched ( or \\(");
    /// assert_eq!(table.lookup("Info@Example.COM").now("t").unwrap().as_deref(), Some("Info"));
    /// ```
    pub fn parse(text: &str, name: &str) -> (RegexpTable, Vec<Warning>) {
        Self::build(text.as_bytes(), name, &file_of(name, "regexp"))
    }

    fn build(text: &[u8], name: &str, file: &str) -> (RegexpTable, Vec<Warning>) {
        let (program, warnings) = Program::parse(text, file, &mut PosixSyntax);
        let (sets, in_set) = build_sets(&program.patterns);
        // Runs of plain rules whose patterns are consecutive in one set.
        let mut runs = vec![0u32; program.nodes.len()];
        for i in (0..program.nodes.len()).rev() {
            let Node::Rule(Rule {
                pattern,
                negated: false,
                ..
            }) = &program.nodes[i]
            else {
                continue;
            };
            let Some((set, index)) = in_set[*pattern] else {
                continue;
            };
            runs[i] = 1;
            if let Some(Node::Rule(Rule {
                pattern: next,
                negated: false,
                ..
            })) = program.nodes.get(i + 1)
                && in_set[*next] == Some((set, index + 1))
            {
                runs[i] = runs[i + 1] + 1;
            }
        }
        (
            RegexpTable {
                name: name.to_string(),
                file: file.to_string(),
                program,
                sets,
                in_set,
                runs,
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

    /// Looks `key` up the slow way, as Postfix does: the rules one by
    /// one, each tried with this module's own POSIX matcher instead of
    /// the combined automata. The answer is the same as
    /// [`Map::lookup`]'s, which the fuzz target checks; a temporary error
    /// means the matcher ran out of budget on some rule.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_maps::regexp::RegexpTable;
    /// use mta_maps::Map;
    ///
    /// let (table, _) = RegexpTable::parse("!/^a/ not-a\n/(b)/ $1\n", "regexp:t");
    /// for key in ["a", "ab", "b"] {
    ///     assert_eq!(table.lookup_linear(key).unwrap(), table.lookup(key).now("t").unwrap());
    /// }
    /// ```
    pub fn lookup_linear(&self, key: &str) -> LookupResult<'_> {
        let hay = c_string(key);
        let patterns = &self.program.patterns;
        let rule = self.program.first_rule(|p| patterns[p].is_match(hay));
        let rule = match rule {
            Ok(Some(rule)) => rule,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(MapError::temporary(
                    &self.name,
                    format!("{}: matching {key:?}: {e:?}", self.file),
                ));
            }
        };
        self.answer(rule, hay, key)
    }

    /// The first rule that applies to `hay`, in file order.
    fn first_rule(&self, hay: &[u8]) -> Option<&Rule> {
        // Each set runs when the walk first needs one of its patterns (a
        // key that an early rule takes does not pay for the others), and
        // gives the indices of its patterns that match, in order.
        let mut matched: Vec<Option<Vec<u32>>> = vec![None; self.sets.len()];
        fn in_set<'m>(
            matched: &'m mut [Option<Vec<u32>>],
            sets: &[RegexSet],
            set: u32,
            hay: &[u8],
        ) -> &'m [u32] {
            matched[set as usize].get_or_insert_with(|| {
                sets[set as usize]
                    .matches(hay)
                    .iter()
                    .map(|i| i as u32)
                    .collect()
            })
        }
        let nodes = &self.program.nodes;
        let patterns = &self.program.patterns;
        let mut i = 0;
        while let Some(node) = nodes.get(i) {
            let (pattern, negated) = match node {
                Node::If {
                    pattern, negated, ..
                }
                | Node::Rule(Rule {
                    pattern, negated, ..
                }) => (*pattern, *negated),
            };
            let run = self.runs[i] as usize;
            let hit = match self.in_set[pattern] {
                Some((set, first)) if run > 1 => {
                    // A run of plain rules: the first of them whose
                    // pattern matched, found among the set's matches.
                    let found = in_set(&mut matched, &self.sets, set, hay);
                    let at = found.partition_point(|&m| m < first);
                    match found.get(at) {
                        Some(&m) if ((m - first) as usize) < run => {
                            i += (m - first) as usize;
                            true
                        }
                        _ => {
                            i += run;
                            continue;
                        }
                    }
                }
                Some((set, index)) => {
                    in_set(&mut matched, &self.sets, set, hay)
                        .binary_search(&index)
                        .is_ok()
                        != negated
                }
                // A pattern that cannot be decided in budget does not
                // match, as in Postfix when its matcher fails.
                None => patterns[pattern].is_match(hay).unwrap_or(false) != negated,
            };
            match &nodes[i] {
                Node::Rule(rule) if hit => return Some(rule),
                Node::If { end, .. } if !hit => i = *end,
                _ => i += 1,
            }
        }
        None
    }

    fn find<'a>(&'a self, key: &str) -> LookupResult<'a> {
        let hay = c_string(key);
        match self.first_rule(hay) {
            Some(rule) => self.answer(rule, hay, key),
            None => Ok(None),
        }
    }

    /// The value `rule` gives for `key` (its C-string part `hay`).
    fn answer<'a>(&'a self, rule: &'a Rule, hay: &[u8], key: &str) -> LookupResult<'a> {
        let patterns = &self.program.patterns;
        if let Some(literal) = rule.template.literal() {
            return Ok(Some(Cow::Borrowed(literal)));
        }
        let spans = match patterns[rule.pattern].captures(hay) {
            Ok(Some(spans)) => spans,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(MapError::temporary(
                    &self.name,
                    format!(
                        "{}, line {}: cannot find the groups of this rule for key \"{key}\": {e:?}",
                        self.file, rule.line
                    ),
                ));
            }
        };
        let value = rule
            .template
            .expand(hay, |n| spans.get(n).copied().flatten());
        utf8_value(value, key, &self.file, rule.line)
    }
}

/// Builds the `RegexSet`s: every pattern that has a translation, in
/// file order, [`SET_CHUNK`] to a set. Patterns a set cannot hold are
/// left to the POSIX matcher.
fn build_sets(patterns: &[posix::Regex]) -> (Vec<RegexSet>, Vec<Option<(u32, u32)>>) {
    let builder = |exprs: &[&str]| {
        RegexSetBuilder::new(exprs)
            .unicode(false)
            .size_limit(SET_SIZE_LIMIT)
            .dfa_size_limit(SET_SIZE_LIMIT)
            .nest_limit(4 * MAX_NESTING as u32 + 10)
            .build()
    };
    let mut sets = Vec::new();
    let mut in_set = vec![None; patterns.len()];
    let mut members: Vec<usize> = Vec::new();
    let flush = |members: &mut Vec<usize>,
                 sets: &mut Vec<RegexSet>,
                 in_set: &mut Vec<Option<(u32, u32)>>| {
        if members.is_empty() {
            return;
        }
        let exprs: Vec<&str> = members
            .iter()
            .filter_map(|&p| patterns[p].translated())
            .collect();
        let kept: Vec<usize> = if builder(&exprs).is_ok() {
            members.clone()
        } else {
            // Something is too big: keep the patterns that fit alone.
            members
                .iter()
                .copied()
                .filter(|&p| {
                    patterns[p]
                        .translated()
                        .is_some_and(|t| builder(&[t]).is_ok())
                })
                .collect()
        };
        let exprs: Vec<&str> = kept
            .iter()
            .filter_map(|&p| patterns[p].translated())
            .collect();
        if let Ok(set) = builder(&exprs) {
            for (i, &p) in kept.iter().enumerate() {
                in_set[p] = Some((sets.len() as u32, i as u32));
            }
            sets.push(set);
        }
        members.clear();
    };
    for (p, pattern) in patterns.iter().enumerate() {
        if pattern.translated().is_some() {
            members.push(p);
            if members.len() == SET_CHUNK {
                flush(&mut members, &mut sets, &mut in_set);
            }
        }
    }
    flush(&mut members, &mut sets, &mut in_set);
    (sets, in_set)
}

impl Map for RegexpTable {
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

    fn table(text: &str) -> (RegexpTable, Vec<String>) {
        let (t, w) = RegexpTable::parse(text, "regexp:/etc/mta/t");
        (t, w.iter().map(ToString::to_string).collect())
    }

    fn get(t: &RegexpTable, key: &str) -> Option<String> {
        t.lookup(key)
            .now(t.name())
            .expect("lookup")
            .map(Cow::into_owned)
    }

    #[track_caller]
    fn check(text: &str, cases: &[(&str, Option<&str>)]) {
        let (t, w) = table(text);
        for (key, want) in cases {
            assert_eq!(
                get(&t, key).as_deref(),
                *want,
                "key {key:?} in\n{text}\nwarnings {w:?}"
            );
        }
    }

    #[test]
    fn manual_access_map_example() {
        let text = "\
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
";
        let (t, w) = table(text);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(t.len(), 3);
        assert_eq!(t.key_kind(), KeyKind::Pattern);
        check(
            text,
            &[
                (
                    "a%b@example.com",
                    Some("550 Sender-specified routing rejected"),
                ),
                ("POSTMASTER@example.com", Some("OK")),
                (
                    "list-outgoing@example.com",
                    Some("550 Use list@example.com instead"),
                ),
                ("owner-list-outgoing@example.com", None),
                ("user@example.com", None),
            ],
        );
    }

    #[test]
    fn manual_header_and_body_examples() {
        check(
            "/^Subject: make money fast/     REJECT\n/^To: friend@public\\.com/       REJECT\n",
            &[
                ("Subject: Make Money Fast!!!", Some("REJECT")),
                ("To: friend@public.com", Some("REJECT")),
                ("To: friend@publicXcom", None),
            ],
        );
        let body = "~^[[:alnum:]+/]{60,}$~          OK\n";
        check(
            body,
            &[
                (&"QUJD".repeat(16), Some("OK")),
                ("short", None),
                (&"ab cd".repeat(20), None),
            ],
        );
    }

    #[test]
    fn flags_toggle_case_extended_and_newline() {
        check(
            "/^abc$/ insensitive\n",
            &[("ABC", Some("insensitive")), ("abc", Some("insensitive"))],
        );
        check(
            "/^abc$/i sensitive\n",
            &[("ABC", None), ("abc", Some("sensitive"))],
        );
        check("/^abc$/ii twice\n", &[("ABC", Some("twice"))]);
        // `x` off: basic syntax, where `+` is a character and `\+` repeats.
        check(
            "/^a+b$/x basic\n/^c\\+d$/x basic2\n/^(e)\\(f\\)$/x groups-$1\n",
            &[
                ("a+b", Some("basic")),
                ("aab", None),
                ("cccd", Some("basic2")),
                ("(e)f", Some("groups-f")),
            ],
        );
        // `m`: `^`/`$` at line breaks; `.` and `[^...]` stop at them.
        check("/^b$/m line\n", &[("a\nb", Some("line")), ("ab", None)]);
        check("/^b$/ whole\n", &[("a\nb", None)]);
        check("/a.b/ dot\n", &[("a\nb", Some("dot"))]);
        check("/a.b/m dot\n", &[("a\nb", None)]);
        check(
            "/a[^x]b/m class\n",
            &[("a\nb", None), ("a-b", Some("class"))],
        );
        check("/a/q unknown\n", &[("a", None)]);
        let (_, w) = table("/a/q unknown\n/a/x/ slash\n");
        assert_eq!(
            w,
            [
                "/etc/mta/t, line 1: unknown regexp option \"q\": skipping this rule",
                "/etc/mta/t, line 2: unknown regexp option \"/\": skipping this rule"
            ]
        );
    }

    #[test]
    fn negation_and_nested_if_blocks() {
        let text = "\
if /@example\\.com$/
if !/^postmaster@/
/^(abuse|spam)@/ 550 no
/^([a-z]+)@/ user $1
endif
/^postmaster@/ pm
endif
!/@/ local
!!/^x/ double negation
! ! /^y/ spaced
IF /^z/
/z/ upper-case keywords
ENDIF
";
        check(
            text,
            &[
                ("abuse@example.com", Some("550 no")),
                ("joe@example.com", Some("user joe")),
                ("Joe@Example.COM", Some("user Joe")),
                ("postmaster@example.com", Some("pm")),
                ("x@other", Some("double negation")),
                ("y@other", Some("spaced")),
                ("z@other", Some("upper-case keywords")),
                ("bare", Some("local")),
                ("joe@other", None),
            ],
        );
    }

    #[test]
    fn if_endif_mistakes_are_reported_and_survived() {
        let (t, w) = table("endif\nif /a/ extra\n/a/ in\nendif junk\nif /b/\nif /c/\n/c/ deep\n");
        assert_eq!(
            w,
            [
                "/etc/mta/t, line 1: ignoring ENDIF without matching IF",
                "/etc/mta/t, line 2: ignoring extra text after IF statement: \"extra\"",
                "/etc/mta/t, line 2: do not prepend whitespace to statements between IF and ENDIF",
                "/etc/mta/t, line 4: ignoring extra text after ENDIF",
                "/etc/mta/t, line 6: IF has no matching ENDIF",
                "/etc/mta/t, line 5: IF has no matching ENDIF",
            ]
        );
        assert_eq!(get(&t, "a").as_deref(), Some("in"));
        assert_eq!(get(&t, "c").as_deref(), None);
        assert_eq!(get(&t, "bc").as_deref(), Some("deep"));
        // An `if` whose pattern is bad is dropped whole: its rules apply
        // to every key, and its `endif` has no `if`.
        let (t, w) = table("if /a(/\n/b/ x\nendif\n");
        assert_eq!(
            w,
            [
                "/etc/mta/t, line 1: Unmatched ( or \\(",
                "/etc/mta/t, line 3: ignoring ENDIF without matching IF",
            ]
        );
        assert_eq!(get(&t, "b").as_deref(), Some("x"));
    }

    #[test]
    fn statements_and_delimiters() {
        check(
            "|a/b| pipe\n#c# comment line\n,x\\,y, escaped $$\n\"q\" quote\n",
            &[
                ("a/b", Some("pipe")),
                ("x,y", Some("escaped $")),
                ("q", Some("quote")),
            ],
        );
        // The backslash stays: `\.` is a literal dot.
        check(".a\\.b. dot\n", &[("a.b", Some("dot")), ("axb", None)]);
        let (_, w) = table("1a1 x\n\\a\\ x\n{a} x\n!\nif\n");
        assert_eq!(
            w,
            [
                "/etc/mta/t, line 1: ignoring unrecognized request",
                "/etc/mta/t, line 2: no closing regexp delimiter \"\\\": skipping this rule",
                "/etc/mta/t, line 3: no closing regexp delimiter \"{\": skipping this rule",
                "/etc/mta/t, line 4: no regexp: skipping this rule",
                "/etc/mta/t, line 5: no regexp: skipping this rule",
            ]
        );
        // After `!`, any character delimits, letters too.
        check("!1a1 not-a\n", &[("b", Some("not-a")), ("a", None)]);
    }

    #[test]
    fn logical_lines_join_and_skip() {
        let text = "/a/ x  \n\t   cont\t  \n# comment inside\n\n   more  \n/b/\n y\n";
        check(
            text,
            &[("a", Some("x  \t   cont\t     more")), ("b", Some("y"))],
        );
        let (t, w) = table("  /a/ x\n  /b/ y\n/c/ z\n");
        assert_eq!(
            w,
            ["/etc/mta/t, line 1: logical line must not start with whitespace: \"  /a/ x  /b/ y\""]
        );
        assert_eq!(get(&t, "a"), None);
        assert_eq!(get(&t, "c").as_deref(), Some("z"));
        // CRLF files: the CR is trailing white space.
        check("/a/ x\r\n/b/\r\n", &[("a", Some("x")), ("b", Some(""))]);
        let (_, w) = table("/b/\n");
        assert_eq!(
            w,
            ["/etc/mta/t, line 1: no replacement text: using empty string"]
        );
        let long = format!("/a/ {}\n/b/ ok\n", "x".repeat(MAX_LINE_LEN));
        let (t, w) = table(&long);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(get(&t, "b").as_deref(), Some("ok"));
    }

    #[test]
    fn substitutions() {
        check(
            "/^(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)/ $1 ${2} $(3) $10 ${12} $$ $1-$2. $$1\n",
            &[("abcdefghijklmn", Some("a b c j l $ a-b. $1"))],
        );
        // A group that did not take part gives nothing.
        check(
            "/^(a)|(b)$/ [$1][$2]\n",
            &[("b", Some("[][b]")), ("a", Some("[a][]"))],
        );
        let (_, w) = table(
            "/(a)/ $0\n/(a)/ ${1\n/(a)/ $1x\n/(a)/ x$\n/(a)/ $2\n!/(a)/ $1\n/(a)/ ${ 1}\n/(a)/ $(1}\n",
        );
        assert_eq!(
            w,
            [
                "/etc/mta/t, line 1: out-of-range replacement index \"0\": bad replacement syntax: skipping this rule",
                "/etc/mta/t, line 2: truncated macro reference: \"${1\": bad replacement syntax: skipping this rule",
                "/etc/mta/t, line 3: non-numeric replacement index \"1x\": bad replacement syntax: skipping this rule",
                "/etc/mta/t, line 4: empty macro name: \"x$\": bad replacement syntax: skipping this rule",
                "/etc/mta/t, line 5: out of range replacement index \"2\": skipping this rule",
                "/etc/mta/t, line 6: $number found in negative match replacement text: skipping this rule",
                "/etc/mta/t, line 7: non-numeric replacement index \" 1\": bad replacement syntax: skipping this rule",
                "/etc/mta/t, line 8: truncated macro reference: \"$(1}\": bad replacement syntax: skipping this rule",
            ]
        );
        // `$1` followed by a character that cannot be in a name.
        check("/(b)/ $1-$1.$1é\n", &[("b", Some("b-b.bé"))]);
    }

    #[test]
    fn posix_leftmost_longest_groups() {
        // Observed with glibc through Postfix's postmap.
        check(
            "/^(a|ab)(c|bcd)(d*)$/ $1,$2,$3\n",
            &[("abcd", Some("a,bcd,"))],
        );
        check("/^x*(xy)?/ [$1]\n", &[("xxy", Some("[xy]"))]);
        check(
            "/(a|ab)(b*)/ $1,$2\n",
            &[("ab", Some("a,b")), ("abb", Some("a,bb"))],
        );
        check(
            "/^((a)|b)*$/ $1,$2\n",
            &[("ab", Some("b,a")), ("ba", Some("a,a"))],
        );
        check("/^(a?)*$/ [$1]\n", &[("aa", Some("[a]"))]);
        check("/^(a{0,2})(a*)$/ $1,$2\n", &[("aaa", Some("aa,a"))]);
        // A branch whose match ends with an assertion loses to one that
        // does not.
        check("/a$|(a)/ [$1]\n", &[("a", Some("[a]"))]);
        check("/^a|(a)/ [$1]\n", &[("a", Some("[]"))]);
        check("/(a)(x*)|(a)$/ $1,$2,$3\n", &[("a", Some("a,,"))]);
        // Empty iterations: glibc's rules for optional copies of groups.
        check("/(a*)*{2}/ [$1]\n", &[("aa", Some("[]"))]);
        check("/(a*)*{1}/ [$1]\n", &[("aa", Some("[aa]"))]);
        check("/((a*)+)*/ [$1|$2]\n", &[("aa", Some("[aa|aa]"))]);
        check("/(a*){1,2}/ [$1]\n", &[("A", Some("[A]"))]);
        // Back-references, which the `regex` crate lacks.
        check(
            "/^(.)\\1$/ double $1\n",
            &[("aA", Some("double a")), ("ab", None)],
        );
        check("/^\\(a\\)\\1$/x basic\n", &[("aa", Some("basic"))]);
    }

    #[test]
    fn posix_syntax_details() {
        // Case-insensitive brackets compare upper-case forms.
        check(
            "/^[`-~]$/ m\n",
            &[("a", None), ("A", None), ("{", Some("m"))],
        );
        check(
            "/^[a-Z]$/ m\n",
            &[("q", Some("m")), ("Q", Some("m")), ("_", None)],
        );
        check("/^[[:lower:]]$/ m\n", &[("B", Some("m"))]);
        check("/^[[:lower:]]$/i m\n", &[("B", None), ("b", Some("m"))]);
        check("/^[]a-]+$/ m\n", &[("]-a", Some("m"))]);
        check("/^[\\]+$/ m\n", &[("\\\\", Some("m"))]);
        check("/^[[.-.][=a=]]+$/ m\n", &[("-a-", Some("m")), ("b", None)]);
        check("/a{,2}b{2}c{1,}/ m\n", &[("bbc", Some("m")), ("bc", None)]);
        check("/^a)$/ m\n", &[("a)", Some("m"))]);
        check(
            "/\\<ab\\> \\bx\\B/ m\n",
            &[("ab xy", Some("m")), ("ab x", None)],
        );
        check("/\\`a\\'/ m\n", &[("a", Some("m"))]);
        check("/\\w\\W\\s\\S/ m\n", &[("a- b", Some("m"))]);
        check("/^a^b$/ m\n", &[("a^b", None)]);
        check("/^a^b$/x m\n", &[("a^b", Some("m"))]);
        check("/^\\(^a\\)$/x m\n", &[("a", Some("m"))]);
        check("/^*a/x m\n", &[("*a", Some("m"))]);
        // C-locale bytes: `.` is one byte, É is not é.
        check("/^..$/ two\n", &[("é", Some("two"))]);
        check("/^é$/ m\n", &[("É", None), ("é", Some("m"))]);
        // Keys are C strings to Postfix.
        check("/^a$/ m\n", &[("a\0b", Some("m"))]);
        let errors = [
            ("a(", "Unmatched ( or \\("),
            ("a{", "Unmatched \\{"),
            ("a{1x}", "Invalid content of \\{\\}"),
            ("a{2,1}", "Invalid content of \\{\\}"),
            ("a{32768}", "Regular expression too big"),
            ("*a", "Invalid preceding regular expression"),
            ("a|*b", "Invalid preceding regular expression"),
            ("^*", "Invalid preceding regular expression"),
            ("[a", "Unmatched [, [^, [:, [., or [="),
            ("[[:foo:]]", "Invalid character class name"),
            ("[z-a]", "Invalid range end"),
            ("[_-c]", "Invalid range end"),
            ("[a-z-9]", "Invalid range end"),
            ("[[.ab.]]", "Invalid collation character"),
            ("\\1", "Invalid back reference"),
            ("(a)|\\1", "Invalid back reference"),
        ];
        for (pattern, message) in errors {
            let (_, w) = table(&format!("/{pattern}/ x\n"));
            assert_eq!(w, [format!("/etc/mta/t, line 1: {message}")], "{pattern}");
        }
        for (pattern, message) in [
            ("a\\)", "Unmatched ( or \\("),
            ("a*\\{2\\}", "Invalid preceding regular expression"),
            ("a\\{1,2}", "Unmatched \\{"),
        ] {
            let (_, w) = table(&format!("/{pattern}/x x\n"));
            assert_eq!(w, [format!("/etc/mta/t, line 1: {message}")], "{pattern}");
        }
        for fine in [
            "a**", "a+*", "()", "a|", "(|a)", "[]a]", "a{,}", "x{2}{3}", "\\{",
        ] {
            let (_, w) = table(&format!("/{fine}/ x\n"));
            assert!(w.is_empty(), "{fine}: {w:?}");
        }
    }

    #[test]
    fn values_that_are_not_utf8_are_errors() {
        let (t, _) = table("/^(.)/ $1\n");
        let err = t.lookup("é").now("t").unwrap_err();
        assert!(!err.is_temporary());
        assert!(err.to_string().contains("line 1"), "{err}");
        assert_eq!(get(&t, "ab").as_deref(), Some("a"));
    }

    #[test]
    fn open_reads_files_and_names_them() {
        let dir = std::env::temp_dir().join(format!("mta-regexp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("table");
        std::fs::write(&path, b"/a(/ x\n/\xe9/ latin1\n/b/ y\n").unwrap();
        let name = format!("regexp:{}", path.display());
        let (t, w) = RegexpTable::open(&path, &name).unwrap();
        assert_eq!(t.name(), name);
        assert_eq!(w[0].file, path.display().to_string());
        assert_eq!(w[0].line, Some(1));
        assert_eq!(get(&t, "b").as_deref(), Some("y"));
        assert!(RegexpTable::open(&dir.join("missing"), "regexp:missing").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn many_rules_keep_file_order() {
        // More rules than one set holds, with conditions and negations
        // across set boundaries.
        let mut text = String::new();
        for i in 0..3 * SET_CHUNK {
            text.push_str(&format!("/^k{i}$/ v{i}\n"));
            if i % 97 == 0 {
                text.push_str(&format!("if !/^k{i}x/\n!/^k/ not-k{i}\nendif\n"));
            }
        }
        text.push_str("/(.)$/ last $1\n");
        let (t, w) = table(&text);
        assert!(w.is_empty());
        for i in [
            0,
            1,
            SET_CHUNK - 1,
            SET_CHUNK,
            2 * SET_CHUNK + 1,
            3 * SET_CHUNK - 1,
        ] {
            assert_eq!(get(&t, &format!("k{i}")), Some(format!("v{i}")));
        }
        assert_eq!(get(&t, "zzz").as_deref(), Some("not-k0"));
        assert_eq!(get(&t, "k0x").as_deref(), Some("last x"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_table_text_parses_and_answers(text in "[ -~\t\n!/|()\\[\\]{}*+?.^$\\\\]{0,200}", key in "[ -~]{0,20}") {
            let (t, w) = RegexpTable::parse(&text, "regexp:/p");
            for w in &w {
                prop_assert!(w.to_string().starts_with("/p"));
            }
            let _ = t.lookup(&key).now("p");
            let _ = t.lookup("").now("p");
        }

        #[test]
        fn walk_over_sets_agrees_with_rule_by_rule(
            lines in prop::collection::vec((
                prop::sample::select(vec!["", "!", "if ", "if !", "endif", "!!"]),
                prop::collection::vec(prop::sample::select(vec![
                    "a", "b", ".", "^", "$", "|", "*", "(", ")", "[ab]", "\\b", "(a|ab)", "\\(b\\)\\1",
                ]), 0..5).prop_map(|v| v.concat()),
                prop::sample::select(vec!["", "i", "x", "m"]),
                prop::sample::select(vec!["r", "[$1]", "$$", ""]),
            ), 0..40),
            keys in prop::collection::vec("[abAB .]{0,6}", 1..8),
        ) {
            let mut text = String::new();
            for (i, (lead, pattern, flags, result)) in lines.iter().enumerate() {
                if *lead == "endif" {
                    text.push_str("endif\n");
                } else if lead.starts_with("if") {
                    text.push_str(&format!("{lead}/{pattern}/{flags}\n"));
                } else {
                    text.push_str(&format!("{lead}/{pattern}/{flags} {i}{result}\n"));
                }
            }
            let (t, _) = RegexpTable::parse(&text, "regexp:/p");
            for key in &keys {
                let fast = t.lookup(key).now("p");
                if let Ok(slow) = t.lookup_linear(key) {
                    prop_assert_eq!(fast, Ok(slow), "{:?} in\n{}", key, text);
                }
            }
        }

        #[test]
        fn set_and_own_matcher_agree(
            pattern in prop::collection::vec(prop::sample::select(vec![
                "a", "b", ".", "^", "$", "|", "*", "+", "?", "(", ")", "[ab]", "[^b]", "{1,2}",
                "\\b", "\\<", "\\>", "\\w", "\\(", "\\)", "\\{2\\}", "\\|", "\\B",
            ]), 1..12).prop_map(|v| v.concat()),
            flags in "[imx]{0,2}",
            key in "[abAB \n-]{0,8}",
        ) {
            let syntax = PosixSyntax.flags(flags.as_bytes(), &mut Vec::new()).unwrap();
            if let Ok(re) = posix::Regex::new(pattern.as_bytes(), syntax)
                && let Some(t) = re.translated() {
                    let set = RegexSetBuilder::new([t]).unicode(false).build().unwrap();
                    let own = re.is_match(key.as_bytes()).unwrap();
                    prop_assert_eq!(set.is_match(key.as_bytes()), own, "{} on {:?}", t, key);
                    let caps = re.captures(key.as_bytes()).unwrap();
                    prop_assert_eq!(caps.is_some(), own);
                    if let Some(caps) = caps {
                        for (s, e) in caps.into_iter().flatten() {
                            prop_assert!(s <= e && e <= key.len());
                        }
                    }
                }
        }
    }
}
