//! What the mailbox writers share: their error type, the file owner, and
//! the copy of a message into a mailbox file.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use mta_core::reply::EnhancedStatus;

/// Why a message could not be written to a mailbox. Each error knows its
/// enhanced status and whether it is permanent, which decides between a
/// deferral and a bounce.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// A file or directory operation failed; `what` names it
    /// (`create maildir file`, `fsync`, ...).
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The message would make the mailbox (mbox) or the message file
    /// (maildir) larger than the configured limit (`mailbox_size_limit`,
    /// `virtual_mailbox_limit`).
    #[error("cannot update mailbox {}: the mailbox size limit of {limit} bytes would be exceeded", path.display())]
    SizeLimit {
        /// The mailbox.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The message content could not be read from the queue.
    #[error("cannot read the message content: {0}")]
    Content(io::Error),
    /// The caller gave up (its time limit passed) before the message was
    /// committed; nothing was delivered.
    #[error("delivery time limit exceeded before the mailbox was updated")]
    Cancelled,
    /// The mailbox could not be locked (mbox only).
    #[error("unable to lock {} for exclusive access: {reason}", path.display())]
    Lock {
        /// The mailbox.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl MailboxError {
    pub(crate) fn io(what: &'static str, path: &Path, source: io::Error) -> MailboxError {
        MailboxError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The enhanced status code for this failure, as Postfix's mailbox
    /// code chooses it: `5.2.2` (mailbox full) for an exceeded limit,
    /// a disk quota or a file too large; `4.3.1` when the disk is full;
    /// `4.3.0` for unreadable content; `4.2.0` for everything else, which
    /// is worth retrying.
    pub fn dsn(&self) -> EnhancedStatus {
        let code = match self {
            MailboxError::SizeLimit { .. } => "5.2.2",
            MailboxError::Io { source, .. } => match source.raw_os_error() {
                Some(e) if e == nix::libc::EDQUOT || e == nix::libc::EFBIG => "5.2.2",
                Some(e) if e == nix::libc::ENOSPC => "4.3.1",
                _ => "4.2.0",
            },
            MailboxError::Content(_) => "4.3.0",
            MailboxError::Lock { .. } => "4.2.0",
            MailboxError::Cancelled => "4.4.2",
        };
        EnhancedStatus::parse(code).expect("a valid enhanced status")
    }

    /// Whether retrying cannot help, so the recipient bounces.
    pub fn is_permanent(&self) -> bool {
        self.dsn().class() == mta_core::reply::StatusClass::Permanent
    }
}

/// Who owns the files a delivery creates, when the process may give them
/// away (it runs as root). `None` in the writers' options keeps the
/// process's own user, the only possibility for an unprivileged `mtad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The user ID.
    pub uid: u32,
    /// The group ID.
    pub gid: u32,
}

/// A flag the caller sets when it no longer wants a delivery (its time
/// limit passed): the writer checks it just before it makes the message
/// visible, and gives up with [`MailboxError::Cancelled`] instead.
pub type Cancel = std::sync::Arc<std::sync::atomic::AtomicBool>;

pub(crate) fn check_cancel(cancel: Option<&Cancel>) -> Result<(), MailboxError> {
    match cancel {
        Some(c) if c.load(std::sync::atomic::Ordering::SeqCst) => Err(MailboxError::Cancelled),
        _ => Ok(()),
    }
}

/// Creates `dir` and its missing parents with mode 0700, gives the new
/// ones to `owner`, and syncs the directory above each new one, so that a
/// mailbox created by a delivery survives a crash with the delivery.
pub(crate) fn make_dirs(dir: &Path, owner: Option<Owner>) -> Result<(), MailboxError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        make_dirs(parent, owner)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Another delivery made it first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(MailboxError::io("create directory", dir, e)),
    }
    if let Some(o) = owner {
        std::os::unix::fs::chown(dir, Some(o.uid), Some(o.gid))
            .map_err(|e| MailboxError::io("change owner of", dir, e))?;
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Syncs a directory, making the names in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), MailboxError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MailboxError::io("fsync directory", dir, e))
}

/// Copies the message that `content` reads to `out`, after `prepend`,
/// converting nothing but:
/// - with `quote_from`, a `>` before each line that starts with `From `
///   (the mbox rule, as Postfix applies it; `>From ` lines are left
///   alone);
/// - a last line without its LF gets one.
///
/// Returns the bytes written. `limit` (0 for none) caps `already +` the
/// bytes written; reaching past it stops the copy with
/// [`MailboxError::SizeLimit`] naming `path`.
pub(crate) fn copy_message(
    out: &mut impl Write,
    prepend: &[u8],
    content: impl Read,
    quote_from: bool,
    limit: u64,
    already: u64,
    path: &Path,
) -> Result<u64, MailboxError> {
    let write_err = |e| MailboxError::io("write", path, e);
    let mut written = 0u64;
    let mut put = |out: &mut dyn Write, bytes: &[u8]| -> Result<(), MailboxError> {
        written += bytes.len() as u64;
        if limit > 0 && already + written > limit {
            return Err(MailboxError::SizeLimit {
                path: path.to_path_buf(),
                limit,
            });
        }
        out.write_all(bytes).map_err(write_err)
    };
    put(out, prepend)?;
    let mut reader = BufReader::with_capacity(64 * 1024, content);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(MailboxError::Content)?;
        if n == 0 {
            break;
        }
        if quote_from && line.starts_with(b"From ") {
            put(out, b">")?;
        }
        put(out, &line)?;
        if !line.ends_with(b"\n") {
            put(out, b"\n")?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(content: &[u8], quote: bool, limit: u64) -> Result<Vec<u8>, MailboxError> {
        let mut out = Vec::new();
        copy_message(
            &mut out,
            b"P: 1\n",
            content,
            quote,
            limit,
            0,
            Path::new("/mbox"),
        )?;
        Ok(out)
    }

    #[test]
    fn quoting_and_the_last_line() {
        let msg = b"Subject: x\n\nFrom here\n>From there\n From not\nFrom";
        assert_eq!(
            copy(msg, true, 0).unwrap(),
            b"P: 1\nSubject: x\n\n>From here\n>From there\n From not\nFrom\n"
        );
        assert_eq!(
            copy(msg, false, 0).unwrap(),
            b"P: 1\nSubject: x\n\nFrom here\n>From there\n From not\nFrom\n"
        );
    }

    #[test]
    fn limit_counts_everything_written() {
        assert!(copy(b"abc\n", false, 9).is_ok());
        let err = copy(b"abcd\n", false, 9).unwrap_err();
        assert!(matches!(err, MailboxError::SizeLimit { limit: 9, .. }));
        assert_eq!(err.dsn().to_string(), "5.2.2");
        assert!(err.is_permanent());
    }

    #[test]
    fn error_codes() {
        let e = |errno| {
            MailboxError::io(
                "write",
                Path::new("/x"),
                io::Error::from_raw_os_error(errno),
            )
        };
        assert_eq!(e(nix::libc::EDQUOT).dsn().to_string(), "5.2.2");
        assert_eq!(e(nix::libc::ENOSPC).dsn().to_string(), "4.3.1");
        assert_eq!(e(nix::libc::EACCES).dsn().to_string(), "4.2.0");
        assert!(!e(nix::libc::EACCES).is_permanent());
        assert_eq!(
            e(nix::libc::EACCES).to_string(),
            "write /x: Permission denied (os error 13)"
        );
    }
}

/// Where a mailbox delivery writes: a maildir (a path ending in `/` in
/// Postfix's tables and parameters) or an mbox file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Maildir(std::path::PathBuf),
    Mbox(std::path::PathBuf),
}

impl Target {
    /// A maildir when `path` ends in `/`, as Postfix reads
    /// `home_mailbox`, `virtual_mailbox_maps` and alias `/file` targets.
    pub(crate) fn from_path(path: std::path::PathBuf, text: &str) -> Target {
        if text.ends_with('/') {
            Target::Maildir(path)
        } else {
            Target::Mbox(path)
        }
    }

    /// `maildir` or `mailbox`, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Target::Maildir(_) => "maildir",
            Target::Mbox(_) => "mailbox",
        }
    }
}

/// The settings a mailbox write needs besides the message.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    pub(crate) hostname: String,
    pub(crate) size_limit: u64,
    pub(crate) locks: Vec<crate::mbox::LockMethod>,
    pub(crate) lock_attempts: u32,
    pub(crate) lock_delay: std::time::Duration,
    pub(crate) stale_lock_time: std::time::Duration,
    /// Who gets new files (as root).
    pub(crate) owner: Option<Owner>,
    /// Set to abandon the write before the message becomes visible.
    pub(crate) cancel: Option<Cancel>,
}

/// Writes one message into `target` (blocking: fsyncs), with `head` (the
/// delivery headers) in front; the text says where it went.
pub(crate) fn store(
    target: &Target,
    head: &[u8],
    sender: &mta_core::address::ReversePath,
    reader: impl std::io::Read,
    now: std::time::SystemTime,
    options: &StoreOptions,
) -> Result<&'static str, MailboxError> {
    let owner = options.owner;
    let cancel = options.cancel.clone();
    match target {
        Target::Maildir(dir) => crate::maildir::Maildir::new(dir)
            .deliver(
                head,
                reader,
                now,
                &crate::maildir::MaildirOptions {
                    hostname: options.hostname.clone(),
                    size_limit: options.size_limit,
                    owner,
                    cancel,
                },
            )
            .map(|_| "delivered to maildir"),
        Target::Mbox(file) => crate::mbox::Mbox::new(file)
            .deliver(
                sender,
                head,
                reader,
                now,
                &crate::mbox::MboxOptions {
                    locks: options.locks.clone(),
                    size_limit: options.size_limit,
                    owner,
                    lock_attempts: options.lock_attempts,
                    lock_delay: options.lock_delay,
                    stale_lock_time: options.stale_lock_time,
                    cancel,
                },
            )
            .map(|()| "delivered to mailbox"),
    }
}
