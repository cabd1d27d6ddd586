//! The reference site's main.cf, read through Config and resolved through
//! the address classes, as trivial-rewrite would for that site.

use mta_core::address::{MailAddress, ParseOptions};
use mta_core::address_class::{
    AddressClass, ClassTables, LiteralDomainList, RewriteConfig, resolve,
};
use mta_core::config::{Config, HostFacts};

const MAIN_CF: &str = include_str!("../../examples/small-office/main.cf");

fn site() -> (Config, RewriteConfig) {
    let config = Config::parse(
        MAIN_CF,
        "examples/small-office/main.cf",
        HostFacts::default(),
    )
    .expect("the reference site's main.cf parses");
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let rewrite = RewriteConfig::from_config(&config).expect("rewrite settings");
    (config, rewrite)
}

#[test]
fn reference_site_addresses_resolve_to_their_classes() {
    let (config, rewrite) = site();
    assert_eq!(rewrite.myhostname.as_str(), "mail.example.com");
    assert_eq!(rewrite.myorigin.as_str(), "example.com");
    // loopback-only and ipv4: mail for user@[127.0.0.1] is ours.
    assert_eq!(
        rewrite.our_addresses,
        ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );

    let list = |name| LiteralDomainList::from_config(&config, &rewrite, name).unwrap();
    let mydestination = list("mydestination");
    let virtual_mailbox = list("virtual_mailbox_domains");
    let relay = list("relay_domains");
    // virtual_alias_domains defaults to $virtual_alias_maps, a hash table:
    // that needs mta-maps, and the literal list says so.
    let err =
        LiteralDomainList::from_config(&config, &rewrite, "virtual_alias_domains").unwrap_err();
    assert!(err.to_string().contains("is a lookup table"), "{err}");
    let no_alias_domains = LiteralDomainList::empty();
    let tables = ClassTables {
        mydestination: &mydestination,
        virtual_alias_domains: &no_alias_domains,
        virtual_mailbox_domains: &virtual_mailbox,
        relay_domains: &relay,
        transport_maps: None,
    };
    let cases = [
        (
            "alice@example.com",
            AddressClass::VirtualMailbox,
            "virtual",
            "example.com",
        ),
        (
            "Bob@Example.ORG",
            AddressClass::VirtualMailbox,
            "virtual",
            "example.org",
        ),
        (
            "root@mail.example.com",
            AddressClass::Local,
            "local",
            "mail.example.com",
        ),
        (
            "postmaster@localhost",
            AddressClass::Local,
            "local",
            "mail.example.com",
        ),
        (
            "root@[127.0.0.1]",
            AddressClass::Local,
            "local",
            "mail.example.com",
        ),
        (
            "friend@elsewhere.example.net",
            AddressClass::Default,
            "smtp",
            "elsewhere.example.net",
        ),
    ];
    for (address, class, transport, nexthop) in cases {
        let rcpt = MailAddress::parse(address, ParseOptions::LENIENT).unwrap();
        let r = resolve(&rewrite, &tables, &rcpt).unwrap();
        assert_eq!(
            (r.class, r.transport.as_str(), r.nexthop.as_str()),
            (class, transport, nexthop),
            "{address}"
        );
    }
}

#[test]
fn a_transport_without_a_name_is_an_error_at_its_line() {
    let text = format!("{MAIN_CF}relay_transport = :[relay.example]\n");
    let config = Config::parse(&text, "main.cf", HostFacts::default()).unwrap();
    let err = RewriteConfig::from_config(&config).unwrap_err().to_string();
    let line = text.lines().count();
    assert!(
        err.starts_with(&format!("main.cf, line {line}: parameter relay_transport:")),
        "{err}"
    );
}
