//! Postfix's parameter expansion: `$name`, `${name}`, `$(name)`,
//! `${name?value}`, `${name:value}`, `${name?{value1}:{value2}}`, the
//! relational expressions of Postfix 3.0 (`${{$a} == {b} ? {x} : {y}}`,
//! with `!=`, `<`, `<=`, `>`, `>=` and the compatibility-level forms
//! `<level` and friends), and `$$` for a literal `$`.
//!
//! Expansion is lazy and recursive, as in Postfix: the value of a named
//! parameter is expanded when it is substituted. The `?` and `:` forms test
//! whether the named parameter's *raw* value is empty, which is what
//! Postfix does (`u1 = $u2` with an empty `u2` still counts as non-empty).
//! A relational expression on its own yields `true` or the empty string.
//!
//! This module knows nothing of where values come from: the caller passes
//! a lookup from parameter name to raw value.

use std::cmp::Ordering;

use thiserror::Error;

/// How deep `$a` → `$b` → ... may nest before expansion gives up. A
/// loop (`a = $b`, `b = $a`) hits this limit instead of running forever;
/// Postfix reports it as "unreasonable macro call nesting".
pub const MAX_EXPANSION_DEPTH: usize = 100;

/// Why a value could not be expanded. Postfix treats every one of these
/// as fatal for the program that reads the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExpandError {
    /// `${name` or `$(name` without the closing bracket.
    #[error("truncated macro reference: \"{0}\"")]
    Truncated(String),
    /// A `$` followed by nothing that names a parameter (`a $ b`, a
    /// trailing `$`, `${}`). Write `$$` for a literal dollar sign.
    #[error("empty macro name: \"{0}\"")]
    EmptyName(String),
    /// Parameters refer to each other in a loop, or nest deeper than
    /// [`MAX_EXPANSION_DEPTH`].
    #[error("unreasonable macro call nesting: \"{0}\"")]
    TooDeep(String),
    /// The text inside `${...}` is not one of the supported forms.
    #[error("{expected} expected at: \"...{before}>>>{after}\"")]
    Syntax {
        /// What the parser wanted to see.
        expected: &'static str,
        /// The text before the point of failure.
        before: String,
        /// The text from the point of failure.
        after: String,
    },
    /// A `<level` style comparison whose operand is not a compatibility
    /// level such as `2`, `3.6` or `3.6.1`.
    #[error("malformed compatibility level syntax: \"{0}\"")]
    BadLevel(String),
}

/// Something noticed during expansion that Postfix reports as a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpandWarning {
    /// `$name` named a parameter that has no value anywhere; it expanded
    /// to the empty string.
    Undefined(String),
}

/// Expands `value`, looking up `$name` references through `lookup`, which
/// returns a parameter's raw (unexpanded) value or `None` when it is
/// undefined. Undefined names expand to nothing and are reported in
/// `warnings`.
///
/// # Example
/// ```
/// use mta_core::config::expand::expand;
/// let lookup = |name: &str| match name {
///     "myhostname" => Some("mail.example.com".to_string()),
///     "mail_name" => Some("mtad".to_string()),
///     "compatibility_level" => Some("3.6".to_string()),
///     "stress" => Some(String::new()),
///     _ => None,
/// };
/// let mut warnings = Vec::new();
/// let banner = expand("$myhostname ESMTP $mail_name", &lookup, &mut warnings).unwrap();
/// assert_eq!(banner, "mail.example.com ESMTP mtad");
/// let timeout = expand("${stress?{10}:{300}}s", &lookup, &mut warnings).unwrap();
/// assert_eq!(timeout, "300s");
/// let relay = expand("${{$compatibility_level} <level {2} ? {old} : {new}}", &lookup, &mut warnings);
/// assert_eq!(relay.unwrap(), "new");
/// assert!(warnings.is_empty());
/// ```
pub fn expand(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<ExpandWarning>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(value.len());
    let mut ctx = Context { lookup, warnings };
    ctx.expand_into(value, 0, &mut out)?;
    Ok(out)
}

/// Returns the names of the parameters that `value` refers to with `$name`,
/// `${name...}` or `$(name...)`, at any nesting inside `{...}` values,
/// without expanding anything. Postfix uses this to decide which
/// user-defined parameters are "used".
///
/// # Example
/// ```
/// use mta_core::config::expand::referenced_names;
/// let names = referenced_names("${a?{$b}:{c}} $$d $e-f ${{$g} == {x}}");
/// assert_eq!(names, ["a", "b", "e", "g"]);
/// ```
pub fn referenced_names(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    collect_names(value, &mut names);
    names
}

fn collect_names(text: &str, names: &mut Vec<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        i += 1;
        match bytes.get(i) {
            Some(b'$') => i += 1,
            Some(&open @ (b'{' | b'(')) => {
                let Some(close) = matching_close(text, i, open) else {
                    return;
                };
                let inner = text[i + 1..close].trim_start();
                let name_len = name_length(inner);
                if name_len > 0 {
                    names.push(inner[..name_len].to_string());
                }
                collect_names(&inner[name_len..], names);
                i = close + 1;
            }
            _ => {
                let len = name_length(&text[i..]);
                if len > 0 {
                    names.push(text[i..i + len].to_string());
                }
                i += len;
            }
        }
    }
}

struct Context<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    warnings: &'a mut Vec<ExpandWarning>,
}

/// The length of the parameter name at the start of `text`.
fn name_length(text: &str) -> usize {
    text.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

/// The index of the bracket that closes the one at `open_at`, counting
/// nested brackets of the same kind.
fn matching_close(text: &str, open_at: usize, open: u8) -> Option<usize> {
    let close = if open == b'{' { b'}' } else { b')' };
    let mut depth = 0usize;
    for (i, &b) in text.as_bytes().iter().enumerate().skip(open_at) {
        if b == open {
            depth += 1;
        } else if b == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// A cursor over the text inside `${...}`.
struct Cursor<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Cursor<'t> {
    fn rest(&self) -> &'t str {
        &self.text[self.pos..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn error(&self, expected: &'static str) -> ExpandError {
        ExpandError::Syntax {
            expected,
            before: self.text[..self.pos].to_string(),
            after: self.rest().to_string(),
        }
    }

    /// Reads a `{value}` and returns the text between the braces.
    fn braced(&mut self) -> Result<&'t str, ExpandError> {
        self.skip_space();
        if !self.rest().starts_with('{') {
            return Err(self.error("\"{expression}\""));
        }
        let close = matching_close(self.text, self.pos, b'{').ok_or_else(|| self.error("\"}\""))?;
        let inner = &self.text[self.pos + 1..close];
        self.pos = close + 1;
        Ok(inner)
    }
}

/// The comparison operators of relational expressions.
#[derive(Clone, Copy)]
enum Relation {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Relation {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            Relation::Eq => ord == Ordering::Equal,
            Relation::Ne => ord != Ordering::Equal,
            Relation::Lt => ord == Ordering::Less,
            Relation::Le => ord != Ordering::Greater,
            Relation::Gt => ord == Ordering::Greater,
            Relation::Ge => ord != Ordering::Less,
        }
    }
}

/// Parses a compatibility level: `N`, `N.N` or `N.N.N`.
pub fn parse_compatibility_level(text: &str) -> Option<[u32; 3]> {
    let mut parts = [0u32; 3];
    for (count, part) in text.split('.').enumerate() {
        if count == 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parts[count] = part.parse().ok()?;
    }
    Some(parts)
}

fn compare_values(left: &str, right: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if numeric(left) && numeric(right) {
        let l = left.trim_start_matches('0');
        let r = right.trim_start_matches('0');
        l.len().cmp(&r.len()).then_with(|| l.cmp(r))
    } else {
        left.cmp(right)
    }
}

impl Context<'_> {
    fn expand_into(
        &mut self,
        text: &str,
        depth: usize,
        out: &mut String,
    ) -> Result<(), ExpandError> {
        if depth > MAX_EXPANSION_DEPTH {
            return Err(ExpandError::TooDeep(text.to_string()));
        }
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let Some(offset) = text[i..].find('$') else {
                out.push_str(&text[i..]);
                break;
            };
            out.push_str(&text[i..i + offset]);
            i += offset + 1;
            match bytes.get(i) {
                Some(b'$') => {
                    out.push('$');
                    i += 1;
                }
                Some(&open @ (b'{' | b'(')) => {
                    let close = matching_close(text, i, open)
                        .ok_or_else(|| ExpandError::Truncated(text[i - 1..].to_string()))?;
                    self.braced(&text[i + 1..close], depth, out)?;
                    i = close + 1;
                }
                _ => {
                    let len = name_length(&text[i..]);
                    if len == 0 {
                        return Err(ExpandError::EmptyName(text.to_string()));
                    }
                    self.substitute(&text[i..i + len], depth, out)?;
                    i += len;
                }
            }
        }
        Ok(())
    }

    fn substitute(
        &mut self,
        name: &str,
        depth: usize,
        out: &mut String,
    ) -> Result<(), ExpandError> {
        match (self.lookup)(name) {
            Some(raw) => self.expand_into(&raw, depth + 1, out).map_err(|e| match e {
                ExpandError::TooDeep(_) => ExpandError::TooDeep(name.to_string()),
                other => other,
            }),
            None => {
                self.warnings
                    .push(ExpandWarning::Undefined(name.to_string()));
                Ok(())
            }
        }
    }

    /// Evaluates the text between `${` and `}`.
    fn braced(&mut self, inner: &str, depth: usize, out: &mut String) -> Result<(), ExpandError> {
        let mut cur = Cursor {
            text: inner,
            pos: 0,
        };
        cur.skip_space();
        let condition = if cur.rest().starts_with('{') {
            let truth = self.relation(&mut cur, depth)?;
            cur.skip_space();
            if cur.rest().is_empty() {
                if truth {
                    out.push_str("true");
                }
                return Ok(());
            }
            truth
        } else {
            let len = name_length(cur.rest());
            if len == 0 {
                return Err(ExpandError::EmptyName(inner.to_string()));
            }
            let name = &cur.rest()[..len];
            cur.pos += len;
            cur.skip_space();
            if cur.rest().is_empty() {
                return self.substitute(name, depth, out);
            }
            match (self.lookup)(name) {
                Some(raw) => !raw.is_empty(),
                None => {
                    self.warnings
                        .push(ExpandWarning::Undefined(name.to_string()));
                    false
                }
            }
        };
        self.conditional(&mut cur, condition, depth, out)
    }

    /// Parses `{value3} OP {value4}` and evaluates it.
    fn relation(&mut self, cur: &mut Cursor<'_>, depth: usize) -> Result<bool, ExpandError> {
        let left = cur.braced()?;
        cur.skip_space();
        let op = [
            ("==", Relation::Eq),
            ("!=", Relation::Ne),
            ("<=", Relation::Le),
            (">=", Relation::Ge),
            ("<", Relation::Lt),
            (">", Relation::Gt),
        ]
        .into_iter()
        .find(|(text, _)| cur.eat(text))
        .map(|(_, op)| op)
        .ok_or_else(|| cur.error("relational operator"))?;
        let by_level = cur.eat("level");
        let right = cur.braced()?;
        let mut l = String::new();
        self.expand_into(left, depth + 1, &mut l)?;
        let mut r = String::new();
        self.expand_into(right, depth + 1, &mut r)?;
        let ord = if by_level {
            let lv = parse_compatibility_level(&l).ok_or(ExpandError::BadLevel(l.clone()))?;
            let rv = parse_compatibility_level(&r).ok_or(ExpandError::BadLevel(r.clone()))?;
            lv.cmp(&rv)
        } else {
            compare_values(&l, &r)
        };
        Ok(op.holds(ord))
    }

    /// Handles `?value`, `:value`, `?{value1}:{value2}` and `?{value1}:value2`
    /// after a name or relation whose truth is `condition`.
    fn conditional(
        &mut self,
        cur: &mut Cursor<'_>,
        condition: bool,
        depth: usize,
        out: &mut String,
    ) -> Result<(), ExpandError> {
        let (when_true, when_false) = if cur.eat("?") {
            cur.skip_space();
            if cur.rest().starts_with('{') {
                let then = cur.braced()?;
                cur.skip_space();
                if cur.rest().is_empty() {
                    (Some(then), None)
                } else if cur.eat(":") {
                    (Some(then), Some(else_value(cur)?))
                } else {
                    return Err(cur.error("\":\""));
                }
            } else {
                (Some(cur.rest()), None)
            }
        } else if cur.eat(":") {
            (None, Some(else_value(cur)?))
        } else {
            return Err(cur.error("\"?\" or \":\""));
        };
        let chosen = if condition { when_true } else { when_false };
        if let Some(text) = chosen {
            self.expand_into(text, depth + 1, out)?;
        }
        Ok(())
    }
}

/// The value after `:`: either `{value}` followed by nothing, or the rest
/// of the text as it stands (the legacy form).
fn else_value<'t>(cur: &mut Cursor<'t>) -> Result<&'t str, ExpandError> {
    cur.skip_space();
    if cur.rest().starts_with('{') {
        let value = cur.braced()?;
        cur.skip_space();
        if !cur.rest().is_empty() {
            return Err(cur.error("end of expression"));
        }
        Ok(value)
    } else {
        let value = cur.rest();
        cur.pos = cur.text.len();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn run(text: &str, pairs: &[(&str, &str)]) -> Result<String, ExpandError> {
        let lookup = table(pairs);
        let mut w = Vec::new();
        expand(text, &lookup, &mut w)
    }

    // Expected values below were read off Debian's postconf 3.7.11 (-x).
    const SITE: &[(&str, &str)] = &[
        ("myhostname", "mail.example.com"),
        ("mydomain", "example.com"),
        ("empty", ""),
        ("compatibility_level", "3.6"),
        ("u1", "$u2"),
        ("u2", ""),
    ];

    #[test]
    fn postfix_forms() {
        let cases = [
            ("${mydomain?yes}", "yes"),
            ("${empty?yes}", ""),
            ("${empty:no}", "no"),
            ("${mydomain:no}", ""),
            ("${mydomain?{x $myhostname}:{y}}", "x mail.example.com"),
            ("${empty?{x}:{y $mydomain}}", "y example.com"),
            (
                "$$mydomain $(mydomain) ${mydomain}x",
                "$mydomain example.com example.comx",
            ),
            (
                "${{$compatibility_level} <level {2} ? {old} : {new}}",
                "new",
            ),
            ("${{a} == {a} ? {eq} : {ne}}", "eq"),
            ("${{$mydomain} != {example.com} ? {ne} : {eq}}", "eq"),
            ("${{3.6} >=level {3.6} ? {ge} : {lt}}", "ge"),
            ("${{10} < {9} ? {lt} : {ge}}", "ge"),
            ("${mydomain?{a}:b}", "a"),
            (
                "$mydomain-foo $mydomain.foo",
                "example.com-foo example.com.foo",
            ),
            ("${u1?yes}", "yes"),
            ("${u1:no}", ""),
            ("${{$u1} == {} ? {emp} : {non}}", "emp"),
            ("${{ 1 } == { 1 }?{a}}", "a"),
            ("${{b}<{a}?{lt}:{ge}}", "ge"),
            ("${{10}<={9}?{le}:{gt}}", "gt"),
            ("${{3.10}<level{3.9}?{lt}:{ge}}", "ge"),
            ("${{a}!={a}}", ""),
            ("${{a}=={a}}", "true"),
            ("${{a}=={a}:{x}}", ""),
            ("${{a}=={a} ? {x} : y z}", "x"),
            ("${{a} =={b}?{x}:y:z}", "y:z"),
            ("${{ 1 } == {1}?{eq}:{ne}}", "ne"),
            ("${{ab} < {b}?{lt}:{ge}}", "lt"),
            ("${ mydomain }", "example.com"),
        ];
        for (input, want) in cases {
            assert_eq!(run(input, SITE).unwrap(), want, "expanding {input}");
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(
            run("${mydomain", SITE),
            Err(ExpandError::Truncated(_))
        ));
        assert!(matches!(
            run("trailing $", SITE),
            Err(ExpandError::EmptyName(_))
        ));
        assert!(matches!(run("a $ b", SITE), Err(ExpandError::EmptyName(_))));
        assert!(matches!(
            run("${{x}<level{1}?{a}}", SITE),
            Err(ExpandError::BadLevel(_))
        ));
        assert!(matches!(
            run("${{ab}==}", SITE),
            Err(ExpandError::Syntax { .. })
        ));
        assert!(matches!(
            run("${u1?{a} : {b} c}", SITE),
            Err(ExpandError::Syntax { .. })
        ));
        assert!(matches!(
            run("${mydomain?{a}{b}}", SITE),
            Err(ExpandError::Syntax { .. })
        ));
        let looped = run("$a", &[("a", "$b"), ("b", "$a")]);
        assert!(matches!(looped, Err(ExpandError::TooDeep(_))), "{looped:?}");
    }

    #[test]
    fn undefined_names_warn_and_vanish() {
        let lookup = table(SITE);
        let mut w = Vec::new();
        assert_eq!(
            expand("$nosuch end $mydomainx", &lookup, &mut w).unwrap(),
            " end "
        );
        assert_eq!(
            w,
            [
                ExpandWarning::Undefined("nosuch".into()),
                ExpandWarning::Undefined("mydomainx".into())
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[${}()?:a-z <=!>]{0,40}") {
            let _ = run(&text, SITE);
            let _ = referenced_names(&text);
        }

        #[test]
        fn text_without_dollar_is_unchanged(text in "[^$]{0,60}") {
            assert_eq!(run(&text, SITE).unwrap(), text);
        }
    }
}
