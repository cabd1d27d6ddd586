//! `mtad postqueue -p` and `mtad mailq`: the queue listing, as Postfix's
//! postqueue(1) prints it. Flushing (`-f`, `-i`, `-s`) comes with the
//! scheduler and is refused with a message until then.

use std::path::PathBuf;

use mta_queue::listing;
use mta_queue::store::Queue;

use crate::Fatal;

/// Runs postqueue (`mailq` is `postqueue -p`); `args[0]` is its name.
pub(crate) fn run(args: &[String], mailq: bool) -> Result<(), Fatal> {
    let mut dir = None;
    let mut list = mailq;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-c" => dir = rest.next().map(PathBuf::from),
            "-p" => list = true,
            "-v" => {}
            "-f" | "-i" | "-s" => {
                return Err(Fatal(format!(
                    "{a}: flushing the queue needs the scheduler, which mtad does not have yet"
                )));
            }
            other => {
                return Err(Fatal(format!(
                    "usage: postqueue -p [-c config_dir]: unknown argument {other}"
                )));
            }
        }
    }
    if !list {
        return Err(Fatal("usage: postqueue -p [-c config_dir]".into()));
    }
    let (dir, explicit) = crate::config_dir(dir);
    let config = crate::postconf::load_main(&dir, explicit, "postqueue")?;
    let root = config
        .expanded("queue_directory")
        .map_err(|e| Fatal(e.to_string()))?;
    let queue = Queue::open(&root).map_err(|e| Fatal(format!("{root}: {e}")))?;
    let entries = listing::entries(&queue).map_err(|e| Fatal(format!("{root}: {e}")))?;
    print!("{}", listing::render(&entries));
    Ok(())
}
