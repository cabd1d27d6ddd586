//! RFC 5321 path parsing: any text, in both modes and with or without
//! SMTPUTF8, gives a path or an error, never a panic; a parsed path renders
//! to text that parses back to the same value; and a parsed address goes
//! through trivial-rewrite's rewrite and resolve without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_core::address::{Domain, MailAddress, ParseOptions, ReversePath, Strictness};
use mta_core::address_class::{
    LiteralClassTables, LiteralDomainList, RewriteConfig, RewriteContext, resolve, rewrite,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        for smtputf8 in [false, true] {
            let opts = ParseOptions {
                strictness,
                smtputf8,
            };
            // Rendering never needs more than the mode it was parsed in,
            // plus UTF-8 when the value holds it.
            let again = opts.with_smtputf8(true);

            if let Ok((path, rest)) = ReversePath::parse_prefix(text, opts) {
                assert!(rest.len() <= text.len());
                let rendered = path.to_string();
                assert_eq!(
                    ReversePath::parse(&rendered, again),
                    Ok(path.clone()),
                    "{rendered}"
                );
                if let Some(mailbox) = path.mailbox() {
                    exercise_class(mailbox);
                }
            }
            if let Ok((rcpt, _)) = MailAddress::parse_forward_path_prefix(text, opts) {
                let rendered = rcpt.render_path();
                assert_eq!(
                    MailAddress::parse_forward_path(&rendered, again),
                    Ok(rcpt.clone()),
                    "{rendered}"
                );
                assert!(rendered.len() <= mta_core::address::MAX_PATH_LEN);
            }
            if let Ok(mailbox) = MailAddress::parse(text, opts) {
                let rendered = mailbox.render();
                assert_eq!(
                    MailAddress::parse(&rendered, again),
                    Ok(mailbox),
                    "{rendered}"
                );
            }
            if let Ok(domain) = Domain::parse(text, opts) {
                assert_eq!(Domain::parse(domain.as_str(), again), Ok(domain.clone()));
            }
        }
    }
});

/// Rewrites and resolves with a small configuration that has every class.
fn exercise_class(address: &MailAddress) {
    let (Ok(host), Ok(domain)) = ("mail.example.com".parse(), "example.com".parse()) else {
        return;
    };
    let mut config = RewriteConfig::new(host, domain);
    config.append_dot_mydomain = true;
    config.our_addresses = vec![std::net::IpAddr::from([192, 0, 2, 1])];
    let mut lists = LiteralClassTables::postfix_defaults(&config);
    if let (Ok(alias), Ok(mailbox), Ok(relay)) = (
        LiteralDomainList::new(["alias.example"], false),
        LiteralDomainList::new(["mailbox.example"], false),
        LiteralDomainList::new(["relay.example"], true),
    ) {
        lists.virtual_alias_domains = alias;
        lists.virtual_mailbox_domains = mailbox;
        lists.relay_domains = relay;
    }
    for context in [RewriteContext::Local, RewriteContext::Remote] {
        if let Ok(standard) = rewrite(&config, context, address) {
            assert_eq!(rewrite(&config, context, &standard), Ok(standard.clone()));
        }
    }
    if let Ok(resolution) = resolve(&config, &lists.tables(), address) {
        assert!(resolution.recipient.domain().is_some());
    }
}
