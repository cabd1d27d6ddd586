//! The `main.cf` file: `name = value` lines read as Postfix reads them.
//!
//! A logical line starts with non-white-space text; a physical line that
//! starts with white space continues it, even after comment lines and
//! blank lines in between. Lines whose first non-blank character is `#`
//! are comments; a `#` anywhere else is part of the value. White space
//! around `=` and at the end of a line is dropped. When a name is set
//! twice, the last setting wins and the earlier one draws a warning.
//!
//! The parsed file keeps every physical line, so that `postconf -e` can
//! change one setting and leave comments, order and layout alone.
//!
//! This module does not expand `$name` references or know which names are
//! parameters: see [`super::Config`].

use std::fmt;

use thiserror::Error;

/// The longest physical line accepted. Postfix has no fixed limit; this
/// one bounds memory on hostile input while leaving room for long lists.
pub const MAX_LINE_LENGTH: usize = 1 << 20;

/// The most physical lines accepted in one file.
pub const MAX_LINES: usize = 1 << 20;

/// A `main.cf` that cannot be used. Postfix treats each of these as fatal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MainCfError {
    /// A logical line has no `=` after the parameter name (`foo`, or
    /// `my hostname = x`). Write `name = value`.
    #[error("{path}, line {line}: missing '=' after attribute name: \"{text}\"")]
    MissingEquals {
        /// The file.
        path: String,
        /// The line where the logical line starts.
        line: usize,
        /// The logical line.
        text: String,
    },
    /// A logical line starts with `=`.
    #[error("{path}, line {line}: missing attribute name: \"{text}\"")]
    MissingName {
        /// The file.
        path: String,
        /// The line where the logical line starts.
        line: usize,
        /// The logical line.
        text: String,
    },
    /// A physical line is longer than [`MAX_LINE_LENGTH`].
    #[error("{path}, line {line}: line longer than {MAX_LINE_LENGTH} bytes")]
    LineTooLong {
        /// The file.
        path: String,
        /// The line.
        line: usize,
    },
    /// The file has more than [`MAX_LINES`] lines.
    #[error("{path}: more than {MAX_LINES} lines")]
    TooManyLines {
        /// The file.
        path: String,
    },
}

/// Something odd in a `main.cf` that Postfix reports and then ignores.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MainCfWarning {
    /// The file's first logical line starts with white space, so there is
    /// nothing for it to continue; it is ignored.
    LeadingWhitespace {
        /// The file.
        path: String,
        /// The line.
        line: usize,
        /// Its text.
        text: String,
    },
    /// A parameter set earlier in the file is set again; the later value
    /// wins.
    Overriding {
        /// The file.
        path: String,
        /// The line of the later setting.
        line: usize,
        /// The parameter.
        name: String,
        /// The earlier, overridden value.
        earlier: String,
    },
}

impl fmt::Display for MainCfWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MainCfWarning::LeadingWhitespace {
                path,
                line: _,
                text,
            } => {
                write!(
                    f,
                    "{path}: logical line must not start with whitespace: \"{text}\""
                )
            }
            MainCfWarning::Overriding {
                path,
                line,
                name,
                earlier,
            } => {
                write!(
                    f,
                    "{path}, line {line}: overriding earlier entry: {name}={earlier}"
                )
            }
        }
    }
}

/// One `name = value` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The parameter name.
    pub name: String,
    /// The value: text after `=`, with continuation lines joined by one
    /// space, trimmed at both ends. Not expanded.
    pub value: String,
    /// The 1-based line where the setting starts.
    pub line: usize,
    /// The index of the first physical line of the setting in the file.
    first: usize,
    /// One past the index of its last physical line (continuations
    /// included; comment and blank lines after it are not).
    end: usize,
}

/// A parsed `main.cf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainCf {
    path: String,
    /// The file's physical lines, without their line ends.
    lines: Vec<String>,
    /// Every setting in file order, overridden ones included.
    settings: Vec<Setting>,
}

impl MainCf {
    /// Parses the text of a `main.cf`. `path` is used in messages only.
    ///
    /// # Example
    /// ```
    /// use mta_core::config::main_cf::MainCf;
    /// let text = "# site\nmyhostname = mail.example.com\nmydestination = $myhostname,\n    localhost\n";
    /// let (cf, warnings) = MainCf::parse(text, "/etc/mta/main.cf").unwrap();
    /// assert!(warnings.is_empty());
    /// assert_eq!(cf.get("mydestination"), Some("$myhostname, localhost"));
    /// assert_eq!(cf.setting("mydestination").unwrap().line, 3);
    ///
    /// let err = MainCf::parse("foo\n", "main.cf").unwrap_err();
    /// assert_eq!(err.to_string(), "main.cf, line 1: missing '=' after attribute name: \"foo\"");
    /// ```
    pub fn parse(text: &str, path: &str) -> Result<(MainCf, Vec<MainCfWarning>), MainCfError> {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() > MAX_LINES {
            return Err(MainCfError::TooManyLines {
                path: path.to_string(),
            });
        }
        let mut warnings = Vec::new();
        let mut settings: Vec<Setting> = Vec::new();
        // The logical line being gathered: its first index, its text, and
        // one past its last non-comment physical line.
        let mut current: Option<(usize, String, usize)> = None;
        for (index, line) in lines.iter().enumerate() {
            if line.len() > MAX_LINE_LENGTH {
                return Err(MainCfError::LineTooLong {
                    path: path.to_string(),
                    line: index + 1,
                });
            }
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                match current.as_mut() {
                    Some((_, text, end)) => {
                        text.push(' ');
                        text.push_str(trimmed);
                        *end = index + 1;
                    }
                    None => warnings.push(MainCfWarning::LeadingWhitespace {
                        path: path.to_string(),
                        line: index + 1,
                        text: line.to_string(),
                    }),
                }
                continue;
            }
            if let Some(done) = current.take() {
                settings.push(split_setting(done, path)?);
            }
            current = Some((index, trimmed.to_string(), index + 1));
        }
        if let Some(done) = current.take() {
            settings.push(split_setting(done, path)?);
        }
        for (i, later) in settings.iter().enumerate() {
            if let Some(earlier) = settings[..i].iter().rev().find(|s| s.name == later.name) {
                warnings.push(MainCfWarning::Overriding {
                    path: path.to_string(),
                    line: later.line,
                    name: earlier.name.clone(),
                    earlier: earlier.value.clone(),
                });
            }
        }
        Ok((
            MainCf {
                path: path.to_string(),
                lines,
                settings,
            },
            warnings,
        ))
    }

    /// An empty file, as when `main.cf` does not exist.
    pub fn empty(path: &str) -> MainCf {
        MainCf {
            path: path.to_string(),
            lines: Vec::new(),
            settings: Vec::new(),
        }
    }

    /// The file name given to [`parse`](Self::parse).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw value of `name`, from its last setting.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.setting(name).map(|s| s.value.as_str())
    }

    /// The last setting of `name`.
    pub fn setting(&self, name: &str) -> Option<&Setting> {
        self.settings.iter().rev().find(|s| s.name == name)
    }

    /// The settings in effect, one per name (the last of each), in file
    /// order.
    pub fn settings(&self) -> impl Iterator<Item = &Setting> {
        self.settings
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                !self.settings[i + 1..]
                    .iter()
                    .any(|later| later.name == s.name)
            })
            .map(|(_, s)| s)
    }

    /// Sets `name` to `value` the way `postconf -e` does: the last
    /// existing setting is replaced in place (with its continuation lines),
    /// earlier duplicates are left alone, and a new name is appended at the
    /// end. Comments and the layout of other lines are kept.
    pub fn set(&mut self, name: &str, value: &str) {
        let new_line = format!("{name} = {value}");
        match self.settings.iter().rposition(|s| s.name == name) {
            Some(at) => {
                let (first, end) = (self.settings[at].first, self.settings[at].end);
                self.lines.splice(first..end, [new_line]);
                let removed = end - first - 1;
                let setting = &mut self.settings[at];
                setting.value = value.to_string();
                setting.end = first + 1;
                for later in &mut self.settings[at + 1..] {
                    later.first -= removed;
                    later.end -= removed;
                    later.line -= removed;
                }
            }
            None => {
                let index = self.lines.len();
                self.lines.push(new_line);
                self.settings.push(Setting {
                    name: name.to_string(),
                    value: value.to_string(),
                    line: index + 1,
                    first: index,
                    end: index + 1,
                });
            }
        }
    }

    /// The file's text, for writing back after [`set`](Self::set).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

fn split_setting(
    (first, text, end): (usize, String, usize),
    path: &str,
) -> Result<Setting, MainCfError> {
    let line = first + 1;
    let name_end = text
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(text.len());
    let name = &text[..name_end];
    if name.is_empty() {
        return Err(MainCfError::MissingName {
            path: path.to_string(),
            line,
            text,
        });
    }
    let Some(rest) = text[name_end..].trim_start().strip_prefix('=') else {
        return Err(MainCfError::MissingEquals {
            path: path.to_string(),
            line,
            text,
        });
    };
    Ok(Setting {
        name: name.to_string(),
        value: rest.trim().to_string(),
        line,
        first,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values read off Debian's postconf 3.7.11 for the same text.
    #[test]
    fn continuations_skip_comments_and_blank_lines() {
        let text = "  leading = 1\nmyhostname = x\n# comment\n  y\nmydomain = a\n\n  b\n\
                    myorigin = c\n   # indented comment\n  d\nalias_maps=\n";
        let (cf, warnings) = MainCf::parse(text, "main.cf").unwrap();
        assert_eq!(cf.get("myhostname"), Some("x y"));
        assert_eq!(cf.get("mydomain"), Some("a b"));
        assert_eq!(cf.get("myorigin"), Some("c d"));
        assert_eq!(cf.get("alias_maps"), Some(""));
        assert_eq!(cf.get("leading"), None);
        assert_eq!(
            warnings[0].to_string(),
            "main.cf: logical line must not start with whitespace: \"  leading = 1\""
        );
    }

    #[test]
    fn hash_inside_a_value_is_text_and_last_setting_wins() {
        let (cf, warnings) =
            MainCf::parse("mydomain=x.y # not a comment\nmydomain = z.w\n", "m").unwrap();
        assert_eq!(cf.get("mydomain"), Some("z.w"));
        assert_eq!(cf.settings().count(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "m, line 2: overriding earlier entry: mydomain=x.y # not a comment"
        );
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = MainCf::parse("a = 1\n=foo\n", "/etc/mta/main.cf").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/mta/main.cf, line 2: missing attribute name: \"=foo\""
        );
        let e = MainCf::parse("my hostname = x\n", "main.cf").unwrap_err();
        assert!(matches!(e, MainCfError::MissingEquals { line: 1, .. }));
    }

    #[test]
    fn set_replaces_in_place_and_keeps_comments() {
        let text = "# top\nmyhostname = old\n  continued\n# keep me\nmydomain = d\n";
        let (mut cf, _) = MainCf::parse(text, "m").unwrap();
        cf.set("myhostname", "new.example");
        cf.set("relayhost", "[smtp.example]:587");
        cf.set("mydomain", "e");
        assert_eq!(
            cf.to_text(),
            "# top\nmyhostname = new.example\n# keep me\nmydomain = e\nrelayhost = [smtp.example]:587\n"
        );
        let (again, _) = MainCf::parse(&cf.to_text(), "m").unwrap();
        assert_eq!(again.get("mydomain"), Some("e"));
        assert_eq!(again.setting("relayhost").unwrap().line, 5);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[a-z =#\t\n$]{0,200}") {
            let _ = MainCf::parse(&text, "fuzz");
        }

        #[test]
        fn set_then_parse_round_trips(value in "[a-z0-9.,$ ]{0,30}") {
            let (mut cf, _) = MainCf::parse("a = 1\n  2\nb = 3\n", "m").unwrap();
            cf.set("a", value.trim());
            let (again, _) = MainCf::parse(&cf.to_text(), "m").unwrap();
            proptest::prop_assert_eq!(again.get("a"), Some(value.trim()));
            proptest::prop_assert_eq!(again.get("b"), Some("3"));
        }
    }
}
