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
    /// The postmaster copies `notify_classes` asks for.
    pub postmaster: PostmasterCopies,
}

/// Who gets a copy of which notices (`notify_classes`): the class's
/// recipient parameter's value, or `None` when the class is not listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostmasterCopies {
    /// `bounce`: the headers of every bounced message, to
    /// `bounce_notice_recipient`.
    pub bounce: Option<String>,
    /// `2bounce`: bounces that cannot be delivered (mail from `<>` that
    /// bounces), whole, to `2bounce_notice_recipient`. Without it they are
    /// dropped with a log line, Postfix's default.
    pub double_bounce: Option<String>,
    /// `delay`: the headers of delayed mail, to `delay_notice_recipient`.
    pub delay: Option<String>,
}

impl PostmasterCopies {
    /// The copies `classes` (`notify_classes`, lower-cased) names, sent to
    /// `bounce`, `double_bounce` and `delay` (the three recipient
    /// parameters).
    pub fn from_classes(
        classes: &[String],
        bounce: &str,
        double_bounce: &str,
        delay: &str,
    ) -> PostmasterCopies {
        let has = |c: &str| classes.iter().any(|x| x.eq_ignore_ascii_case(c));
        PostmasterCopies {
            bounce: has("bounce").then(|| bounce.to_owned()),
            double_bounce: has("2bounce").then(|| double_bounce.to_owned()),
            delay: has("delay").then(|| delay.to_owned()),
        }
    }
}

/// Who a notice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// The envelope sender.
    Sender,
    /// A postmaster copy to this address (`Postmaster Copy:` or
    /// `Postmaster Warning:` in the subject, the headers only, or the
    /// whole message for a double bounce).
    Postmaster(&'a str),
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

/// Which report a notice is (RFC 3464 `Action`), with what its text
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// A non-delivery notice: `Undelivered Mail Returned to Sender`,
    /// `Action: failed`, the message (or its headers, `RET=HDRS`)
    /// attached.
    Failure,
    /// A delay warning: `Delayed Mail (still being retried)`, `Action:
    /// delayed`, the headers attached.
    Delay {
        /// `delay_warning_time`: how long the mail has waited.
        after: Duration,
        /// The queue lifetime: until when it is retried.
        lifetime: Duration,
    },
    /// A success notice for `NOTIFY=SUCCESS`: `Successful Mail Delivery
    /// Report`, `Action: delivered` (a mailbox here) or `relayed` (handed
    /// to another server, which was not asked for DSN), the headers
    /// attached.
    Success,
}

/// The non-delivery notice for message `id` (its queue file `file`) and
/// its `bounced` recipients, as Postfix's bounce daemon writes it
/// (RFC 3464 `multipart/report`). See [`notice`].
pub fn non_delivery(
    config: &NoticeConfig,
    id: &str,
    file: &QueueFile,
    bounced: &[BouncedRecipient],
    now: SystemTime,
) -> Vec<u8> {
    notice(
        config,
        NoticeKind::Failure,
        Audience::Sender,
        id,
        file,
        bounced,
        now,
    )
}

/// The notice of `kind` for message `id` (its queue file `file`) about
/// `recipients`, from `MAILER-DAEMON`, in Postfix's words: the text part,
/// a `message/delivery-status` part with one block per recipient, and
/// the message or its headers.
pub fn notice(
    config: &NoticeConfig,
    kind: NoticeKind,
    audience: Audience<'_>,
    id: &str,
    file: &QueueFile,
    recipients: &[BouncedRecipient],
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
    let postmaster = matches!(audience, Audience::Postmaster(_));
    line(match (kind, postmaster) {
        (NoticeKind::Failure, false) => "Subject: Undelivered Mail Returned to Sender",
        (NoticeKind::Failure, true) => "Subject: Postmaster Copy: Undelivered Mail",
        (NoticeKind::Delay { .. }, false) => "Subject: Delayed Mail (still being retried)",
        (NoticeKind::Delay { .. }, true) => "Subject: Postmaster Warning: Delayed Mail",
        (NoticeKind::Success, _) => "Subject: Successful Mail Delivery Report",
    });
    line(&format!(
        "To: {}",
        match audience {
            Audience::Sender => file.envelope.sender.as_str(),
            Audience::Postmaster(to) => to,
        }
    ));
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
    match kind {
        NoticeKind::Failure => {
            line("I'm sorry to have to inform you that your message could not");
            line("be delivered to one or more recipients. It's attached below.");
        }
        NoticeKind::Delay { after, lifetime } => {
            line("####################################################################");
            line("# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #");
            line("####################################################################");
            line("");
            line(&format!(
                "Your message could not be delivered for more than {} hour(s).",
                after.as_secs() / 3600
            ));
            line(&format!(
                "It will be retried until it is {} day(s) old.",
                lifetime.as_secs() / 86400
            ));
        }
        NoticeKind::Success => {
            line("Your message was successfully delivered to the destination(s)");
            line("listed below. If the message was delivered to mailbox you will");
            line("receive no further notifications. Otherwise you may still receive");
            line("notifications of mail delivery errors from other systems.");
        }
    }
    if kind != NoticeKind::Success {
        line("");
        line("For further assistance, please send mail to postmaster.");
        line("");
        line("If you do so, please include this problem report. You can");
        line("delete your own text from the attached returned message.");
    }
    line("");
    line("                   The mail system");
    line("");
    for r in recipients {
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
    for r in recipients {
        line("");
        line(&format!("Final-Recipient: rfc822; {}", r.address));
        line(&format!("Original-Recipient: rfc822;{}", r.original));
        let remote = matches!(r.detail.relay, mta_core::delivery::Relay::Host { .. });
        line(match kind {
            NoticeKind::Failure => "Action: failed",
            NoticeKind::Delay { .. } => "Action: delayed",
            NoticeKind::Success if remote => "Action: relayed",
            NoticeKind::Success => "Action: delivered",
        });
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
        if let NoticeKind::Delay { lifetime, .. } = kind {
            line(&format!(
                "Will-Retry-Until: {}",
                mta_core::date::rfc5322(arrival + lifetime)
            ));
        }
    }
    line("");
    // The sender gets the message back unless RET=HDRS; a postmaster
    // copy has only the headers, except for a double bounce (mail from
    // <>, whose sender cannot be told), which is returned whole.
    let double_bounce = postmaster && file.envelope.sender.is_empty();
    let headers_only = kind != NoticeKind::Failure
        || file.envelope.attribute("ret") == Some("HDRS")
        || (postmaster && !double_bounce);
    line(&format!("--{b}"));
    let original: &[u8] = if headers_only {
        line(match kind {
            NoticeKind::Success => "Content-Description: Message Headers",
            _ => "Content-Description: Undelivered Message Headers",
        });
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
