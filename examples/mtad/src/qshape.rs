//! `mtad qshape`: the queue's shape by domain and age, as Postfix's
//! qshape(1): `-s`, `-p`, `-m N`, `-b N`, `-t MINUTES`, `-l`, `-w WIDTH`,
//! `-c DIR`, and queue names (default `incoming active`). `-N` and `-n`
//! (intermediate results on a terminal) are accepted and ignored: the
//! whole table is printed once.

use std::path::PathBuf;
use std::time::SystemTime;

use mta_queue::qshape::{Options, Shape};
use mta_queue::store::{Queue, QueueName};

use crate::Fatal;

const USAGE: &str = "usage: qshape [-s] [-p] [-m min_subdomains] [-b bucket_count] [-t bucket_time] [-l] [-w terminal_width] [-c config_directory] [queue_name ...]";

/// Runs qshape; `args[0]` is its name.
pub(crate) fn run(args: &[String]) -> Result<(), Fatal> {
    let mut options = Options::default();
    let mut dir = None;
    let mut queues = Vec::new();
    let mut rest = args.iter().skip(1);
    let number = |flag: &str, v: Option<&String>| -> Result<u64, Fatal> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| Fatal(format!("{flag} needs a number; {USAGE}")))
    };
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-s" => options.senders = true,
            "-p" => options.parents = true,
            "-l" => options.linear = true,
            "-m" => options.min_subdomains = number(a, rest.next())? as usize,
            "-b" => options.buckets = number(a, rest.next())?.max(1) as usize,
            "-t" => options.bucket_minutes = number(a, rest.next())?.max(1),
            "-w" => options.width = number(a, rest.next())? as usize,
            "-N" | "-n" => {
                number(a, rest.next())?;
            }
            "-c" => dir = rest.next().map(PathBuf::from),
            other if other.starts_with('-') => {
                return Err(Fatal(format!("{USAGE}: unknown option {other}")));
            }
            name => queues.push(match name {
                "incoming" => QueueName::Incoming,
                "active" => QueueName::Active,
                "deferred" => QueueName::Deferred,
                "hold" => QueueName::Hold,
                "maildrop" => QueueName::Maildrop,
                "corrupt" => QueueName::Corrupt,
                other => {
                    return Err(Fatal(format!(
                        "unknown queue {other}: incoming, active, deferred, hold, maildrop or corrupt"
                    )));
                }
            }),
        }
    }
    if queues.is_empty() {
        queues = vec![QueueName::Incoming, QueueName::Active];
    }
    let (dir, explicit) = crate::config_dir(dir);
    let config = crate::postconf::load_main(&dir, explicit, "qshape")?;
    let root = config
        .expanded("queue_directory")
        .map_err(|e| Fatal(e.to_string()))?;
    let queue = Queue::open(&root).map_err(|e| Fatal(format!("{root}: {e}")))?;
    let shape = Shape::of(&queue, &queues, &options, SystemTime::now())
        .map_err(|e| Fatal(format!("{root}: {e}")))?;
    print!("{}", shape.render());
    Ok(())
}
