//! Postfix's SMTP access policy and content checks for the mta toolkit.
//!
//! - [`restriction`] reads `smtpd_*_restrictions` and the restriction
//!   classes from a `main.cf` and decides each SMTP command the way
//!   Postfix's `smtpd_check` does: the first permit or reject of a list
//!   decides, `DUNNO` goes on, `smtpd_delay_reject`, `warn_if_reject`,
//!   `soft_bounce`, DNSBL/RHSBL and `reject_unknown_*` through the core
//!   DNS `Resolver` (a temporary failure never becomes a permanent
//!   reject), with Postfix's reply codes, texts and log lines.
//! - [`access`] reads access(5) table values (`OK`, `REJECT`, `DEFER_*`,
//!   `4NN`/`5NN`, `HOLD`, `DISCARD`, `FILTER`, `REDIRECT`, `PREPEND`,
//!   `WARN`, `BCC`, restriction classes and names).
//! - [`content`]: `header_checks`, `mime_header_checks`,
//!   `nested_header_checks` and `body_checks` on a streaming MIME-aware
//!   classifier, with every action of `header_checks(5)` and Postfix's
//!   replies and log lines (compared with a live Postfix 3.7).
//!
//! What this crate does not do: talk SMTP (the `mta-smtp` session asks,
//! this crate answers), look up DNS itself (a [`mta_core::dns::Resolver`]
//! is passed in), or read files other than through `mta-maps` tables.
//! - [`policy`]: `check_policy_service`, the policy delegation protocol,
//!   through a [`policy::PolicyClient`] the caller installs.
//! - [`relay`]: the relay-safety report of `mtad check`.
//!
//! # Example
//! ```
//! use mta_core::config::{Config, HostFacts};
//! use mta_core::dns::StubResolver;
//! use mta_maps::registry::{OpenContext, Registry};
//! use mta_restrictions::restriction::{Restrictions, SmtpContext, Stage};
//!
//! let config = Config::parse(
//!     "myhostname = mail.example.com\nmynetworks = 127.0.0.0/8\n\
//!      compatibility_level = 3.6\n\
//!      smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n",
//!     "main.cf",
//!     HostFacts::default(),
//! ).unwrap();
//! let registry = Registry::new(OpenContext::default());
//! let restrictions = Restrictions::from_config(&config, &registry).unwrap();
//! let mut ctx = SmtpContext::new("192.0.2.1".parse().unwrap());
//! ctx.helo = Some("client.example.net".into());
//! ctx.sender = Some("a@example.net".into());
//! ctx.recipient = Some("x@elsewhere.example".into());
//! ctx.esmtp = true;
//! let decision = block_on(restrictions.evaluate(Stage::Rcpt, &ctx, &StubResolver::new()));
//! assert_eq!(
//!     decision.reply().unwrap().to_string(),
//!     "454 4.7.1 <x@elsewhere.example>: Relay access denied"
//! );
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```

pub mod access;
pub mod content;
pub mod policy;
pub mod relay;
pub mod restriction;
