//! The queue's shape, as Postfix's qshape(1) shows it: messages (or
//! recipients) per domain and age.
//!
//! [`Shape::of`] reads the queues named (by default `incoming` and
//! `active`) and counts each pending recipient under its domain (or,
//! with [`Options::senders`], each message under its sender's domain;
//! the null sender is `MAILER-DAEMON`) in age buckets: by default ten,
//! the first up to 5 minutes, each further one twice as long (or, with
//! [`Options::linear`], each as long), the last without limit. Ages count
//! from arrival. [`Shape::render`] prints the table: a header of bucket
//! limits in minutes, a `TOTAL` row, then domains by total, right
//! justified to the terminal width, long names cut to their last 17
//! bytes after a `+`.
//!
//! With [`Options::parents`], parent domains with at least
//! [`Options::min_subdomains`] subdomains get a row of their own, with a
//! leading dot (`.example.com`); top-level domains never do.
//!
//! # Example
//!
//! ```
//! use mta_queue::qshape::{Options, Shape};
//! use mta_queue::store::{Queue, QueueName};
//!
//! let root = std::env::temp_dir().join(format!("qshape-doc-{}", std::process::id()));
//! let queue = Queue::open(&root)?;
//! let shape = Shape::of(&queue, &[QueueName::Incoming, QueueName::Active], &Options::default(),
//!                       std::time::SystemTime::now())?;
//! assert!(shape.render().contains("TOTAL"));
//! # std::fs::remove_dir_all(&root)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashMap;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::file::QueueFile;
use crate::store::{Queue, QueueName};

/// qshape's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-s`: sender domains instead of recipient domains.
    pub senders: bool,
    /// `-p`: rows for parent domains too.
    pub parents: bool,
    /// `-m`: subdomains a parent needs for its row (default 5).
    pub min_subdomains: usize,
    /// `-b`: the number of buckets (default 10).
    pub buckets: usize,
    /// `-t`: the first bucket's limit in minutes (default 5).
    pub bucket_minutes: u64,
    /// `-l`: each bucket as long as the first, not twice the last.
    pub linear: bool,
    /// `-w`: the width to justify to (default 80).
    pub width: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            senders: false,
            parents: false,
            min_subdomains: 5,
            buckets: 10,
            bucket_minutes: 5,
            linear: false,
            width: 80,
        }
    }
}

/// The counts per domain and bucket.
#[derive(Debug, Clone)]
pub struct Shape {
    limits: Vec<u64>,
    rows: HashMap<String, Vec<u64>>,
    total: Vec<u64>,
    width: usize,
}

impl Shape {
    /// Counts the messages of `queues` as `options` says, their ages as of
    /// `now`. Files that cannot be read (being written, just delivered)
    /// are skipped.
    ///
    /// # Errors
    ///
    /// A queue directory that cannot be read.
    pub fn of(
        queue: &Queue,
        queues: &[QueueName],
        options: &Options,
        now: SystemTime,
    ) -> io::Result<Shape> {
        let buckets = options.buckets.max(1);
        // Upper limits in minutes of every bucket but the last.
        let mut limits = Vec::new();
        let mut limit = options.bucket_minutes.max(1);
        for _ in 0..buckets.saturating_sub(1) {
            limits.push(limit);
            limit = if options.linear {
                limit + options.bucket_minutes.max(1)
            } else {
                limit * 2
            };
        }
        let mut rows: HashMap<String, Vec<u64>> = HashMap::new();
        let mut total = vec![0u64; buckets];
        for &q in queues {
            for id in queue.list(q)? {
                let Ok(file) = QueueFile::read(&queue.dir(q).join(&id)) else {
                    continue;
                };
                let arrival = UNIX_EPOCH + file.envelope.arrival;
                let minutes = now
                    .duration_since(arrival)
                    .unwrap_or(Duration::ZERO)
                    .as_secs()
                    / 60;
                let bucket = limits
                    .iter()
                    .position(|&l| minutes < l)
                    .unwrap_or(buckets - 1);
                let domains: Vec<String> = if options.senders {
                    vec![domain_of(&file.envelope.sender, true)]
                } else {
                    file.envelope
                        .recipients
                        .iter()
                        .filter(|r| !r.done)
                        .map(|r| domain_of(&r.address, false))
                        .collect()
                };
                for d in domains {
                    total[bucket] += 1;
                    rows.entry(d.clone()).or_insert_with(|| vec![0; buckets])[bucket] += 1;
                }
            }
        }
        if options.parents {
            let mut parents: HashMap<String, (usize, Vec<u64>)> = HashMap::new();
            for (domain, counts) in &rows {
                let labels: Vec<&str> = domain.split('.').collect();
                // Every parent of two labels or more: never a top-level
                // domain.
                for start in 1..labels.len().saturating_sub(1) {
                    let parent = format!(".{}", labels[start..].join("."));
                    let entry = parents
                        .entry(parent)
                        .or_insert_with(|| (0, vec![0; buckets]));
                    entry.0 += 1;
                    for (i, c) in counts.iter().enumerate() {
                        entry.1[i] += c;
                    }
                }
            }
            for (parent, (subdomains, counts)) in parents {
                if subdomains >= options.min_subdomains.max(1) {
                    rows.insert(parent, counts);
                }
            }
        }
        Ok(Shape {
            limits,
            rows,
            total,
            width: options.width,
        })
    }

    /// The table, as qshape prints it.
    pub fn render(&self) -> String {
        let mut labels: Vec<String> = self.limits.iter().map(u64::to_string).collect();
        labels.push(format!("{}+", self.limits.last().map_or(0, |l| *l)));
        let mut rows: Vec<(&str, &Vec<u64>)> =
            self.rows.iter().map(|(d, c)| (d.as_str(), c)).collect();
        let sum = |c: &Vec<u64>| c.iter().sum::<u64>();
        rows.sort_by(|a, b| sum(b.1).cmp(&sum(a.1)).then(a.0.cmp(b.0)));
        // Each count column as wide as its label or largest number; the
        // total column as wide as "T" or the grand total.
        let grand = sum(&self.total);
        let total_width = grand.to_string().len().max(1);
        let widths: Vec<usize> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| l.len().max(self.total[i].to_string().len()))
            .collect();
        let numbers = total_width + widths.iter().map(|w| w + 1).sum::<usize>();
        let name_width = self.width.saturating_sub(numbers + 1).max(6);
        let mut out = String::new();
        let mut line = |name: &str, t: &str, cells: &[String]| {
            let shown = if name.len() > name_width {
                let cut = name.len() - 17.min(name.len());
                let tail = &name[name
                    .char_indices()
                    .map(|(i, _)| i)
                    .find(|&i| i >= cut)
                    .unwrap_or(0)..];
                if name.starts_with('.') {
                    format!(".+{}", &tail[tail.len().saturating_sub(16)..])
                } else {
                    format!("+{tail}")
                }
            } else {
                name.to_owned()
            };
            out.push_str(&format!("{shown:>name_width$} {t:>total_width$}"));
            for (c, w) in cells.iter().zip(&widths) {
                out.push_str(&format!(" {c:>w$}"));
            }
            out.push('\n');
        };
        line("", "T", &labels);
        let cells = |c: &Vec<u64>| c.iter().map(u64::to_string).collect::<Vec<_>>();
        line("TOTAL", &grand.to_string(), &cells(&self.total));
        for (d, c) in rows {
            line(d, &sum(c).to_string(), &cells(c));
        }
        out
    }
}

/// The domain qshape counts `address` under: lower-cased, the null
/// sender as `MAILER-DAEMON`.
fn domain_of(address: &str, sender: bool) -> String {
    if address.is_empty() && sender {
        return "MAILER-DAEMON".to_owned();
    }
    match address.rsplit_once('@') {
        Some((_, d)) if !d.is_empty() => d.to_ascii_lowercase(),
        _ => address.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{Envelope, Recipient};
    use crate::store::Committer;
    use mta_core::queue_id::QueueId;

    #[test]
    fn counts_by_domain_and_age() {
        let root = std::env::temp_dir().join(format!("qshape-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let queue = Queue::open(&root).unwrap();
        let committer = Committer::start(1).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_764_800_000);
        let put = |n: u64, minutes_old: u64, sender: &str, rcpts: &[&str]| {
            let arrival = Duration::from_secs(1_764_800_000 - minutes_old * 60);
            let id = QueueId::from_parts(arrival.as_secs(), 0, n);
            let env = Envelope {
                arrival,
                sender: sender.into(),
                attributes: vec![],
                recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
            };
            let mut w = queue.create(&id, &env).unwrap();
            w.write_content(b"Subject: x\r\n\r\n").unwrap();
            committer
                .commit(w.finish().unwrap(), &queue.dir(QueueName::Incoming))
                .wait()
                .unwrap();
        };
        put(
            1,
            1,
            "a@example.org",
            &["x@a.example.com", "y@b.example.com"],
        );
        put(2, 7, "", &["z@a.example.com"]);
        put(3, 2000, "b@example.org", &["w@example.net"]);
        let shape = Shape::of(&queue, &[QueueName::Incoming], &Options::default(), now).unwrap();
        let text = shape.render();
        let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            words(lines[0]).join(" "),
            "T 5 10 20 40 80 160 320 640 1280 1280+"
        );
        assert_eq!(
            words(lines[1]).join(" "),
            "TOTAL 4 2 1 0 0 0 0 0 0 0 1",
            "{text}"
        );
        assert_eq!(
            words(lines[2]).join(" "),
            "a.example.com 2 1 1 0 0 0 0 0 0 0 0",
            "{text}"
        );
        assert!(
            lines.iter().all(|l| l.len() == 80),
            "right-justified to 80: {text}"
        );
        let row = |text: &str, name: &str| {
            text.lines()
                .map(words)
                .find(|w| w[0] == name)
                .map(|w| w.join(" "))
                .unwrap_or_default()
        };

        let senders = Options {
            senders: true,
            ..Options::default()
        };
        let text = Shape::of(&queue, &[QueueName::Incoming], &senders, now)
            .unwrap()
            .render();
        assert_eq!(
            row(&text, "example.org"),
            "example.org 2 1 0 0 0 0 0 0 0 0 1",
            "{text}"
        );
        assert_eq!(
            row(&text, "MAILER-DAEMON"),
            "MAILER-DAEMON 1 0 1 0 0 0 0 0 0 0 0",
            "{text}"
        );

        let parents = Options {
            parents: true,
            min_subdomains: 2,
            ..Options::default()
        };
        let text = Shape::of(&queue, &[QueueName::Incoming], &parents, now)
            .unwrap()
            .render();
        assert_eq!(
            row(&text, ".example.com"),
            ".example.com 3 2 1 0 0 0 0 0 0 0 0",
            "{text}"
        );
        assert_eq!(row(&text, ".com"), "", "no top-level rows: {text}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
