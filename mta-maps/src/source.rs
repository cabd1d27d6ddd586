//! The source format of `postmap` tables (`hash`, `texthash`): one
//! `key value` entry per logical line.
//!
//! As Postfix reads it: `#` starts a comment line, blank lines are
//! skipped, a line that starts with white space continues the previous
//! one, its leading white space kept. The key ends at the first white
//! space outside double quotes (the
//! quotes stay part of the key, a backslash escapes a quote inside them);
//! the value is the rest, trimmed, inner white space kept. A line with a
//! key and no value, or with an unbalanced quote, is warned about and
//! ignored. Duplicate keys are the caller's business ([`crate::hash`]
//! keeps the first, or the last with `postmap -r`).

use std::borrow::Cow;
use std::fmt;

/// The most bytes one logical line (a line with its continuation lines)
/// may have. Postfix has no limit; this one is far above any real entry and
/// keeps a runaway file from being joined into one huge string. A longer
/// line is skipped with a warning.
pub const MAX_LOGICAL_LINE: usize = 1 << 20;

/// One entry of a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// The key, as written (not folded).
    pub key: String,
    /// The value.
    pub value: String,
    /// The line where the entry starts.
    pub line: usize,
}

/// A line that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceWarning {
    /// The source file, for messages.
    pub path: String,
    /// The line.
    pub line: usize,
    /// What is wrong, as Postfix words it.
    pub message: String,
    /// Which problem it is.
    pub problem: SourceProblem,
}

/// The kinds of line a source parser ignores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceProblem {
    /// A key without a value. (`postmap` building a `hash` table words
    /// this without "-- ignoring this line"; `texthash` adds it.)
    ExpectedFormat,
    /// A `"` without its partner.
    UnbalancedQuote,
    /// A key seen before (only tables that report it).
    Duplicate,
    /// The file starts with an indented line, which has nothing to
    /// continue; Postfix skips it.
    LeadingWhitespace,
    /// A logical line longer than [`MAX_LOGICAL_LINE`].
    TooLong,
}

impl fmt::Display for SourceWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problem == SourceProblem::LeadingWhitespace {
            // Postfix names no line for this one.
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(f, "{}, line {}: {}", self.path, self.line, self.message)
        }
    }
}

/// White space as C's `isspace` sees it in the C locale: unlike
/// [`char::is_ascii_whitespace`], this includes vertical tab.
pub(crate) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

pub(crate) fn trim_start(text: &str) -> &str {
    text.trim_start_matches(is_space)
}

pub(crate) fn trim_end(text: &str) -> &str {
    text.trim_end_matches(is_space)
}

/// Text for a message, as Postfix prints it: every byte that is not
/// printable ASCII shown as `?`.
pub(crate) fn printable(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// The most bytes of a line that Postfix quotes when it rejects the line
/// for starting with white space; the rest is shown as `...`.
const QUOTED_LINE_BYTES: usize = 30;

/// The warning for a logical line that starts with white space, as
/// Postfix words it.
pub(crate) fn leading_space_warning(text: &str) -> String {
    let mut shown = printable(text);
    if shown.len() > QUOTED_LINE_BYTES {
        // `printable` gives one ASCII character per byte.
        shown.truncate(QUOTED_LINE_BYTES);
        shown.push_str("...");
    }
    format!("logical line must not start with whitespace: \"{shown}\"")
}

/// One logical line of a Postfix table source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogicalLine<'a> {
    /// The line number of its first line.
    pub(crate) number: usize,
    /// The text: its lines joined as they are (continuation lines keep
    /// their leading white space; only the line breaks go).
    pub(crate) text: Cow<'a, str>,
    /// Whether it starts with white space, which Postfix rejects: a
    /// continuation with nothing before it to continue.
    pub(crate) starts_with_space: bool,
    /// Whether it was cut at [`MAX_LOGICAL_LINE`] bytes.
    pub(crate) too_long: bool,
}

/// Splits a table source into logical lines as Postfix reads every table
/// source: lines that are blank or whose first non-blank character is
/// `#` are dropped wherever they are (so they do not end a logical line),
/// and a line that starts with white space continues the logical line
/// before it.
pub(crate) fn logical_lines(text: &str) -> Vec<LogicalLine<'_>> {
    let mut out: Vec<LogicalLine<'_>> = Vec::new();
    let mut current: Option<LogicalLine<'_>> = None;
    for (index, line) in text.split('\n').enumerate() {
        let content = trim_start(line);
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let continues = content.len() != line.len();
        if continues && let Some(cur) = current.as_mut() {
            if cur.too_long || cur.text.len() + line.len() > MAX_LOGICAL_LINE {
                cur.too_long = true;
            } else {
                cur.text.to_mut().push_str(line);
            }
            continue;
        }
        out.extend(current.take());
        current = Some(LogicalLine {
            number: index + 1,
            text: Cow::Borrowed(line),
            starts_with_space: continues,
            too_long: line.len() > MAX_LOGICAL_LINE,
        });
    }
    out.extend(current);
    out
}

/// Parses a source file. `path` names it in warnings.
///
/// # Example
/// ```
/// use mta_maps::source::parse;
/// let (entries, warnings) = parse("Alice@Example.COM  alice\nlonely\n\"a b\" c\n", "t");
/// assert_eq!(entries[0].key, "Alice@Example.COM");
/// assert_eq!(entries[1].key, "\"a b\"");
/// assert_eq!(warnings[0].to_string(), "t, line 2: expected format: key whitespace value");
/// ```
pub fn parse(text: &str, path: &str) -> (Vec<SourceEntry>, Vec<SourceWarning>) {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let mut warn = |line, problem, message| {
        warnings.push(SourceWarning {
            path: path.to_string(),
            line,
            message,
            problem,
        });
    };
    for logical in logical_lines(text) {
        let line = logical.number;
        if logical.too_long {
            warn(
                line,
                SourceProblem::TooLong,
                format!("line longer than {MAX_LOGICAL_LINE} bytes: skipping this entry"),
            );
            continue;
        }
        if logical.starts_with_space {
            warn(
                line,
                SourceProblem::LeadingWhitespace,
                leading_space_warning(&logical.text),
            );
            continue;
        }
        match split_key_value(trim_end(&logical.text)) {
            Ok((key, value)) => entries.push(SourceEntry {
                key: key.to_string(),
                value: value.to_string(),
                line,
            }),
            Err((problem, message)) => warn(line, problem, message),
        }
    }
    (entries, warnings)
}

/// Splits one logical line into key and value.
fn split_key_value(line: &str) -> Result<(&str, &str), (SourceProblem, String)> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if is_space(char::from(b)) && !quoted => break,
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err((
            SourceProblem::UnbalancedQuote,
            format!("unbalanced '\"' in '{line}' -- ignoring this line"),
        ));
    }
    let i = i.min(bytes.len());
    let (key, value) = (&line[..i], trim_start(trim_end(&line[i..])));
    if key.is_empty() || value.is_empty() {
        return Err((
            SourceProblem::ExpectedFormat,
            "expected format: key whitespace value".to_string(),
        ));
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected results read off Debian's postmap 3.7.11 for the same text.
    #[test]
    fn postmap_source_rules() {
        let text = "Alice@Example.COM  alice\nbob@example.com bob1\nbob@example.com bob2\n  continued value\n\
                    # comment\nnovalue\n  leading\ncarol@example.com   multi   word  value  \n\
                    \"quoted key\" q\n\"k\\\"q\" v\n\"unterminated v\n";
        let (entries, warnings) = parse(text, "t");
        let pairs: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("Alice@Example.COM", "alice"),
                ("bob@example.com", "bob1"),
                ("bob@example.com", "bob2  continued value"),
                ("novalue", "leading"),
                ("carol@example.com", "multi   word  value"),
                ("\"quoted key\"", "q"),
                ("\"k\\\"q\"", "v"),
            ]
        );
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "t, line 11: unbalanced '\"' in '\"unterminated v' -- ignoring this line"
        );
        assert_eq!(entries[3].line, 6);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[a-z \"\\\\#\t\n]{0,200}") {
            let _ = parse(&text, "fuzz");
        }
    }
}
