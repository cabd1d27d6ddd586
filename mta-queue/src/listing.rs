//! The queue listing of `postqueue -p` and `mailq`, in Postfix's format
//! (`showq`): one entry per message with its size, arrival time and
//! sender, `*` after the ID of a message being delivered and `!` after
//! one on hold, the recipients still to be delivered below it, and a
//! summary line.
//!
//! # Example
//!
//! ```
//! use mta_queue::listing::{render, Entry, Listed};
//! use mta_queue::store::QueueName;
//! use std::time::Duration;
//!
//! let entries = vec![Entry {
//!     id: "4jXKX50yrPz6HJ".into(),
//!     queue: QueueName::Hold,
//!     size: 413,
//!     arrival: Duration::from_secs(1_795_329_000),
//!     sender: String::new(),
//!     recipients: vec![Listed::new("bob@example.com")],
//! }];
//! assert_eq!(
//!     render(&entries),
//!     "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n\
//!      4jXKX50yrPz6HJ!        413 Sun Nov 22 06:30:00 MAILER-DAEMON\n\
//!      \x20                                              bob@example.com\n\
//!      \n\
//!      -- 0 Kbytes in 1 Request.\n"
//! );
//! ```

use std::io;
use std::time::{Duration, UNIX_EPOCH};

use crate::file::QueueFile;
use crate::store::{Queue, QueueName};

/// One message in the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The queue ID.
    pub id: String,
    /// The queue it is in.
    pub queue: QueueName,
    /// The message size in bytes.
    pub size: u64,
    /// When it arrived, since the Unix epoch.
    pub arrival: Duration,
    /// The sender; empty for the null sender (shown as `MAILER-DAEMON`).
    pub sender: String,
    /// The recipients not yet done.
    pub recipients: Vec<Listed>,
}

/// A recipient in the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The address.
    pub address: String,
    /// Why its delivery was deferred, from the defer log, if it was.
    pub reason: Option<String>,
}

impl Listed {
    /// A recipient without a deferral reason.
    pub fn new(address: impl Into<String>) -> Listed {
        Listed {
            address: address.into(),
            reason: None,
        }
    }
}

/// Reads every message of the queues `postqueue -p` shows (incoming,
/// active, deferred, hold); unreadable files are left out (recovery moves
/// them to `corrupt`).
///
/// # Errors
///
/// When a queue directory cannot be read.
pub fn entries(queue: &Queue) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for which in [
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
        QueueName::Hold,
    ] {
        for id in queue.list(which)? {
            let Ok(file) = QueueFile::read(&queue.dir(which).join(&id)) else {
                continue;
            };
            let reasons = crate::defer_log::reasons(queue, &id);
            out.push(Entry {
                id,
                queue: which,
                size: file.content.len() as u64,
                arrival: file.envelope.arrival,
                sender: file.envelope.sender,
                recipients: file
                    .envelope
                    .recipients
                    .into_iter()
                    .filter(|r| !r.done)
                    .map(|r| Listed {
                        reason: reasons.get(&r.address.to_lowercase()).cloned(),
                        address: r.address,
                    })
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// The listing text, as `postqueue -p` prints it: Postfix's layout for
/// long queue IDs (`enable_long_queue_ids = yes`), the kind mtad gives.
pub fn render(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out =
        String::from("----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n");
    let mut total = 0u64;
    for e in entries {
        total += e.size;
        let mark = match e.queue {
            QueueName::Active => "*",
            QueueName::Hold => "!",
            _ => "",
        };
        let id = format!("{}{mark}", e.id);
        let ctime = mta_core::date::ctime(UNIX_EPOCH + e.arrival);
        // ctime without the year, as showq prints it.
        let when: String = ctime.chars().take(19).collect();
        let sender = if e.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &e.sender
        };
        out.push_str(&format!("{id:<17} {:>8} {when} {sender}\n", e.size));
        // A reason line before each run of recipients that share it,
        // right-aligned as showq prints it (76 columns, then unpadded).
        let mut last: Option<&str> = None;
        for r in &e.recipients {
            if let Some(reason) = r.reason.as_deref()
                && last != Some(reason)
            {
                let pad = 76usize.saturating_sub(reason.chars().count());
                out.push_str(&format!("{:pad$}({reason})\n", ""));
            }
            last = r.reason.as_deref();
            out.push_str(&format!("{:47}{}\n", "", r.address));
        }
        out.push('\n');
    }
    // Whole kilobytes, rounded down, as showq counts them.
    let kbytes = total / 1024;
    let n = entries.len();
    out.push_str(&format!(
        "-- {kbytes} Kbytes in {n} Request{}.\n",
        if n == 1 { "" } else { "s" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postfix 3.7's `postqueue -p` with `enable_long_queue_ids = yes`,
    /// for three deferred messages, as Debian's printed it.
    #[test]
    fn same_layout_as_postfix() {
        let entry = |id: &str, size, secs, rcpt: &str, reason: &str| Entry {
            id: id.into(),
            queue: QueueName::Deferred,
            size,
            arrival: Duration::from_secs(secs),
            sender: "a@example.org".into(),
            recipients: vec![Listed {
                address: rcpt.into(),
                reason: Some(reason.into()),
            }],
        };
        let long = "Host or domain name not found. Name service error for name=localhost type=A: Host not found, try again";
        let entries = [
            entry(
                "4jgP3w4f77z1SZ4t",
                423,
                1_796_324_188,
                "y@example.net",
                long,
            ),
            entry(
                "2DC7199026F",
                418,
                1_796_324_110,
                "b@example.net",
                "connect to 127.0.0.1[127.0.0.1]:9: Connection refused",
            ),
            entry("709D29901B3", 418, 1_796_324_132, "z@example.net", long),
        ];
        let want = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n\
4jgP3w4f77z1SZ4t       423 Thu Dec  3 18:56:28 a@example.org\n\
(Host or domain name not found. Name service error for name=localhost type=A: Host not found, try again)\n\
\x20                                              y@example.net\n\
\n\
2DC7199026F            418 Thu Dec  3 18:55:10 a@example.org\n\
\x20                      (connect to 127.0.0.1[127.0.0.1]:9: Connection refused)\n\
\x20                                              b@example.net\n\
\n\
709D29901B3            418 Thu Dec  3 18:55:32 a@example.org\n\
(Host or domain name not found. Name service error for name=localhost type=A: Host not found, try again)\n\
\x20                                              z@example.net\n\
\n\
-- 1 Kbytes in 3 Requests.\n";
        assert_eq!(render(&entries), want);
    }
}
