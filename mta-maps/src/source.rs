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

use std::fmt;

/// The most bytes one logical line may have.
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

/// Splits `text` into logical lines: `(first line number, text)`, with
/// continuation lines appended as they are (their leading white space
/// kept, only the line break dropped, as Postfix joins them) and comments
/// and blank lines dropped. A continuation before any line is returned on
/// its own, still indented, for the caller to warn about and skip, as
/// Postfix does.
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if let Some((_, text)) = current.as_mut() {
                if text.len() < MAX_LOGICAL_LINE {
                    text.push_str(line);
                }
                continue;
            }
            // Nothing to continue: returned as it is, starting with white
            // space, for the caller to warn about and skip.
        }
        if let Some(done) = current.take() {
            out.push(done);
        }
        current = Some((index + 1, line.to_string()));
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
    for (line, logical) in logical_lines(text) {
        if logical.starts_with(char::is_whitespace) {
            warnings.push(SourceWarning {
                path: path.to_string(),
                line,
                message: format!("logical line must not start with whitespace: \"{logical}\""),
                problem: SourceProblem::LeadingWhitespace,
            });
            continue;
        }
        match split_key_value(logical.trim()) {
            Ok((key, value)) => entries.push(SourceEntry {
                key: key.to_string(),
                value: value.to_string(),
                line,
            }),
            Err((problem, message)) => warnings.push(SourceWarning {
                path: path.to_string(),
                line,
                message,
                problem,
            }),
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
            b if b.is_ascii_whitespace() && !quoted => break,
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
    let (key, value) = (&line[..i], line[i..].trim());
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
