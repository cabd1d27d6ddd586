//! Non-delivery notices: the bounce message the sender gets when a
//! recipient could not be delivered, as an RFC 3464 delivery status
//! notification in Postfix's default form (`bounce(5)` templates).
//!
//! ```text
//! From: MAILER-DAEMON@mail.example.com (Mail Delivery System)
//! Subject: Undelivered Mail Returned to Sender
//! Content-Type: multipart/report; report-type=delivery-status; boundary="..."
//!
//! part 1, text/plain: the explanation, and each recipient with its reason
//! part 2, message/delivery-status: Reporting-MTA, X-Postfix-Queue-ID,
//!         Arrival-Date; per recipient Final-Recipient, Original-Recipient,
//!         Action: failed, Status, Remote-MTA, Diagnostic-Code
//! part 3, message/rfc822 (or text/rfc822-headers for RET=HDRS): the
//!         message, cut at bounce_size_limit
//! ```
//!
//! The notice is sent from `<>` (so that it can never cause another
//! bounce), through [`Cleanup`] like any other mail.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::delivery::StatusDetail;

use crate::cleanup::{Cleanup, CleanupError, Submission};
use crate::file::{QueueFile, Recipient};

/// How notices are written.
#[derive(Debug, Clone)]
pub struct NoticeConfig {
    /// `myhostname`: the reporting MTA, and the host in `From:`.
    pub hostname: String,
    /// `bounce_size_limit`: how much of the original message is returned.
    pub bounce_size_limit: usize,
}

/// A recipient that could not be delivered, and why.
#[derive(Debug, Clone)]
pub struct BouncedRecipient {
    /// The recipient as queued.
    pub address: String,
    /// The original recipient (ORCPT, else as the client gave it).
    pub original: String,
    /// The reason, as the agent reported it.
    pub detail: StatusDetail,
}

impl BouncedRecipient {
    /// The queued recipient with this reason.
    pub fn new(queued: &Recipient, detail: StatusDetail) -> BouncedRecipient {
        let original = queued
            .orcpt
            .as_deref()
            .and_then(|o| o.split_once(';'))
            .map_or_else(|| queued.original.clone(), |(_, a)| a.trim().to_owned());
        BouncedRecipient {
            address: queued.address.clone(),
            original,
            detail,
        }
    }
}

/// The boundary line of the notice for message `id`.
/// Bounce text lines as Postfix's bounce daemon wraps them: broken at
/// white space so that the first line's text is at most 79 characters
/// and each further line, indented by four spaces, at most 75; a word
/// longer than that stays whole on its own line.
fn wrap(text: &str) -> Vec<String> {
    const LENGTH: usize = 79;
    const INDENT: usize = 4;
    let is_blank = |c: char| c == ' ' || c == '\t';
    let mut lines: Vec<String> = Vec::new();
    let push = |line: &str, lines: &mut Vec<String>| {
        let indent = if lines.is_empty() { 0 } else { INDENT };
        lines.push(format!("{:indent$}{}", "", line.trim_end_matches(is_blank)));
    };
    let mut start = 0;
    let mut limit = LENGTH;
    let mut word = 0;
    loop {
        let end = text[word..].find(is_blank).map_or(text.len(), |i| word + i);
        if word > start && end - start > limit {
            push(&text[start..word], &mut lines);
            start = word + (text[word..].len() - text[word..].trim_start_matches(is_blank).len());
            limit = LENGTH - INDENT;
        }
        if end >= text.len() {
            break;
        }
        word = end + 1;
    }
    push(&text[start..], &mut lines);
    lines
}

fn boundary(id: &str, now: SystemTime, host: &str) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    format!("{id}.{secs}/{host}")
}

/// The header part of the original content (CR LF lines), without the
/// blank line.
fn header_of(content: &[u8]) -> &[u8] {
    let mut at = 0;
    while at < content.len() {
        let end = content[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |p| at + p + 1);
        let line = &content[at..end];
        if line == b"\r\n" || line == b"\n" {
            return &content[..at];
        }
        at = end;
    }
    content
}

/// Cuts `content` at the last line end within `limit` bytes.
fn truncated(content: &[u8], limit: usize) -> &[u8] {
    if content.len() <= limit {
        return content;
    }
    let cut = content[..limit]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    &content[..cut]
}

/// The non-delivery notice for message `id` of `file`, for the
/// recipients in `bounced`, with CR LF line ends.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use mta_core::delivery::{Relay, StatusDetail};
/// use mta_core::reply::EnhancedStatus;
/// use mta_queue::file::{Envelope, QueueFile, Recipient};
/// use mta_queue::notice::{non_delivery, BouncedRecipient, NoticeConfig};
///
/// let rcpt = Recipient::new("nobody@example.com");
/// let file = QueueFile {
///     envelope: Envelope {
///         arrival: Duration::from_secs(1_764_786_132),
///         sender: "bob@example.org".into(),
///         attributes: vec![],
///         recipients: vec![rcpt.clone()],
///     },
///     content: b"Subject: hello\r\n\r\nHi\r\n".to_vec(),
/// };
/// let detail = StatusDetail::new(EnhancedStatus::BAD_MAILBOX,
///                                "unknown user: \"nobody@example.com\"", Relay::Transport("virtual".into()));
/// let config = NoticeConfig { hostname: "mail.example.com".into(), bounce_size_limit: 50000 };
/// let now = UNIX_EPOCH + Duration::from_secs(1_764_786_200);
/// let notice = String::from_utf8(non_delivery(&config, "ID1", &file, &[BouncedRecipient::new(&rcpt, detail)], now)).unwrap();
/// assert!(notice.contains("\r\nTo: bob@example.org\r\n"));
/// assert!(notice.contains("\r\nFinal-Recipient: rfc822; nobody@example.com\r\nOriginal-Recipient: rfc822;nobody@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
/// assert!(notice.contains("\r\nContent-Type: message/rfc822\r\n\r\nSubject: hello\r\n\r\nHi\r\n"));
/// ```
pub fn non_delivery(
    config: &NoticeConfig,
    id: &str,
    file: &QueueFile,
    bounced: &[BouncedRecipient],
    now: SystemTime,
) -> Vec<u8> {
    let host = &config.hostname;
    let b = boundary(id, now, host);
    let arrival = UNIX_EPOCH + file.envelope.arrival;
    let date = mta_core::date::rfc5322(now);
    let mut m = String::new();
    let mut line = |s: &str| {
        m.push_str(s);
        m.push_str("\r\n");
    };
    line(&format!(
        "From: MAILER-DAEMON@{host} (Mail Delivery System)"
    ));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("To: {}", file.envelope.sender));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line("Content-Type: multipart/report; report-type=delivery-status;");
    line(&format!("\tboundary=\"{b}\""));
    line("Content-Transfer-Encoding: 8bit");
    line(&format!("Date: {date}"));
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    line(&format!(
        "Message-Id: <{}.{}.{id}@{host}>",
        secs.as_secs(),
        secs.subsec_micros()
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{b}"));
    line("Content-Description: Notification");
    line("Content-Type: text/plain; charset=us-ascii");
    line("");
    line(&format!("This is the mail system at host {host}."));
    line("");
    line("I'm sorry to have to inform you that your message could not");
    line("be delivered to one or more recipients. It's attached below.");
    line("");
    line("For further assistance, please send mail to postmaster.");
    line("");
    line("If you do so, please include this problem report. You can");
    line("delete your own text from the attached returned message.");
    line("");
    line("                   The mail system");
    line("");
    for r in bounced {
        for l in wrap(&format!("<{}>: {}", r.address, r.detail.text)) {
            line(&l);
        }
    }
    line("");
    line(&format!("--{b}"));
    line("Content-Description: Delivery report");
    line("Content-Type: message/delivery-status");
    line("");
    line(&format!("Reporting-MTA: dns; {host}"));
    line(&format!("X-Postfix-Queue-ID: {id}"));
    line(&format!(
        "X-Postfix-Sender: rfc822; {}",
        file.envelope.sender
    ));
    if let Some(envid) = file.envelope.attribute("envid") {
        line(&format!("Original-Envelope-Id: {envid}"));
    }
    line(&format!(
        "Arrival-Date: {}",
        mta_core::date::rfc5322(arrival)
    ));
    for r in bounced {
        line("");
        line(&format!("Final-Recipient: rfc822; {}", r.address));
        line(&format!("Original-Recipient: rfc822;{}", r.original));
        line("Action: failed");
        line(&format!("Status: {}", r.detail.dsn));
        if let mta_core::delivery::Relay::Host { name, .. } = &r.detail.relay {
            line(&format!("Remote-MTA: dns; {name}"));
        }
        let diagnostic = match &r.detail.remote_reply {
            Some(reply) => format!(
                "Diagnostic-Code: smtp; {}",
                reply.to_string().replace("\r\n", " ").trim_end()
            ),
            None => format!("Diagnostic-Code: X-Postfix; {}", r.detail.text),
        };
        // Continuation lines start with white space: a folded field.
        for l in wrap(&diagnostic) {
            line(&l);
        }
    }
    line("");
    let headers_only = file.envelope.attribute("ret") == Some("HDRS");
    line(&format!("--{b}"));
    let original: &[u8] = if headers_only {
        line("Content-Description: Undelivered Message Headers");
        line("Content-Type: text/rfc822-headers");
        header_of(&file.content)
    } else {
        line("Content-Description: Undelivered Message");
        line("Content-Type: message/rfc822");
        truncated(&file.content, config.bounce_size_limit)
    };
    line("");
    let mut out = m.into_bytes();
    out.extend_from_slice(original);
    if !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

/// Queues `message` (CR LF lines) from `<>` to `to` through `cleanup`,
/// and waits until it is durable. Returns the new queue ID.
///
/// # Errors
///
/// A [`CleanupError`] when it cannot be queued.
pub async fn submit(
    cleanup: &Cleanup,
    to: &str,
    message: &[u8],
    now: SystemTime,
) -> Result<String, CleanupError> {
    let submission = Submission {
        arrival: now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO),
        sender: String::new(),
        recipients: vec![Recipient::new(to)],
        attributes: vec![("protocol_name".into(), "internal".into())],
        context: mta_restrictions::content::MessageContext {
            sender: Some(String::new()),
            recipient: Some(to.to_owned()),
            ..Default::default()
        },
        prepend: Vec::new(),
        internal: true,
        no_address_mappings: false,
        no_header_body_checks: false,
        hold: false,
        discard: false,
        rewrite_headers: false,
    };
    let mut m = cleanup.begin(submission)?;
    m.write(message);
    let queued = m.finish()?;
    queued.commit.await?;
    Ok(queued.id.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_wrap_as_postfix_bounce_wraps_them() {
        let text = "<user@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1 \
                    <user@example.com>: Recipient address rejected: User unknown in virtual \
                    mailbox table (in reply to RCPT TO command)";
        assert_eq!(
            wrap(text),
            [
                "<user@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1",
                "    <user@example.com>: Recipient address rejected: User unknown in virtual",
                "    mailbox table (in reply to RCPT TO command)",
            ]
        );
        assert_eq!(wrap("short"), ["short"]);
        assert_eq!(wrap(""), [""]);
        // A word too long for any line stays whole.
        let long = "x".repeat(100);
        assert_eq!(
            wrap(&format!("a {long} b")),
            ["a", &format!("    {long}"), "    b"]
        );
        // Spacing inside a line is kept; trailing blanks go.
        assert_eq!(wrap("a  b\t c  "), ["a  b\t c"]);
    }

    #[test]
    fn header_and_truncation() {
        assert_eq!(
            header_of(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_of(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(truncated(b"one\r\ntwo\r\nthree\r\n", 12), b"one\r\ntwo\r\n");
        assert_eq!(truncated(b"short\r\n", 100), b"short\r\n");
    }
}
