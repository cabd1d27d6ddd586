//! Postfix's SMTP access policy and content checks for the mta toolkit.
//!
//! What is here so far:
//! - [`content`]: `header_checks`, `mime_header_checks`,
//!   `nested_header_checks` and `body_checks` on a streaming MIME-aware
//!   classifier, with every action of `header_checks(5)` and Postfix's
//!   replies and log lines (compared with a live Postfix 3.7).
//!
//! Still to come: the restriction lists (`smtpd_*_restrictions`),
//! access-table actions, DNSBL checks and the relay-safety check.
//!
//! It does no I/O of its own beyond what its tables do.

pub mod content;
