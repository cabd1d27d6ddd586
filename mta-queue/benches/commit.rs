//! Commit throughput of the queue: 1, 20 and 100 concurrent writers of
//! 4 KiB messages, each waiting for its commit (file and directory
//! synced) before writing the next, against the raw rate of this file
//! system: create + write + fsync (file and directory) one at a time, and
//! from 4 threads. Run on an idle machine:
//!
//! ```sh
//! cargo bench -p mta-queue --bench commit
//! ```
//!
//! Files go under the target directory (never `/tmp`, which may be a
//! RAM file system where fsync costs nothing).

#![allow(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mta_core::queue_id::QueueId;
use mta_queue::file::{Envelope, Recipient};
use mta_queue::store::{Committer, Queue, QueueName};

const SECONDS: f64 = 3.0;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("commit-bench-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Raw create + write + fsync + directory fsync, from `threads` threads.
fn raw(threads: usize) -> f64 {
    let dir = scratch(&format!("raw{threads}"));
    let body = vec![b'x'; 4096];
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (dir, body, count) = (&dir, &body, &count);
            s.spawn(move || {
                let mut n = 0u64;
                while start.elapsed().as_secs_f64() < SECONDS {
                    let path = dir.join(format!("{t}-{n}"));
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .unwrap();
                    f.write_all(body).unwrap();
                    f.sync_all().unwrap();
                    File::open(dir).unwrap().sync_all().unwrap();
                    n += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&dir);
    rate
}

/// `writers` threads each writing messages through the queue and waiting
/// for each commit, as SMTP sessions do.
fn queue(writers: usize, committers: usize) -> f64 {
    let root = scratch(&format!("queue{writers}"));
    let queue = Queue::open(&root).unwrap();
    let committer = Committer::start(committers).unwrap();
    let body = vec![b'x'; 4096];
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..writers {
            let (queue, committer, body, count) = (&queue, &committer, &body, &count);
            s.spawn(move || {
                let mut n = 0u64;
                while start.elapsed().as_secs_f64() < SECONDS {
                    let id = QueueId::from_parts(1_700_000_000, 0, (t as u64) << 32 | n);
                    let envelope = Envelope {
                        arrival: Duration::from_secs(1_700_000_000),
                        sender: "alice@example.org".into(),
                        attributes: vec![("client_address".into(), "192.0.2.1".into())],
                        recipients: vec![Recipient::new("bob@example.com")],
                    };
                    let mut w = queue.create(&id, &envelope).unwrap();
                    w.write_content(body).unwrap();
                    committer
                        .commit(w.finish().unwrap(), &queue.dir(QueueName::Incoming))
                        .wait()
                        .unwrap();
                    n += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&root);
    rate
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not run this.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let serial = raw(1);
    let parallel = raw(4);
    println!("raw file+fsync+dir fsync: {serial:.0}/s serial, {parallel:.0}/s from 4 threads");
    let committers: usize = std::env::var("COMMITTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    for writers in [1, 20, 100] {
        let rate = queue(writers, committers);
        println!(
            "queue, {writers:>3} writers, {committers} commit threads: {rate:.0} messages/s ({:.2}x the parallel raw rate)",
            rate / parallel
        );
    }
}
