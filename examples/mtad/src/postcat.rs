//! `mtad postcat`: show a queue file, as Postfix's postcat(1).
//!
//! `postcat [-c DIR] [-e] [-h] [-b] -q ID...` finds each message in the
//! queues of `queue_directory`; `postcat FILE...` reads files directly.

use std::path::PathBuf;

use mta_queue::file::{PostcatSections, QueueFile};
use mta_queue::store::Queue;

use crate::Fatal;

/// Runs postcat with its command line (`args[0]` is its name).
pub(crate) fn run(args: &[String]) -> Result<(), Fatal> {
    let mut dir = None;
    let mut by_id = false;
    let mut sections = PostcatSections {
        envelope: false,
        header: false,
        body: false,
    };
    let mut operands = Vec::new();
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-c" => dir = rest.next().map(PathBuf::from),
            "-q" => by_id = true,
            "-e" => sections.envelope = true,
            "-h" => sections.header = true,
            "-b" => sections.body = true,
            "-o" | "-r" | "-s" | "-v" => {}
            other if other.starts_with('-') => {
                return Err(Fatal(format!(
                    "usage: postcat [-bdehnoqv] [-c config_dir] [files...]: unknown option {other}"
                )));
            }
            other => operands.push(other.to_string()),
        }
    }
    if sections
        == (PostcatSections {
            envelope: false,
            header: false,
            body: false,
        })
    {
        sections = PostcatSections::ALL;
    }
    if operands.is_empty() {
        return Err(Fatal(
            "usage: postcat [-bdehnoqv] [-c config_dir] [files...]".into(),
        ));
    }
    let queue = if by_id {
        let (dir, explicit) = crate::config_dir(dir);
        let config = crate::postconf::load_main(&dir, explicit, "postcat")?;
        let root = config
            .expanded("queue_directory")
            .map_err(|e| Fatal(e.to_string()))?;
        Some(Queue::open(&root).map_err(|e| Fatal(format!("{root}: {e}")))?)
    } else {
        None
    };
    for operand in operands {
        let (path, label) = match &queue {
            Some(q) => {
                let Some(which) = q.find(&operand) else {
                    return Err(Fatal(format!(
                        "open queue file {operand}: No such file or directory"
                    )));
                };
                let label = format!("{}/{operand}", which.dir_name());
                (q.dir(which).join(&operand), label)
            }
            None => (PathBuf::from(&operand), operand.clone()),
        };
        let file = QueueFile::read(&path).map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
        print!("{}", file.postcat(&label, sections));
    }
    Ok(())
}
