//! Session settings from Postfix-format configuration: the reference
//! site's `main.cf` and `master.cf` overrides, and Postfix's defaults for
//! both SMTP and LMTP.

use std::path::Path;
use std::time::Duration;

use mta_core::config::{Config, HostFacts};
use mta_smtp::client::{ClientConfig, TlsMode};
use mta_smtp::server::{BareNewline, ServerConfig};

fn reference_site() -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/small-office");
    let text = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    Config::parse(&text, "examples/small-office/main.cf", HostFacts::default()).unwrap()
}

#[test]
fn reference_site_smtpd() {
    let config = reference_site();
    let smtpd = ServerConfig::from_config(&config, false).unwrap();
    // The site's anti-spam settings (seed 002, Listing 2).
    assert!(smtpd.helo_required);
    assert!(smtpd.disable_vrfy);
    assert_eq!(smtpd.envelope, mta_core::address::ParseOptions::STRICT);
    assert_eq!(smtpd.bare_newline, BareNewline::Normalize);
    assert!(smtpd.forbid_unauth_pipelining);
    assert_eq!(smtpd.hard_error_limit, 20);
    assert_eq!(smtpd.timeout, Duration::from_secs(300));
    assert!(
        smtpd.banner.starts_with(&smtpd.hostname),
        "{}",
        smtpd.banner
    );
}

#[test]
fn service_overrides_apply() {
    let config = reference_site().with_overrides(&[
        ("smtpd_tls_security_level".into(), "encrypt".into()),
        ("smtpd_tls_auth_only".into(), "yes".into()),
        ("smtpd_discard_ehlo_keywords".into(), "CHUNKING, dsn".into()),
        ("smtpd_forbid_bare_newline".into(), "Reject".into()),
    ]);
    let smtpd = ServerConfig::from_config(&config, false).unwrap();
    assert!(smtpd.starttls);
    assert!(smtpd.auth_requires_tls);
    assert_eq!(smtpd.discard_ehlo_keywords, ["chunking", "dsn"]);
    assert_eq!(smtpd.bare_newline, BareNewline::Reject);
}

#[test]
fn bad_values_name_the_parameter() {
    let config = Config::parse(
        "smtpd_forbid_bare_newline = maybe\n",
        "/etc/mta/main.cf",
        HostFacts::default(),
    )
    .unwrap();
    let err = ServerConfig::from_config(&config, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("smtpd_forbid_bare_newline"), "{err}");
    assert!(err.contains("/etc/mta/main.cf"), "{err}");
    let config = Config::parse(
        "smtp_tls_security_level = sometimes\n",
        "main.cf",
        HostFacts::default(),
    )
    .unwrap();
    let err = ClientConfig::from_config(&config, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("smtp_tls_security_level"), "{err}");
}

#[test]
fn postfix_defaults_for_smtp_and_lmtp_clients() {
    let config = Config::parse(
        "myhostname = mx.example.com\n",
        "main.cf",
        HostFacts::default(),
    )
    .unwrap();
    for lmtp in [false, true] {
        let c = ClientConfig::from_config(&config, lmtp).unwrap();
        assert_eq!(c.lmtp, lmtp);
        assert_eq!(c.helo_name, "mx.example.com");
        assert_eq!(c.tls, TlsMode::Never);
        assert!(c.skip_5xx_greeting);
        assert_eq!(c.timeouts.mail, Duration::from_secs(300));
        assert_eq!(c.timeouts.data_init, Duration::from_secs(120));
        assert_eq!(c.timeouts.data_xfer, Duration::from_secs(180));
        assert_eq!(c.timeouts.data_done, Duration::from_secs(600));
        assert_eq!(c.timeouts.rset, Duration::from_secs(20));
    }
    let s = ServerConfig::from_config(&config, true).unwrap();
    assert!(s.lmtp);
    assert_eq!(s.message_size_limit, 10_240_000);
    assert_eq!(s.recipient_limit, 1000);
}
