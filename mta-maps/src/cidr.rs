//! `cidr:` tables: IPv4 and IPv6 network patterns, as `cidr_table(5)`
//! describes them and Postfix's `postmap` reads them.
//!
//! A table is a list of rules, `pattern result`, tried in order; the first
//! pattern that matches the key gives the result. A pattern is an address
//! (`192.0.2.1`, `2001:db8::1`, either optionally in `[...]`) or a network
//! (`192.0.2.0/24`, `[2001:db8::]/32`). `!pattern` matches the addresses
//! that the pattern does not match, and `if pattern` ... `endif` (or
//! `if !pattern`) makes the rules between them apply only to keys that
//! pass the test; blocks nest. Comments, blank lines and continuation
//! lines are as in every Postfix table source.
//!
//! What Postfix does and the manual does not say, which this module
//! copies (each checked against Debian's `postmap`):
//! - A key is an address in `inet_pton` form only: a key with a leading
//!   zero in an IPv4 octet (`010.0.0.1`), with brackets, a zone (`%eth0`),
//!   a port or surrounding white space matches nothing (it is not an
//!   error). Patterns follow the same address syntax, so `010.0.0.1` is a
//!   bad pattern, whatever the manual says about octal.
//! - The two families never meet: an IPv4-mapped key `::ffff:192.0.2.1`
//!   matches IPv6 patterns such as `::ffff:192.0.2.0/120` only, never
//!   `192.0.2.0/24`, and a negated pattern (`!192.0.2.0/24`, `if
//!   !192.0.2.0/24`) matches no key of the other family.
//! - Bad rules are skipped with a warning worded as Postfix words it (a
//!   prefix with host bits set, `192.0.2.1/24`, is skipped with a
//!   suggestion, not truncated); the table is still usable. An `if` whose
//!   pattern is bad is skipped, so the rules in its block apply to every
//!   key and its `endif` is reported as an `endif` without `if`. An `if`
//!   without `endif` extends to the end of the table.
//! - `if` and `endif` are recognised in any case (`IF`, `Endif`), when the
//!   word is followed by anything but a letter or digit (`if!192.0.2.0/24`
//!   is an `if`); the pattern of an `if` is the whole rest of the line.
//!   `!` may repeat (`!!` cancels) and may be followed by white space.
//! - The prefix length is taken modulo 256, after reading it as a number
//!   that saturates at 2^63-1: `/280` is `/24`, `/024` is `/24`, and
//!   `/99999999999999999999` is 255, a bad length.
//! - White space is C's: vertical tab and form feed separate a pattern
//!   from its result and start continuation lines.
//! - One deviation, on purpose: the warning for a line that starts with
//!   white space names the line, where Postfix names only the file.
//!
//! Lookups do not scan the rules. When the table is read, each address
//! family's answers are computed for the whole address space at once and
//! kept as a sorted list of intervals, each with the result of the first
//! rule that applies to every address in it; a lookup is a binary search
//! (see [`CidrTable`] for how `!` and `if` are folded in). Tables that
//! nest more than [`MAX_INDEXED_HOLES`] negated `if` blocks are evaluated
//! rule by rule instead, as Postfix does.
//!
//! What this module does not do: the inline form `cidr:{ {rule}, ... }`
//! (the registry turns it into text for [`CidrTable::parse`]), logging
//! (warnings are returned for the caller to log), and noticing that the
//! file changed (the caller opens it again).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Bound;
use std::path::Path;

use crate::{KeyKind, Lookup, Map, MapError};

pub use crate::source::MAX_LOGICAL_LINE;
use crate::source::{
    LogicalLine, is_space, leading_space_warning, logical_lines, printable, trim_end, trim_start,
};

/// The most negated `if` blocks that may be open at once for the table to
/// be indexed. Each open `if !pattern` can split the set of addresses its
/// block applies to into one more interval, and building the index costs
/// that many interval operations per rule; a table past this depth is
/// searched rule by rule instead (correct, only slower). Real tables nest
/// one or two.
pub const MAX_INDEXED_HOLES: usize = 64;

/// A line of a table that was skipped, or another problem worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CidrWarning {
    /// The table's file, as given to [`CidrTable::parse`].
    pub file: String,
    /// The line the problem is on (the first line of a continued line).
    pub line: usize,
    /// What is wrong, in Postfix's words, without the file and line.
    pub message: String,
}

impl fmt::Display for CidrWarning {
    /// As Postfix logs it: `cidr map FILE, line N: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cidr map {}, line {}: {}",
            self.file, self.line, self.message
        )
    }
}

/// An address family. Keys and patterns of different families never
/// match each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// The family a key or pattern is read as: Postfix decides by the
    /// presence of a colon, before parsing.
    fn of(text: &str) -> Family {
        if text.contains(':') {
            Family::V6
        } else {
            Family::V4
        }
    }

    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The highest address, with addresses held in a `u128`.
    fn max(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }

    /// Parses an address of this family as `inet_pton` does (which is
    /// what std's parsers accept, too: dotted quads without leading zeros,
    /// IPv6 text with at most four hex digits a group, no zone).
    fn parse(self, text: &str) -> Option<u128> {
        match self {
            Family::V4 => text
                .parse::<Ipv4Addr>()
                .ok()
                .map(|a| u128::from(u32::from(a))),
            Family::V6 => text.parse::<Ipv6Addr>().ok().map(u128::from),
        }
    }
}

/// A network: every address from `first` to `last` of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    family: Family,
    first: u128,
    last: u128,
}

impl Network {
    /// Whether the test `[!]network` passes for `addr`: never for an
    /// address of the other family, negated or not.
    fn test(&self, negate: bool, family: Family, addr: u128) -> bool {
        family == self.family && ((self.first..=self.last).contains(&addr) != negate)
    }

    /// The addresses of `self.family` that pass the test `[!]network`, as
    /// sorted disjoint intervals.
    fn passing(&self, negate: bool) -> Vec<(u128, u128)> {
        if !negate {
            return vec![(self.first, self.last)];
        }
        let mut out = Vec::with_capacity(2);
        if self.first > 0 {
            out.push((0, self.first - 1));
        }
        if self.last < self.family.max() {
            out.push((self.last + 1, self.family.max()));
        }
        out
    }
}

/// One rule or `if` of a table, in table order. `endif` is not kept: an
/// `if` records where its block ends.
#[derive(Debug, Clone)]
enum Entry {
    /// `[!]pattern result`: `value` indexes [`CidrTable::values`].
    Rule {
        network: Network,
        negate: bool,
        value: u32,
    },
    /// `if [!]pattern`: the block is the entries up to index `end`.
    If {
        network: Network,
        negate: bool,
        end: u32,
    },
}

/// "No rule applies" in an interval index.
const NO_RULE: u32 = u32::MAX;

/// One family's answers: `results[i]` is the value index for the
/// addresses from `starts[i]` up to the next start (or [`NO_RULE`]).
/// `starts[0]` is always 0, so every address falls in some interval.
#[derive(Debug, Clone)]
struct Intervals<A> {
    starts: Vec<A>,
    results: Vec<u32>,
}

impl<A: Copy + Ord> Intervals<A> {
    fn find(&self, addr: A) -> Option<u32> {
        let after = self.starts.partition_point(|&start| start <= addr);
        let result = *self.results.get(after.checked_sub(1)?)?;
        (result != NO_RULE).then_some(result)
    }
}

/// How one family's lookups are answered.
#[derive(Debug, Clone)]
enum FamilyIndex<A> {
    /// Binary search in precomputed intervals.
    Intervals(Intervals<A>),
    /// Rule by rule (tables nesting more than [`MAX_INDEXED_HOLES`]
    /// negated `if`s).
    Scan,
}

/// A `cidr:` table, read and indexed.
///
/// Lookups cost a binary search, not a pass over the rules. When the
/// table is read, each family's address space is cut into the intervals
/// whose addresses all get the same answer: the rules are walked once in
/// table order, keeping the set of addresses that no earlier rule has
/// answered; each rule claims the part of that set that it applies to
/// (its network, or for `!network` the rest of the family) within the
/// addresses its enclosing `if` blocks let through, and what a rule
/// claims is never claimed again. That is "first match wins" computed for
/// all addresses at once. Rules and `if` blocks that no remaining address
/// can reach cost nothing; the walk stops when every address is answered.
///
/// # Example
/// ```
/// use mta_maps::cidr::CidrTable;
///
/// let table = CidrTable::parse(
///     "192.168.1.1 OK\n192.168.0.0/16 REJECT\n2001:db8::/32 REJECT\n",
///     "/etc/postfix/client.cidr",
/// );
/// assert_eq!(table.find("192.168.1.1"), Some("OK"));
/// assert_eq!(table.find("192.168.7.7"), Some("REJECT"));
/// assert_eq!(table.find("2001:db8::25"), Some("REJECT"));
/// assert_eq!(table.find("10.0.0.1"), None);
/// assert_eq!(table.find("not-an-address"), None);
/// ```
#[derive(Clone)]
pub struct CidrTable {
    name: String,
    entries: Vec<Entry>,
    values: Vec<String>,
    v4: FamilyIndex<u32>,
    v6: FamilyIndex<u128>,
    warnings: Vec<CidrWarning>,
}

impl fmt::Debug for CidrTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The index can be large; its size says enough.
        fn size<A>(index: &FamilyIndex<A>) -> Option<usize> {
            match index {
                FamilyIndex::Intervals(i) => Some(i.starts.len()),
                FamilyIndex::Scan => None,
            }
        }
        f.debug_struct("CidrTable")
            .field("name", &self.name)
            .field("entries", &self.entries.len())
            .field("v4_intervals", &size(&self.v4))
            .field("v6_intervals", &size(&self.v6))
            .field("warnings", &self.warnings.len())
            .finish()
    }
}

impl CidrTable {
    /// Reads a table from `text`; `file` names it in warnings and in
    /// [`Map::name`] (`cidr:FILE`). Bad lines are skipped and reported in
    /// [`CidrTable::warnings`], as Postfix skips them; this never fails.
    ///
    /// # Example
    /// ```
    /// use mta_maps::cidr::CidrTable;
    ///
    /// let table = CidrTable::parse(
    ///     "if !10.0.0.0/8\n0.0.0.0/0 outside\nendif\n10.1.2.3/8 typo\n",
    ///     "t.cidr",
    /// );
    /// assert_eq!(table.find("192.0.2.1"), Some("outside"));
    /// assert_eq!(table.find("10.1.2.3"), None);
    /// assert_eq!(
    ///     table.warnings()[0].to_string(),
    ///     "cidr map t.cidr, line 4: non-null host address bits in \"10.1.2.3/8\", \
    ///      perhaps you should use \"10.0.0.0/8\" instead: skipping this rule"
    /// );
    /// ```
    pub fn parse(text: &str, file: &str) -> CidrTable {
        let mut parser = Parser {
            file,
            entries: Vec::new(),
            values: Vec::new(),
            open_ifs: Vec::new(),
            warnings: Vec::new(),
        };
        for line in logical_lines(text) {
            parser.line(&line);
        }
        parser.finish()
    }

    /// Reads the table in the file at `path`. Text that is not UTF-8 is
    /// read with U+FFFD in place of the bad bytes, with a warning for each
    /// line that has some (Postfix passes such bytes through, which a
    /// `str` value cannot).
    ///
    /// # Errors
    /// [`MapError::Config`] naming the table when the file cannot be read.
    ///
    /// # Example
    /// ```
    /// use mta_maps::cidr::CidrTable;
    ///
    /// let path = std::env::temp_dir().join(format!("doc-{}.cidr", std::process::id()));
    /// std::fs::write(&path, "2001:db8::/32 REJECT\n").unwrap();
    /// let table = CidrTable::open(&path).unwrap();
    /// assert_eq!(table.find("2001:db8::1"), Some("REJECT"));
    /// std::fs::remove_file(&path).unwrap();
    /// assert!(CidrTable::open(&path).is_err());
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<CidrTable, MapError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| MapError::config(format!("cidr:{file}"), format!("open {file}: {e}")))?;
        let (text, bad_lines) = decode_lossy(&bytes);
        let mut table = CidrTable::parse(&text, &file);
        let mut warnings: Vec<CidrWarning> = bad_lines
            .into_iter()
            .map(|line| CidrWarning {
                file: file.clone(),
                line,
                message: "text is not valid UTF-8; bad bytes read as U+FFFD".to_string(),
            })
            .collect();
        warnings.append(&mut table.warnings);
        table.warnings = warnings;
        Ok(table)
    }

    /// The result for `key`, an IPv4 or IPv6 address in the text form
    /// `inet_pton` accepts; `None` when no rule matches or the key is not
    /// such an address.
    ///
    /// # Example
    /// ```
    /// use mta_maps::cidr::CidrTable;
    ///
    /// let table = CidrTable::parse("::ffff:0:0/96 mapped\n0.0.0.0/0 v4\n", "t");
    /// assert_eq!(table.find("::ffff:192.0.2.1"), Some("mapped"));
    /// assert_eq!(table.find("192.0.2.1"), Some("v4"));
    /// assert_eq!(table.find("[192.0.2.1]"), None);
    /// ```
    pub fn find(&self, key: &str) -> Option<&str> {
        let family = Family::of(key);
        let addr = family.parse(key)?;
        let value = match family {
            // An IPv4 address fits in 32 bits by construction.
            Family::V4 => match &self.v4 {
                FamilyIndex::Intervals(i) => i.find(u32::try_from(addr).ok()?),
                FamilyIndex::Scan => self.scan(family, addr),
            },
            Family::V6 => match &self.v6 {
                FamilyIndex::Intervals(i) => i.find(addr),
                FamilyIndex::Scan => self.scan(family, addr),
            },
        }?;
        self.values.get(value as usize).map(String::as_str)
    }

    /// The result for `key` found as Postfix finds it, trying the rules
    /// one by one: the same answer as [`CidrTable::find`], slowly. For
    /// tests and fuzzing, which check the index against it.
    ///
    /// # Example
    /// ```
    /// use mta_maps::cidr::CidrTable;
    ///
    /// let table = CidrTable::parse("!10.0.0.0/8 outside\n", "t");
    /// assert_eq!(table.find_linear("192.0.2.1"), table.find("192.0.2.1"));
    /// ```
    #[doc(hidden)]
    pub fn find_linear(&self, key: &str) -> Option<&str> {
        let family = Family::of(key);
        let addr = family.parse(key)?;
        let value = self.scan(family, addr)?;
        self.values.get(value as usize).map(String::as_str)
    }

    /// The problems found while reading the table, in Postfix's words,
    /// for the caller to log.
    ///
    /// # Example
    /// ```
    /// use mta_maps::cidr::CidrTable;
    ///
    /// let table = CidrTable::parse("endif\n", "t.cidr");
    /// assert_eq!(
    ///     table.warnings()[0].to_string(),
    ///     "cidr map t.cidr, line 1: ENDIF without IF: skipping this rule"
    /// );
    /// ```
    pub fn warnings(&self) -> &[CidrWarning] {
        &self.warnings
    }

    /// The rule-by-rule search Postfix does, for what is not indexed (and
    /// as the reference the index is tested against).
    fn scan(&self, family: Family, addr: u128) -> Option<u32> {
        let mut i = 0;
        while let Some(entry) = self.entries.get(i) {
            match entry {
                Entry::Rule {
                    network,
                    negate,
                    value,
                } => {
                    if network.test(*negate, family, addr) {
                        return Some(*value);
                    }
                    i += 1;
                }
                Entry::If {
                    network,
                    negate,
                    end,
                } => {
                    i = if network.test(*negate, family, addr) {
                        i + 1
                    } else {
                        *end as usize
                    };
                }
            }
        }
        None
    }
}

impl Map for CidrTable {
    fn lookup<'a>(&'a self, key: &'a str) -> Lookup<'a> {
        Lookup::ready(Ok(self.find(key).map(Cow::Borrowed)))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn key_kind(&self) -> KeyKind {
        KeyKind::Pattern
    }
}

/// Turns file bytes into text, replacing bad UTF-8; also gives the lines
/// (1-based) that had bad bytes.
pub(crate) fn decode_lossy(bytes: &[u8]) -> (Cow<'_, str>, Vec<usize>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Cow::Borrowed(text), Vec::new()),
        Err(_) => {
            let bad = bytes
                .split(|&b| b == b'\n')
                .enumerate()
                .filter(|(_, line)| std::str::from_utf8(line).is_err())
                .map(|(i, _)| i + 1)
                .collect();
            (String::from_utf8_lossy(bytes), bad)
        }
    }
}

/// Builds a table line by line.
struct Parser<'f> {
    file: &'f str,
    entries: Vec<Entry>,
    values: Vec<String>,
    /// `(index in entries, line)` of each `if` whose `endif` is to come.
    open_ifs: Vec<(usize, usize)>,
    warnings: Vec<CidrWarning>,
}

impl Parser<'_> {
    fn warn(&mut self, line: usize, message: String) {
        self.warnings.push(CidrWarning {
            file: self.file.to_string(),
            line,
            message,
        });
    }

    fn line(&mut self, logical: &LogicalLine<'_>) {
        let number = logical.number;
        if logical.too_long {
            self.warn(
                number,
                format!("line longer than {MAX_LOGICAL_LINE} bytes: skipping this rule"),
            );
            return;
        }
        let text = trim_end(&logical.text);
        if logical.starts_with_space {
            self.warn(number, leading_space_warning(&logical.text));
            return;
        }
        // The keyword is the leading run of letters and digits, so that
        // `ifx` is a pattern but `if!10.0.0.0/8` is an `if`.
        let word_end = text
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(text.len());
        let (word, rest) = text.split_at(word_end);
        if word.eq_ignore_ascii_case("if") {
            self.if_line(number, rest);
        } else if word.eq_ignore_ascii_case("endif") {
            self.endif_line(number, rest);
        } else {
            self.rule_line(number, text);
        }
    }

    fn if_line(&mut self, number: usize, rest: &str) {
        let (negate, pattern) = strip_negation(rest);
        if pattern.is_empty() {
            self.warn(number, "no address pattern: skipping this rule".to_string());
            return;
        }
        // The whole rest of the line is the pattern, spaces and all, as
        // Postfix takes it.
        match parse_pattern(pattern) {
            Ok(network) => {
                self.open_ifs.push((self.entries.len(), number));
                self.entries.push(Entry::If {
                    network,
                    negate,
                    end: 0,
                });
            }
            Err(message) => self.warn(number, format!("{message}: skipping this rule")),
        }
    }

    fn endif_line(&mut self, number: usize, rest: &str) {
        if !trim_start(rest).is_empty() {
            self.warn(
                number,
                "garbage after ENDIF: skipping this rule".to_string(),
            );
            return;
        }
        match self.open_ifs.pop() {
            Some((index, _)) => self.close_if(index),
            None => self.warn(number, "ENDIF without IF: skipping this rule".to_string()),
        }
    }

    fn close_if(&mut self, index: usize) {
        let end = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        if let Some(Entry::If { end: e, .. }) = self.entries.get_mut(index) {
            *e = end;
        }
    }

    fn rule_line(&mut self, number: usize, text: &str) {
        let (negate, rest) = strip_negation(text);
        let pattern_end = rest.find(is_space).unwrap_or(rest.len());
        let (pattern, value) = rest.split_at(pattern_end);
        if pattern.is_empty() {
            self.warn(number, "no address pattern: skipping this rule".to_string());
            return;
        }
        let network = match parse_pattern(pattern) {
            Ok(network) => network,
            Err(message) => {
                self.warn(number, format!("{message}: skipping this rule"));
                return;
            }
        };
        let value = trim_start(value);
        if value.is_empty() {
            self.warn(number, "no lookup result: skipping this rule".to_string());
            return;
        }
        let Ok(index) = u32::try_from(self.values.len()) else {
            // More rules than fit the index type: far beyond any real
            // table, and beyond what fits in memory anyway.
            self.warn(number, "too many rules: skipping this rule".to_string());
            return;
        };
        self.values.push(value.to_string());
        self.entries.push(Entry::Rule {
            network,
            negate,
            value: index,
        });
    }

    fn finish(mut self) -> CidrTable {
        // Postfix reports the innermost unclosed `if` first; each one's
        // block runs to the end of the table.
        while let Some((index, number)) = self.open_ifs.pop() {
            self.close_if(index);
            self.warn(number, "IF has no matching ENDIF".to_string());
        }
        let v4 = match build_index(&self.entries, Family::V4) {
            Some(Intervals { starts, results }) => FamilyIndex::Intervals(Intervals {
                // IPv4 intervals start within 32 bits by construction.
                starts: starts
                    .into_iter()
                    .map(|s| u32::try_from(s).unwrap_or(u32::MAX))
                    .collect(),
                results,
            }),
            None => FamilyIndex::Scan,
        };
        let v6 = match build_index(&self.entries, Family::V6) {
            Some(intervals) => FamilyIndex::Intervals(intervals),
            None => FamilyIndex::Scan,
        };
        CidrTable {
            name: format!("cidr:{}", self.file),
            entries: self.entries,
            values: self.values,
            v4,
            v6,
            warnings: self.warnings,
        }
    }
}

/// Strips leading `!`s (each one toggles) and the white space around
/// them.
fn strip_negation(text: &str) -> (bool, &str) {
    let mut negate = false;
    let mut rest = trim_start(text);
    while let Some(after) = rest.strip_prefix('!') {
        negate = !negate;
        rest = trim_start(after);
    }
    (negate, rest)
}

/// Parses a pattern: `address`, `address/len`, `[address]`,
/// `[address]/len` or `[address/len]`. The error is Postfix's message.
fn parse_pattern(pattern: &str) -> Result<Network, String> {
    let (address, mask) = if let Some(inner) = pattern.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err(format!(
                "missing ']' character after \"{}\"",
                printable(pattern)
            ));
        };
        let (address, after) = (&inner[..close], &inner[close + 1..]);
        if after.is_empty() {
            split_mask(address)
        } else if let Some(mask) = after.strip_prefix('/') {
            (address, Some(mask))
        } else {
            return Err(format!("garbage after \"[{}]\"", printable(address)));
        }
    } else {
        split_mask(pattern)
    };
    let family = Family::of(address);
    let Some(mask) = mask else {
        return match family.parse(address) {
            Some(addr) => Ok(Network {
                family,
                first: addr,
                last: addr,
            }),
            None => Err(format!("bad address pattern: \"{}\"", printable(address))),
        };
    };
    let shown = || printable(&format!("{address}/{mask}"));
    if mask.is_empty() || !mask.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad mask value in \"{}\"", shown()));
    }
    let len = prefix_length(mask);
    if len > family.bits() {
        return Err(format!("bad mask length in \"{}\"", shown()));
    }
    let Some(addr) = family.parse(address) else {
        return Err(format!("bad network value in \"{}\"", shown()));
    };
    let host_bits = host_mask(family, len);
    let first = addr & !host_bits;
    if first != addr {
        return Err(format!(
            "non-null host address bits in \"{}\", perhaps you should use \"{}/{}\" instead",
            shown(),
            format_address(family, first),
            len
        ));
    }
    Ok(Network {
        family,
        first,
        last: first | host_bits,
    })
}

/// Splits `address/len` at the first slash.
fn split_mask(text: &str) -> (&str, Option<&str>) {
    match text.split_once('/') {
        Some((address, mask)) => (address, Some(mask)),
        None => (text, None),
    }
}

/// The prefix length Postfix ends up with for a string of digits: the
/// number, saturated at `i64::MAX`, then its low byte.
fn prefix_length(digits: &str) -> u8 {
    let value = digits.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10)
            .saturating_add(u64::from(d - b'0'))
            .min(i64::MAX as u64)
    });
    // Truncation is the point: it is what Postfix does.
    (value & 0xff) as u8
}

/// The host part of a `len`-bit prefix of `family`, as a mask.
fn host_mask(family: Family, len: u8) -> u128 {
    let host = u32::from(family.bits().saturating_sub(len));
    if host >= 128 {
        u128::MAX
    } else {
        ((1u128 << host) - 1) & family.max()
    }
}

/// Formats an address as glibc's `inet_ntop` does, for the suggestion in
/// a warning: IPv6 with the longest run of two or more zero groups
/// (the first of equals) as `::`, and the last 32 bits as a dotted quad
/// for IPv4-compatible (`::192.0.2.1`) and IPv4-mapped addresses.
fn format_address(family: Family, addr: u128) -> String {
    if family == Family::V4 {
        return Ipv4Addr::from(u32::try_from(addr).unwrap_or(u32::MAX)).to_string();
    }
    let groups = Ipv6Addr::from(addr).segments();
    let (mut best, mut best_len) = (0, 0);
    let mut i = 0;
    while i < 8 {
        if groups[i] == 0 {
            let start = i;
            while i < 8 && groups[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                (best, best_len) = (start, i - start);
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_len = 0;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if best_len > 0 && i == best {
            out.push_str("::");
            i += best_len;
            continue;
        }
        if i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && groups[5] == 0xffff)) {
            let low = u32::try_from(addr & 0xffff_ffff).unwrap_or(0);
            if !out.ends_with(':') {
                out.push(':');
            }
            out.push_str(&Ipv4Addr::from(low).to_string());
            break;
        }
        if !out.is_empty() && !out.ends_with(':') {
            out.push(':');
        }
        out.push_str(&format!("{:x}", groups[i]));
        i += 1;
    }
    out
}

/// Computes one family's intervals; `None` when the table nests too many
/// negated `if` blocks to index.
fn build_index(entries: &[Entry], family: Family) -> Option<Intervals<u128>> {
    let max = family.max();
    // The addresses no rule has answered yet, as `first -> last`.
    let mut open: BTreeMap<u128, u128> = BTreeMap::from([(0, max)]);
    // Answered intervals: `(first, last, value)`.
    let mut answered: Vec<(u128, u128, u32)> = Vec::new();
    // The addresses the enclosing `if`s let through, and the saved outer
    // sets with the entry index where each block ends.
    let mut allowed: Vec<(u128, u128)> = vec![(0, max)];
    let mut outer: Vec<(usize, Vec<(u128, u128)>)> = Vec::new();
    let mut overlapping: Vec<(u128, u128)> = Vec::new();
    let mut i = 0;
    while i < entries.len() && !open.is_empty() {
        while outer.last().is_some_and(|(end, _)| *end <= i) {
            if let Some((_, saved)) = outer.pop() {
                allowed = saved;
            }
        }
        match &entries[i] {
            Entry::If {
                network,
                negate,
                end,
            } => {
                let inner = if network.family == family {
                    intersect(&allowed, &network.passing(*negate))
                } else {
                    Vec::new()
                };
                if inner.is_empty() {
                    // No address gets into the block.
                    i = (*end as usize).max(i + 1);
                    continue;
                }
                if inner.len() > MAX_INDEXED_HOLES + 1 {
                    return None;
                }
                outer.push((*end as usize, std::mem::replace(&mut allowed, inner)));
            }
            Entry::Rule {
                network,
                negate,
                value,
            } => {
                if network.family == family {
                    for (first, last) in intersect(&allowed, &network.passing(*negate)) {
                        claim(
                            &mut open,
                            &mut answered,
                            &mut overlapping,
                            first,
                            last,
                            *value,
                        );
                    }
                }
            }
        }
        i += 1;
    }
    answered.sort_unstable_by_key(|&(first, _, _)| first);
    let mut starts = Vec::with_capacity(answered.len() * 2 + 1);
    let mut results: Vec<u32> = Vec::with_capacity(answered.len() * 2 + 1);
    let mut push = |start: u128, result: u32| {
        // Neighbours with the same answer are one interval.
        if results.last() != Some(&result) {
            starts.push(start);
            results.push(result);
        }
    };
    // The next address not yet covered; `None` once past the top.
    let mut next = Some(0u128);
    for (first, last, value) in answered {
        if let Some(n) = next
            && first > n
        {
            push(n, NO_RULE);
        }
        push(first, value);
        next = last.checked_add(1).filter(|&n| n <= max);
    }
    if let Some(n) = next {
        push(n, NO_RULE);
    }
    Some(Intervals { starts, results })
}

/// Gives `value` to the still-open addresses in `first..=last`.
fn claim(
    open: &mut BTreeMap<u128, u128>,
    answered: &mut Vec<(u128, u128, u32)>,
    overlapping: &mut Vec<(u128, u128)>,
    first: u128,
    last: u128,
    value: u32,
) {
    overlapping.clear();
    if let Some((&s, &e)) = open.range(..=first).next_back()
        && e >= first
    {
        overlapping.push((s, e));
    }
    overlapping.extend(
        open.range((Bound::Excluded(first), Bound::Included(last)))
            .map(|(&s, &e)| (s, e)),
    );
    for &(s, e) in overlapping.iter() {
        open.remove(&s);
        if s < first {
            open.insert(s, first - 1);
        }
        if e > last {
            open.insert(last + 1, e);
        }
        answered.push((s.max(first), e.min(last), value));
    }
}

/// The intersection of two sorted lists of disjoint intervals.
fn intersect(a: &[(u128, u128)], b: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let first = a[i].0.max(b[j].0);
        let last = a[i].1.min(b[j].1);
        if first <= last {
            out.push((first, last));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn warnings(table: &CidrTable) -> Vec<String> {
        table.warnings().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn manual_example() {
        let t = CidrTable::parse(
            "# Rule order matters. Put more specific allowlist entries\n\
             # before more general denylist entries.\n\
             192.168.1.1             OK\n\
             192.168.0.0/16          REJECT\n\
             2001:db8::1             OK\n\
             2001:db8::/32           REJECT\n",
            "/etc/postfix/client.cidr",
        );
        assert!(t.warnings().is_empty());
        assert_eq!(t.find("192.168.1.1"), Some("OK"));
        assert_eq!(t.find("192.168.1.2"), Some("REJECT"));
        assert_eq!(t.find("192.169.0.0"), None);
        assert_eq!(t.find("2001:db8::1"), Some("OK"));
        assert_eq!(t.find("2001:0DB8:0:0::1"), Some("OK"));
        assert_eq!(t.find("2001:db8:ffff::"), Some("REJECT"));
        assert_eq!(t.find("2001:db9::"), None);
        assert_eq!(t.name(), "cidr:/etc/postfix/client.cidr");
        assert_eq!(t.key_kind(), KeyKind::Pattern);
        assert_eq!(
            t.lookup("192.168.1.1").now("t").unwrap().as_deref(),
            Some("OK")
        );
    }

    #[test]
    fn every_address_and_nothing_else() {
        let t = CidrTable::parse("0.0.0.0/0 v4\n::/0 v6\n", "t");
        for key in ["0.0.0.0", "255.255.255.255", "1.2.3.4"] {
            assert_eq!(t.find(key), Some("v4"), "{key}");
        }
        for key in [
            "::",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::1.2.3.4",
        ] {
            assert_eq!(t.find(key), Some("v6"), "{key}");
        }
        for key in [
            "",
            " 1.2.3.4",
            "1.2.3.4 ",
            "[1.2.3.4]",
            "010.0.0.1",
            "1.2.3",
            "1.2.3.4.",
            "0x1.2.3.4",
            "1.2.3.256",
            "fe80::1%eth0",
            "1::2::3",
            "12345::",
            "IPv6:::1",
            "1.2.3.4/32",
            "foo",
        ] {
            assert_eq!(t.find(key), None, "{key:?}");
        }
    }

    #[test]
    fn families_never_meet() {
        let t = CidrTable::parse("!1.2.3.0/24 not-v4-net\n!2001:db8::/32 not-v6-net\n", "t");
        assert_eq!(t.find("1.2.4.4"), Some("not-v4-net"));
        assert_eq!(t.find("1.2.3.4"), None);
        assert_eq!(t.find("::1"), Some("not-v6-net"));
        assert_eq!(t.find("2001:db8::1"), None);
        let t = CidrTable::parse("1.2.3.0/24 v4\n::ffff:1.2.3.0/120 mapped\n", "t");
        assert_eq!(t.find("::ffff:1.2.3.4"), Some("mapped"));
        assert_eq!(t.find("1.2.3.4"), Some("v4"));
        let t = CidrTable::parse("if !1.2.3.0/24\n::/0 v6\n0.0.0.0/0 v4\nendif\n", "t");
        assert_eq!(t.find("::1"), None);
        assert_eq!(t.find("9.9.9.9"), Some("v4"));
    }

    #[test]
    fn if_blocks_nest_and_negate() {
        let t = CidrTable::parse(
            "if 10.0.0.0/8\n\
             if !10.1.0.0/16\n\
             10.0.0.0/8 ten-but-not-ten-one\n\
             endif\n\
             10.1.2.3 ten-one-two-three\n\
             endif\n\
             0.0.0.0/0 rest\n",
            "t",
        );
        assert!(t.warnings().is_empty(), "{:?}", warnings(&t));
        assert_eq!(t.find("10.2.0.1"), Some("ten-but-not-ten-one"));
        assert_eq!(t.find("10.1.2.3"), Some("ten-one-two-three"));
        assert_eq!(t.find("10.1.2.4"), Some("rest"));
        assert_eq!(t.find("11.0.0.1"), Some("rest"));
    }

    #[test]
    fn keywords_and_negations_as_postfix_reads_them() {
        let t = CidrTable::parse(
            "If!1.0.0.0/8\n0.0.0.0/0 not-one\neNdIf\n!! 1.2.3.4 double\n! ! 2.2.2.2 x\n",
            "t",
        );
        assert!(t.warnings().is_empty(), "{:?}", warnings(&t));
        assert_eq!(t.find("2.2.2.2"), Some("not-one"));
        assert_eq!(t.find("1.2.3.4"), Some("double"));
        let t = CidrTable::parse("ifx y\nif_x\nendif1 z\nendif!\nif\nif 1.2.3.4 extra\n", "t");
        assert_eq!(
            warnings(&t),
            [
                "cidr map t, line 1: bad address pattern: \"ifx\": skipping this rule",
                "cidr map t, line 2: bad address pattern: \"_x\": skipping this rule",
                "cidr map t, line 3: bad address pattern: \"endif1\": skipping this rule",
                "cidr map t, line 4: garbage after ENDIF: skipping this rule",
                "cidr map t, line 5: no address pattern: skipping this rule",
                "cidr map t, line 6: bad address pattern: \"1.2.3.4 extra\": skipping this rule",
            ]
        );
    }

    #[test]
    fn bad_rules_are_skipped_with_postfix_warnings() {
        let t = CidrTable::parse(
            "10.0.0.1/8 hostbits\n\
             10.0.0.0/33 badlen\n\
             10.0.0.0 \n\
             10.0.0.0/ x\n\
             010.0.0.1 octal\n\
             [1.2.3.0/24 a\n\
             [[1.2.5.0]] c\n\
             [1.2.3.0/24]/8 d\n\
             1.2.3.0/-1 f\n\
             2001:db8::1/32 h\n\
             fe80::1%eth0 z\n\
             !\n\
             endif\n\
             if 1.2.3.0/24\n",
            "f",
        );
        assert_eq!(
            warnings(&t),
            [
                "cidr map f, line 1: non-null host address bits in \"10.0.0.1/8\", perhaps you should use \"10.0.0.0/8\" instead: skipping this rule",
                "cidr map f, line 2: bad mask length in \"10.0.0.0/33\": skipping this rule",
                "cidr map f, line 3: no lookup result: skipping this rule",
                "cidr map f, line 4: bad mask value in \"10.0.0.0/\": skipping this rule",
                "cidr map f, line 5: bad address pattern: \"010.0.0.1\": skipping this rule",
                "cidr map f, line 6: missing ']' character after \"[1.2.3.0/24\": skipping this rule",
                "cidr map f, line 7: garbage after \"[[1.2.5.0]\": skipping this rule",
                "cidr map f, line 8: bad network value in \"1.2.3.0/24/8\": skipping this rule",
                "cidr map f, line 9: bad mask value in \"1.2.3.0/-1\": skipping this rule",
                "cidr map f, line 10: non-null host address bits in \"2001:db8::1/32\", perhaps you should use \"2001:db8::/32\" instead: skipping this rule",
                "cidr map f, line 11: bad address pattern: \"fe80::1%eth0\": skipping this rule",
                "cidr map f, line 12: no address pattern: skipping this rule",
                "cidr map f, line 13: ENDIF without IF: skipping this rule",
                "cidr map f, line 14: IF has no matching ENDIF",
            ]
        );
        assert_eq!(t.find("10.0.0.1"), None);
    }

    #[test]
    fn brackets_and_odd_prefix_lengths() {
        let t = CidrTable::parse(
            "[1.2.6.0]/24 d\n[1.2.7.0/24] e\n1.2.8.0/024 f\n[2001:db8::1] g\n1.2.9.0/280 h\n::/384 i\n",
            "t",
        );
        assert!(t.warnings().is_empty(), "{:?}", warnings(&t));
        assert_eq!(t.find("1.2.6.9"), Some("d"));
        assert_eq!(t.find("1.2.7.9"), Some("e"));
        assert_eq!(t.find("1.2.8.9"), Some("f"));
        assert_eq!(t.find("2001:db8::1"), Some("g"));
        assert_eq!(t.find("1.2.9.9"), Some("h"));
        assert_eq!(t.find("::"), Some("i"));
        assert_eq!(t.find("::1"), None);
        assert_eq!(prefix_length("99999999999999999999999"), 255);
        assert_eq!(prefix_length("6442450968"), 24);
        assert_eq!(prefix_length("18446744073709551384"), 255);
    }

    #[test]
    fn continuation_lines_and_comments() {
        let t = CidrTable::parse(
            " 9.9.9.9 orphan\n\
             1.2.3.4 a\n\
             \n\
             # comment between\n\
             \x20 more\n\
             1.2.3.5\tb\x0b \r\n",
            "t",
        );
        assert_eq!(t.find("1.2.3.4"), Some("a  more"));
        assert_eq!(t.find("1.2.3.5"), Some("b"));
        assert_eq!(t.find("9.9.9.9"), None);
        assert_eq!(
            warnings(&t),
            [
                "cidr map t, line 1: logical line must not start with whitespace: \" 9.9.9.9 orphan\""
            ]
        );
    }

    #[test]
    fn suggestions_are_formatted_as_inet_ntop_does() {
        for (addr, want) in [
            ("::1.2.3.4", "::1.2.3.4"),
            ("::ffff:0.0.0.2", "::ffff:0.0.0.2"),
            ("::1:ffff:102:304", "::1:ffff:102:304"),
            ("::2", "::2"),
            ("::", "::"),
            ("0:0:1::", "0:0:1::"),
            ("1:0:0:1::", "1:0:0:1::"),
            ("2001:db8::", "2001:db8::"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("::0.1.0.0", "::0.1.0.0"),
        ] {
            let v: Ipv6Addr = addr.parse().unwrap();
            assert_eq!(format_address(Family::V6, u128::from(v)), want);
        }
    }

    #[test]
    fn deep_negated_nesting_falls_back_to_scanning() {
        let mut text = String::new();
        for i in 0..(MAX_INDEXED_HOLES + 5) {
            text.push_str(&format!("if !10.0.{}.0/24\n", 2 * i));
        }
        text.push_str("10.0.0.0/8 ten\n");
        let t = CidrTable::parse(&text, "t");
        assert!(matches!(t.v4, FamilyIndex::Scan));
        assert!(matches!(t.v6, FamilyIndex::Intervals(_)));
        assert_eq!(t.find("10.0.0.1"), None);
        assert_eq!(t.find("10.0.3.1"), Some("ten"));
        assert_eq!(t.find("10.0.2.1"), None);
    }

    #[test]
    fn file_errors_name_the_table() {
        let err = CidrTable::open("/nonexistent/x.cidr").unwrap_err();
        assert!(!err.is_temporary());
        assert!(
            err.to_string()
                .starts_with("cidr:/nonexistent/x.cidr: open /nonexistent/x.cidr: "),
            "{err}"
        );
    }

    #[test]
    fn non_utf8_files_are_read_lossily_with_a_warning() {
        let path = std::env::temp_dir().join(format!("cidr-latin1-{}.cidr", std::process::id()));
        std::fs::write(&path, b"1.2.3.4 ok\n1.2.3.5 caf\xe9\n").unwrap();
        let t = CidrTable::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(t.find("1.2.3.5"), Some("caf\u{fffd}"));
        assert_eq!(t.warnings().len(), 1);
        assert_eq!(t.warnings()[0].line, 2);
    }

    /// A random table built from a small set of networks, so that rules
    /// overlap, nest and repeat.
    fn table_text() -> impl Strategy<Value = String> {
        let network = prop_oneof![
            Just("0.0.0.0/0"),
            Just("10.0.0.0/8"),
            Just("10.1.0.0/16"),
            Just("10.1.2.0/24"),
            Just("10.1.2.3"),
            Just("10.128.0.0/9"),
            Just("192.0.2.0/24"),
            Just("255.255.255.255"),
            Just("::/0"),
            Just("2001:db8::/32"),
            Just("2001:db8::/48"),
            Just("::ffff:10.0.0.0/104"),
            Just("ffff::/16"),
            Just("::1"),
        ];
        let line = (0u8..10, any::<bool>(), network);
        proptest::collection::vec(line, 0..40).prop_map(|lines| {
            let mut text = String::new();
            for (i, (kind, negate, net)) in lines.into_iter().enumerate() {
                let bang = if negate { "!" } else { "" };
                // Every result is unique, to see which rule won.
                text.push_str(&match kind {
                    0 | 1 => format!("if {bang}{net}\n"),
                    2 | 3 => "endif\n".to_string(),
                    _ => format!("{bang}{net} r{i}\n"),
                });
            }
            text
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u32>().prop_map(|a| Ipv4Addr::from(a).to_string()),
            (0u32..4096).prop_map(|a| Ipv4Addr::from(0x0a01_0000 + a * 97).to_string()),
            Just("10.1.2.3".to_string()),
            Just("10.0.0.0".to_string()),
            Just("0.0.0.0".to_string()),
            Just("255.255.255.255".to_string()),
            any::<u128>().prop_map(|a| Ipv6Addr::from(a).to_string()),
            any::<u32>().prop_map(|a| Ipv4Addr::from(a).to_ipv6_mapped().to_string()),
            any::<u64>()
                .prop_map(|a| Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(a)).to_string()),
            Just("::".to_string()),
            Just("::1".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn index_agrees_with_rule_by_rule_search(text in table_text(), keys in proptest::collection::vec(key(), 1..30)) {
            let t = CidrTable::parse(&text, "t");
            for k in &keys {
                prop_assert_eq!(t.find(k), t.find_linear(k), "key {} in\n{}", k, text);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*", key in "\\PC*") {
            let t = CidrTable::parse(&text, "t");
            let _ = t.find(&key);
            let _ = t.find("1.2.3.4");
            let _ = t.find("::1");
        }

        #[test]
        fn rule_like_text_never_panics(lines in proptest::collection::vec("(!|if |endif|\\[)?[0-9a-f:./\\[\\]!]{0,24}( [a-z]{0,3})?", 0..20)) {
            let text = lines.join("\n");
            let t = CidrTable::parse(&text, "t");
            for k in ["1.2.3.4", "::1", "0.0.0.0", "::ffff:1.2.3.4"] {
                prop_assert_eq!(t.find(k), t.find_linear(k));
            }
        }
    }
}
