//! The per-message defer log: why each recipient of a deferred message is
//! still waiting, as `mailq` shows it and as Postfix keeps it in
//! `defer/ID`.
//!
//! One block per recipient, in Postfix's attribute form:
//!
//! ```text
//! recipient=dave@example.net
//! dsn_orig_rcpt=rfc822;dave@example.net
//! status=4.4.1
//! action=delayed
//! reason=connect to mx.example.net[192.0.2.9]:25: Connection refused
//!
//! ```
//!
//! The scheduler rewrites the log after each attempt, so it holds the
//! latest reasons; it is removed with the message. It is advisory: a log
//! that is missing or damaged only makes `mailq` show no reason.

use std::collections::HashMap;
use std::fs;
use std::io;

use crate::store::Queue;

/// One recipient's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferRecord {
    /// The recipient.
    pub recipient: String,
    /// The original recipient, as `addr-type;address`.
    pub orig_rcpt: String,
    /// The enhanced status code.
    pub status: String,
    /// Why.
    pub reason: String,
}

/// Values on one line: no line ends.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Writes the defer log of message `id`, replacing any earlier one; an
/// empty `records` removes it.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write(queue: &Queue, id: &str, records: &[DeferRecord]) -> io::Result<()> {
    let path = queue.root().join("defer").join(id);
    if records.is_empty() {
        return match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let mut text = String::new();
    for r in records {
        text.push_str(&format!(
            "recipient={}\ndsn_orig_rcpt={}\nstatus={}\naction=delayed\nreason={}\n\n",
            one_line(&r.recipient),
            one_line(&r.orig_rcpt),
            one_line(&r.status),
            one_line(&r.reason)
        ));
    }
    let tmp = queue.root().join("defer").join(format!(".{id}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, &path)
}

/// The reasons in the defer log of message `id`, by recipient (lower
/// case); empty when there is none.
pub fn reasons(queue: &Queue, id: &str) -> HashMap<String, String> {
    let Ok(text) = fs::read_to_string(queue.root().join("defer").join(id)) else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for block in text.split("\n\n") {
        let mut recipient = None;
        let mut reason = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("recipient=") {
                recipient = Some(v.to_lowercase());
            } else if let Some(v) = line.strip_prefix("reason=") {
                reason = Some(v.to_owned());
            }
        }
        if let (Some(r), Some(why)) = (recipient, reason) {
            out.insert(r, why);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_removal() {
        let root = std::env::temp_dir().join(format!("mta-deferlog-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let queue = Queue::open(&root).unwrap();
        let record = |r: &str, why: &str| DeferRecord {
            recipient: r.into(),
            orig_rcpt: format!("rfc822;{r}"),
            status: "4.4.1".into(),
            reason: why.into(),
        };
        write(
            &queue,
            "ID1",
            &[
                record("A@example.net", "refused"),
                record("b@example.net", "two\nlines"),
            ],
        )
        .unwrap();
        let got = reasons(&queue, "ID1");
        assert_eq!(got["a@example.net"], "refused");
        assert_eq!(got["b@example.net"], "two lines");
        write(&queue, "ID1", &[]).unwrap();
        assert!(reasons(&queue, "ID1").is_empty());
        write(&queue, "ID1", &[]).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }
}
