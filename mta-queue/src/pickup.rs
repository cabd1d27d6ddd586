//! Local submission: the `maildrop` queue that `sendmail` writes and
//! pickup reads into cleanup, as Postfix's postdrop(1) and pickup(8).
//!
//! # What this module does
//!
//! [`drop_message`] writes a [`LocalMessage`] (what `sendmail` was given:
//! sender, recipients, `-t`, `-F`, DSN options, the message) into
//! `maildrop/` in the queue file format, synced, and marks it ready only
//! then, so that a half-written file is never picked up. It needs no
//! running daemon: mail submitted while the system is down waits there.
//!
//! [`Pickup`] takes each ready file through [`Cleanup`] as Postfix's
//! pickup and cleanup treat a local submission:
//! - addresses without a domain get `@$myorigin` (trivial-rewrite's
//!   local context); an empty sender stays the null sender;
//! - with `-t`, recipients are taken from `To:`, `Cc:` and `Bcc:` (or,
//!   when the message has `Resent-` headers, from `Resent-To:`,
//!   `Resent-Cc:` and `Resent-Bcc:` only), added to those of the command
//!   line; duplicates are dropped;
//! - `Received: by HOST (mail_name, from userid UID)` goes on top, the
//!   user being the owner of the maildrop file (not anything written in
//!   it);
//! - missing `From:` (with the full name, as `header_from_format =
//!   standard` writes it), `Date:` and `Message-Id:` are added at the end
//!   of the headers (their `Resent-` forms for a resent message), and
//!   `undisclosed_recipients_header` when there is no `To:`, `Cc:` or
//!   `Bcc:`; cleanup then removes `message_drop_headers` (`Bcc:` among
//!   them);
//! - a message the content checks reject is returned to its sender as a
//!   non-delivery notice, as Postfix's cleanup bounces a rejected local
//!   submission (there is no client to tell); nothing is lost silently.
//!
//! A file that cannot be read as a queue file goes to `corrupt/`; one
//! that cannot be queued now (a table down, the disk full) stays in
//! `maildrop/` for the next scan. The maildrop file is removed only
//! after its queue file is durable.
//!
//! # What it does not do
//!
//! It does not watch the directory: the daemon calls
//! [`Pickup::scan`] when `sendmail` pokes it and on a timer.
//! Header addresses are not rewritten (Postfix's
//! `local_header_rewrite_clients`); only the envelope is.
//!
//! # Example
//!
//! ```no_run
//! use mta_queue::pickup::{LocalMessage, drop_message};
//! use mta_queue::store::Queue;
//!
//! # fn main() -> std::io::Result<()> {
//! let queue = Queue::open("/var/spool/mta")?;
//! let message = LocalMessage {
//!     sender: "alice".into(),
//!     recipients: vec!["bob@example.org".into()],
//!     content: b"Subject: hi\r\n\r\nHello.\r\n".to_vec(),
//!     ..LocalMessage::default()
//! };
//! let name = drop_message(&queue, &message, std::time::SystemTime::now())?;
//! println!("maildrop/{name}");
//! # Ok(())
//! # }
//! ```

use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::address::{MailAddress, ParseOptions, Strictness};
use mta_core::address_class::{RewriteConfig, RewriteContext, rewrite};
use mta_core::delivery::{Relay, StatusDetail};
use mta_core::reply::EnhancedStatus;
use mta_restrictions::content::MessageContext;

use crate::cleanup::{Cleanup, CleanupError, Submission};
use crate::file::{Envelope, QueueFile, QueueFileWriter, Recipient};
use crate::notice::{BouncedRecipient, NoticeConfig};
use crate::store::{QueueName, is_ready};

/// The attribute that says `-t` was given.
const EXTRACT: &str = "extract_recipients";
/// The attribute holding `-F`'s full name.
const FULL_NAME: &str = "full_name";
/// The attribute holding `-N`'s bits, for recipients taken from headers.
const NOTIFY: &str = "dsn_notify";

/// A message as `sendmail` hands it over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalMessage {
    /// The envelope sender as given (`-f`, else the user's login name);
    /// pickup completes it. Empty for the null sender.
    pub sender: String,
    /// The recipients of the command line, as given.
    pub recipients: Vec<String>,
    /// `-t`: recipients also come from the message's headers.
    pub extract_recipients: bool,
    /// `-F`: the full name for a `From:` header that pickup adds.
    pub full_name: Option<String>,
    /// `-N`: the DSN `NOTIFY` bits ([`crate::file::notify`]), 0 for none.
    pub notify: u8,
    /// `-R`: the DSN `RET` (`full` or `hdrs`).
    pub ret: Option<String>,
    /// `-V`: the DSN `ENVID`.
    pub envid: Option<String>,
    /// The message, with CR LF line ends.
    pub content: Vec<u8>,
}

/// Writes `message` into `queue`'s `maildrop/`, durably, and returns the
/// file's name. The file is created mode 0600 and made 0700 (ready) only
/// after it is synced; only its owner and root can read it, so a daemon
/// run by another ordinary user cannot take it (it stays, and pickup
/// says why). The directory entry is synced too when the submitter may
/// read the directory (its owner); others cannot open a 1733 maildrop
/// for the sync, and, as with Postfix's postdrop, rely on the file
/// system to keep the entry of a synced file.
///
/// # Errors
///
/// Creating, writing or syncing the file; it is removed then.
pub fn drop_message(
    queue: &crate::store::Queue,
    message: &LocalMessage,
    arrival: SystemTime,
) -> io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let since = arrival.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let mut attributes = Vec::new();
    if message.extract_recipients {
        attributes.push((EXTRACT.to_owned(), "yes".to_owned()));
    }
    if let Some(name) = &message.full_name {
        attributes.push((FULL_NAME.to_owned(), one_line(name)));
    }
    if message.notify != 0 {
        attributes.push((NOTIFY.to_owned(), message.notify.to_string()));
    }
    if let Some(ret) = &message.ret {
        attributes.push(("ret".to_owned(), ret.clone()));
    }
    if let Some(envid) = &message.envid {
        attributes.push(("envid".to_owned(), envid.clone()));
    }
    let envelope = Envelope {
        arrival: since,
        sender: message.sender.clone(),
        attributes,
        recipients: message
            .recipients
            .iter()
            .map(|r| Recipient {
                notify: message.notify,
                ..Recipient::new(r.clone())
            })
            .collect(),
    };
    let dir = queue.dir(QueueName::Maildrop);
    // Named like a queue ID (the queue's listing takes only those), from
    // the time and this process: unique among concurrent submitters.
    let mut ids = mta_core::queue_id::QueueIdGenerator::new();
    let mut attempt = 0u32;
    let (name, writer) = loop {
        let uniquifier = (u64::from(std::process::id()) << 8) + u64::from(attempt);
        let name = ids.next(since, uniquifier).as_str().to_owned();
        match QueueFileWriter::create(&dir.join(&name), &envelope) {
            Ok(w) => break (name, w),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let path = dir.join(&name);
    let written = (|| {
        let mut writer = writer;
        writer.write_content(&message.content)?;
        let file = writer.finish()?;
        file.sync_all()?;
        file.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        file.sync_all()?;
        match std::fs::File::open(&dir) {
            Ok(d) => d.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            Err(e) => Err(e),
        }
    })();
    match written {
        Ok(()) => Ok(name),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// The attribute of a requeued message (`postsuper -r`).
const REQUEUED: &str = "requeued";

/// Puts queued message `file` back into `maildrop/` for pickup to take
/// through cleanup again (`postsuper -r`), with its sender, attributes
/// and content, and its pending recipients as originally given (so that
/// virtual aliases are expanded anew); recipients already done are left
/// out. Returns the maildrop file's name. The caller removes the old
/// file once this returns.
///
/// # Errors
///
/// Writing the maildrop file.
pub fn requeue(
    queue: &crate::store::Queue,
    file: &QueueFile,
    now: SystemTime,
) -> io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut attributes: Vec<(String, String)> = file
        .envelope
        .attributes
        .iter()
        .filter(|(n, _)| n != REQUEUED)
        .cloned()
        .collect();
    attributes.push((REQUEUED.to_owned(), "yes".to_owned()));
    let envelope = Envelope {
        arrival: file.envelope.arrival,
        sender: file.envelope.sender.clone(),
        attributes,
        recipients: file
            .envelope
            .recipients
            .iter()
            .filter(|r| !r.done)
            .map(|r| Recipient {
                address: r.original.clone(),
                done: false,
                offset: 0,
                ..r.clone()
            })
            .collect(),
    };
    let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let dir = queue.dir(QueueName::Maildrop);
    let mut ids = mta_core::queue_id::QueueIdGenerator::new();
    let mut attempt = 0u64;
    let (name, mut writer) = loop {
        let name = ids
            .next(since, (u64::from(std::process::id()) << 8) + attempt)
            .as_str()
            .to_owned();
        match QueueFileWriter::create(&dir.join(&name), &envelope) {
            Ok(w) => break (name, w),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let path = dir.join(&name);
    let written = (|| {
        writer.write_content(&file.content)?;
        let f = writer.finish()?;
        f.sync_all()?;
        f.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        f.sync_all()?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    match written {
        Ok(()) => Ok(name),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Control characters out, for a value that goes into one header line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// How pickup completes local submissions.
#[derive(Debug, Clone)]
pub struct PickupConfig {
    /// Address completion (`myorigin`, `append_at_myorigin`...).
    pub rewrite: RewriteConfig,
    /// `myhostname`, for `Received:` and `Message-Id:`.
    pub hostname: String,
    /// `mail_name`, for `Received:`.
    pub mail_name: String,
    /// `header_address_token_limit`.
    pub header_address_token_limit: usize,
    /// `undisclosed_recipients_header` (empty: none is added).
    pub undisclosed_recipients_header: String,
    /// How notices for rejected messages are written.
    pub notice: NoticeConfig,
    /// `content_filter` as the pickup service sees it (`-o
    /// content_filter=` in `master.cf` turns it off): the filter every
    /// local submission goes through; empty for none.
    pub content_filter: String,
}

/// What became of one maildrop file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Picked {
    /// Queued as `id`.
    Queued {
        /// The new queue ID.
        id: String,
        /// The owner of the maildrop file.
        uid: u32,
        /// The envelope sender, completed.
        sender: String,
    },
    /// The content checks (or a missing recipient) refused it; the sender
    /// was sent a notice (queued as `notice`, `None` for the null sender).
    Returned {
        /// The queue ID the message had.
        id: String,
        /// The owner of the maildrop file.
        uid: u32,
        /// The envelope sender.
        sender: String,
        /// Why, as the log says it.
        reason: String,
        /// The notice's queue ID.
        notice: Option<String>,
    },
}

/// Why a maildrop file was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PickupError {
    /// The file is not a usable queue file; it was moved to `corrupt/`.
    #[error("moved to corrupt: {0}")]
    Corrupt(String),
    /// It cannot be queued now; it stays for the next scan.
    #[error("{0}; will try again")]
    Temporary(String),
}

enum QueueFileErrorKind {
    Permission(u32),
}

/// Whether reading `path` failed for want of permission.
fn permission(
    file: &Result<QueueFile, crate::file::QueueFileError>,
    path: &std::path::Path,
) -> Result<(), QueueFileErrorKind> {
    if let Err(crate::file::QueueFileError::Io(e)) = file
        && e.kind() == io::ErrorKind::PermissionDenied
    {
        let owner = std::fs::metadata(path).map_or(0, |m| m.uid());
        return Err(QueueFileErrorKind::Permission(owner));
    }
    Ok(())
}

/// Takes local submissions from `maildrop/` into the queue.
#[derive(Debug)]
pub struct Pickup {
    cleanup: Arc<Cleanup>,
    config: PickupConfig,
}

/// One logical header: its name, lower-cased, and its byte range.
struct Header {
    name: String,
    start: usize,
    end: usize,
}

/// The message's logical headers and where its body starts (after the
/// empty line, or at the first line that is not a header).
fn headers(content: &[u8]) -> (Vec<Header>, usize) {
    let mut out: Vec<Header> = Vec::new();
    let mut pos = 0;
    while pos < content.len() {
        let end = content[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |i| pos + i + 1);
        let line = &content[pos..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            return (out, end);
        }
        if matches!(text[0], b' ' | b'\t') {
            match out.last_mut() {
                Some(h) => h.end = end,
                None => return (out, pos),
            }
        } else {
            let colon = text.iter().position(|&b| b == b':');
            let name_ok = colon.is_some_and(|c| {
                c > 0 && text[..c].iter().all(|&b| b.is_ascii_graphic() && b != b':')
            });
            if !name_ok {
                return (out, pos);
            }
            let name = String::from_utf8_lossy(&text[..colon.unwrap_or(0)]).to_ascii_lowercase();
            out.push(Header {
                name,
                start: pos,
                end,
            });
        }
        pos = end;
    }
    (out, pos)
}

/// A header's value, unfolded.
fn value(content: &[u8], h: &Header) -> String {
    let raw = String::from_utf8_lossy(&content[h.start..h.end]);
    let after = raw.split_once(':').map_or("", |(_, v)| v);
    after
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_owned()
}

/// `name` as a display name: quoted when it holds specials.
fn display_name(name: &str) -> String {
    if name.chars().any(|c| "()<>@,;:\\\".[]".contains(c)) {
        let escaped: String = name
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    } else {
        name.to_owned()
    }
}

/// The recipients `sendmail -t` takes from `content` (CR LF or LF line
/// ends): the addresses of `To:`, `Cc:` and `Bcc:`, or of `Resent-To:`,
/// `Resent-Cc:` and `Resent-Bcc:` when the message has `Resent-` headers;
/// as written, not yet completed.
pub fn extracted_recipients(content: &[u8], token_limit: usize) -> Vec<String> {
    let (hdrs, _) = headers(content);
    let resent = hdrs.iter().any(|h| h.name.starts_with("resent-"));
    let wanted: &[&str] = if resent {
        &["resent-to", "resent-cc", "resent-bcc"]
    } else {
        &["to", "cc", "bcc"]
    };
    hdrs.iter()
        .filter(|h| wanted.contains(&h.name.as_str()))
        .flat_map(|h| mta_core::header::address_list(&value(content, h), token_limit))
        .collect()
}

impl Pickup {
    /// A message `postsuper -r` put back: through cleanup again as it
    /// was (no `Received:` of ours, no header fixes), its recipients
    /// expanded anew.
    async fn requeued(&self, file: &QueueFile, uid: u32) -> Result<Picked, PickupError> {
        let env = &file.envelope;
        let attributes: Vec<(String, String)> = env
            .attributes
            .iter()
            .filter(|(n, _)| n != REQUEUED)
            .cloned()
            .collect();
        let submission = Submission {
            arrival: env.arrival,
            sender: env.sender.clone(),
            recipients: env.recipients.clone(),
            attributes,
            context: MessageContext {
                queue_id: None,
                client: "local".into(),
                sender: Some(env.sender.clone()),
                recipient: env.recipients.last().map(|r| r.address.clone()),
                protocol: None,
                helo: None,
            },
            prepend: Vec::new(),
            internal: false,
            no_address_mappings: false,
            no_header_body_checks: false,
            hold: false,
            discard: false,
            rewrite_headers: false,
        };
        let temporary = |e: &dyn std::fmt::Display| PickupError::Temporary(e.to_string());
        let mut m = self.cleanup.begin(submission).map_err(|e| temporary(&e))?;
        let id = m.id().as_str().to_owned();
        m.write(&file.content);
        match m.finish() {
            Ok(queued) => {
                queued.commit.await.map_err(|e| temporary(&e))?;
                Ok(Picked::Queued {
                    id,
                    uid,
                    sender: env.sender.clone(),
                })
            }
            Err(e) => Err(temporary(&e)),
        }
    }

    /// A pickup queuing through `cleanup`.
    pub fn new(cleanup: Arc<Cleanup>, config: PickupConfig) -> Pickup {
        Pickup { cleanup, config }
    }

    /// `address` completed in the local context, or `None` when it is not
    /// an address.
    fn complete(&self, address: &str) -> Option<String> {
        let address = address.trim();
        let address = address
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(address);
        if address.is_empty() {
            return Some(String::new());
        }
        let opts = ParseOptions {
            strictness: Strictness::Lenient,
            smtputf8: true,
        };
        let parsed = MailAddress::parse(address, opts).ok()?;
        let done = rewrite(&self.config.rewrite, RewriteContext::Local, &parsed).ok()?;
        Some(done.to_string())
    }

    /// The ready files in `maildrop/`, oldest name first.
    pub fn ready(&self) -> Vec<String> {
        let queue = self.cleanup.queue();
        let dir = queue.dir(QueueName::Maildrop);
        let mut names: Vec<String> = queue
            .list(QueueName::Maildrop)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| is_ready(&dir.join(n)))
            .collect();
        names.sort();
        names
    }

    /// Takes every ready file, calling `log` with each result as a
    /// Postfix log line (`ID: uid=1000 from=<alice@example.com>`).
    /// Returns how many were queued or returned.
    pub async fn scan(&self, log: &(dyn Fn(&str) + Send + Sync)) -> usize {
        let mut n = 0;
        for name in self.ready() {
            match self.take(&name).await {
                Ok(Picked::Queued { id, uid, sender }) => {
                    n += 1;
                    log(&format!("{id}: uid={uid} from=<{sender}>"));
                }
                Ok(Picked::Returned {
                    id,
                    uid,
                    sender,
                    reason,
                    notice,
                }) => {
                    n += 1;
                    log(&format!("{id}: uid={uid} from=<{sender}>"));
                    let to = match notice {
                        Some(notice) => format!("returned to sender: {notice}"),
                        None => "not returned: null sender".to_owned(),
                    };
                    log(&format!("{id}: {reason}; {to}"));
                }
                Err(e) => log(&format!("warning: maildrop/{name}: {e}")),
            }
        }
        n
    }

    /// Takes one maildrop file. See the [module documentation](self).
    ///
    /// # Errors
    ///
    /// [`PickupError::Corrupt`] (the file went to `corrupt/`) or
    /// [`PickupError::Temporary`] (it stays).
    pub async fn take(&self, name: &str) -> Result<Picked, PickupError> {
        let queue = self.cleanup.queue().clone();
        let path = queue.dir(QueueName::Maildrop).join(name);
        let read_path = path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let uid = std::fs::metadata(&read_path)?.uid();
            Ok::<_, io::Error>((uid, QueueFile::read(&read_path)))
        })
        .await
        .map_err(|e| PickupError::Temporary(e.to_string()))?;
        let (uid, file) = read.map_err(|e| PickupError::Temporary(e.to_string()))?;
        if let Err(QueueFileErrorKind::Permission(owner)) = permission(&file, &path) {
            return Err(PickupError::Temporary(format!(
                "permission denied: the file belongs to uid {owner}, and an mtad run by an ordinary user can read only that user's submissions (run it as root)"
            )));
        }
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                queue
                    .move_to(name, QueueName::Maildrop, QueueName::Corrupt)
                    .map_err(|m| PickupError::Temporary(format!("{e}; and moving it: {m}")))?;
                return Err(PickupError::Corrupt(e.to_string()));
            }
        };
        let picked = self.queue_it(&file, uid).await?;
        std::fs::remove_file(&path)
            .map_err(|e| PickupError::Temporary(format!("remove maildrop/{name}: {e}")))?;
        Ok(picked)
    }

    async fn queue_it(&self, file: &QueueFile, uid: u32) -> Result<Picked, PickupError> {
        if file.envelope.attribute(REQUEUED) == Some("yes") {
            return self.requeued(file, uid).await;
        }
        let env = &file.envelope;
        let content = &file.content;
        let sender = self
            .complete(&env.sender)
            .unwrap_or_else(|| env.sender.clone());
        let (hdrs, body) = headers(content);
        let resent = hdrs.iter().any(|h| h.name.starts_with("resent-"));
        let mut recipients: Vec<Recipient> = Vec::new();
        let mut add = |address: &str, from: &Recipient| {
            let Some(done) = self.complete(address).filter(|a| !a.is_empty()) else {
                return;
            };
            if recipients.iter().any(|r| r.address == done) {
                return;
            }
            recipients.push(Recipient {
                address: done,
                original: address.to_owned(),
                ..from.clone()
            });
        };
        for r in &env.recipients {
            add(&r.address, r);
        }
        if env.attribute(EXTRACT) == Some("yes") {
            let template = Recipient {
                notify: env
                    .attribute(NOTIFY)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                ..Recipient::new("")
            };
            for a in extracted_recipients(content, self.config.header_address_token_limit) {
                add(&a, &template);
            }
        }
        let mut attributes: Vec<(String, String)> = env
            .attributes
            .iter()
            .filter(|(n, _)| n != EXTRACT && n != FULL_NAME && n != NOTIFY)
            .cloned()
            .collect();
        attributes.push(("protocol_name".into(), "local".into()));
        if !self.config.content_filter.trim().is_empty() {
            attributes.push((
                "content_filter".into(),
                self.config.content_filter.trim().to_owned(),
            ));
        }
        attributes.push(("rewrite_context".into(), "local".into()));
        let submission = Submission {
            arrival: env.arrival,
            sender: sender.clone(),
            recipients: recipients.clone(),
            attributes: attributes.clone(),
            context: MessageContext {
                queue_id: None,
                client: "local".into(),
                sender: Some(sender.clone()),
                recipient: recipients.last().map(|r| r.address.clone()),
                protocol: None,
                helo: None,
            },
            prepend: Vec::new(),
            internal: false,
            no_address_mappings: false,
            no_header_body_checks: false,
            hold: false,
            discard: false,
            // A local submission: Postfix rewrites its headers.
            rewrite_headers: true,
        };
        let temporary = |e: &dyn std::fmt::Display| PickupError::Temporary(e.to_string());
        let mut m = self.cleanup.begin(submission).map_err(|e| temporary(&e))?;
        let id = m.id().as_str().to_owned();
        let arrival = UNIX_EPOCH + env.arrival;
        m.write(
            format!(
                "Received: by {} ({}, from userid {uid})\r\n\tid {id}; {}\r\n",
                self.config.hostname,
                self.config.mail_name,
                mta_core::date::rfc5322(arrival)
            )
            .as_bytes(),
        );
        let header_end = hdrs.last().map_or(0, |h| h.end);
        m.write(&content[..header_end]);
        let has = |name: &str| hdrs.iter().any(|h| h.name == name);
        let prefix = if resent { "Resent-" } else { "" };
        let lower = prefix.to_ascii_lowercase();
        if !has(&format!("{lower}from")) && !sender.is_empty() {
            let line = match env.attribute(FULL_NAME).filter(|n| !n.trim().is_empty()) {
                Some(name) => format!("{prefix}From: {} <{sender}>\r\n", display_name(name.trim())),
                None => format!("{prefix}From: {sender}\r\n"),
            };
            m.write(line.as_bytes());
        }
        if !has(&format!("{lower}date")) {
            m.write(format!("{prefix}Date: {}\r\n", mta_core::date::rfc5322(arrival)).as_bytes());
        }
        if !has(&format!("{lower}message-id")) {
            let civil = mta_core::date::Civil::from_system_time(arrival);
            m.write(
                format!(
                    "{prefix}Message-Id: <{:04}{:02}{:02}{:02}{:02}{:02}.{id}@{}>\r\n",
                    civil.year,
                    civil.month,
                    civil.day,
                    civil.hour,
                    civil.minute,
                    civil.second,
                    self.config.hostname
                )
                .as_bytes(),
            );
        }
        let undisclosed = self.config.undisclosed_recipients_header.trim();
        if !resent && !undisclosed.is_empty() && !["to", "cc", "bcc"].iter().any(|n| has(n)) {
            m.write(format!("{undisclosed}\r\n").as_bytes());
        }
        // The empty line, then the body (or nothing, for a message that is
        // all headers).
        if body > header_end {
            m.write(&content[header_end..]);
        } else {
            m.write(b"\r\n");
            m.write(&content[body..]);
        }
        let refused = if recipients.is_empty() {
            m.abort();
            Some((
                "5.1.3".to_owned(),
                "No recipient addresses found in message header".to_owned(),
            ))
        } else {
            match m.finish() {
                Ok(queued) => {
                    queued.commit.await.map_err(|e| temporary(&e))?;
                    return Ok(Picked::Queued { id, uid, sender });
                }
                Err(CleanupError::Rejected { reply, .. }) => {
                    let dsn = reply
                        .status()
                        .map_or_else(|| "5.7.1".to_owned(), |s| s.to_string());
                    Some((dsn, reply.lines().join(" ")))
                }
                Err(e) => return Err(temporary(&e)),
            }
        };
        let (dsn, text) = refused.expect("refused when not returned above");
        let notice = if sender.is_empty() {
            None
        } else {
            let dsn = EnhancedStatus::parse(&dsn)
                .unwrap_or_else(|_| EnhancedStatus::parse("5.0.0").expect("a valid status"));
            let detail = StatusDetail::new(dsn, text.clone(), Relay::None);
            let originals = if recipients.is_empty() {
                vec![Recipient::new(sender.clone())]
            } else {
                recipients.clone()
            };
            let bounced: Vec<BouncedRecipient> = originals
                .iter()
                .map(|r| BouncedRecipient::new(r, detail.clone()))
                .collect();
            let returned = QueueFile {
                envelope: Envelope {
                    arrival: env.arrival,
                    sender: sender.clone(),
                    attributes,
                    recipients: originals,
                },
                content: content.clone(),
            };
            let now = SystemTime::now();
            let notice =
                crate::notice::non_delivery(&self.config.notice, &id, &returned, &bounced, now);
            Some(
                crate::notice::submit(&self.cleanup, &sender, &notice, now)
                    .await
                    .map_err(|e| temporary(&e))?,
            )
        };
        Ok(Picked::Returned {
            id,
            uid,
            sender,
            reason: format!("message refused: {text}"),
            notice,
        })
    }
}
