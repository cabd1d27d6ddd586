//! The durable mail queue of the mta toolkit.
//!
//! What is here so far:
//! - [`file`](mod@file): the queue file format, versioned typed records that are
//!   complete only at their checksummed end record, with recipients
//!   marked done in place; the reader every other part trusts.
//! - [`store`]: the queue directories under `queue_directory`, the
//!   group commit that makes files durable off the async runtime (and
//!   marks them ready), moves between queues, and recovery after a crash.
//! - [`cleanup`]: the one way into the queue: queue IDs, recipients
//!   expanded through [`virtual_alias`], content checks applied as the
//!   content streams in, addresses rewritten by [`canonical`] maps and
//!   masquerading, `message_drop_headers` removed, the file written and
//!   committed.
//! - [`pickup`]: local submission: the maildrop files `sendmail` writes,
//!   and their way through cleanup with the addresses completed, `-t`
//!   recipients taken from the headers and the missing `From:`, `Date:`
//!   and `Message-Id:` added.
//! - [`scheduler`]: the queue manager, which drives delivery agents
//!   through `mta_core::delivery`, retries with backoff, flushes on
//!   demand, and returns what cannot be delivered, with [`notice`] (RFC 3464 bounces) and
//!   [`defer_log`] (the reasons `mailq` shows).
//! - [`listing`]: the queue listing of `postqueue -p` and `mailq`.
//!
//! - [`admin`] (`postsuper`) and [`qshape`]: the queue tools.
//!
//! It does not deliver mail itself: agents in `mta-delivery` do.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mta_core::queue_id::QueueId;
//! use mta_queue::file::{Envelope, QueueFile, Recipient};
//! use mta_queue::store::{Committer, Queue, QueueName};
//!
//! let root = std::env::temp_dir().join(format!("queue-doc-{}", std::process::id()));
//! let queue = Queue::open(&root)?;
//! let committer = Committer::start(2)?;
//! let id = QueueId::from_parts(1_700_000_000, 0, 1);
//! let envelope = Envelope {
//!     arrival: Duration::from_secs(1_700_000_000),
//!     sender: "alice@example.org".into(),
//!     attributes: vec![],
//!     recipients: vec![Recipient::new("bob@example.com")],
//! };
//! let mut writer = queue.create(&id, &envelope)?;
//! writer.write_content(b"Subject: hi\r\n\r\nhello\r\n")?;
//! // Only once this returns may the client be told "250 ... queued".
//! committer.commit(writer.finish()?, &queue.dir(QueueName::Incoming)).wait()?;
//! let message = QueueFile::read(&queue.path(QueueName::Incoming, &id)).unwrap();
//! assert_eq!(message.envelope.recipients[0].address, "bob@example.com");
//! # std::fs::remove_dir_all(&root)?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod admin;
pub mod canonical;
pub mod cleanup;
pub mod defer_log;
pub mod file;
pub mod listing;
pub mod notice;
pub mod pickup;
pub mod qshape;
pub mod scheduler;
pub mod store;
pub mod virtual_alias;
