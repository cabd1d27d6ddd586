//! What the differential tests against Debian's Postfix share.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Whether Postfix's `program` is installed; says why not, and fails under
/// CI, where `.ci/run` installs it.
pub(crate) fn oracle_available(program: &str) -> bool {
    if Path::new(program).exists() {
        return true;
    }
    let message = format!("skipped: {program} not installed (run tools/install-peers.sh)");
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("{message}");
    false
}

/// A scratch directory holding an empty `main.cf`, for `MAIL_CONFIG`;
/// removed when dropped.
pub(crate) struct Scratch {
    /// The directory.
    pub(crate) dir: PathBuf,
}

impl Scratch {
    /// A fresh directory named after `tag` and this process.
    pub(crate) fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mta-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.cf"), "").unwrap();
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
