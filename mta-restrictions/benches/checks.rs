//! What policy costs per message:
//! - the reference site's restrictions (examples/small-office/main.cf,
//!   its hash tables compiled) evaluated for one RCPT from an Internet
//!   client, DNS answered by the in-memory stub;
//! - content checks over a 1 MiB message (20 header lines, ~15,000 body
//!   lines) with 10, 100 and 1,000 `regexp` header and body patterns, and
//!   the same with `pcre` tables; the body is checked whole
//!   (`body_checks_size_limit` raised to 2 MiB) so that every line meets
//!   every table. No pattern matches: the worst case, every line tried
//!   against every rule.
//!
//! ```sh
//! cargo bench -p mta-restrictions --bench checks
//! ```

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mta_core::config::{Config, HostFacts};
use mta_core::dns::StubResolver;
use mta_maps::hash::{self, Duplicates};
use mta_maps::key::Folding;
use mta_maps::list::MapList;
use mta_maps::pcre::PcreTable;
use mta_maps::regexp::RegexpTable;
use mta_maps::registry::{OpenContext, Registry};
use mta_restrictions::content::{
    ContentFilter, ContentLimits, ContentTables, MessageContext, Piece,
};
use mta_restrictions::restriction::{ClientName, Restrictions, SmtpContext, Stage};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn reference_site() -> (Restrictions, SmtpContext, StubResolver) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/small-office");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("restrictions-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "main.cf",
        "vmailbox",
        "virtual",
        "header_checks",
        "body_checks",
        "sender_logins",
    ] {
        std::fs::copy(source.join(f), dir.join(f)).unwrap();
    }
    for t in ["vmailbox", "virtual"] {
        hash::compile(&dir.join(t), "", Folding::Lower, Duplicates::KeepFirst).unwrap();
    }
    let text = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    let config = Config::parse(&text, "main.cf", HostFacts::default())
        .unwrap()
        .with_overrides(&[
            ("config_directory".into(), dir.display().to_string()),
            // The aliases file is aliases(5), compiled by postalias; the
            // recipient checks here do not need it.
            ("alias_maps".into(), String::new()),
        ]);
    let registry = Registry::new(OpenContext {
        config_directory: Some(dir.clone()),
        ..OpenContext::default()
    });
    let restrictions = Restrictions::from_config(&config, &registry).unwrap();
    let dns = StubResolver::new();
    dns.add_mx("sender.example", 10, "mx.sender.example");
    dns.add_address("mx.sender.example", "192.0.2.25".parse().unwrap());
    let mut ctx = SmtpContext::new("192.0.2.25".parse().unwrap());
    ctx.client_name = ClientName::Name("mx.sender.example".into());
    ctx.reverse_name = ClientName::Name("mx.sender.example".into());
    ctx.helo = Some("mx.sender.example".into());
    ctx.sender = Some("someone@sender.example".into());
    ctx.recipient = Some("alice@example.com".into());
    ctx.esmtp = true;
    (restrictions, ctx, dns)
}

fn restrictions(c: &mut Criterion) {
    let (r, ctx, dns) = reference_site();
    let decision = block_on(r.evaluate(Stage::Rcpt, &ctx, &dns));
    assert!(
        decision.reply().is_none(),
        "the RCPT is accepted: {:?}",
        decision.reply()
    );
    let mut g = c.benchmark_group("restrictions");
    g.throughput(Throughput::Elements(1));
    g.bench_function("reference_site_rcpt", |b| {
        b.iter(|| block_on(r.evaluate(Stage::Rcpt, &ctx, &dns)))
    });
    g.finish();
}

fn message() -> Vec<u8> {
    let mut m = String::new();
    for i in 0..20 {
        m.push_str(&format!(
            "X-Header-{i}: some value that is not matched {i}\r\n"
        ));
    }
    m.push_str("Subject: quarterly figures\r\n\r\n");
    let mut i = 0;
    while m.len() < 1 << 20 {
        m.push_str(&format!(
            "Line {i} of an ordinary message body, nothing to see here.\r\n"
        ));
        i += 1;
    }
    m.into_bytes()
}

fn tables(n: usize, pcre: bool) -> ContentTables {
    let mut header = String::new();
    let mut body = String::new();
    for i in 0..n {
        header.push_str(&format!("/^Subject:.*spam offer number {i}\\b/ REJECT\n"));
        body.push_str(&format!("/buy (cheap|discount) pills {i}[a-z]+/ REJECT\n"));
    }
    let list = |text: &str, name: &str| -> MapList {
        if pcre {
            let (t, w) = PcreTable::parse(text, name);
            assert!(w.is_empty());
            MapList::new(vec![Arc::new(t)])
        } else {
            let (t, w) = RegexpTable::parse(text, name);
            assert!(w.is_empty());
            MapList::new(vec![Arc::new(t)])
        }
    };
    let header = list(&header, "header_checks");
    ContentTables {
        mime_header: header.clone(),
        nested_header: header.clone(),
        header,
        body: list(&body, "body_checks"),
    }
}

fn content(c: &mut Criterion) {
    let message = message();
    let limits = ContentLimits {
        body_checks_size_limit: 2 << 20,
        ..ContentLimits::default()
    };
    let mut g = c.benchmark_group("content_checks_1MiB");
    g.throughput(Throughput::Bytes(message.len() as u64));
    g.sample_size(10);
    for pcre in [false, true] {
        for n in [10, 100, 1000] {
            let t = tables(n, pcre);
            let id = BenchmarkId::new(if pcre { "pcre" } else { "regexp" }, n);
            g.bench_with_input(id, &t, |b, t| {
                b.iter(|| {
                    let mut f = ContentFilter::new(t, limits, MessageContext::default());
                    let mut bytes = 0usize;
                    let mut sink = |p: Piece<'_>| bytes += p.text.len();
                    for chunk in message.chunks(64 * 1024) {
                        f.feed(chunk, &mut sink);
                    }
                    let v = f.finish(&mut sink);
                    assert!(v.reject.is_none());
                    bytes
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, restrictions, content);
criterion_main!(benches);
