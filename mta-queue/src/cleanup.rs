//! Cleanup: the one way into the queue.
//!
//! A [`Cleanup`] takes a message as it arrives (the envelope first, then
//! the content in pieces, as an SMTP session receives it), gives it its
//! queue ID, passes the content through the content checks
//! (`header_checks`, `mime_header_checks`, `nested_header_checks`,
//! `body_checks`: lines kept, removed or replaced as they say, lines
//! prepended), writes the queue file in `incoming`, and hands it to the
//! [`Committer`]. The caller answers the client only once the commit is
//! done.
//!
//! What it does today, as Postfix's `cleanup(8)` does:
//! - header lines the caller prepends (the `Received:` header smtpd
//!   writes) go through `header_checks` like the message's own;
//! - `REJECT` removes the file and gives the reply; `DISCARD` accepts
//!   and removes it; `HOLD` commits it in `hold` instead of `incoming`;
//! - a table that cannot answer gives a temporary failure (`451`).
//!
//! - recipients are expanded through `virtual_alias_maps`
//!   ([`crate::virtual_alias`]) before the envelope is written.
//!
//! - the headers of `message_drop_headers` (`Bcc:`, `Content-Length:`,
//!   `Resent-Bcc:`, `Return-Path:` by default) are removed after the
//!   content checks, from all but internal mail
//!   ([`Cleanup::with_drop_headers`]).
//!
//! The header fixes for local submissions (`From:`, `Date:`,
//! `Message-Id:`) are made by [`crate::pickup`], which has the whole
//! message before it starts one here.
//!
//! - envelope addresses go through [`crate::canonical`]
//!   (`sender_canonical_maps`, `recipient_canonical_maps`,
//!   `canonical_maps`, masquerading) before virtual alias expansion, and
//!   header addresses too when the submission asks for it
//!   ([`Cleanup::with_canonical`]); `receive_override_options =
//!   no_address_mappings` turns all of it off.
//!
//! - more than `hopcount_limit` `Received:` headers is a mail loop: the
//!   message is refused with `554 5.4.0 Error: too many hops`.
//!
//! The `REDIRECT` and `BCC` actions of
//! `header_checks` are reported in the verdict, not applied; smtpd
//! checks `queue_minfree`.

use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mta_core::queue_id::{QueueId, QueueIdGenerator};
use mta_core::reply::Reply;
use mta_restrictions::content::{
    ContentFilter, ContentLimits, ContentTables, ContentVerdict, MessageContext, Piece,
};

use crate::canonical::{Canonical, Role};
use crate::file::{Envelope, QueueFileWriter, Recipient};
use crate::store::{Commit, Committer, Queue, QueueName};
use crate::virtual_alias::VirtualAliases;

/// The entry into the queue, shared by every session.
#[derive(Debug)]
pub struct Cleanup {
    queue: Queue,
    committer: Committer,
    tables: Arc<ContentTables>,
    limits: ContentLimits,
    ids: Arc<Mutex<QueueIdGenerator>>,
    uniquifier: Arc<AtomicU64>,
    aliases: Option<VirtualAliases>,
    queue_manager: Option<Arc<tokio::sync::Notify>>,
    drop_headers: Arc<Vec<String>>,
    canonical: Option<Arc<Canonical>>,
    hop_limit: usize,
}

/// A message about to be written.
#[derive(Debug, Clone)]
pub struct Submission {
    /// When it arrived, since the Unix epoch (also the queue ID's time).
    pub arrival: Duration,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// The recipients.
    pub recipients: Vec<Recipient>,
    /// Attributes kept with the message (`client_address`, `helo_name`...).
    pub attributes: Vec<(String, String)>,
    /// Who sent it, for the content checks' log lines.
    pub context: MessageContext,
    /// Header lines to put first, each without line end and with its
    /// continuation lines joined by CR LF and a tab (the `Received:`
    /// header).
    pub prepend: Vec<String>,
    /// Mail the system makes itself (bounces, forwarded copies): not
    /// inspected by `header_checks` and `body_checks`, as Postfix's
    /// cleanup leaves internal mail alone (its checks ran when the
    /// original arrived).
    pub internal: bool,
    /// `receive_override_options = no_address_mappings`: no
    /// `virtual_alias_maps` expansion here (it happens after a content
    /// filter gives the message back).
    pub no_address_mappings: bool,
    /// `receive_override_options = no_header_body_checks`.
    pub no_header_body_checks: bool,
    /// A `HOLD` from the SMTP restrictions: the message goes to `hold`.
    pub hold: bool,
    /// A `DISCARD` from the SMTP restrictions: accepted and dropped.
    pub discard: bool,
    /// Rewrite the addresses in the message's headers too (canonical
    /// maps, masquerading): Postfix does for local submissions and for
    /// clients in `local_header_rewrite_clients`, not for others.
    pub rewrite_headers: bool,
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CleanupError {
    /// The content checks refused it; the reply says how, and the log
    /// lines say which header or line did it (`reject: header ...`).
    #[error("rejected: {reply}")]
    Rejected {
        /// The reply for the client.
        reply: Reply,
        /// The content checks' log lines.
        log: Vec<String>,
    },
    /// Writing or committing failed: the client gets a temporary error
    /// (`451 4.3.0 Error: queue file write error`).
    #[error("queue file write error: {0}")]
    Io(#[from] io::Error),
}

impl CleanupError {
    /// The reply for the client.
    pub fn reply(&self) -> Reply {
        match self {
            CleanupError::Rejected { reply, .. } => reply.clone(),
            CleanupError::Io(_) => write_error_reply(),
        }
    }
}

fn write_error_reply() -> Reply {
    let wire = b"451 4.3.0 Error: queue file write error\r\n";
    match mta_core::reply::parse_reply(wire) {
        Ok(mta_core::reply::ParseStatus::Complete(v, _)) => v.to_reply(),
        _ => unreachable!("a fixed, valid reply"),
    }
}

/// A message being written.
#[derive(Debug)]
pub struct CleanupMessage {
    id: QueueId,
    queue: Queue,
    committer: Committer,
    queue_manager: Option<Arc<tokio::sync::Notify>>,
    writer: Option<QueueFileWriter>,
    /// `None` once [`finish`](Self::finish) has taken it.
    filter: Option<ContentFilter<'static>>,
    buffer: Vec<u8>,
    drop_headers: Arc<Vec<String>>,
    /// Canonical mapping for header addresses, when they are rewritten.
    header_canonical: Option<Arc<Canonical>>,
    /// `Received:` headers seen, and `hopcount_limit` (0: none).
    hops: usize,
    hop_limit: usize,
    error: Option<io::Error>,
    /// HOLD and DISCARD decided before the content (restrictions).
    hold: bool,
    discard: bool,
}

/// A message that is written and being committed.
#[derive(Debug)]
pub struct Queued {
    /// Its queue ID.
    pub id: QueueId,
    /// The content size written.
    pub size: u64,
    /// Completes when the file is durable: only then may the client be
    /// told it was queued.
    pub commit: Commit,
    /// `HOLD` was asked for: the message is committed in `hold`.
    pub hold: bool,
    /// `DISCARD` was asked for: the message is accepted and already
    /// removed (`commit` completes at once).
    pub discarded: bool,
    /// The content checks' verdict, with the log lines they produced.
    pub verdict: ContentVerdict,
}

impl Cleanup {
    /// A cleanup writing into `queue`, committing through `committer`,
    /// checking content with `tables`.
    pub fn new(
        queue: Queue,
        committer: Committer,
        tables: Arc<ContentTables>,
        limits: ContentLimits,
    ) -> Cleanup {
        Cleanup {
            queue,
            committer,
            tables,
            limits,
            ids: Arc::new(Mutex::new(QueueIdGenerator::new())),
            uniquifier: Arc::new(AtomicU64::new(u64::from(std::process::id()))),
            aliases: None,
            queue_manager: None,
            canonical: None,
            hop_limit: 50,
            drop_headers: Arc::new(
                ["bcc", "content-length", "resent-bcc", "return-path"]
                    .map(String::from)
                    .to_vec(),
            ),
        }
    }

    /// Removes the message headers named in `names` (Postfix's
    /// `message_drop_headers`; the default is `bcc, content-length,
    /// resent-bcc, return-path`) after the content checks, from every
    /// message but internal ones.
    pub fn with_drop_headers(mut self, names: Vec<String>) -> Cleanup {
        self.drop_headers = Arc::new(names.into_iter().map(|n| n.to_ascii_lowercase()).collect());
        self
    }

    /// A cleanup with new content checks (a configuration reload) that
    /// shares this one's queue, committer, queue-manager wake-up and queue
    /// ID sequence, so that messages of both never get the same ID. The
    /// virtual aliases and dropped headers are set afresh with
    /// [`with_virtual_aliases`](Self::with_virtual_aliases) and
    /// [`with_drop_headers`](Self::with_drop_headers).
    pub fn reconfigured(&self, tables: Arc<ContentTables>, limits: ContentLimits) -> Cleanup {
        Cleanup {
            queue: self.queue.clone(),
            committer: self.committer.clone(),
            tables,
            limits,
            ids: Arc::clone(&self.ids),
            uniquifier: Arc::clone(&self.uniquifier),
            aliases: None,
            queue_manager: self.queue_manager.clone(),
            drop_headers: Arc::clone(&self.drop_headers),
            canonical: None,
            hop_limit: self.hop_limit,
        }
    }

    /// Refuses messages with more than `limit` `Received:` headers
    /// (`hopcount_limit`, default 50; 0 turns the check off): a mail
    /// loop, answered `554 5.4.0 Error: too many hops` as Postfix does.
    pub fn with_hop_limit(mut self, limit: usize) -> Cleanup {
        self.hop_limit = limit;
        self
    }

    /// Rewrites addresses through canonical maps and masquerading
    /// ([`crate::canonical`]) before virtual alias expansion: the
    /// envelope always, the headers when the submission asks for it.
    pub fn with_canonical(mut self, canonical: Canonical) -> Cleanup {
        self.canonical = (!canonical.is_noop()).then(|| Arc::new(canonical));
        self
    }

    /// Tells the queue manager through `wake` (its
    /// [`Scheduler::waker`](crate::scheduler::Scheduler::waker)) of each
    /// message committed to `incoming`, once it is durable, whoever
    /// submitted it: an SMTP session, a bounce notice, a local submission.
    pub fn with_queue_manager(mut self, wake: Arc<tokio::sync::Notify>) -> Cleanup {
        self.queue_manager = Some(wake);
        self
    }

    /// Expands recipients through `virtual_alias_maps` before each
    /// message is written ([`crate::virtual_alias`]).
    pub fn with_virtual_aliases(mut self, aliases: VirtualAliases) -> Cleanup {
        self.aliases = Some(aliases);
        self
    }

    /// The queue it writes to.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Starts a message: gives it its queue ID and writes its envelope.
    /// The file is written in `incoming` with ordinary (non-syncing)
    /// writes; only the commit syncs.
    ///
    /// # Errors
    ///
    /// When the file cannot be created or written, or the recipients
    /// cannot be expanded ([`crate::virtual_alias::AliasError`], as the
    /// error's inner error): the client is told to try again.
    pub fn begin(&self, mut submission: Submission) -> io::Result<CleanupMessage> {
        let canonical = self
            .canonical
            .as_ref()
            .filter(|_| !submission.no_address_mappings && !submission.internal);
        if let Some(c) = canonical {
            submission.sender = c
                .map(&submission.sender, Role::EnvelopeSender)
                .map_err(io::Error::other)?;
            for r in &mut submission.recipients {
                r.address = c
                    .map(&r.address, Role::EnvelopeRecipient)
                    .map_err(io::Error::other)?;
            }
        }
        let header_canonical = canonical.filter(|_| submission.rewrite_headers).cloned();
        let recipients = match &self.aliases {
            Some(a) if !submission.no_address_mappings => {
                a.expand(submission.recipients).map_err(io::Error::other)?
            }
            _ => submission.recipients,
        };
        let id = {
            let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            ids.next(
                submission.arrival,
                self.uniquifier.fetch_add(1, Ordering::Relaxed),
            )
        };
        let envelope = Envelope {
            arrival: submission.arrival,
            sender: submission.sender,
            attributes: submission.attributes,
            recipients,
        };
        let writer = self.queue.create(&id, &envelope)?;
        let mut context = submission.context;
        context.queue_id = Some(id.as_str().to_string());
        let mut message = CleanupMessage {
            id,
            queue: self.queue.clone(),
            committer: self.committer.clone(),
            queue_manager: self.queue_manager.clone(),
            writer: Some(writer),
            filter: Some(ContentFilter::shared(
                if submission.internal || submission.no_header_body_checks {
                    Arc::new(ContentTables::default())
                } else {
                    Arc::clone(&self.tables)
                },
                self.limits,
                context,
            )),
            buffer: Vec::new(),
            header_canonical,
            hops: 0,
            hop_limit: self.hop_limit,
            drop_headers: if submission.internal {
                Arc::new(Vec::new())
            } else {
                Arc::clone(&self.drop_headers)
            },
            error: None,
            hold: submission.hold,
            discard: submission.discard,
        };
        for line in &submission.prepend {
            message.write(line.as_bytes());
            message.write(b"\r\n");
        }
        Ok(message)
    }
}

/// Whether `piece` is a `Received:` header of the message itself, which
/// `hopcount_limit` counts.
fn is_received(piece: &Piece<'_>) -> bool {
    use mta_restrictions::content::{HeaderClass, LineKind};
    piece.kind == LineKind::Header(HeaderClass::Primary)
        && piece
            .text
            .get(..9)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"received:"))
}

/// Writes what `piece` puts in the queued content, less a primary header
/// named in `drop_headers` (`message_drop_headers`: after the content
/// checks, so a `REPLACE` that makes such a header is dropped too), with
/// the addresses of primary headers rewritten by `canonical`. A table
/// that cannot answer sets `error`: the message is not queued.
fn write_piece(
    piece: Piece<'_>,
    drop_headers: &[String],
    canonical: Option<&Canonical>,
    error: &mut Option<io::Error>,
    out: &mut Vec<u8>,
) {
    use mta_restrictions::content::{Disposition, HeaderClass, LineKind};
    if let (Some(c), LineKind::Header(HeaderClass::Primary)) = (canonical, piece.kind) {
        let text: Option<&str> = match piece.disposition {
            Disposition::Keep => std::str::from_utf8(piece.text).ok(),
            Disposition::Replace(new) => Some(new),
            Disposition::Remove => None,
        };
        if let Some(text) = text {
            let line = text.trim_end_matches(['\r', '\n']);
            match c.rewrite_header(line) {
                Ok(Some(new)) => {
                    let rewritten = Piece {
                        disposition: Disposition::Replace(&new),
                        ..piece
                    };
                    return write_piece(rewritten, drop_headers, None, error, out);
                }
                Ok(None) => {}
                Err(e) => {
                    if error.is_none() {
                        *error = Some(io::Error::other(e));
                    }
                }
            }
        }
    }
    if piece.kind == LineKind::Header(HeaderClass::Primary) && !drop_headers.is_empty() {
        let name_of = |text: &[u8]| -> String {
            let end = text.iter().position(|&b| b == b':').unwrap_or(0);
            String::from_utf8_lossy(&text[..end])
                .trim()
                .to_ascii_lowercase()
        };
        let name = match piece.disposition {
            Disposition::Keep => name_of(piece.text),
            Disposition::Replace(new) => name_of(new.as_bytes()),
            Disposition::Remove => String::new(),
        };
        if !name.is_empty() && drop_headers.contains(&name) {
            let kept = Piece {
                disposition: Disposition::Remove,
                ..piece
            };
            kept.write_to(out);
            return;
        }
    }
    piece.write_to(out);
}

impl CleanupMessage {
    /// The message's queue ID.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Adds content (CR LF line ends; any piece boundaries).
    pub fn write(&mut self, chunk: &[u8]) {
        let buffer = &mut self.buffer;
        let drop_headers = &self.drop_headers;
        let canonical = self.header_canonical.as_deref();
        let error = &mut self.error;
        let hops = &mut self.hops;
        let mut sink = |p: Piece<'_>| {
            *hops += usize::from(is_received(&p));
            write_piece(p, drop_headers, canonical, error, buffer);
        };
        if let Some(filter) = self.filter.as_mut() {
            filter.feed(chunk, &mut sink);
        }
        self.flush();
    }

    fn flush(&mut self) {
        if self.buffer.is_empty() || self.error.is_some() {
            self.buffer.clear();
            return;
        }
        if let Some(w) = self.writer.as_mut()
            && let Err(e) = w.write_content(&self.buffer)
        {
            self.error = Some(e);
        }
        self.buffer.clear();
    }

    /// Ends the content: writes the end of the file and starts the
    /// commit, or removes the file when the message is refused.
    ///
    /// # Errors
    ///
    /// [`CleanupError::Rejected`] when the content checks refused the
    /// message; [`CleanupError::Io`] when writing failed (a temporary
    /// error for the client). The file is gone in both cases.
    pub fn finish(mut self) -> Result<Queued, CleanupError> {
        let buffer = &mut self.buffer;
        let drop_headers = &self.drop_headers;
        let canonical = self.header_canonical.as_deref();
        let error = &mut self.error;
        let hops = &mut self.hops;
        let mut sink = |p: Piece<'_>| {
            *hops += usize::from(is_received(&p));
            write_piece(p, drop_headers, canonical, error, buffer);
        };
        let filter = self.filter.take().expect("finish once");
        let mut verdict = filter.finish(&mut sink);
        verdict.hold |= self.hold;
        verdict.discard |= self.discard;
        self.flush();
        if let Some(reply) = verdict.reply() {
            self.remove();
            let reply = reply.unwrap_or_else(|_| write_error_reply());
            return Err(CleanupError::Rejected {
                reply,
                log: verdict.log,
            });
        }
        if self.hop_limit > 0 && self.hops > self.hop_limit {
            self.remove();
            let wire = b"554 5.4.0 Error: too many hops\r\n";
            let reply = match mta_core::reply::parse_reply(wire) {
                Ok(mta_core::reply::ParseStatus::Complete(v, _)) => v.to_reply(),
                _ => unreachable!("a fixed, valid reply"),
            };
            return Err(CleanupError::Rejected {
                reply,
                log: vec![format!(
                    "{}: reject: too many hops: {} Received: headers (hopcount_limit = {})",
                    self.id.as_str(),
                    self.hops,
                    self.hop_limit
                )],
            });
        }
        if let Some(e) = self.error.take() {
            self.remove();
            return Err(CleanupError::Io(e));
        }
        let mut writer = self.writer.take().expect("finish once");
        let size = writer.content_size();
        // FILTER from header_checks or body_checks: this message goes
        // through that content filter instead of content_filter's.
        if let Some(filter) = &verdict.filter
            && let Err(e) = writer.trailing_attribute("content_filter", filter)
        {
            self.remove();
            return Err(CleanupError::Io(e));
        }
        let file = match writer.finish() {
            Ok(f) => f,
            Err(e) => {
                self.remove();
                return Err(CleanupError::Io(e));
            }
        };
        if verdict.discard {
            drop(file);
            self.remove();
            let (done, wait) = tokio::sync::oneshot::channel();
            let _ = done.send(Ok(()));
            return Ok(Queued {
                id: self.id,
                size,
                commit: Commit::ready(wait),
                hold: false,
                discarded: true,
                verdict,
            });
        }
        // A HOLD message goes straight to hold, before it is marked ready,
        // so the queue manager never sees it in incoming.
        let target = if verdict.hold {
            if let Err(e) =
                self.queue
                    .move_to(self.id.as_str(), QueueName::Incoming, QueueName::Hold)
            {
                drop(file);
                self.remove();
                return Err(CleanupError::Io(e));
            }
            QueueName::Hold
        } else {
            QueueName::Incoming
        };
        let wake = self
            .queue_manager
            .clone()
            .filter(|_| target == QueueName::Incoming);
        let commit = self
            .committer
            .commit(file, &self.queue.dir(target))
            .notifying(wake);
        Ok(Queued {
            id: self.id,
            size,
            commit,
            hold: verdict.hold,
            discarded: false,
            verdict,
        })
    }

    /// Gives the message up (the client went away, or the session
    /// refused it): the file is removed.
    pub fn abort(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        self.writer = None;
        let _ = std::fs::remove_file(self.queue.path(QueueName::Incoming, &self.id));
    }
}

impl Drop for CleanupMessage {
    fn drop(&mut self) {
        // A message neither finished nor aborted leaves no half file.
        if self.writer.is_some() {
            self.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::QueueFile;
    use mta_maps::list::MapList;
    use mta_maps::regexp::RegexpTable;

    fn setup(name: &str, header_checks: &str) -> (Cleanup, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("mta-cleanup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let queue = Queue::open(&root).unwrap();
        let (table, warnings) = RegexpTable::parse(header_checks, "regexp:header_checks");
        assert!(warnings.is_empty());
        let list = MapList::new(vec![Arc::new(table)]);
        let tables = ContentTables {
            header: list.clone(),
            mime_header: list.clone(),
            nested_header: list,
            body: MapList::new(vec![]),
        };
        let cleanup = Cleanup::new(
            queue,
            Committer::start(1).unwrap(),
            Arc::new(tables),
            ContentLimits::default(),
        );
        (cleanup, root)
    }

    fn submission() -> Submission {
        Submission {
            arrival: Duration::from_secs(1_700_000_000),
            sender: "a@example.org".into(),
            recipients: vec![Recipient::new("b@example.com")],
            attributes: vec![("client_address".into(), "192.0.2.1".into())],
            context: MessageContext::default(),
            prepend: vec!["Received: from x (unknown [192.0.2.1])\r\n\tby mx with ESMTP".into()],
            internal: false,
            no_address_mappings: false,
            no_header_body_checks: false,
            hold: false,
            discard: false,
            rewrite_headers: false,
        }
    }

    const RULES: &str = "/^Subject: reject me/ REJECT go away\n/^Subject: drop me/ DISCARD\n/^Subject: hold me/ HOLD\n/^X-Secret:/ IGNORE\n";

    #[test]
    fn accepted_messages_are_queued_with_their_header_changes() {
        let (cleanup, root) = setup("ok", RULES);
        let mut m = cleanup.begin(submission()).unwrap();
        m.write(b"Subject: hi\r\nX-Secret: 42\r\n");
        m.write(b"\r\nbody\r\n");
        let q = m.finish().unwrap();
        q.commit.wait().unwrap();
        assert!(!q.hold && !q.discarded);
        let file = QueueFile::read(&cleanup.queue().path(QueueName::Incoming, &q.id)).unwrap();
        assert_eq!(
            String::from_utf8(file.content).unwrap(),
            "Received: from x (unknown [192.0.2.1])\r\n\tby mx with ESMTP\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(file.envelope.attribute("client_address"), Some("192.0.2.1"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reject_discard_and_hold() {
        let (cleanup, root) = setup("actions", RULES);
        let mut m = cleanup.begin(submission()).unwrap();
        let id = *m.id();
        m.write(b"Subject: reject me\r\n\r\nx\r\n");
        let err = m.finish().unwrap_err();
        assert_eq!(err.reply().to_string(), "550 5.7.1 go away");
        assert!(!cleanup.queue().path(QueueName::Incoming, &id).exists());

        let mut m = cleanup.begin(submission()).unwrap();
        m.write(b"Subject: drop me\r\n\r\nx\r\n");
        let q = m.finish().unwrap();
        assert!(q.discarded);
        q.commit.wait().unwrap();
        assert!(!cleanup.queue().path(QueueName::Incoming, &q.id).exists());

        let mut m = cleanup.begin(submission()).unwrap();
        m.write(b"Subject: hold me\r\n\r\nx\r\n");
        let q = m.finish().unwrap();
        assert!(q.hold);
        q.commit.wait().unwrap();
        // Committed in hold, never visible in incoming.
        assert_eq!(cleanup.queue().find(q.id.as_str()), Some(QueueName::Hold));
        assert!(crate::store::is_ready(
            &cleanup.queue().path(QueueName::Hold, &q.id)
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_filter_action_routes_the_message_through_that_filter() {
        let (cleanup, root) = setup(
            "filter",
            "/^Subject: scan me/ FILTER scan:[127.0.0.1]:10027\n",
        );
        let mut sub = submission();
        sub.attributes
            .push(("content_filter".into(), "smtp:[127.0.0.1]:10025".into()));
        let mut m = cleanup.begin(sub).unwrap();
        m.write(b"Subject: scan me\r\n\r\nx\r\n");
        let q = m.finish().unwrap();
        q.commit.wait().unwrap();
        let file = QueueFile::read(&cleanup.queue().path(QueueName::Incoming, &q.id)).unwrap();
        assert_eq!(
            file.envelope.attribute("content_filter"),
            Some("scan:[127.0.0.1]:10027"),
            "FILTER overrides content_filter"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn internal_mail_is_not_inspected_again() {
        // A bounce or a forwarded copy quoting a rejected header must
        // still go out: its checks ran when the original arrived.
        let (cleanup, root) = setup("internal", RULES);
        let mut internal = submission();
        internal.internal = true;
        let mut m = cleanup.begin(internal).unwrap();
        m.write(b"Subject: reject me\r\n\r\nx\r\n");
        let q = m.finish().unwrap();
        assert!(!q.discarded && !q.hold);
        q.commit.wait().unwrap();
        assert_eq!(
            cleanup.queue().find(q.id.as_str()),
            Some(QueueName::Incoming)
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn too_many_hops_is_a_loop() {
        let (cleanup, root) = setup("hops", "");
        let cleanup = cleanup.with_hop_limit(3);
        let mut m = cleanup.begin(submission()).unwrap();
        // The submission prepends one Received: header; three more.
        m.write(b"Received: a\r\nreceived: b\r\nReceived: c\r\nSubject: x\r\n\r\nbody\r\n");
        let err = m.finish().unwrap_err();
        assert_eq!(err.reply().to_string(), "554 5.4.0 Error: too many hops");
        let mut m = cleanup.begin(submission()).unwrap();
        m.write(b"Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nReceived: in the body\r\n");
        assert!(m.finish().is_ok(), "three hops is within the limit");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn abandoned_messages_leave_no_file() {
        let (cleanup, root) = setup("abort", RULES);
        let m = cleanup.begin(submission()).unwrap();
        let id = *m.id();
        assert!(cleanup.queue().path(QueueName::Incoming, &id).exists());
        m.abort();
        assert!(!cleanup.queue().path(QueueName::Incoming, &id).exists());
        let mut m = cleanup.begin(submission()).unwrap();
        let id = *m.id();
        m.write(b"Subject: x\r\n");
        drop(m);
        assert!(!cleanup.queue().path(QueueName::Incoming, &id).exists());
        assert!(
            cleanup
                .queue()
                .list(QueueName::Incoming)
                .unwrap()
                .is_empty()
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
