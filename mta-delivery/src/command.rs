//! External commands with a message on their standard input, for the
//! `pipe` agent and `local`'s `|command` and `mailbox_command`
//! deliveries: no shell of our own, a given environment and working
//! directory, the user's uid and gid, a process group of their own
//! (killed whole at the time limit), their output captured for the
//! bounce, and their exit status read as Postfix's `pipe_command` reads
//! it.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mta_core::delivery::{DeliveryStatus, MessageContent, Relay, StatusDetail};
use mta_core::reply::{EnhancedStatus, StatusClass};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::content::ContentReader;
use crate::pipe::LineQuoter;

/// How much command output is kept for the log and the bounce.
const OUTPUT_LIMIT: usize = 4096;

/// What to run, and how.
#[derive(Debug, Clone)]
pub(crate) struct CommandSpec {
    /// The program and its arguments (no shell).
    pub(crate) argv: Vec<String>,
    /// The whole environment the command gets.
    pub(crate) environment: Vec<(String, String)>,
    /// The working directory.
    pub(crate) directory: PathBuf,
    /// The uid and gid to run as; `None` for this process's.
    pub(crate) run_as: Option<(u32, u32)>,
}

/// How a command ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It exited with this status; `fed` says how writing its input went.
    Exited { code: i32, fed: io::Result<()> },
    /// A signal ended it.
    Signaled(i32),
    /// The time limit ran out; its process group was killed.
    TimedOut,
    /// It could not be started, or waited for.
    Failed(String),
}

/// A finished command: how it ended and what it printed (tabs and line
/// ends as spaces, other unprintable bytes as `_`).
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) ended: Ended,
    pub(crate) output: String,
}

/// Runs `spec` with `head` and then `content` (through `quoter`) on its
/// standard input, for at most `limit`.
pub(crate) async fn run(
    spec: &CommandSpec,
    head: Vec<u8>,
    mut quoter: LineQuoter,
    content: &Arc<dyn MessageContent>,
    limit: Duration,
) -> Ran {
    let failed = |why: String| Ran {
        ended: Ended::Failed(why),
        output: String::new(),
    };
    let program = &spec.argv[0];
    let mut command = tokio::process::Command::new(program);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.environment.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.directory)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some((uid, gid)) = spec.run_as {
        command.uid(uid).gid(gid);
    }
    // stdout and stderr both go to one pipe, as pipe(8) captures them.
    let (reader, writer) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return failed(format!("pipe: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return failed(format!("dup: {e}")),
    };
    command
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2));
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("execvp {program}: {e}")),
    };
    // Our copies of the write end go with the Command: the read below
    // ends when the command (and whatever it started) has closed its own.
    drop(command);
    let pgid = child.id();
    let stdin = child.stdin.take();
    let content = Arc::clone(content);
    let feed = async move {
        let Some(mut stdin) = stdin else {
            return Ok(());
        };
        let mut out = Vec::new();
        quoter.push(&head, &mut out, false);
        stdin.write_all(&out).await?;
        let mut reader = ContentReader::open(content);
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.clear();
            quoter.push(&buf[..n], &mut out, true);
            stdin.write_all(&out).await?;
        }
        out.clear();
        quoter.finish(&mut out);
        stdin.write_all(&out).await?;
        stdin.shutdown().await
    };
    let output = async move {
        let mut file = tokio::fs::File::from_std(std::fs::File::from(reader));
        let mut kept = Vec::new();
        let mut buf = vec![0; 8192];
        loop {
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    };
    let work = async {
        let (fed, kept) = tokio::join!(feed, output);
        let exit = child.wait().await;
        (fed, kept, exit)
    };
    let (fed, kept, exit) = match tokio::time::timeout(limit, work).await {
        Ok(done) => done,
        Err(_) => {
            kill_group(pgid);
            let _ = child.wait().await;
            return Ran {
                ended: Ended::TimedOut,
                output: String::new(),
            };
        }
    };
    let output = printable(&kept);
    let ended = match exit {
        Err(e) => Ended::Failed(format!("wait for \"{program}\": {e}")),
        Ok(exit) => match exit.signal() {
            Some(signal) => Ended::Signaled(signal),
            None => Ended::Exited {
                code: exit.code().unwrap_or(-1),
                fed,
            },
        },
    };
    Ran { ended, output }
}

/// The delivery status of a finished command, worded as Postfix's
/// `pipe_command` words it; `delivered` is the text for success.
pub(crate) fn status(ran: &Ran, program: &str, relay: &Relay, delivered: &str) -> DeliveryStatus {
    let detail = |class, subject, detail, text: String| {
        let dsn = EnhancedStatus::new(class, subject, detail)
            .unwrap_or_else(|_| EnhancedStatus::new(class, 0, 0).expect("class code"));
        StatusDetail::new(dsn, text, relay.clone())
    };
    let with_output = |text: String| {
        if ran.output.is_empty() {
            text
        } else {
            format!("{text}. Command output: {}", ran.output)
        }
    };
    let soft = |d| DeliveryStatus::Deferred(d);
    let hard = |d| DeliveryStatus::Bounced(d);
    match &ran.ended {
        Ended::Failed(why) => soft(detail(StatusClass::PersistentTransient, 3, 0, why.clone())),
        // As pipe(8): the time limit bounces.
        Ended::TimedOut => hard(detail(
            StatusClass::Permanent,
            3,
            0,
            format!("Command time limit exceeded: \"{program}\""),
        )),
        Ended::Signaled(signal) => soft(detail(
            StatusClass::PersistentTransient,
            3,
            0,
            with_output(format!("Command died with signal {signal}: \"{program}\"")),
        )),
        // A command that exits 0 without reading all of its input has
        // still taken the message (EPIPE is not an error, as in pipe(8));
        // any other write failure is.
        Ended::Exited { code: 0, fed } => match fed {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => hard(detail(
                StatusClass::Permanent,
                3,
                0,
                format!("Command failed: {e}: \"{program}\""),
            )),
            _ => {
                DeliveryStatus::Delivered(detail(StatusClass::Success, 0, 0, delivered.to_owned()))
            }
        },
        Ended::Exited { code, .. } => {
            // Output that starts with an enhanced status code says it all.
            if let Some((dsn, text)) = leading_status(&ran.output) {
                let d = StatusDetail::new(dsn, text, relay.clone());
                return if dsn.class() == StatusClass::PersistentTransient {
                    soft(d)
                } else {
                    hard(d)
                };
            }
            match sysexit(*code) {
                Some((class, subject, sub, text)) => {
                    let d = detail(class, subject, sub, with_output(text.to_owned()));
                    if class == StatusClass::PersistentTransient {
                        soft(d)
                    } else {
                        hard(d)
                    }
                }
                None => hard(detail(
                    StatusClass::Permanent,
                    3,
                    0,
                    with_output(format!("Command died with status {code}: \"{program}\"")),
                )),
            }
        }
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Command output as pipe(8) reports it: tabs and newlines as spaces,
/// other unprintable bytes as `_`, trailing space trimmed.
pub(crate) fn printable(bytes: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .map(|&b| match b {
            b'\t' | b'\n' | b'\r' => ' ',
            0x20..=0x7e => b as char,
            _ => '_',
        })
        .collect();
    text.trim_end().to_owned()
}

/// `4.2.2 text` or `5.1.1 text` at the start of the output.
pub(crate) fn leading_status(output: &str) -> Option<(EnhancedStatus, String)> {
    let (code, rest) = output.split_once(' ').unwrap_or((output, ""));
    let status = EnhancedStatus::parse(code).ok()?;
    if status.class() == StatusClass::Success {
        return None;
    }
    Some((status, rest.trim().to_owned()))
}

/// `<sysexits.h>` codes as Postfix's sys_exits table maps them.
pub(crate) fn sysexit(code: i32) -> Option<(StatusClass, u16, u16, &'static str)> {
    use StatusClass::{Permanent as Hard, PersistentTransient as Soft};
    Some(match code {
        64 => (Hard, 3, 0, "command line usage error"),
        65 => (Hard, 6, 0, "data format error"),
        66 => (Hard, 3, 0, "cannot open input"),
        67 => (Hard, 1, 1, "user unknown"),
        68 => (Hard, 1, 2, "host name unknown"),
        69 => (Hard, 3, 0, "service unavailable"),
        70 => (Hard, 3, 0, "internal software error"),
        71 => (Soft, 3, 0, "system resource problem"),
        72 => (Hard, 3, 0, "critical OS file missing"),
        73 => (Hard, 2, 0, "can't create user output file"),
        74 => (Hard, 3, 0, "input/output error"),
        75 => (Soft, 3, 0, "temporary failure"),
        76 => (Hard, 5, 0, "remote error in protocol"),
        77 => (Hard, 7, 0, "permission denied"),
        78 => (Hard, 3, 5, "local configuration error"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_as_postfix_maps_them() {
        assert_eq!(sysexit(75).unwrap().0, StatusClass::PersistentTransient);
        assert_eq!(
            sysexit(67).unwrap(),
            (StatusClass::Permanent, 1, 1, "user unknown")
        );
        assert!(sysexit(1).is_none());
        let (dsn, text) = leading_status("4.2.2 mailbox full").unwrap();
        assert_eq!(
            (dsn.to_string(), text.as_str()),
            ("4.2.2".into(), "mailbox full")
        );
        assert!(leading_status("procmail: oops").is_none());
        assert_eq!(printable(b"a\tb\nc\x01 \n"), "a b c_");
    }
}
