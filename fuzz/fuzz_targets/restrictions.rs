//! Restriction configuration and access-table values on arbitrary text:
//! `Restrictions::from_config` either refuses a list (with a message) or
//! builds one that evaluates without panicking; any table value parses
//! to some access(5) action.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_core::config::{Config, HostFacts};
use mta_core::dns::StubResolver;
use mta_maps::registry::{OpenContext, Registry};
use mta_restrictions::access::AccessAction;
use mta_restrictions::restriction::{Restrictions, SmtpContext, Stage};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = AccessAction::parse(text);
    // The text as a recipient restriction list (only in-memory tables can
    // open: no file is read).
    let main_cf = format!(
        "mynetworks = 127.0.0.0/8\nsmtpd_recipient_restrictions = {}\n",
        text.replace('\n', " ")
    );
    let Ok(config) = Config::parse(&main_cf, "main.cf", HostFacts::default()) else { return };
    let registry = Registry::new(OpenContext::default());
    if let Ok(r) = Restrictions::from_config(&config, &registry) {
        let mut ctx = SmtpContext::new("192.0.2.1".parse().unwrap());
        ctx.helo = Some("client.example".into());
        ctx.sender = Some("a@example.org".into());
        ctx.recipient = Some("b@example.com".into());
        let dns = StubResolver::new();
        for stage in [Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data] {
            let _ = block_on(r.evaluate(stage, &ctx, &dns));
        }
    }
});
