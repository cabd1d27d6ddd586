//! Messages per second through the sans-IO server session on one core:
//! a pipelined transaction (MAIL, two RCPTs, DATA) with a 4 KiB body of
//! 64 lines, then the end of data, as one client would send it, with
//! every event accepted. Also counts heap allocations per message, to
//! check that content costs no allocation per line.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::alloc::System;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mta_smtp::server::{Event, ServerConfig, ServerSession};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One pipelined transaction: envelope, DATA, 64 lines of 64 bytes, end.
fn message(lines: usize) -> (Vec<u8>, Vec<u8>) {
    let envelope =
        b"MAIL FROM:<alice@example.org> SIZE=4200\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n"
            .to_vec();
    let mut content = Vec::new();
    for i in 0..lines {
        let line = format!(
            "{:02} The quick brown fox jumps over the lazy dog, again and again.",
            i % 100
        );
        content.extend_from_slice(&line.as_bytes()[..62]);
        content.extend_from_slice(b"\r\n");
    }
    content.extend_from_slice(b".\r\n");
    (envelope, content)
}

fn run(
    session: &mut ServerSession,
    envelope: &[u8],
    content: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> u64 {
    let mut size = 0;
    session.handle_input(envelope, now);
    loop {
        let mut any = false;
        while let Some(event) = session.poll_event() {
            any = true;
            if let Event::Content(bytes) = &event {
                size += bytes.len() as u64;
            }
            if event.needs_decision() {
                session.accept(now);
            }
        }
        if !any {
            break;
        }
    }
    session.handle_input(content, now);
    while let Some(event) = session.poll_event() {
        if let Event::Content(bytes) = &event {
            size += bytes.len() as u64;
        }
        if event.needs_decision() {
            session.accept(now);
        }
    }
    out.clear();
    session.poll_transmit(out);
    size
}

fn bench(c: &mut Criterion) {
    let (envelope, content) = message(64);
    let now = Instant::now();
    let mut session = ServerSession::new(ServerConfig::new("mx.example.com"), now);
    let mut out = Vec::new();
    while let Some(e) = session.poll_event() {
        if e.needs_decision() {
            session.accept(now);
        }
    }
    session.handle_input(b"EHLO client.example.org\r\n", now);
    while let Some(e) = session.poll_event() {
        if e.needs_decision() {
            session.accept(now);
        }
    }
    // Warm up, then count allocations over many messages.
    for _ in 0..100 {
        assert_eq!(run(&mut session, &envelope, &content, now, &mut out), 4096);
    }
    // The same count for 64 and 256 content lines: no allocation per line.
    for lines in [64, 256] {
        let (envelope, content) = message(lines);
        let region = Region::new(GLOBAL);
        let rounds = 10_000;
        for _ in 0..rounds {
            run(&mut session, &envelope, &content, now, &mut out);
        }
        let change = region.change();
        let per_message = (change.allocations + change.reallocations) as f64 / rounds as f64;
        println!(
            "heap allocations per message: {per_message:.1} ({lines} content lines, 4 command lines)"
        );
    }

    let mut group = c.benchmark_group("server_session");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pipelined_4k_message", |b| {
        b.iter(|| run(&mut session, &envelope, &content, now, &mut out))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
