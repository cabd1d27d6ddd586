//! The actions of `header_checks(5)` and what each does to the verdict.

use super::{ContentVerdict, MessageContext, Rejection};
use mta_core::reply::ReplyCode;

/// What an action does to the line that triggered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineEffect {
    Keep,
    Remove,
    Replace(String),
}

/// The effect of one table result on the line, the prepended text, and
/// whether inspection of the message stops.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) line: LineEffect,
    pub(crate) prepend: Option<String>,
    pub(crate) stop: bool,
}

/// The generic text of a `REJECT` without text (`cleanup_stat.c`).
pub(crate) const DEFAULT_REJECT_TEXT: &str = "message content rejected";

/// Carries out `value`, the result a table gave for `input` (a logical
/// header or a body line). `map_class` names the parameter
/// (`header_checks`, ...) for warnings; `is_header` tells headers from body
/// lines.
pub(crate) fn apply(
    verdict: &mut ContentVerdict,
    context: &MessageContext,
    map_class: &str,
    is_header: bool,
    input: &str,
    value: &str,
) -> Outcome {
    let mut outcome = Outcome {
        line: LineEffect::Keep,
        prepend: None,
        stop: false,
    };
    let value = value.trim_start_matches([' ', '\t']);
    let command_len = value.find([' ', '\t']).unwrap_or(value.len());
    let (command, rest) = value.split_at(command_len);
    let text = rest.trim_start_matches([' ', '\t']);
    let class = if is_header { "header" } else { "body" };
    let line = |action: &str, text: &str| context.log_line(action, class, input, text);
    match command.to_ascii_uppercase().as_str() {
        "REJECT" => {
            let mut reason = dsn_prepend(
                "5.7.1",
                if text.is_empty() {
                    DEFAULT_REJECT_TEXT
                } else {
                    text
                },
            );
            if !reason.starts_with(['4', '5']) {
                verdict.log.push(
                    context.warning(&format!("bad DSN action in {text} -- need 4.x.x or 5.x.x")),
                );
                reason.replace_range(..1, "4");
            }
            verdict.log.push(line("reject", &reason));
            let code = if reason.starts_with('4') {
                ReplyCode::LOCAL_ERROR
            } else {
                ReplyCode::MAILBOX_UNAVAILABLE
            };
            verdict.reject = Some(Rejection { code, text: reason });
            outcome.stop = true;
        }
        "DISCARD" => {
            verdict.log.push(line("discard", text));
            verdict.discard = true;
            outcome.stop = true;
        }
        "HOLD" => {
            verdict.log.push(line("hold", text));
            verdict.hold = true;
        }
        "WARN" => verdict.log.push(line("warning", text)),
        "INFO" => verdict.log.push(line("info", text)),
        "PASS" => {
            verdict.log.push(line("pass", text));
            verdict.pass = true;
            outcome.stop = true;
        }
        "STRIP" => {
            verdict.log.push(line("strip", text));
            outcome.line = LineEffect::Remove;
        }
        "IGNORE" => outcome.line = LineEffect::Remove,
        "FILTER" => {
            if text.is_empty() {
                verdict.log.push(context.warning(&format!(
                    "missing FILTER command argument in {map_class} map"
                )));
            } else if !text.contains(':') {
                verdict.log.push(context.warning(&format!(
                    "bad FILTER command {text} in {map_class} -- need transport:destination"
                )));
            } else {
                // Postfix 3.7 logs nothing for FILTER (seen in the
                // differential test).
                verdict.filter = Some(text.to_string());
            }
        }
        "REDIRECT" => {
            if !text.contains('@') {
                verdict.log.push(context.warning(&format!(
                    "bad REDIRECT target \"{text}\" in {map_class} map -- need user@domain"
                )));
            } else {
                verdict.log.push(line("redirect", text));
                verdict.redirect = Some(text.to_string());
            }
        }
        "BCC" => {
            if !text.contains('@') {
                verdict.log.push(context.warning(&format!(
                    "bad BCC address \"{text}\" in {map_class} map, need user@domain"
                )));
            } else if !verdict.bcc.iter().any(|b| b == text) {
                verdict.bcc.push(text.to_string());
            }
        }
        "PREPEND" => {
            if text.is_empty() {
                verdict.log.push(
                    context.warning(&format!("PREPEND action without text in {map_class} map")),
                );
            } else if is_header && super::mime::header_name_len(text.as_bytes()).is_none() {
                verdict.log.push(context.warning(&format!(
                    "bad PREPEND header text \"{text}\" in {map_class} map -- need \"headername: headervalue\""
                )));
            } else {
                verdict.log.push(line("prepend", text));
                outcome.prepend = Some(text.to_string());
            }
        }
        "REPLACE" => {
            if text.is_empty() {
                verdict.log.push(
                    context.warning(&format!("REPLACE action without text in {map_class} map")),
                );
            } else if is_header && super::mime::header_name_len(text.as_bytes()).is_none() {
                verdict.log.push(context.warning(&format!(
                    "bad REPLACE header text \"{text}\" in {map_class} map -- need \"headername: headervalue\""
                )));
            } else {
                verdict.log.push(line("replace", text));
                outcome.line = LineEffect::Replace(text.to_string());
            }
        }
        "DUNNO" | "OK" => {}
        _ => verdict
            .log
            .push(context.warning(&format!("unknown command in {map_class} map: {value}"))),
    }
    outcome
}

/// Postfix's `dsn_prepend`: `text` keeps an enhanced status code it starts
/// with (`4.7.0 try later`), or gets `default` put in front.
pub(crate) fn dsn_prepend(default: &str, text: &str) -> String {
    if starts_with_dsn(text) {
        text.to_string()
    } else {
        format!("{default} {text}")
    }
}

/// Whether `text` starts with `D.SSS.DDD` (class 2, 4 or 5, one to three
/// digits each) followed by white space or the end.
fn starts_with_dsn(text: &str) -> bool {
    let b = text.as_bytes();
    if !matches!(b.first(), Some(b'2' | b'4' | b'5')) || b.get(1) != Some(&b'.') {
        return false;
    }
    let mut i = 2;
    for part in 0..2 {
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=3).contains(&digits) {
            return false;
        }
        i += digits;
        if part == 0 {
            if b.get(i) != Some(&b'.') {
                return false;
            }
            i += 1;
        }
    }
    matches!(b.get(i), None | Some(b' ' | b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_codes() {
        assert_eq!(dsn_prepend("5.7.1", "go away"), "5.7.1 go away");
        assert_eq!(dsn_prepend("5.7.1", "4.7.0 later"), "4.7.0 later");
        assert_eq!(dsn_prepend("5.7.1", "5.7.1234 x"), "5.7.1 5.7.1234 x");
        assert_eq!(dsn_prepend("5.7.1", "5.7"), "5.7.1 5.7");
    }
}
