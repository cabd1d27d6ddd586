//! Property tests: random restriction lists never panic, and a list that
//! starts with `permit` permits.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use mta_core::config::{Config, HostFacts};
use mta_core::dns::StubResolver;
use mta_maps::registry::{OpenContext, Registry};
use mta_restrictions::restriction::{ClientName, Restrictions, SmtpContext, Stage};
use proptest::prelude::*;

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

const WORDS: &[&str] = &[
    "permit_mynetworks",
    "permit_sasl_authenticated",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "permit_auth_destination",
    "reject_unauth_pipelining",
    "reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname",
    "reject_invalid_helo_hostname",
    "reject_non_fqdn_helo_hostname",
    "reject_unknown_helo_hostname",
    "reject_non_fqdn_sender",
    "reject_non_fqdn_recipient",
    "reject_unknown_sender_domain",
    "reject_unknown_recipient_domain",
    "reject_unlisted_sender",
    "reject_unlisted_recipient",
    "reject_multi_recipient_bounce",
    "reject_rbl_client zen.example",
    "reject_rhsbl_sender dbl.example",
    "permit_dnswl_client wl.example",
    "check_sender_access inline:{a@b.example=REJECT,c@d.example=DEFER_IF_PERMIT}",
    "check_client_access inline:{192.0.2=HOLD}",
    "warn_if_reject",
    "defer_if_permit",
    "defer_if_reject",
    "reject",
    "defer",
    "permit",
];

fn restrictions(list: &str) -> Restrictions {
    let text = format!(
        "myhostname = mail.example.com\nmydomain = example.com\n\
         compatibility_level = 3.6\nsmtpd_relay_restrictions =\n\
         smtpd_reject_unlisted_recipient = no\n\
         smtpd_recipient_restrictions = {list}\n"
    );
    let config = Config::parse(&text, "main.cf", HostFacts::default()).unwrap();
    Restrictions::from_config(&config, &Registry::new(OpenContext::default())).unwrap()
}

fn context(helo: &str, sender: &str, rcpt: &str, last: u8) -> SmtpContext {
    let mut ctx = SmtpContext::new(format!("192.0.2.{last}").parse().unwrap());
    ctx.client_name = if last.is_multiple_of(2) {
        ClientName::Name("host.example.net".into())
    } else {
        ClientName::Unknown
    };
    ctx.helo = Some(helo.to_string());
    ctx.sender = Some(sender.to_string());
    ctx.recipient = Some(rcpt.to_string());
    ctx.improper_pipelining = last.is_multiple_of(3);
    ctx
}

proptest! {
    #[test]
    fn random_lists_never_panic(
        picks in proptest::collection::vec(0..WORDS.len(), 0..8),
        helo in "[a-z0-9_.\\[\\]-]{0,20}",
        sender in "([a-z]{1,5}(@[a-z.]{0,12})?)?",
        rcpt in "[a-z]{1,5}(@[a-z.]{1,12})?",
        last in 1u8..255,
    ) {
        let list: Vec<&str> = picks.iter().map(|&i| WORDS[i]).collect();
        let r = restrictions(&list.join(", "));
        let dns = StubResolver::new();
        let ctx = context(&helo, &sender, &rcpt, last);
        for stage in [Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data, Stage::EndOfData, Stage::Etrn] {
            let _ = block_on(r.evaluate(stage, &ctx, &dns));
        }
    }

    #[test]
    fn permit_first_permits(
        picks in proptest::collection::vec(0..WORDS.len(), 0..8),
        rcpt in "[a-z]{1,5}@[a-z]{1,8}\\.example",
        last in 1u8..255,
    ) {
        let mut list = vec!["permit"];
        list.extend(picks.iter().map(|&i| WORDS[i]));
        let r = restrictions(&list.join(", "));
        let dns = StubResolver::new();
        let ctx = context("host.example.net", "a@example.net", &rcpt, last);
        let d = block_on(r.evaluate(Stage::Rcpt, &ctx, &dns));
        prop_assert!(!d.is_reject(), "{:?}", d);
    }
}

/// The evaluation future can move to another thread (tokio's spawn).
#[test]
fn evaluation_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let r = restrictions("permit");
    let dns = StubResolver::new();
    let ctx = context("h.example", "a@b.example", "c@d.example", 2);
    let f = r.evaluate(Stage::Rcpt, &ctx, &dns);
    is_send(&f);
}
