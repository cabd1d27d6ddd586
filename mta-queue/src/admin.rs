//! The queue operations behind `postsuper`: delete messages, put them on
//! hold, release them, as Postfix's postsuper(1) does.
//!
//! # What this module does
//!
//! [`apply`] performs one [`Operation`] on a [`Selection`] of messages
//! (by queue ID, or all) in the queues given, or in the operation's
//! default queues as postsuper(1) lists them:
//!
//! | operation | default queues | moves to |
//! |---|---|---|
//! | [`Operation::Delete`] | hold, incoming, active, deferred | (removed, with its logs) |
//! | [`Operation::Hold`] | incoming, active, deferred | hold |
//! | [`Operation::Release`] | hold | deferred, due at once |
//! | [`Operation::Requeue`] | hold, incoming, active, deferred | maildrop, for cleanup again |
//!
//! Every move and removal is synced, so that an operation a user was told
//! succeeded survives a crash.
//!
//! # What it does not do
//!
//! It does not purge temporary files (`-p`: the queue keeps none;
//! recovery at start handles half files) or check the queue's structure
//! (`-s`: done at every start).
//! A message that the queue manager is delivering while it is moved ends
//! up in its new queue after the delivery; recipients delivered in that
//! attempt may be delivered again after a release (at least once, never
//! lost).
//!
//! # Example
//!
//! ```
//! use mta_queue::admin::{Operation, Selection, apply};
//! use mta_queue::store::Queue;
//!
//! let root = std::env::temp_dir().join(format!("admin-doc-{}", std::process::id()));
//! let queue = Queue::open(&root)?;
//! // Nothing to hold yet.
//! let done = apply(&queue, Operation::Hold, &Selection::All, None)?;
//! assert!(done.is_empty());
//! # std::fs::remove_dir_all(&root)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;

use crate::store::{Queue, QueueName};

/// What to do to the selected messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `postsuper -d`: remove the message and its defer and bounce logs.
    Delete,
    /// `postsuper -h`: move it to `hold`, where the scheduler leaves it.
    Hold,
    /// `postsuper -H`: move it from `hold` to `deferred`, due now.
    Release,
    /// `postsuper -r`: put it back into `maildrop` for pickup to take
    /// through cleanup again ([`crate::pickup::requeue`]), after a fix
    /// to the tables, say.
    Requeue,
}

impl Operation {
    /// The queues it looks in when none are named.
    pub fn default_queues(self) -> &'static [QueueName] {
        match self {
            Operation::Delete | Operation::Requeue => &[
                QueueName::Hold,
                QueueName::Incoming,
                QueueName::Active,
                QueueName::Deferred,
            ],
            Operation::Hold => &[QueueName::Incoming, QueueName::Active, QueueName::Deferred],
            Operation::Release => &[QueueName::Hold],
        }
    }

    /// How postsuper reports it: `Deleted`, `Placed on hold`, `Released
    /// from hold`.
    pub fn summary(self) -> &'static str {
        match self {
            Operation::Delete => "Deleted",
            Operation::Hold => "Placed on hold",
            Operation::Release => "Released from hold",
            Operation::Requeue => "Requeued",
        }
    }

    /// How postsuper logs it per message: `removed`, `placed on hold`,
    /// `released from hold`.
    pub fn log_word(self) -> &'static str {
        match self {
            Operation::Delete => "removed",
            Operation::Hold => "placed on hold",
            Operation::Release => "released from hold",
            Operation::Requeue => "requeued",
        }
    }
}

/// Which messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// `ALL`.
    All,
    /// These queue IDs.
    Ids(Vec<String>),
}

/// One message the operation was performed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The queue ID.
    pub id: String,
    /// The queue it was in.
    pub from: QueueName,
}

/// Performs `operation` on `selection` in `queues` (default:
/// [`Operation::default_queues`]). Queue IDs that are not found are
/// skipped, as postsuper skips them.
///
/// # Errors
///
/// When a queue directory cannot be read or a move or removal fails; the
/// messages handled before the failure stay handled.
pub fn apply(
    queue: &Queue,
    operation: Operation,
    selection: &Selection,
    queues: Option<&[QueueName]>,
) -> io::Result<Vec<Done>> {
    let queues = queues.unwrap_or(operation.default_queues());
    let mut done = Vec::new();
    for &from in queues {
        // A message released or held into a queue also being searched
        // is not handled twice.
        let target = match operation {
            Operation::Delete | Operation::Requeue => None,
            Operation::Hold => Some(QueueName::Hold),
            Operation::Release => Some(QueueName::Deferred),
        };
        if Some(from) == target {
            continue;
        }
        let present = queue.list(from)?;
        let ids: Vec<&String> = match selection {
            Selection::All => present.iter().collect(),
            Selection::Ids(wanted) => present.iter().filter(|id| wanted.contains(id)).collect(),
        };
        for id in ids {
            if done.iter().any(|d: &Done| &d.id == id) {
                continue;
            }
            match target {
                None if operation == Operation::Requeue => {
                    let file = crate::file::QueueFile::read(&queue.dir(from).join(id))
                        .map_err(io::Error::other)?;
                    crate::pickup::requeue(queue, &file, std::time::SystemTime::now())?;
                    queue.remove(id, from)?;
                }
                None => queue.remove(id, from)?,
                Some(to) => {
                    queue.move_to(id, from, to)?;
                    if operation == Operation::Release {
                        // Due at once: the scheduler takes deferred files
                        // whose time has come.
                        let path = queue.dir(to).join(id);
                        std::fs::File::options()
                            .write(true)
                            .open(&path)?
                            .set_modified(std::time::SystemTime::now())?;
                    }
                }
            }
            done.push(Done {
                id: id.clone(),
                from,
            });
        }
    }
    Ok(done)
}
