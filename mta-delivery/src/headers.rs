//! The header lines a mailbox delivery puts in front of the message, and
//! the `Delivered-To:` loop check.
//!
//! Postfix's `local(8)` and `virtual(8)` prepend, in this order:
//!
//! ```text
//! Return-Path: <sender@example.org>
//! X-Original-To: postmaster@example.com
//! Delivered-To: alice@example.com
//! ```
//!
//! `Return-Path:` carries the envelope sender (`<>` for a bounce),
//! `X-Original-To:` the recipient as the client gave it, `Delivered-To:`
//! the final recipient, as the queue has it (Postfix 3.7's `virtual(8)`
//! keeps its case). Local parts are quoted where RFC 5322
//! needs it. Before delivering, an agent looks for a `Delivered-To:` with
//! the same recipient already in the message's header: one means the mail
//! has been here before and is going round in circles, and Postfix
//! bounces it with `5.4.6 mail forwarding loop for ADDRESS`.

use std::io::{self, BufRead, BufReader, Read};

use mta_core::address::{MailAddress, ReversePath};
use mta_core::delivery::{Envelope, Recipient};

/// The most header bytes the loop check reads (Postfix's
/// `header_size_limit` default). A header longer than this is not searched
/// further: cleanup never queues one.
pub const LOOP_CHECK_LIMIT: usize = 102_400;

/// The lines to prepend to a message delivered to a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryHeaders {
    /// The `Return-Path:` value, with its angle brackets.
    pub return_path: String,
    /// The `X-Original-To:` value.
    pub original_to: String,
    /// The `Delivered-To:` value.
    pub delivered_to: String,
}

impl DeliveryHeaders {
    /// The headers for delivering the message of `envelope` to
    /// `recipient`. The original recipient is the one cleanup recorded, or
    /// the recipient itself when nothing rewrote it.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use mta_core::address::ReversePath;
    /// use mta_core::delivery::{Envelope, Recipient};
    /// use mta_core::queue_id::QueueId;
    /// use mta_delivery::headers::DeliveryHeaders;
    ///
    /// let id = QueueId::from_parts(1_700_000_000, 0, 1);
    /// let envelope = Envelope::new(id, ReversePath::Null, SystemTime::UNIX_EPOCH, 10);
    /// let mut rcpt = Recipient::new("Alice@example.com".parse()?, 0);
    /// rcpt.original = Some("postmaster@example.com".parse()?);
    /// let h = DeliveryHeaders::new(&envelope, &rcpt);
    /// assert_eq!(
    ///     String::from_utf8(h.render()).unwrap(),
    ///     "Return-Path: <>\nX-Original-To: postmaster@example.com\nDelivered-To: Alice@example.com\n"
    /// );
    /// # Ok::<(), mta_core::address::AddressError>(())
    /// ```
    pub fn new(envelope: &Envelope, recipient: &Recipient) -> DeliveryHeaders {
        let return_path = match &envelope.sender {
            ReversePath::Null => "<>".to_owned(),
            ReversePath::Mailbox(a) => a.render_path(),
        };
        let original = recipient.original.as_ref().unwrap_or(&recipient.address);
        DeliveryHeaders {
            return_path,
            original_to: original.render(),
            delivered_to: delivered_to(&recipient.address),
        }
    }

    /// The three lines, each ending in LF.
    pub fn render(&self) -> Vec<u8> {
        format!(
            "Return-Path: {}\nX-Original-To: {}\nDelivered-To: {}\n",
            self.return_path, self.original_to, self.delivered_to
        )
        .into_bytes()
    }
}

/// The `Delivered-To:` value for `address`: its external form,
/// as Postfix's `virtual(8)` writes it (case kept; the loop check
/// compares without regard to case).
pub fn delivered_to(address: &MailAddress) -> String {
    address.render()
}

/// Whether the header of the message that `content` reads holds a
/// `Delivered-To:` line for `delivered` (compared without regard to case
/// or surrounding white space). Reads at most [`LOOP_CHECK_LIMIT`] bytes,
/// and stops at the blank line that ends the header.
///
/// # Errors
///
/// Errors from reading the content.
///
/// # Example
///
/// ```
/// use mta_delivery::headers::has_delivered_to;
/// let msg = b"Delivered-To: Alice@Example.com\nSubject: x\n\nDelivered-To: bob@example.com\n";
/// assert!(has_delivered_to(&msg[..], "alice@example.com")?);
/// // Only the header counts, not the body.
/// assert!(!has_delivered_to(&msg[..], "bob@example.com")?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn has_delivered_to(content: impl Read, delivered: &str) -> io::Result<bool> {
    let mut reader = BufReader::new(content.take(LOOP_CHECK_LIMIT as u64));
    let mut line = Vec::new();
    // A header field may continue on lines that start with white space;
    // the value is compared once the field is complete.
    let mut field: Option<Vec<u8>> = None;
    let matches = |value: &[u8]| {
        let value = String::from_utf8_lossy(value);
        let value: String = value.split_whitespace().collect::<Vec<_>>().join(" ");
        value.eq_ignore_ascii_case(delivered)
    };
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        let text = trim_eol(&line);
        let continuation = n > 0 && matches!(text.first(), Some(b' ' | b'\t'));
        if continuation {
            if let Some(f) = field.as_mut() {
                f.extend_from_slice(text);
            }
            continue;
        }
        if let Some(f) = field.take()
            && matches(&f)
        {
            return Ok(true);
        }
        if n == 0 || text.is_empty() {
            return Ok(false);
        }
        if let Some(colon) = text.iter().position(|&b| b == b':') {
            let name = &text[..colon];
            if name.trim_ascii_end().eq_ignore_ascii_case(b"Delivered-To") {
                field = Some(text[colon + 1..].to_vec());
            }
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_core::queue_id::QueueId;
    use std::time::SystemTime;

    #[test]
    fn headers_quote_and_fold_case() {
        let id = QueueId::from_parts(1_700_000_000, 0, 1);
        let sender = ReversePath::Mailbox("\"J. Doe\"@example.org".parse().unwrap());
        let envelope = Envelope::new(id, sender, SystemTime::UNIX_EPOCH, 1);
        let rcpt = Recipient::new("Bob.Smith@Example.COM".parse().unwrap(), 0);
        let h = DeliveryHeaders::new(&envelope, &rcpt);
        assert_eq!(h.return_path, "<\"J. Doe\"@example.org>");
        // Without a rewrite, the original recipient is the recipient, as
        // given (not folded).
        assert_eq!(h.original_to, "Bob.Smith@example.com");
        assert_eq!(h.delivered_to, "Bob.Smith@example.com");
    }

    #[test]
    fn loop_check_reads_folded_fields_and_stops_at_the_body() {
        let folded = b"Received: x\nDelivered-To:\n  carol@example.com\nSubject: y\n\n";
        assert!(has_delivered_to(&folded[..], "carol@example.com").unwrap());
        let other = b"Delivered-To: carol@example.org\n\n";
        assert!(!has_delivered_to(&other[..], "carol@example.com").unwrap());
        // A field name that only starts with Delivered-To is another field.
        let prefix = b"Delivered-To-X: carol@example.com\n\n";
        assert!(!has_delivered_to(&prefix[..], "carol@example.com").unwrap());
        // CR LF line ends and a last line without one.
        let crlf = b"Subject: a\r\nDelivered-To: carol@example.com";
        assert!(has_delivered_to(&crlf[..], "carol@example.com").unwrap());
        assert!(!has_delivered_to(&b""[..], "carol@example.com").unwrap());
    }

    #[test]
    fn loop_check_is_bounded() {
        let mut big = Vec::new();
        while big.len() < LOOP_CHECK_LIMIT {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
        }
        big.extend_from_slice(b"Delivered-To: carol@example.com\n\n");
        assert!(!has_delivered_to(&big[..], "carol@example.com").unwrap());
    }
}
