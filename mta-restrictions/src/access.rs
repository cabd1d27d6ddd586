//! What an access(5) table value means.
//!
//! A `check_*_access` restriction looks a key up in a table and reads the
//! value as an [`AccessAction`]: accept (`OK`, or an all-numeric value),
//! reject (`REJECT`, `DEFER`, `4NN text`, `5NN text`), a conditional
//! (`DEFER_IF_REJECT`, `DEFER_IF_PERMIT`), "not found" (`DUNNO`), an action
//! that changes what happens to the message (`HOLD`, `DISCARD`, `FILTER`,
//! `REDIRECT`, `PREPEND`, `BCC`) or only logs (`WARN`, `INFO`), or, for
//! anything else, a list of restrictions (restriction classes included) to
//! apply in its place. Action names are case-insensitive, as in Postfix.
//!
//! This module only parses; [`crate::restriction`] turns an action into a
//! reply with the reply codes of the configuration.
//!
//! # Example
//! ```
//! use mta_restrictions::access::AccessAction;
//! assert_eq!(AccessAction::parse("OK"), AccessAction::Ok);
//! assert_eq!(AccessAction::parse("12345"), AccessAction::Ok);
//! assert_eq!(
//!     AccessAction::parse("550 5.1.1 no such user"),
//!     AccessAction::Code { code: 550, text: "5.1.1 no such user".into() }
//! );
//! assert_eq!(
//!     AccessAction::parse("reject_unauth_destination, permit"),
//!     AccessAction::Restrictions(vec!["reject_unauth_destination".into(), "permit".into()])
//! );
//! ```

/// The meaning of one access table value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessAction {
    /// `OK`, or an all-numeric value (pop-before-smtp style): permit.
    Ok,
    /// `DUNNO`: as if the key was not found, and stop trying shorter keys.
    Dunno,
    /// `REJECT [text]`: reject with `access_map_reject_code`.
    Reject(String),
    /// `DEFER [text]`: reject with `access_map_defer_code`.
    Defer(String),
    /// `DEFER_IF_REJECT [text]`: a later reject becomes this deferral.
    DeferIfReject(String),
    /// `DEFER_IF_PERMIT [text]`: a later permit becomes this deferral.
    DeferIfPermit(String),
    /// `4NN text` or `5NN text`: reject with this code; the text may start
    /// with an enhanced status code.
    Code {
        /// The three-digit reply code.
        code: u16,
        /// The rest of the value, possibly empty.
        text: String,
    },
    /// `HOLD [text]`: put the message on hold, and go on.
    Hold(String),
    /// `DISCARD [text]`: accept and silently throw the message away.
    Discard(String),
    /// `FILTER transport:destination`: send the message through a content
    /// filter after it is queued.
    Filter(String),
    /// `REDIRECT user@domain`: deliver to this address instead.
    Redirect(String),
    /// `PREPEND header: value`: add a header to the message.
    Prepend(String),
    /// `BCC user@domain`: send a copy to this address.
    Bcc(String),
    /// `WARN [text]`: log a warning, and go on.
    Warn(String),
    /// `INFO [text]`: log an informational line, and go on.
    Info(String),
    /// Anything else: restriction names (and their arguments) to apply.
    Restrictions(Vec<String>),
}

/// Splits `value` into its first word and the rest, trimmed.
fn command(value: &str) -> (&str, &str) {
    let value = value.trim();
    match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&value[..i], value[i..].trim()),
        None => (value, ""),
    }
}

impl AccessAction {
    /// Reads a table value as access(5) defines it.
    pub fn parse(value: &str) -> AccessAction {
        let value = value.trim();
        // Postfix tests all-numeric values first: even `450` alone is OK.
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            return AccessAction::Ok;
        }
        let bytes = value.as_bytes();
        if bytes.len() >= 3
            && bytes[..3].iter().all(u8::is_ascii_digit)
            && (bytes.len() == 3 || bytes[3].is_ascii_whitespace())
            && matches!(bytes[0], b'4' | b'5')
        {
            let code = value[..3].parse().unwrap_or(0);
            return AccessAction::Code {
                code,
                text: value[3..].trim().to_string(),
            };
        }
        let (word, rest) = command(value);
        let rest = rest.to_string();
        match word.to_ascii_uppercase().as_str() {
            "OK" if rest.is_empty() => AccessAction::Ok,
            "DUNNO" if rest.is_empty() => AccessAction::Dunno,
            "REJECT" => AccessAction::Reject(rest),
            "DEFER" => AccessAction::Defer(rest),
            "DEFER_IF_REJECT" => AccessAction::DeferIfReject(rest),
            "DEFER_IF_PERMIT" => AccessAction::DeferIfPermit(rest),
            "HOLD" => AccessAction::Hold(rest),
            "DISCARD" => AccessAction::Discard(rest),
            "FILTER" => AccessAction::Filter(rest),
            "REDIRECT" => AccessAction::Redirect(rest),
            "PREPEND" => AccessAction::Prepend(rest),
            "BCC" => AccessAction::Bcc(rest),
            "WARN" => AccessAction::Warn(rest),
            "INFO" => AccessAction::Info(rest),
            _ => AccessAction::Restrictions(mta_maps::registry::split_references(value)),
        }
    }
}

/// An effect on the message that an access table asked for, collected in
/// the order the actions fired. The caller (the SMTP server and cleanup)
/// applies them: for `Filter` and `Redirect` only the last one counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageAction {
    /// Put the message on the hold queue; the text is for the log.
    Hold(String),
    /// Accept and discard the message; the text is for the log.
    Discard(String),
    /// Content filter `transport:destination`.
    Filter(String),
    /// Deliver to this address instead of the recipients.
    Redirect(String),
    /// Prepend this header line.
    Prepend(String),
    /// Send a blind copy to this address.
    Bcc(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        assert_eq!(AccessAction::parse("ok"), AccessAction::Ok);
        assert_eq!(
            AccessAction::parse("Reject"),
            AccessAction::Reject(String::new())
        );
        assert_eq!(
            AccessAction::parse("REJECT go  away"),
            AccessAction::Reject("go  away".into())
        );
        assert_eq!(AccessAction::parse("450"), AccessAction::Ok);
        assert_eq!(
            AccessAction::parse("PREPEND X-Seen: yes"),
            AccessAction::Prepend("X-Seen: yes".into())
        );
        assert_eq!(
            AccessAction::parse("myclass"),
            AccessAction::Restrictions(vec!["myclass".into()])
        );
        // 3-digit values outside 4xx/5xx are not reply codes.
        assert_eq!(
            AccessAction::parse("250 fine"),
            AccessAction::Restrictions(vec!["250".into(), "fine".into()])
        );
    }
}
