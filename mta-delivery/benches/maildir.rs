//! Maildir deliveries of 4 KiB messages per second, one at a time and
//! eight at once (threads, as mtad's delivery slots run them), against
//! what the file system gives raw: create, write and fsync a file; and
//! the same plus the rename into `new/` and the fsync of `new/` that a
//! durable maildir delivery needs.
//!
//! `cargo bench -p mta-delivery --bench maildir`; the directory is
//! under `CARGO_TARGET_TMPDIR` (the target directory's disk), or
//! `MAILDIR_BENCH_DIR`.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mta_delivery::maildir::{Maildir, MaildirOptions};

const SIZE: usize = 4096;

fn base() -> PathBuf {
    let root = std::env::var_os("MAILDIR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = root.join(format!("maildir-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn message() -> Vec<u8> {
    let mut m = b"Subject: bench\nFrom: bob@example.org\n\n".to_vec();
    while m.len() < SIZE {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\n");
    }
    m.truncate(SIZE - 1);
    m.push(b'\n');
    m
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Create, write, fsync, close: the floor for any durable delivery.
fn raw_file(dir: &Path, body: &[u8]) {
    let name = dir.join(format!("f{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    let mut f = File::create(&name).unwrap();
    f.write_all(body).unwrap();
    f.sync_all().unwrap();
}

/// The same, then the rename into `new/` and the fsync of `new/`.
fn raw_maildir(dir: &Path, body: &[u8]) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join("tmp").join(format!("f{n}"));
    let mut f = File::create(&tmp).unwrap();
    f.write_all(body).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(&tmp, dir.join("new").join(format!("f{n}"))).unwrap();
    File::open(dir.join("new")).unwrap().sync_all().unwrap();
}

fn ours(dir: &Path, body: &[u8]) {
    let options = MaildirOptions {
        hostname: "mail.example.com".into(),
        size_limit: 0,
        owner: None,
        cancel: None,
    };
    Maildir::new(dir)
        .deliver(
            b"Return-Path: <bob@example.org>\n",
            body,
            SystemTime::now(),
            &options,
        )
        .unwrap();
}

/// Runs `iters` deliveries of `f` over `threads` threads, each into its
/// own maildir (eight users receiving at once), and returns the time.
fn run(threads: u64, iters: u64, dirs: &[PathBuf], f: fn(&Path, &[u8])) -> Duration {
    let body = message();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let dir = &dirs[t as usize];
            let body = &body;
            let n = iters / threads + u64::from(t < iters % threads);
            s.spawn(move || {
                for _ in 0..n {
                    f(dir, body);
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let root = base();
    let dirs: Vec<PathBuf> = (0..8)
        .map(|i| {
            let d = root.join(format!("user{i}"));
            for sub in ["tmp", "new", "cur"] {
                std::fs::create_dir_all(d.join(sub)).unwrap();
            }
            d
        })
        .collect();
    let mut group = c.benchmark_group("maildir_4KiB");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 8] {
        group.bench_function(format!("raw_file_fsync/{threads}"), |b| {
            b.iter_custom(|iters| run(threads, iters, &dirs, raw_file))
        });
        group.bench_function(format!("raw_maildir_steps/{threads}"), |b| {
            b.iter_custom(|iters| run(threads, iters, &dirs, raw_maildir))
        });
        group.bench_function(format!("mta_maildir/{threads}"), |b| {
            b.iter_custom(|iters| run(threads, iters, &dirs, ours))
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
