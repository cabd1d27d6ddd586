//! The queue directories and the commit that makes a message durable.
//!
//! Under `queue_directory`, as in Postfix: `maildrop` (local submissions
//! waiting for pickup), `incoming` (new messages), `active` (being
//! delivered), `deferred` (waiting to retry), `hold` (set aside by the
//! administrator or a `HOLD` action), `corrupt` (files that cannot be
//! read), and the per-message logs `defer` and `bounce`. A message's file
//! is named by its queue ID in whichever queue it is, so `find
//! queue_directory -name ID` finds it.
//!
//! # Durability
//!
//! A message is accepted (the `250` after DATA) only after its file is
//! complete, the file is synced and the directory that names it is
//! synced. [`Committer`] does that off the async runtime, on its own
//! threads, and commits many sessions' files together: each thread takes
//! every request waiting, syncs those files, then syncs each directory
//! once for all of them. Concurrent sessions then share directory syncs
//! and the file system's journal commits instead of queueing behind each
//! other's.
//!
//! A file in `incoming` is ready for the queue manager only once it is
//! durable: cleanup creates it with mode 0600 and the committer adds the
//! owner's execute bit (0700) after the file's sync, before the directory's
//! ([`is_ready`]), as Postfix marks finished queue files. The queue
//! manager passes over files without it, which are still being written.
//!
//! Moves between queues are renames within one file system, synced on
//! both directories, so a message is always in exactly one queue after a
//! crash. At start, [`Queue::recover`] puts every unreadable file in
//! `corrupt` (with the reason, for the log) and returns `active`
//! messages to `incoming`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use mta_core::queue_id::QueueId;

use crate::file::{Envelope, QueueFile, QueueFileError, QueueFileWriter};

/// A queue: one of the directories under `queue_directory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueName {
    /// Local submissions waiting for pickup.
    Maildrop,
    /// New messages, not yet scheduled.
    Incoming,
    /// Messages being delivered.
    Active,
    /// Messages waiting to be retried.
    Deferred,
    /// Messages set aside.
    Hold,
    /// Files that cannot be read.
    Corrupt,
}

impl QueueName {
    /// Every queue, in Postfix's order.
    pub const ALL: [QueueName; 6] = [
        QueueName::Maildrop,
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
        QueueName::Hold,
        QueueName::Corrupt,
    ];

    /// The directory name.
    pub fn dir_name(self) -> &'static str {
        match self {
            QueueName::Maildrop => "maildrop",
            QueueName::Incoming => "incoming",
            QueueName::Active => "active",
            QueueName::Deferred => "deferred",
            QueueName::Hold => "hold",
            QueueName::Corrupt => "corrupt",
        }
    }
}

/// Whether the queue file at `path` is complete and durable: it has the
/// owner's execute bit, which the committer sets after syncing it.
pub fn is_ready(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o100 != 0)
}

/// Marks a synced queue file ready (mode 0700).
fn mark_ready(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o700))
}

/// The per-message log directories (`defer`, `bounce`), beside the
/// queues, and `warn`, whose empty files say a delay warning was sent.
const LOG_DIRS: [&str; 3] = ["defer", "bounce", "warn"];

/// A file moved to `corrupt` at recovery, and why.
#[derive(Debug)]
pub struct Quarantined {
    /// The queue ID (the file name).
    pub id: String,
    /// The queue it was in.
    pub from: QueueName,
    /// Why it could not be used.
    pub reason: QueueFileError,
}

/// What [`Queue::recover`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Files moved to `corrupt`.
    pub quarantined: Vec<Quarantined>,
    /// Messages moved from `active` back to `incoming`.
    pub requeued: Vec<String>,
}

/// The queue directory tree.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
}

impl Queue {
    /// Opens the queue under `root` (`queue_directory`), creating missing
    /// directories.
    ///
    /// # Errors
    ///
    /// When a directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Queue> {
        let root = root.into();
        for q in QueueName::ALL {
            fs::create_dir_all(root.join(q.dir_name()))?;
        }
        for d in LOG_DIRS {
            fs::create_dir_all(root.join(d))?;
        }
        Ok(Queue { root })
    }

    /// Sets the queue's permissions as the daemon wants them: the queue
    /// directory itself 0755 (so that every user reaches `maildrop` and
    /// `public`), each queue and log directory 0700, and `maildrop` 1733:
    /// every local user may drop a file there (`mtad sendmail`) but not
    /// list, read or remove anyone else's, as Postfix's maildrop was
    /// before its setgid postdrop; pickup trusts only the file's owner.
    ///
    /// # Errors
    ///
    /// When a mode cannot be set (the caller does not own the queue).
    pub fn set_permissions(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))?;
        for q in QueueName::ALL {
            let mode = if q == QueueName::Maildrop {
                0o1733
            } else {
                0o700
            };
            fs::set_permissions(self.dir(q), fs::Permissions::from_mode(mode))?;
        }
        for d in LOG_DIRS {
            fs::set_permissions(self.root.join(d), fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// `queue_directory`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `queue`.
    pub fn dir(&self, queue: QueueName) -> PathBuf {
        self.root.join(queue.dir_name())
    }

    /// Where message `id` is (or would be) in `queue`.
    pub fn path(&self, queue: QueueName, id: &QueueId) -> PathBuf {
        self.dir(queue).join(id.as_str())
    }

    /// Starts a new message in `incoming`. Write its content, call
    /// [`QueueFileWriter::finish`], then commit the file with a
    /// [`Committer`] before accepting the message.
    ///
    /// # Errors
    ///
    /// When the file cannot be created (it must not exist) or written.
    pub fn create(&self, id: &QueueId, envelope: &Envelope) -> io::Result<QueueFileWriter> {
        QueueFileWriter::create(&self.path(QueueName::Incoming, id), envelope)
    }

    /// The queue that holds message `id`, if any.
    pub fn find(&self, id: &str) -> Option<QueueName> {
        QueueName::ALL
            .into_iter()
            .find(|q| self.dir(*q).join(id).exists())
    }

    /// Moves message `id` from one queue to another, durably.
    ///
    /// # Errors
    ///
    /// When the file is not in `from`, or on I/O errors.
    pub fn move_to(&self, id: &str, from: QueueName, to: QueueName) -> io::Result<()> {
        let source = self.dir(from).join(id);
        let target = self.dir(to).join(id);
        fs::rename(&source, &target)?;
        File::open(self.dir(to))?.sync_all()?;
        File::open(self.dir(from))?.sync_all()
    }

    /// Moves message `id` between queues without syncing either directory:
    /// for the queue manager's own moves (incoming or deferred to active,
    /// active to deferred), where a move a crash undoes only brings the
    /// message back to a queue it is scheduled from anyway. Postfix's
    /// qmgr does not sync these either.
    ///
    /// # Errors
    ///
    /// When the file is not in `from`.
    pub fn rename(&self, id: &str, from: QueueName, to: QueueName) -> io::Result<()> {
        fs::rename(self.dir(from).join(id), self.dir(to).join(id))
    }

    /// Removes message `id` from `queue` and its logs without syncing the
    /// directory: for a message delivered to every recipient, where a
    /// removal a crash undoes means the message is delivered again (at
    /// least once, never lost), as with Postfix.
    ///
    /// # Errors
    ///
    /// When the file cannot be removed.
    pub fn remove_unsynced(&self, id: &str, queue: QueueName) -> io::Result<()> {
        fs::remove_file(self.dir(queue).join(id))?;
        for d in LOG_DIRS {
            let _ = fs::remove_file(self.root.join(d).join(id));
        }
        Ok(())
    }

    /// Removes message `id` from `queue`, and its defer and bounce logs.
    ///
    /// # Errors
    ///
    /// When the file cannot be removed.
    pub fn remove(&self, id: &str, queue: QueueName) -> io::Result<()> {
        fs::remove_file(self.dir(queue).join(id))?;
        for d in LOG_DIRS {
            let _ = fs::remove_file(self.root.join(d).join(id));
        }
        File::open(self.dir(queue))?.sync_all()
    }

    /// Bytes available to an unprivileged writer on the queue's file
    /// system.
    ///
    /// # Errors
    ///
    /// When `statvfs(2)` fails.
    pub fn free_space(&self) -> io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        // The C types are 32 bits wide on some platforms, 64 on others.
        #[allow(clippy::useless_conversion)]
        let (blocks, size) = (
            u64::from(st.blocks_available()),
            u64::from(st.fragment_size()),
        );
        Ok(blocks.saturating_mul(size))
    }

    /// Whether the queue may take a message, as Postfix's smtpd decides
    /// at MAIL FROM (`queue_minfree` in postconf(5)): the file system
    /// must have `queue_minfree` bytes free, and at least one and a half
    /// times `message_size_limit` (and the client's declared `SIZE`).
    /// When it has not, the client gets `452 4.3.1 Insufficient system
    /// storage` and tries later; nothing is lost.
    ///
    /// # Errors
    ///
    /// When `statvfs(2)` fails.
    pub fn has_room(
        &self,
        declared_size: u64,
        queue_minfree: u64,
        message_size_limit: u64,
    ) -> io::Result<bool> {
        Ok(room_for(
            self.free_space()?,
            declared_size,
            queue_minfree,
            message_size_limit,
        ))
    }

    /// The messages in `queue`, by queue ID (file names that are not
    /// queue IDs are left alone).
    ///
    /// # Errors
    ///
    /// When the directory cannot be read.
    pub fn list(&self, queue: QueueName) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.dir(queue))? {
            let name = entry?.file_name();
            if let Some(name) = name.to_str()
                && name.parse::<QueueId>().is_ok()
            {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Puts the queue in order after a start or a crash: every file in
    /// `incoming`, `active`, `deferred` and `hold` that cannot be read
    /// (cut short, damaged, foreign) goes to `corrupt`; messages in
    /// `active` go back to `incoming`, to be scheduled again (their done
    /// recipients stay done).
    ///
    /// # Errors
    ///
    /// On I/O errors other than unreadable files.
    pub fn recover(&self) -> io::Result<Recovery> {
        let mut found = Recovery::default();
        for queue in [
            QueueName::Incoming,
            QueueName::Active,
            QueueName::Deferred,
            QueueName::Hold,
        ] {
            for entry in fs::read_dir(self.dir(queue))? {
                let entry = entry?;
                let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                match QueueFile::read(&entry.path()) {
                    Ok(_) => {
                        // Complete but not marked: the crash came between
                        // the sync and the mark, possibly after the 250.
                        // Deliver it, as Postfix would.
                        if !is_ready(&entry.path()) {
                            File::open(entry.path()).and_then(|f| mark_ready(&f))?;
                        }
                        if queue == QueueName::Active {
                            self.move_to(&id, QueueName::Active, QueueName::Incoming)?;
                            found.requeued.push(id);
                        }
                    }
                    Err(reason) => {
                        self.move_to(&id, queue, QueueName::Corrupt)?;
                        found.quarantined.push(Quarantined {
                            id,
                            from: queue,
                            reason,
                        });
                    }
                }
            }
        }
        found.requeued.sort();
        Ok(found)
    }
}

/// The decision of [`Queue::has_room`] for `free` bytes available.
fn room_for(free: u64, declared_size: u64, queue_minfree: u64, message_size_limit: u64) -> bool {
    let half_again = |n: u64| n.saturating_add(n / 2);
    let wanted = queue_minfree
        .max(half_again(message_size_limit))
        .max(half_again(declared_size));
    free >= wanted
}

/// One file to make durable.
struct Request {
    file: File,
    dir: PathBuf,
    done: tokio::sync::oneshot::Sender<io::Result<()>>,
}

/// Makes finished queue files durable, many at a time, on its own
/// threads (never on an async runtime's workers). Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<Request>,
    _threads: Arc<Vec<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

/// A commit in progress: wait for it, blocking or async.
#[derive(Debug)]
pub struct Commit {
    done: tokio::sync::oneshot::Receiver<io::Result<()>>,
    /// Told once the file is durable (the queue manager's wake-up).
    on_durable: Option<Arc<tokio::sync::Notify>>,
}

impl Commit {
    /// A commit that completes with whatever `done` is sent.
    pub(crate) fn ready(done: tokio::sync::oneshot::Receiver<io::Result<()>>) -> Commit {
        Commit {
            done,
            on_durable: None,
        }
    }

    /// The same commit, notifying `notify` when it succeeds.
    pub(crate) fn notifying(mut self, notify: Option<Arc<tokio::sync::Notify>>) -> Commit {
        self.on_durable = notify;
        self
    }

    /// Waits on this thread until the file is durable.
    ///
    /// # Errors
    ///
    /// When syncing failed: the message must not be accepted.
    pub fn wait(self) -> io::Result<()> {
        finished(self.done.blocking_recv(), self.on_durable.as_ref())
    }
}

/// A commit's outcome from its channel, notifying `on_durable` when the
/// file is durable.
fn finished(
    result: Result<io::Result<()>, tokio::sync::oneshot::error::RecvError>,
    on_durable: Option<&Arc<tokio::sync::Notify>>,
) -> io::Result<()> {
    let result = result.unwrap_or_else(|_| Err(io::Error::other("the committer stopped")));
    if result.is_ok()
        && let Some(n) = on_durable
    {
        n.notify_one();
    }
    result
}

impl std::future::Future for Commit {
    type Output = io::Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        std::pin::Pin::new(&mut this.done)
            .poll(cx)
            .map(|r| finished(r, this.on_durable.as_ref()))
    }
}

impl Committer {
    /// Starts `threads` commit threads (at least one). A few threads let
    /// the file system merge several syncs into one journal commit.
    ///
    /// # Errors
    ///
    /// When a thread cannot be started.
    pub fn start(threads: usize) -> io::Result<Committer> {
        let (tx, rx) = mpsc::channel::<Request>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            handles.push(
                thread::Builder::new()
                    .name(format!("queue-commit-{n}"))
                    .spawn(move || commit_loop(&rx))?,
            );
        }
        Ok(Committer {
            requests: tx,
            _threads: Arc::new(handles),
        })
    }

    /// Asks for `file` (finished, in directory `dir`) to be made durable.
    pub fn commit(&self, file: File, dir: &Path) -> Commit {
        let (done, wait) = tokio::sync::oneshot::channel();
        let request = Request {
            file,
            dir: dir.to_path_buf(),
            done,
        };
        if let Err(mpsc::SendError(request)) = self.requests.send(request) {
            let _ = request
                .done
                .send(Err(io::Error::other("the committer stopped")));
        }
        Commit::ready(wait)
    }
}

/// The most file syncs one batch runs at the same time.
const PARALLEL_SYNCS: usize = 16;

/// Syncs the files of a batch, several at once: the file system merges
/// concurrent syncs into shared journal commits, where one after the
/// other each would pay for its own.
fn sync_files(batch: &[Request]) -> Vec<io::Result<()>> {
    if batch.len() == 1 {
        return vec![batch[0].file.sync_all()];
    }
    let per_thread = batch.len().div_ceil(PARALLEL_SYNCS);
    thread::scope(|s| {
        let handles: Vec<_> = batch
            .chunks(per_thread)
            .map(|chunk| {
                s.spawn(move || chunk.iter().map(|r| r.file.sync_all()).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(io::Error::other("sync thread panicked"))])
            })
            .collect()
    })
}

fn commit_loop(rx: &Mutex<mpsc::Receiver<Request>>) {
    loop {
        // Take one request, waiting for it, then every other one that is
        // already there: they share the directory syncs.
        let batch = {
            let Ok(rx) = rx.lock() else { return };
            let Ok(first) = rx.recv() else { return };
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            batch
        };
        let mut results = sync_files(&batch);
        // Ready only once synced; the directory sync below carries the
        // mode change to the journal with the names.
        for (request, result) in batch.iter().zip(results.iter_mut()) {
            if result.is_ok() {
                *result = mark_ready(&request.file);
            }
        }
        let mut dirs: Vec<&PathBuf> = batch.iter().map(|r| &r.dir).collect();
        dirs.sort();
        dirs.dedup();
        let mut dir_errors = Vec::new();
        for dir in dirs {
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                dir_errors.push((dir.clone(), e.kind()));
            }
        }
        for (request, result) in batch.into_iter().zip(results.drain(..)) {
            let result =
                result.and_then(
                    |()| match dir_errors.iter().find(|(d, _)| *d == request.dir) {
                        Some((d, kind)) => {
                            Err(io::Error::new(*kind, format!("sync {}", d.display())))
                        }
                        None => Ok(()),
                    },
                );
            let _ = request.done.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::Recipient;
    use std::time::Duration;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mta-queue-store-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn envelope() -> Envelope {
        Envelope {
            arrival: Duration::from_secs(1_700_000_000),
            sender: "a@example.org".into(),
            attributes: vec![],
            recipients: vec![Recipient::new("b@example.com")],
        }
    }

    fn id(n: u64) -> QueueId {
        QueueId::from_parts(1_700_000_000, 0, n)
    }

    #[test]
    fn commit_then_move_then_recover() {
        let root = scratch("cycle");
        let queue = Queue::open(&root).unwrap();
        let committer = Committer::start(2).unwrap();
        let mut commits = Vec::new();
        for n in 1..=20 {
            let mut w = queue.create(&id(n), &envelope()).unwrap();
            w.write_content(b"hello\r\n").unwrap();
            let file = w.finish().unwrap();
            commits.push(committer.commit(file, &queue.dir(QueueName::Incoming)));
        }
        for c in commits {
            c.wait().unwrap();
        }
        assert_eq!(queue.list(QueueName::Incoming).unwrap().len(), 20);
        // Committed files are ready for the queue manager.
        assert!(is_ready(&queue.path(QueueName::Incoming, &id(2))));
        let first = id(1).as_str().to_string();
        queue
            .move_to(&first, QueueName::Incoming, QueueName::Active)
            .unwrap();
        assert_eq!(queue.find(&first), Some(QueueName::Active));

        // A torn file (no end record) and a foreign one.
        let torn = id(99);
        let mut w = queue.create(&torn, &envelope()).unwrap();
        w.write_content(b"partial").unwrap();
        drop(w);
        fs::write(
            queue.dir(QueueName::Deferred).join(id(98).as_str()),
            b"junk",
        )
        .unwrap();

        // Complete and synced, but the crash came before the ready mark.
        let unmarked = id(97);
        let mut w = queue.create(&unmarked, &envelope()).unwrap();
        w.write_content(b"whole\r\n").unwrap();
        w.finish().unwrap().sync_all().unwrap();
        assert!(!is_ready(&queue.path(QueueName::Incoming, &unmarked)));

        let r = queue.recover().unwrap();
        assert!(is_ready(&queue.path(QueueName::Incoming, &unmarked)));
        queue
            .remove(unmarked.as_str(), QueueName::Incoming)
            .unwrap();
        assert_eq!(r.requeued, std::slice::from_ref(&first));
        let mut bad: Vec<_> = r.quarantined.iter().map(|q| q.id.clone()).collect();
        bad.sort();
        assert_eq!(
            bad,
            [id(98).as_str().to_string(), torn.as_str().to_string()]
        );
        assert!(matches!(
            r.quarantined
                .iter()
                .find(|q| q.id == torn.as_str())
                .unwrap()
                .reason,
            QueueFileError::Incomplete
        ));
        assert_eq!(queue.find(&first), Some(QueueName::Incoming));
        assert_eq!(queue.list(QueueName::Corrupt).unwrap().len(), 2);
        assert_eq!(queue.list(QueueName::Incoming).unwrap().len(), 20);
        queue.remove(&first, QueueName::Incoming).unwrap();
        assert_eq!(queue.find(&first), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn room_keeps_the_reserve_and_half_again() {
        // Postfix's default: 1.5 x message_size_limit free.
        assert!(room_for(15_360_000, 0, 0, 10_240_000));
        assert!(!room_for(15_359_999, 0, 0, 10_240_000));
        // A larger queue_minfree wins; so does a larger declared SIZE.
        assert!(!room_for(20_000_000, 0, 30_000_000, 10_240_000));
        assert!(!room_for(20_000_000, 15_000_000, 0, 10_240_000));
        assert!(room_for(1, 0, 0, 0));
        assert!(!room_for(0, u64::MAX, u64::MAX, u64::MAX));
        let root = scratch("room");
        let queue = Queue::open(&root).unwrap();
        assert!(queue.free_space().unwrap() > 0);
        assert!(queue.has_room(1, 0, 1000).unwrap());
        assert!(!queue.has_room(1, u64::MAX / 2, 0).unwrap());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_commit_can_be_awaited() {
        let root = scratch("async");
        let queue = Queue::open(&root).unwrap();
        let committer = Committer::start(1).unwrap();
        let w = queue.create(&id(5), &envelope()).unwrap();
        let commit = committer.commit(w.finish().unwrap(), &queue.dir(QueueName::Incoming));
        // Any executor will do; this one just polls.
        let mut commit = std::pin::pin!(commit);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let result = loop {
            if let std::task::Poll::Ready(r) = commit.as_mut().poll(&mut cx) {
                break r;
            }
            thread::sleep(Duration::from_millis(1));
        };
        result.unwrap();
        fs::remove_dir_all(&root).unwrap();
    }
}
