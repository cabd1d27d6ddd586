//! Delivery into a UNIX mailbox file (mbox), locked, and undone on
//! failure.
//!
//! A message is appended as
//!
//! ```text
//! From sender@example.org  Thu Dec  3 18:22:12 2026
//! Return-Path: <sender@example.org>
//! ...the message, each line starting "From " written ">From "...
//!
//! ```
//!
//! that is, the `From_` line with the envelope sender (`MAILER-DAEMON` for
//! the null sender), two spaces and the time of delivery as `asctime(3)`
//! writes it (Postfix's layout), the delivery headers, the
//! message with `From ` lines quoted as Postfix quotes them (only `From `,
//! not `>From `), a final LF if the last line had none, and an empty line.
//!
//! While it writes, the mailbox is locked by each method of
//! `mailbox_delivery_lock` (`virtual_mailbox_lock` for the virtual agent):
//! `dotlock` (a `MAILBOX.lock` file, removed when older than
//! `stale_lock_time`), `fcntl` (a POSIX record lock on the whole file) and
//! `flock`. A lock that is busy is tried `deliver_lock_attempts` times,
//! `deliver_lock_delay` apart, then the delivery is deferred.
//!
//! If anything fails after writing has begun, the file is truncated back
//! to its old length, so a mailbox is never left with half a message; the
//! message is then deferred, or bounced when it cannot fit
//! (`mailbox_size_limit`, a disk quota: `5.2.2`).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mta_core::address::ReversePath;

use crate::mailbox::{Cancel, MailboxError, Owner, check_cancel, copy_message, make_dirs};

/// A way to lock a mailbox file (`mailbox_delivery_lock` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockMethod {
    /// A POSIX `fcntl(2)` write lock on the whole file.
    Fcntl,
    /// A BSD `flock(2)` exclusive lock.
    Flock,
    /// A `MAILBOX.lock` file created exclusively beside the mailbox.
    Dotlock,
}

impl LockMethod {
    /// Parses a `mailbox_delivery_lock` value: names separated by commas
    /// or white space.
    ///
    /// # Errors
    ///
    /// The first name that is not `fcntl`, `flock` or `dotlock`.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_delivery::mbox::LockMethod;
    /// assert_eq!(LockMethod::parse_list("fcntl, dotlock")?, [LockMethod::Fcntl, LockMethod::Dotlock]);
    /// assert!(LockMethod::parse_list("fcntl, lockf").is_err());
    /// # Ok::<(), String>(())
    /// ```
    pub fn parse_list(value: &str) -> Result<Vec<LockMethod>, String> {
        value
            .split([',', ' ', '\t', '\n'])
            .filter(|s| !s.is_empty())
            .map(|name| match name {
                "fcntl" => Ok(LockMethod::Fcntl),
                "flock" => Ok(LockMethod::Flock),
                "dotlock" => Ok(LockMethod::Dotlock),
                other => Err(format!(
                    "unknown mailbox lock method \"{other}\" (fcntl, flock, dotlock)"
                )),
            })
            .collect()
    }
}

/// How to write into mailbox files.
#[derive(Debug, Clone)]
pub struct MboxOptions {
    /// The locks to take, in order (`mailbox_delivery_lock`).
    pub locks: Vec<LockMethod>,
    /// The largest mailbox, in bytes, after the delivery; 0 for no limit
    /// (`mailbox_size_limit`, `virtual_mailbox_limit`).
    pub size_limit: u64,
    /// Who gets a new mailbox file; `None` keeps the process's user.
    pub owner: Option<Owner>,
    /// How many times a busy lock is tried (`deliver_lock_attempts`).
    pub lock_attempts: u32,
    /// The pause between tries (`deliver_lock_delay`).
    pub lock_delay: Duration,
    /// The age after which a dotlock file is taken for abandoned and
    /// removed (`stale_lock_time`).
    pub stale_lock_time: Duration,
    /// Set by the caller to abandon the delivery; checked before the
    /// final fsync, after which the message stays.
    pub cancel: Option<Cancel>,
}

impl Default for MboxOptions {
    /// Postfix's defaults: `fcntl, dotlock`, a 51,200,000-byte limit, 20
    /// attempts a second apart, 500 s for a stale dotlock.
    fn default() -> MboxOptions {
        MboxOptions {
            locks: vec![LockMethod::Fcntl, LockMethod::Dotlock],
            size_limit: 51_200_000,
            owner: None,
            lock_attempts: 20,
            lock_delay: Duration::from_secs(1),
            stale_lock_time: Duration::from_secs(500),
            cancel: None,
        }
    }
}

/// The mailboxes this process is appending to right now.
static APPENDING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
static APPENDED: std::sync::Condvar = std::sync::Condvar::new();

/// One delivery at a time to a mailbox path within this process, held
/// until dropped.
struct InProcess(PathBuf);

impl InProcess {
    fn acquire(path: &Path) -> InProcess {
        let mut busy = APPENDING.lock().unwrap_or_else(|e| e.into_inner());
        while busy.iter().any(|p| p == path) {
            busy = APPENDED.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy.push(path.to_path_buf());
        InProcess(path.to_path_buf())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let mut busy = APPENDING.lock().unwrap_or_else(|e| e.into_inner());
        busy.retain(|p| p != &self.0);
        APPENDED.notify_all();
    }
}

/// A mailbox file, by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbox {
    path: PathBuf,
}

/// A held dotlock, removed when dropped.
struct Dotlock(PathBuf);

impl Drop for Dotlock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl Mbox {
    /// The mailbox at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Mbox {
        Mbox { path: path.into() }
    }

    /// The mailbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the message from `content` (LF line ends) for envelope
    /// `sender`, after `prepend`, delivered at `now`. Blocks while it
    /// waits for locks: call it from a thread that may block.
    ///
    /// # Errors
    ///
    /// A [`MailboxError`]; the mailbox is then as it was.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use mta_core::address::ReversePath;
    /// use mta_delivery::mbox::{Mbox, MboxOptions};
    ///
    /// let path = std::env::temp_dir().join(format!("mbox-doc-{}", std::process::id()));
    /// let mbox = Mbox::new(&path);
    /// let when = UNIX_EPOCH + Duration::from_secs(1_764_786_132);
    /// let sender = ReversePath::Mailbox("ann@example.org".parse()?);
    /// mbox.deliver(&sender, b"", &b"Subject: hi\n\nFrom me\n"[..], when, &MboxOptions::default())?;
    /// assert_eq!(
    ///     std::fs::read_to_string(&path)?,
    ///     "From ann@example.org  Wed Dec  3 18:22:12 2025\nSubject: hi\n\n>From me\n\n"
    /// );
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deliver(
        &self,
        sender: &ReversePath,
        prepend: &[u8],
        content: impl Read,
        now: SystemTime,
        options: &MboxOptions,
    ) -> Result<(), MailboxError> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            make_dirs(parent, options.owner)?;
        }
        // fcntl(2) locks belong to the process: they keep other programs
        // out, not this program's other delivery threads.
        let _mine = InProcess::acquire(&self.path);
        let _dotlock = if options.locks.contains(&LockMethod::Dotlock) {
            Some(self.dotlock(options)?)
        } else {
            None
        };
        let existed = self.path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| MailboxError::io("open mailbox", &self.path, e))?;
        if !existed && let Some(o) = options.owner {
            std::os::unix::fs::fchown(&file, Some(o.uid), Some(o.gid))
                .map_err(|e| MailboxError::io("change owner of", &self.path, e))?;
        }
        for method in &options.locks {
            match method {
                LockMethod::Fcntl => self.retry_lock(options, || fcntl_lock(&file))?,
                LockMethod::Flock => self.retry_lock(options, || flock_lock(&file))?,
                LockMethod::Dotlock => {}
            }
        }
        let mut file = file;
        let start = file
            .seek(SeekFrom::End(0))
            .map_err(|e| MailboxError::io("seek", &self.path, e))?;
        let result = self.append(&mut file, sender, prepend, content, now, start, options);
        if result.is_err() {
            // Undo a partial write; if even that fails, the sync below
            // never happens and the error stands.
            let _ = file.set_len(start).and_then(|()| file.sync_all());
        }
        result
        // The kernel locks go with the file; the dotlock with its guard.
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        file: &mut File,
        sender: &ReversePath,
        prepend: &[u8],
        content: impl Read,
        now: SystemTime,
        start: u64,
        options: &MboxOptions,
    ) -> Result<(), MailboxError> {
        let from = match sender {
            ReversePath::Null => "MAILER-DAEMON".to_owned(),
            ReversePath::Mailbox(a) => a.render(),
        };
        let mut head = format!("From {from}  {}\n", mta_core::date::ctime(now)).into_bytes();
        head.extend_from_slice(prepend);
        let mut out = BufWriter::with_capacity(64 * 1024, &*file);
        let written = copy_message(
            &mut out,
            &head,
            content,
            true,
            options.size_limit,
            start,
            &self.path,
        )?;
        if options.size_limit > 0 && start + written + 1 > options.size_limit {
            return Err(MailboxError::SizeLimit {
                path: self.path.clone(),
                limit: options.size_limit,
            });
        }
        out.write_all(b"\n")
            .and_then(|()| out.flush())
            .map_err(|e| MailboxError::io("write", &self.path, e))?;
        drop(out);
        check_cancel(options.cancel.as_ref())?;
        file.sync_all()
            .map_err(|e| MailboxError::io("fsync", &self.path, e))
    }

    fn retry_lock(
        &self,
        options: &MboxOptions,
        mut attempt: impl FnMut() -> Result<bool, nix::Error>,
    ) -> Result<(), MailboxError> {
        for n in 0..options.lock_attempts.max(1) {
            match attempt() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    return Err(MailboxError::Lock {
                        path: self.path.clone(),
                        reason: e.desc().to_owned(),
                    });
                }
            }
            if n + 1 < options.lock_attempts {
                std::thread::sleep(options.lock_delay);
            }
        }
        Err(MailboxError::Lock {
            path: self.path.clone(),
            reason: "the lock is held by another process".to_owned(),
        })
    }

    fn dotlock(&self, options: &MboxOptions) -> Result<Dotlock, MailboxError> {
        let mut lock = self.path.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let mut result = Ok(false);
        self.retry_lock(options, || {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock)
            {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > options.stale_lock_time);
                    if stale {
                        let _ = fs::remove_file(&lock);
                    }
                    Ok(false)
                }
                Err(e) => {
                    result = Err(MailboxError::io("create lock file", &lock, e));
                    Ok(true)
                }
            }
        })?;
        result.map(|_| Dotlock(lock))
    }
}

/// Takes an fcntl write lock on all of `file`; `Ok(false)` when another
/// process holds one.
fn fcntl_lock(file: &File) -> Result<bool, nix::Error> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(file.as_fd(), FcntlArg::F_SETLK(&lock)) {
        Ok(_) => Ok(true),
        Err(nix::Error::EAGAIN | nix::Error::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes a flock exclusive lock on `file`; `Ok(false)` when busy.
fn flock_lock(file: &File) -> Result<bool, nix::Error> {
    #[allow(deprecated)]
    match nix::fcntl::flock(
        std::os::fd::AsRawFd::as_raw_fd(file),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    ) {
        Ok(()) => Ok(true),
        Err(nix::Error::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::UNIX_EPOCH;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mta-mbox-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn quick() -> MboxOptions {
        MboxOptions {
            lock_attempts: 2,
            lock_delay: Duration::from_millis(10),
            ..MboxOptions::default()
        }
    }

    #[test]
    fn appends_messages_with_separators() {
        let dir = scratch("append");
        let mbox = Mbox::new(dir.join("var/mail/alice"));
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        mbox.deliver(
            &ReversePath::Null,
            b"Return-Path: <>\n",
            &b"A: 1\n\nno newline"[..],
            t,
            &quick(),
        )
        .unwrap();
        let sender = ReversePath::Mailbox("b@example.org".parse().unwrap());
        mbox.deliver(&sender, b"", &b"B: 2\n\nFrom x\n"[..], t, &quick())
            .unwrap();
        assert_eq!(
            fs::read_to_string(mbox.path()).unwrap(),
            "From MAILER-DAEMON  Tue Nov 14 22:13:20 2023\nReturn-Path: <>\nA: 1\n\nno newline\n\n\
             From b@example.org  Tue Nov 14 22:13:20 2023\nB: 2\n\n>From x\n\n"
        );
        assert!(!dir.join("var/mail/alice.lock").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_mailbox_as_it_was() {
        let dir = scratch("undo");
        let mbox = Mbox::new(dir.join("box"));
        let t = SystemTime::now();
        mbox.deliver(&ReversePath::Null, b"", &b"first\n"[..], t, &quick())
            .unwrap();
        let before = fs::read(mbox.path()).unwrap();

        struct Broken(bool);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(io::Error::other("queue file unreadable"));
                }
                buf[..9].copy_from_slice(b"partial\nx");
                Ok(9)
            }
        }
        let err = mbox
            .deliver(&ReversePath::Null, b"", Broken(false), t, &quick())
            .unwrap_err();
        assert!(matches!(err, MailboxError::Content(_)), "{err}");
        assert_eq!(fs::read(mbox.path()).unwrap(), before);

        let limited = MboxOptions {
            size_limit: before.len() as u64 + 20,
            ..quick()
        };
        let err = mbox
            .deliver(&ReversePath::Null, b"", &[b'x'; 64][..], t, &limited)
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert_eq!(fs::read(mbox.path()).unwrap(), before);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_held_dotlock_defers_and_a_stale_one_is_broken() {
        let dir = scratch("dotlock");
        fs::create_dir_all(&dir).unwrap();
        let mbox = Mbox::new(dir.join("box"));
        fs::write(dir.join("box.lock"), b"").unwrap();
        let err = mbox
            .deliver(
                &ReversePath::Null,
                b"",
                &b"x\n"[..],
                SystemTime::now(),
                &quick(),
            )
            .unwrap_err();
        assert!(matches!(err, MailboxError::Lock { .. }), "{err}");
        assert_eq!(err.dsn().to_string(), "4.2.0");
        assert!(!mbox.path().exists() || fs::read(mbox.path()).unwrap().is_empty());

        let stale = MboxOptions {
            stale_lock_time: Duration::ZERO,
            ..quick()
        };
        std::thread::sleep(Duration::from_millis(20));
        mbox.deliver(
            &ReversePath::Null,
            b"",
            &b"x\n"[..],
            SystemTime::now(),
            &stale,
        )
        .unwrap();
        assert!(!dir.join("box.lock").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deliveries_from_one_process_take_turns() {
        // fcntl(2) would let a second thread of this process in at once;
        // the in-process lock makes it wait for the first delivery.
        let dir = scratch("turns");
        let path = dir.join("alice");
        let held = InProcess::acquire(&path);
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let options = MboxOptions {
                    locks: vec![LockMethod::Fcntl],
                    ..quick()
                };
                Mbox::new(&path).deliver(
                    &ReversePath::Null,
                    b"",
                    &b"A: 1\n\nx\n"[..],
                    UNIX_EPOCH,
                    &options,
                )
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!path.exists(), "the second delivery did not wait");
        drop(held);
        writer.join().unwrap().unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("\nx\n"));
    }

    #[test]
    fn an_fcntl_lock_held_by_another_process_defers() {
        let dir = scratch("fcntl");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("box");
        fs::write(&path, b"").unwrap();
        // fcntl locks are per process, so the holder must be another one.
        let holder = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl,sys,time\nf=open(sys.argv[1],'a')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('held',flush=True)\ntime.sleep(30)",
            )
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut holder) = holder else {
            assert!(std::env::var_os("CI").is_none(), "python3 is needed");
            eprintln!("skipped: python3 not found");
            return;
        };
        let mut line = [0u8; 5];
        holder
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut line)
            .unwrap();
        let only_fcntl = MboxOptions {
            locks: vec![LockMethod::Fcntl],
            ..quick()
        };
        let mbox = Mbox::new(&path);
        let err = mbox
            .deliver(
                &ReversePath::Null,
                b"",
                &b"x\n"[..],
                SystemTime::now(),
                &only_fcntl,
            )
            .unwrap_err();
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(matches!(err, MailboxError::Lock { .. }), "{err}");
        assert!(fs::read(&path).unwrap().is_empty());
        mbox.deliver(
            &ReversePath::Null,
            b"",
            &b"x\n"[..],
            SystemTime::now(),
            &only_fcntl,
        )
        .unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
