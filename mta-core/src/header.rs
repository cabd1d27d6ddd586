//! Addresses in message headers (RFC 5322 section 3.4): the mailboxes of
//! a `To:`, `Cc:`, `Bcc:` or `From:` value.
//!
//! # What this module does
//!
//! [`address_list`] reads a header value as Postfix's `tok822` parser
//! does, leniently: display names, comments (nested), quoted strings,
//! angle addresses with or without an obsolete source route, groups
//! (`team: a@example.com, b@example.com;`, and the empty
//! `undisclosed-recipients:;`), and domain literals. It gives each
//! mailbox as address text without comments or white space, quoting kept
//! (`"john doe"@example.com`), ready for
//! [`MailAddress::parse`](crate::address::MailAddress::parse) in lenient
//! mode. It is what `sendmail -t` uses to find the recipients.
//!
//! # What it does not do
//!
//! It decodes nothing (RFC 2047 encoded words stay as they are, and only
//! ever appear in display names, which are dropped), and it does not
//! validate: `a@@b` comes out as `a@@b`, and the envelope parser then
//! refuses it. Input beyond `token_limit` tokens (Postfix's
//! `header_address_token_limit`, default 10240) is ignored, so a hostile
//! header costs bounded work.
//!
//! # Example
//!
//! ```
//! use mta_core::header::address_list;
//!
//! let list = address_list(
//!     r#""Doe, John" <john@example.com>, team: ann@example.org (Ann), bob;, undisclosed-recipients:;"#,
//!     10240,
//! );
//! assert_eq!(list, ["john@example.com", "ann@example.org", "bob"]);
//! ```

/// One lexical token of a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom, or a run of characters that are not specials.
    Atom(String),
    /// A quoted string, with its quotes and escapes as written.
    Quoted(String),
    /// A domain literal, with its brackets.
    Literal(String),
    /// One of `<>,;:@.`.
    Special(char),
}

/// Splits `value` into tokens with their byte ranges, dropping white
/// space and comments; at most `limit` tokens.
fn tokens(value: &str, limit: usize) -> Vec<(Token, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut chars = value.char_indices().peekable();
    let end_of = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        chars.peek().map_or(value.len(), |&(i, _)| i)
    };
    while let Some((start, c)) = chars.next() {
        if out.len() >= limit {
            break;
        }
        match c {
            c if c.is_whitespace() => {}
            '(' => {
                // A comment, nested, with backslash escapes; an unclosed
                // one runs to the end.
                let mut depth = 1usize;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '"' => {
                let mut s = String::from('"');
                while let Some((_, c)) = chars.next() {
                    s.push(c);
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                s.push(n);
                            }
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                if !s.ends_with('"') || s.len() == 1 {
                    s.push('"');
                }
                out.push((Token::Quoted(s), start..end_of(&mut chars)));
            }
            '[' => {
                let mut s = String::from('[');
                for (_, c) in chars.by_ref() {
                    s.push(c);
                    if c == ']' {
                        break;
                    }
                }
                if !s.ends_with(']') {
                    s.push(']');
                }
                out.push((Token::Literal(s), start..end_of(&mut chars)));
            }
            '<' | '>' | ',' | ';' | ':' | '@' | '.' => {
                out.push((Token::Special(c), start..start + 1));
            }
            _ => {
                let mut s = String::from(c);
                while let Some(&(_, n)) = chars.peek() {
                    if n.is_whitespace() || "()\"[<>,;:@.".contains(n) {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push((Token::Atom(s), start..end_of(&mut chars)));
            }
        }
    }
    out
}

/// The text of address tokens, concatenated.
fn text(tokens: &[(Token, std::ops::Range<usize>)]) -> String {
    let mut s = String::new();
    for (t, _) in tokens {
        match t {
            Token::Atom(a) | Token::Quoted(a) | Token::Literal(a) => s.push_str(a),
            Token::Special(c) => s.push(*c),
        }
    }
    s
}

/// The mailbox of one list element: what is inside its angle brackets
/// (less a source route), or, without brackets, all of its tokens; with
/// the byte range it spans in the value.
fn mailbox(
    element: &[(Token, std::ops::Range<usize>)],
) -> Option<(String, std::ops::Range<usize>)> {
    let is = |t: &(Token, std::ops::Range<usize>), c: char| t.0 == Token::Special(c);
    let open = element.iter().position(|t| is(t, '<'));
    let inner = match open {
        Some(i) => {
            let rest = &element[i + 1..];
            let close = rest.iter().position(|t| is(t, '>')).unwrap_or(rest.len());
            let inside = &rest[..close];
            // <@a.example,@b.example:user@c.example>: the route goes.
            match inside.iter().rposition(|t| is(t, ':')) {
                Some(colon) if inside.first().is_some_and(|t| is(t, '@')) => &inside[colon + 1..],
                _ => inside,
            }
        }
        None => element,
    };
    let s = text(inner);
    let span = inner.first()?.1.start..inner.last()?.1.end;
    (!s.is_empty()).then_some((s, span))
}

/// The mailboxes of a header value holding an address list, in order,
/// each as address text without comments or white space. See the
/// [module documentation](self).
pub fn address_list(value: &str, token_limit: usize) -> Vec<String> {
    address_spans(value, token_limit)
        .into_iter()
        .map(|(a, _)| a)
        .collect()
}

/// As [`address_list`], with the byte range of each mailbox's address in
/// `value`, so that a caller can rewrite the addresses of a header and
/// keep its display names, comments and layout.
///
/// ```
/// use mta_core::header::address_spans;
///
/// let value = "Bob <bob@mail.example.com>, carol";
/// let spans = address_spans(value, 10240);
/// assert_eq!(spans[0].0, "bob@mail.example.com");
/// assert_eq!(&value[spans[0].1.clone()], "bob@mail.example.com");
/// assert_eq!(&value[spans[1].1.clone()], "carol");
/// ```
pub fn address_spans(value: &str, token_limit: usize) -> Vec<(String, std::ops::Range<usize>)> {
    let tokens = tokens(value, token_limit);
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_angle = false;
    for (i, (t, _)) in tokens.iter().enumerate() {
        match t {
            Token::Special('<') => in_angle = true,
            Token::Special('>') => in_angle = false,
            // A group's name ends at its colon (outside brackets, where a
            // colon ends a source route instead).
            Token::Special(':') if !in_angle => start = i + 1,
            Token::Special(',' | ';') if !in_angle => {
                out.extend(mailbox(&tokens[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.extend(mailbox(&tokens[start..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        address_list(s, 10240)
    }

    #[test]
    fn plain_and_named_mailboxes() {
        assert_eq!(list("a@example.com"), ["a@example.com"]);
        assert_eq!(
            list("Ann Example <ann@example.com>, bob@example.org (Bob)"),
            ["ann@example.com", "bob@example.org"]
        );
        assert_eq!(
            list("\"Doe, John\" <john@example.com>"),
            ["john@example.com"]
        );
        assert_eq!(list(" user "), ["user"]);
    }

    #[test]
    fn comments_quotes_and_literals() {
        assert_eq!(
            list("a(comment (nested) \\) still)@example.com"),
            ["a@example.com"]
        );
        assert_eq!(
            list("\"john doe\"@example.com"),
            ["\"john doe\"@example.com"]
        );
        assert_eq!(list("\"a,b\"@example.com"), ["\"a,b\"@example.com"]);
        assert_eq!(list("root@[192.0.2.1]"), ["root@[192.0.2.1]"]);
        assert_eq!(list("a . b @ example . com"), ["a.b@example.com"]);
    }

    #[test]
    fn groups_and_routes() {
        assert_eq!(list("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(
            list("team: a@example.com, b@example.com; c@example.com"),
            ["a@example.com", "b@example.com", "c@example.com"]
        );
        assert_eq!(
            list("<@relay.example,@other.example:user@example.com>"),
            ["user@example.com"]
        );
    }

    #[test]
    fn empty_elements_and_broken_input() {
        assert_eq!(list(",, ,"), Vec::<String>::new());
        assert_eq!(list(""), Vec::<String>::new());
        assert_eq!(list("Name <a@example.com"), ["a@example.com"]);
        assert_eq!(list("\"unclosed"), ["\"unclosed\""]);
        assert_eq!(list("(only a comment)"), Vec::<String>::new());
    }

    #[test]
    fn the_token_limit_bounds_the_work() {
        let long = "a@example.com, ".repeat(1000);
        // An address with its comma is six tokens: ten hold one whole
        // address and the start of the next.
        assert_eq!(address_list(&long, 10).len(), 2);
        assert_eq!(address_list(&long, 10240).len(), 1000);
    }
}
