//! Delivery into a maildir, one file per message, durably.
//!
//! The steps, each of which a crash may interrupt without harm:
//!
//! 1. Make the maildir (`tmp/`, `new/`, `cur/`, mode 0700) if it is
//!    missing, syncing the directory above each new one.
//! 2. Create a uniquely named file in `tmp/` (never replacing one), and
//!    write the delivery headers and the message.
//! 3. `fsync` the file.
//! 4. Rename it into `new/` under its final name and `fsync` `new/`.
//!
//! Only after step 4 is the delivery reported done; a crash before leaves
//! at most a file in `tmp/`, which readers ignore and Dovecot cleans up
//! after 36 hours. Any failure removes the `tmp/` file.
//!
//! Names follow Postfix's maildir names, which a reader of Postfix-made
//! maildirs knows: `tmp/SECONDS.PpidQcounter.HOST` while writing, then
//! `new/SECONDS.VdevIinodeMmicroseconds.HOST,S=SIZE`; the device and
//! inode of the file make the name unique on this host, and the
//! maildir++ `,S=` part tells IMAP servers the size without a `stat`.
//! In `HOST`, `/` and `:` are written as `\057` and `\072`, as the maildir
//! specification asks.
//!
//! A maildir++ folder is a subdirectory named `.Folder` with a
//! `maildirfolder` file in it; [`Maildir::folder`] delivers there.

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::mailbox::{
    Cancel, MailboxError, Owner, check_cancel, copy_message, make_dirs, sync_dir,
};

/// Makes `tmp/` names unique between deliveries of this process in the
/// same second.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How to write into maildirs.
#[derive(Debug, Clone)]
pub struct MaildirOptions {
    /// This host's name, for the file names (`myhostname`).
    pub hostname: String,
    /// The largest message file, in bytes; 0 for no limit
    /// (`virtual_mailbox_limit` applies it per file for maildirs).
    pub size_limit: u64,
    /// Who gets the new files and directories; `None` keeps the process's
    /// user.
    pub owner: Option<Owner>,
    /// Set by the caller to abandon the delivery before the rename into
    /// `new/`.
    pub cancel: Option<Cancel>,
}

/// A maildir, by its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maildir {
    root: PathBuf,
}

/// Where a delivery put the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The message file in `new/`.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

impl Maildir {
    /// The maildir at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Maildir {
        Maildir { root: root.into() }
    }

    /// The maildir's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The maildir++ folder `name` of this maildir: `ROOT/.name`, in which
    /// a delivery also leaves the `maildirfolder` marker file.
    pub fn folder(&self, name: &str) -> Maildir {
        Maildir::new(self.root.join(format!(".{name}")))
    }

    fn is_folder(&self) -> bool {
        self.root
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n.len() > 1)
    }

    /// Delivers `prepend` and then the message from `content` (LF line
    /// ends) as a new message, at time `now`.
    ///
    /// # Errors
    ///
    /// A [`MailboxError`]; nothing is left in the maildir but what was
    /// there before (and possibly new empty directories).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use mta_delivery::maildir::{Maildir, MaildirOptions};
    ///
    /// let root = std::env::temp_dir().join(format!("maildir-doc-{}", std::process::id()));
    /// let options = MaildirOptions { hostname: "mail.example.com".into(), size_limit: 0, owner: None, cancel: None };
    /// let done = Maildir::new(&root).deliver(b"Delivered-To: a@example.com\n", &b"Subject: hi\n\nhello\n"[..],
    ///                                        SystemTime::now(), &options)?;
    /// assert!(done.path.starts_with(root.join("new")));
    /// assert!(done.path.to_str().unwrap().ends_with(&format!(".mail.example.com,S={}", done.size)));
    /// assert_eq!(std::fs::read(&done.path)?, b"Delivered-To: a@example.com\nSubject: hi\n\nhello\n");
    /// # std::fs::remove_dir_all(&root)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deliver(
        &self,
        prepend: &[u8],
        content: impl Read,
        now: SystemTime,
        options: &MaildirOptions,
    ) -> Result<Delivered, MailboxError> {
        let tmp_dir = self.root.join("tmp");
        let new_dir = self.root.join("new");
        for dir in [&tmp_dir, &new_dir, &self.root.join("cur")] {
            make_dirs(dir, options.owner)?;
        }
        if self.is_folder() {
            let marker = self.root.join("maildirfolder");
            if !marker.exists() {
                fs::File::create(&marker).map_err(|e| MailboxError::io("create", &marker, e))?;
            }
        }
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let host = name_safe(&options.hostname);
        let (tmp_path, file) = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = tmp_dir.join(format!(
                "{}.P{}Q{n}.{host}",
                since.as_secs(),
                std::process::id()
            ));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(MailboxError::io("create maildir file", &path, e)),
            }
        };
        let result = (|| {
            if let Some(o) = options.owner {
                std::os::unix::fs::fchown(&file, Some(o.uid), Some(o.gid))
                    .map_err(|e| MailboxError::io("change owner of", &tmp_path, e))?;
            }
            let mut out = BufWriter::with_capacity(64 * 1024, &file);
            let size = copy_message(
                &mut out,
                prepend,
                content,
                false,
                options.size_limit,
                0,
                &tmp_path,
            )?;
            out.flush()
                .map_err(|e| MailboxError::io("write", &tmp_path, e))?;
            drop(out);
            file.sync_all()
                .map_err(|e| MailboxError::io("fsync", &tmp_path, e))?;
            let meta = file
                .metadata()
                .map_err(|e| MailboxError::io("stat", &tmp_path, e))?;
            let new_path = new_dir.join(format!(
                "{}.V{:x}I{:x}M{}.{host},S={size}",
                since.as_secs(),
                meta.dev(),
                meta.ino(),
                since.subsec_micros()
            ));
            check_cancel(options.cancel.as_ref())?;
            fs::rename(&tmp_path, &new_path)
                .map_err(|e| MailboxError::io("rename into", &new_path, e))?;
            Ok(Delivered {
                path: new_path,
                size,
            })
        })();
        match result {
            Ok(done) => {
                // The message is in new/ now; only its name's durability is
                // left, and a failure here must not leave it twice.
                sync_dir(&new_dir)?;
                Ok(done)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                Err(e)
            }
        }
    }
}

/// The host name as it may appear in a maildir file name.
fn name_safe(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mta-maildir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn options(limit: u64) -> MaildirOptions {
        MaildirOptions {
            hostname: "mail/x:y".into(),
            size_limit: limit,
            owner: None,
            cancel: None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn delivers_with_unique_names() {
        let root = scratch("unique");
        let md = Maildir::new(root.join("example.com/alice/"));
        let now = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_000);
        let a = md.deliver(b"", &b"one\n"[..], now, &options(0)).unwrap();
        let b = md.deliver(b"", &b"two\n"[..], now, &options(0)).unwrap();
        assert_ne!(a.path, b.path);
        let name = a.path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("1700000000.V"), "{name}");
        assert!(name.contains("M123456.mail\\057x\\072y,S=4"), "{name}");
        assert_eq!(names(&md.root().join("new")).len(), 2);
        assert!(names(&md.root().join("tmp")).is_empty());
        assert!(md.root().join("cur").is_dir());
        let mode = fs::metadata(md.root()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn limit_and_read_failures_leave_nothing() {
        let root = scratch("fail");
        let md = Maildir::new(&root);
        let err = md
            .deliver(
                b"H: 1\n",
                &b"0123456789\n"[..],
                SystemTime::now(),
                &options(8),
            )
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");

        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk read error"));
                }
                self.0 -= 1;
                buf[..5].copy_from_slice(b"line\n");
                Ok(5)
            }
        }
        let err = md
            .deliver(b"", Broken(3), SystemTime::now(), &options(0))
            .unwrap_err();
        assert!(!err.is_permanent());
        assert_eq!(err.dsn().to_string(), "4.3.0");
        assert!(names(&root.join("new")).is_empty());
        assert!(names(&root.join("tmp")).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn folders_get_their_marker() {
        let root = scratch("folder");
        let folder = Maildir::new(&root).folder("Spam");
        folder
            .deliver(b"", &b"x\n"[..], SystemTime::now(), &options(0))
            .unwrap();
        assert!(root.join(".Spam/maildirfolder").is_file());
        assert_eq!(names(&root.join(".Spam/new")).len(), 1);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_broken_maildir_is_a_temporary_failure() {
        // tmp is a file, not a directory: as for a maildir this user may
        // not write, the mail waits for the administrator.
        let root = scratch("broken");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("tmp"), b"").unwrap();
        let err = Maildir::new(&root)
            .deliver(b"", &b"x\n"[..], SystemTime::now(), &options(0))
            .unwrap_err();
        assert_eq!(err.dsn().to_string(), "4.2.0");
        assert!(err.to_string().starts_with("create directory"), "{err}");
        assert!(names(&root.join("new")).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }
}
