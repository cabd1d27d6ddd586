//! End to end: the classic open-relay test addresses against the
//! reference site (`examples/small-office/main.cf`), each sent as
//! `RCPT TO:<form>` by a client outside `mynetworks` without SASL.
//!
//! Each form goes through what the SMTP server does with it: the command
//! parser (`MailAddress::parse_forward_path`, strict as the site's
//! `strict_rfc821_envelopes = yes`, and lenient as Postfix's default),
//! which answers 501 for what it cannot parse, then the restriction engine
//! with the address as the server hands it over. Every form must be
//! refused, by one or the other; the engine must also refuse each form
//! given raw, as if a parser had let it through.
//!
//! Postfix's behaviour for these forms (postconf(5) `allow_percent_hack`,
//! `swap_bangpath`, `resolve_dequoted_address`, `allow_untrusted_routing`):
//! routing through a local domain is followed before the relay check
//! (`user%elsewhere@mail.example.com` is mail for `elsewhere`), and a
//! recipient whose local part still holds `@`, `%` or `!` is never an
//! authorized destination, even in a virtual domain.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use mta_core::address::{MailAddress, ParseOptions};
use mta_core::config::{Config, HostFacts};
use mta_core::dns::StubResolver;
use mta_maps::registry::{OpenContext, Registry};
use mta_restrictions::relay::relay_safety;
use mta_restrictions::restriction::{Decision, Restrictions, SmtpContext, Stage, Verdict};

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The classic relay tests: percent hack, bang paths, quoted `@`, source
/// routes, several `@`, address literals, trailing dots, case, look-alike
/// domains, and their combinations through the local domain
/// (`mail.example.com`, `localhost`, `[127.0.0.1]`) and the virtual
/// domains (`example.com`, `example.org`).
const FORMS: &[&str] = &[
    "user@elsewhere.example",
    "user%elsewhere.example@example.com",
    "user%elsewhere.example@mail.example.com",
    "user%elsewhere.example@localhost",
    "user%elsewhere.example@[127.0.0.1]",
    "user%elsewhere.example@mail.example.com.",
    "user%ELSEWHERE.EXAMPLE@MAIL.EXAMPLE.COM",
    "user%elsewhere.example%example.com@mail.example.com",
    "user%elsewhere.example%mail.example.com@mail.example.com",
    "user%[192.0.2.9]@mail.example.com",
    "user%[192.0.2.9]@example.org",
    "\"user@elsewhere.example\"@example.com",
    "\"user@elsewhere.example\"@mail.example.com",
    "\"user%elsewhere.example\"@mail.example.com",
    "\"user@[192.0.2.9]\"@mail.example.com",
    "\"user@elsewhere.example\"",
    "elsewhere.example!user@example.com",
    "elsewhere.example!user@mail.example.com",
    "elsewhere.example!user%example.com@mail.example.com",
    "mail.example.com!elsewhere.example!user@mail.example.com",
    "@example.com:user@elsewhere.example",
    "@mail.example.com,@example.org:user@elsewhere.example",
    "user@elsewhere.example@example.com",
    "user@elsewhere.example@mail.example.com",
    "user@[192.0.2.9]",
    "user@[IPv6:2001:db8::9]",
    "user@192.0.2.9",
    "user@elsewhere.example.",
    "USER@ELSEWHERE.EXAMPLE",
    "user@example.com.elsewhere.example",
    "user@mail.example.com.elsewhere.example",
    "user@elsewhereexample.com",
    "user@localhost",
    "user@elsewhere",
    "user%elsewhere.example",
    "elsewhere.example!user",
];

/// The reference site in a scratch directory with its hash tables
/// compiled (the repository keeps only their sources), and without
/// alias_maps (an aliases(5) file, compiled by postalias; not needed
/// for these recipient checks).
fn compiled_site(name: &str) -> (PathBuf, String) {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/small-office");
    // Tests run in parallel threads: each call gets its own directory.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("mta-relay-site-{}-{name}-{n}", std::process::id()));
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
        mta_maps::hash::compile(
            &dir.join(t),
            "",
            mta_maps::key::Folding::Lower,
            mta_maps::hash::Duplicates::KeepFirst,
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(dir.join("main.cf")).expect("reference main.cf");
    let text = format!("config_directory = {}\n{text}alias_maps =\n", dir.display());
    (dir, text)
}

fn reference_site() -> (Config, Restrictions) {
    let (dir, text) = compiled_site("site");
    let config = Config::parse(&text, "main.cf", HostFacts::default()).expect("main.cf parses");
    let registry = Registry::new(OpenContext {
        config_directory: Some(dir),
        ..OpenContext::default()
    });
    let restrictions = Restrictions::from_config(&config, &registry).expect("restrictions");
    (config, restrictions)
}

fn rcpt(r: &Restrictions, client: &str, sasl: Option<&str>, recipient: &str) -> Decision {
    let mut ctx = SmtpContext::new(client.parse().unwrap());
    ctx.helo = Some("client.example.net".into());
    ctx.esmtp = true;
    ctx.sender = Some("someone@sender.example".into());
    ctx.sasl_username = sasl.map(str::to_string);
    ctx.recipient = Some(recipient.to_string());
    let dns = StubResolver::new();
    dns.add_mx("sender.example", 10, "mx.sender.example");
    dns.add_address("mx.sender.example", "192.0.2.25".parse().unwrap());
    block_on(r.evaluate(Stage::Rcpt, &ctx, &dns))
}

fn refused(d: &Decision) -> bool {
    match &d.verdict {
        Verdict::Reject(reply) => matches!(reply.code().get() / 100, 4 | 5),
        Verdict::Accept => false,
    }
}

#[test]
fn every_relay_form_is_refused() {
    let (config, r) = reference_site();
    assert!(relay_safety(&config, &r).is_safe());
    let mut failures = Vec::new();
    for (mode, opts) in [
        ("strict", ParseOptions::STRICT),
        ("lenient", ParseOptions::LENIENT),
    ] {
        for form in FORMS {
            // What the SMTP server hands the engine, if anything.
            let parsed = MailAddress::parse_forward_path(&format!("<{form}>"), opts);
            let outcome = match &parsed {
                Err(e) => format!("501 from the parser ({e})"),
                Ok(addr) => {
                    let d = rcpt(&r, "192.0.2.1", None, &addr.to_string());
                    if !refused(&d) {
                        failures.push(format!("{mode}: <{form}> as <{addr}> accepted"));
                    }
                    format!(
                        "<{addr}>: {}",
                        d.reply().map(|r| r.to_string()).unwrap_or_default()
                    )
                }
            };
            eprintln!("{mode:7} <{form}> -> {outcome}");
            // The engine alone, given the form as it stands.
            let raw = rcpt(&r, "192.0.2.1", None, form);
            if !refused(&raw) {
                failures.push(format!("engine given raw <{form}> accepted"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The refusals above are the relay check's, not an accident of recipient
/// validation: the routed forms get "Relay access denied" from the relay
/// list (454, `defer_unauth_destination` of compatibility level 3.6) or,
/// with the relay list emptied, 554 from `reject_unauth_destination`.
#[test]
fn routed_forms_are_refused_as_relaying() {
    let (_, r) = reference_site();
    for form in [
        "user%elsewhere.example@mail.example.com",
        "user%elsewhere.example@example.com",
        "elsewhere.example!user@mail.example.com",
        "\"user@elsewhere.example\"@mail.example.com",
        "\"user@elsewhere.example\"@example.com",
        "user%[192.0.2.9]@mail.example.com",
    ] {
        let d = rcpt(&r, "192.0.2.1", None, form);
        let reply = d.reply().expect("refused").to_string();
        assert!(
            reply.starts_with("454 4.7.1 <") && reply.ends_with(">: Relay access denied"),
            "<{form}>: {reply}"
        );
    }
    let (dir, text) = compiled_site("emptied");
    let text = format!("{text}smtpd_relay_restrictions =\n");
    let config = Config::parse(&text, "main.cf", HostFacts::default()).unwrap();
    let registry = Registry::new(OpenContext {
        config_directory: Some(dir),
        ..OpenContext::default()
    });
    let r = Restrictions::from_config(&config, &registry).unwrap();
    let d = rcpt(
        &r,
        "192.0.2.1",
        None,
        "user%elsewhere.example@mail.example.com",
    );
    assert_eq!(
        d.reply().unwrap().to_string(),
        "554 5.7.1 <user%elsewhere.example@mail.example.com>: Relay access denied"
    );
}

/// The controls: the same engine accepts our own users, and relays for
/// mynetworks and for authenticated clients, so the refusals above are
/// not a blanket "no".
#[test]
fn controls_are_accepted() {
    let (_, r) = reference_site();
    for (client, sasl, recipient) in [
        ("192.0.2.1", None, "alice@example.com"),
        ("192.0.2.1", None, "ALICE@Example.COM"),
        ("192.0.2.1", None, "bob@example.org"),
        ("192.0.2.1", None, "postmaster@example.com"),
        ("127.0.0.1", None, "user@elsewhere.example"),
        ("127.0.0.1", None, "user%elsewhere.example@mail.example.com"),
        ("192.0.2.1", Some("alice"), "user@elsewhere.example"),
    ] {
        let d = rcpt(&r, client, sasl, recipient);
        assert!(
            !d.is_reject(),
            "{client} {sasl:?} <{recipient}>: {:?}",
            d.reply().map(|r| r.to_string())
        );
    }
    // Percent hack to a local user through the local domain stays local:
    // root@localhost, not a relay (Postfix accepts it too); and an unknown
    // local user that way is refused as unknown, not as a relay attempt.
    let d = rcpt(&r, "192.0.2.1", None, "root%localhost@mail.example.com");
    assert!(!d.is_reject(), "{:?}", d.reply().map(|r| r.to_string()));
    let d = rcpt(
        &r,
        "192.0.2.1",
        None,
        "no-such-user%localhost@mail.example.com",
    );
    assert_eq!(
        d.reply().map(|r| r.to_string()).as_deref(),
        Some(
            "550 5.1.1 <no-such-user%localhost@mail.example.com>: Recipient address rejected: User unknown in local recipient table"
        )
    );
}
