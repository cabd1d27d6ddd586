//! `mtad postqueue` and `mtad mailq`: the queue listing (`-p`), as
//! Postfix's postqueue(1) prints it, and flushing: `-f` (all deferred
//! mail), `-s SITE` (mail for a domain of `fast_flush_domains`), `-i ID`
//! (one message), through the running daemon's flush socket.

use std::path::PathBuf;

use mta_queue::listing;
use mta_queue::scheduler::Flush;
use mta_queue::store::Queue;

use crate::Fatal;

/// Runs postqueue (`mailq` is `postqueue -p`); `args[0]` is its name.
pub(crate) fn run(args: &[String], mailq: bool) -> Result<(), Fatal> {
    const USAGE: &str = "usage: postqueue -f | -i queue_id | -p | -s site [-c config_dir]";
    let mut dir = None;
    let mut list = mailq;
    let mut flush = None;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-c" => dir = rest.next().map(PathBuf::from),
            "-p" => list = true,
            "-v" => {}
            "-f" => flush = Some(Flush::All),
            "-s" | "-i" => {
                let value = rest
                    .next()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| Fatal(format!("{a} needs an argument; {USAGE}")))?;
                flush = Some(if a == "-s" {
                    Flush::Site(value.to_ascii_lowercase())
                } else {
                    Flush::Message(value.clone())
                });
            }
            other => {
                return Err(Fatal(format!("{USAGE}: unknown argument {other}")));
            }
        }
    }
    let (dir, explicit) = crate::config_dir(dir);
    let config = crate::postconf::load_main(&dir, explicit, "postqueue")?;
    let root = config
        .expanded("queue_directory")
        .map_err(|e| Fatal(e.to_string()))?;
    if let Some(which) = flush {
        return match crate::control::request_flush(std::path::Path::new(&root), &which) {
            Ok(_) => Ok(()),
            Err(crate::control::FlushError::Down(e)) => Err(Fatal(format!(
                "Cannot flush mail queue - mail system is down ({e})"
            ))),
            Err(crate::control::FlushError::Refused(e)) => Err(Fatal(e)),
        };
    }
    if !list {
        return Err(Fatal(USAGE.into()));
    }
    let queue = Queue::open(&root).map_err(|e| Fatal(format!("{root}: {e}")))?;
    let entries = listing::entries(&queue).map_err(|e| Fatal(format!("{root}: {e}")))?;
    print!("{}", listing::render(&entries));
    Ok(())
}
