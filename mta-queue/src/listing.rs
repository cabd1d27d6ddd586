//! The queue listing of `postqueue -p` and `mailq`, in Postfix's format
//! (`showq`): one entry per message with its size, arrival time and
//! sender, `*` after the ID of a message being delivered and `!` after
//! one on hold, the recipients still to be delivered below it, and a
//! summary line.
//!
//! # Example
//!
//! ```
//! use mta_queue::listing::{render, Entry};
//! use mta_queue::store::QueueName;
//! use std::time::Duration;
//!
//! let entries = vec![Entry {
//!     id: "4jXKX50yrPz6HJ".into(),
//!     queue: QueueName::Hold,
//!     size: 413,
//!     arrival: Duration::from_secs(1_795_329_000),
//!     sender: String::new(),
//!     recipients: vec!["bob@example.com".into()],
//!     reason: None,
//! }];
//! assert_eq!(
//!     render(&entries),
//!     "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
//!      4jXKX50yrPz6HJ!      413 Sun Nov 22 06:30:00  MAILER-DAEMON\n\
//!      \x20                                        bob@example.com\n\
//!      \n\
//!      -- 1 Kbytes in 1 Request.\n"
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
    pub recipients: Vec<String>,
    /// Why delivery was deferred, when it was.
    pub reason: Option<String>,
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
                    .map(|r| r.address)
                    .collect(),
                reason: None,
            });
        }
    }
    Ok(out)
}

/// The listing text, as `postqueue -p` prints it.
pub fn render(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out =
        String::from("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
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
        // ctime without the year, in a 20-column field, as showq prints it.
        let when: String = ctime.chars().take(19).collect();
        let sender = if e.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &e.sender
        };
        out.push_str(&format!("{id:<11} {:>8} {when:<20} {sender}\n", e.size));
        if let Some(reason) = &e.reason {
            out.push_str(&format!("{:50}({reason})\n", ""));
        }
        for r in &e.recipients {
            out.push_str(&format!("{:41}{r}\n", ""));
        }
        out.push('\n');
    }
    let kbytes = total.div_ceil(1024);
    let n = entries.len();
    out.push_str(&format!(
        "-- {kbytes} Kbytes in {n} Request{}.\n",
        if n == 1 { "" } else { "s" }
    ));
    out
}
