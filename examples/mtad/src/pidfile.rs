//! The pid file `data_directory/master.pid` and the commands that use it:
//! `mtad status`, `mtad stop` and `mtad reload`, as `postfix status`,
//! `postfix stop` and `postfix reload`.
//!
//! The running daemon holds an exclusive `flock` on the file for its
//! whole life, so the lock, not the number written in the file, says
//! whether a daemon runs: a file left by a daemon that was killed does not
//! fool `status`, and a second `mtad` refuses to start.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::Fatal;

/// The pid file's path.
fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("master.pid")
}

/// The lock held by the running daemon; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct PidLock {
    _lock: Flock<File>,
}

/// Takes the lock and writes our pid, or says who holds it.
pub(crate) fn acquire(data_dir: &Path) -> Result<PidLock, Fatal> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Fatal(format!("data_directory {}: {e}", data_dir.display())))?;
    let p = path(data_dir);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| Fatal(format!("open {}: {e}", p.display())))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, _)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Fatal(format!(
                "the mail system is already running: PID: {} (pid file {})",
                text.trim(),
                p.display()
            )));
        }
    };
    lock.set_len(0)
        .and_then(|()| writeln!(lock, "{:>10}", std::process::id()))
        .and_then(|()| lock.sync_all())
        .map_err(|e| Fatal(format!("write {}: {e}", p.display())))?;
    Ok(PidLock { _lock: lock })
}

/// The pid of the running daemon, if one holds the lock.
pub(crate) fn running(data_dir: &Path) -> Option<i32> {
    let mut file = File::open(path(data_dir)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // We got the lock: nobody holds it.
        Ok(_unlocked) => None,
        Err(_) => text.trim().parse().ok(),
    }
}

/// Which control command.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control {
    Status,
    Stop,
    Reload,
}

/// How long `mtad stop` waits for the daemon to be gone: its own
/// shutdown allows sessions 30 seconds and a few more for last words.
const STOP_WAIT: Duration = Duration::from_secs(45);

/// `mtad status|stop|reload [-c DIR]`.
pub(crate) fn control(which: Control, flag: Option<PathBuf>) -> Result<ExitCode, Fatal> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let (dir, explicit) = crate::config_dir(flag);
    let config = crate::postconf::load_main(&dir, explicit, "mtad")?;
    let data_dir = PathBuf::from(
        config
            .expanded("data_directory")
            .map_err(|e| Fatal(e.to_string()))?,
    );
    let say = |s: &str| eprintln!("mtad: {s}");
    let Some(pid) = running(&data_dir) else {
        return match which {
            Control::Status => {
                say("the mail system is not running");
                Ok(ExitCode::from(1))
            }
            Control::Stop | Control::Reload => Err(Fatal("the mail system is not running".into())),
        };
    };
    let signal = |s: Signal| {
        kill(Pid::from_raw(pid), s).map_err(|e| Fatal(format!("signal PID {pid}: {e}")))
    };
    match which {
        Control::Status => say(&format!("the mail system is running: PID: {pid}")),
        Control::Reload => {
            signal(Signal::SIGHUP)?;
            say("refreshing the mail system");
        }
        Control::Stop => {
            say("stopping the mail system");
            signal(Signal::SIGTERM)?;
            let deadline = Instant::now() + STOP_WAIT;
            while running(&data_dir).is_some() {
                if Instant::now() > deadline {
                    return Err(Fatal(format!(
                        "PID {pid} did not stop within {} seconds",
                        STOP_WAIT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            say("the mail system has stopped");
        }
    }
    Ok(ExitCode::SUCCESS)
}
