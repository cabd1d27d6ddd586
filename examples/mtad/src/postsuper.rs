//! `mtad postsuper`: queue maintenance, as Postfix's postsuper(1):
//! `-d ID` deletes, `-h ID` puts on hold, `-H ID` releases from hold; `ID`
//! may be `ALL`, or `-` to read IDs from standard input; trailing
//! arguments name the queues (`hold`, `incoming`, `active`, `deferred`).
//! `-r ID` requeues through cleanup (pickup takes it again). A release
//! also asks the running daemon to deliver the message now. `-p` and
//! `-s` are accepted and do nothing, since mtad keeps no temporary files
//! and every start checks the queue.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use mta_queue::admin::{Operation, Selection, apply};
use mta_queue::scheduler::Flush;
use mta_queue::store::{Queue, QueueName};

use crate::Fatal;

const USAGE: &str = "usage: postsuper [-c config_dir] [-d queue_id] [-h queue_id] [-H queue_id] [-s] [-v] [queue...]";

fn queue_name(name: &str) -> Option<QueueName> {
    Some(match name {
        "hold" => QueueName::Hold,
        "incoming" => QueueName::Incoming,
        "active" => QueueName::Active,
        "deferred" => QueueName::Deferred,
        _ => return None,
    })
}

/// Runs postsuper; `args[0]` is its name.
pub(crate) fn run(args: &[String]) -> Result<(), Fatal> {
    let mut dir = None;
    let mut ops: Vec<(Operation, String)> = Vec::new();
    let mut queues = Vec::new();
    let mut purge = false;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        let op = match a.as_str() {
            "-c" => {
                dir = rest.next().map(PathBuf::from);
                continue;
            }
            "-s" | "-v" | "-S" => continue,
            "-d" => Operation::Delete,
            "-h" => Operation::Hold,
            "-H" => Operation::Release,
            "-r" => Operation::Requeue,
            "-p" => {
                // Nothing to purge: queue files become visible only when
                // complete, and each start recovers half-written ones.
                eprintln!(
                    "{}: -p: mtad keeps no temporary files; each start of the daemon recovers the queue",
                    crate::program()
                );
                purge = true;
                continue;
            }
            other if other.starts_with('-') => {
                return Err(Fatal(format!("{USAGE}: unknown option {other}")));
            }
            other => {
                queues.push(queue_name(other).ok_or_else(|| {
                    Fatal(format!(
                        "invalid directory name: {other} (hold, incoming, active or deferred)"
                    ))
                })?);
                continue;
            }
        };
        let id = rest
            .next()
            .ok_or_else(|| Fatal(format!("{a} needs a queue ID; {USAGE}")))?;
        ops.push((op, id.clone()));
    }
    if ops.is_empty() && purge {
        return Ok(());
    }
    if ops.is_empty() {
        return Err(Fatal(USAGE.into()));
    }
    let (dir, explicit) = crate::config_dir(dir);
    let config = crate::postconf::load_main(&dir, explicit, "postsuper")?;
    let root = config
        .expanded("queue_directory")
        .map_err(|e| Fatal(e.to_string()))?;
    let queue = Queue::open(&root).map_err(|e| Fatal(format!("{root}: {e}")))?;
    let mut stdin_ids: Option<Vec<String>> = None;
    let _ = purge;
    for (op, id) in ops {
        let selection = match id.as_str() {
            "ALL" => Selection::All,
            "-" => Selection::Ids(
                stdin_ids
                    .get_or_insert_with(|| {
                        std::io::stdin()
                            .lock()
                            .lines()
                            .map_while(Result::ok)
                            .flat_map(|l| {
                                l.split_whitespace().map(str::to_owned).collect::<Vec<_>>()
                            })
                            .collect()
                    })
                    .clone(),
            ),
            id => Selection::Ids(vec![id.to_owned()]),
        };
        let qs = (!queues.is_empty()).then_some(queues.as_slice());
        let done = apply(&queue, op, &selection, qs).map_err(|e| Fatal(format!("{root}: {e}")))?;
        for d in &done {
            eprintln!("{}: {}: {}", crate::program(), d.id, op.log_word());
        }
        if op == Operation::Release {
            poke(Path::new(&root), &done);
        }
        if op == Operation::Requeue && !done.is_empty() {
            let _ = crate::control::poke_pickup(Path::new(&root));
        }
        if !done.is_empty() {
            let n = done.len();
            eprintln!(
                "{}: {}: {n} message{}",
                crate::program(),
                op.summary(),
                if n == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

/// Asks a running daemon to deliver the released messages now; without
/// one they go at its next start.
fn poke(root: &Path, done: &[mta_queue::admin::Done]) {
    for d in done {
        let _ = crate::control::request_flush(root, &Flush::Message(d.id.clone()));
    }
}
