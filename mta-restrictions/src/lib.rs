//! Postfix's SMTP access policy and content checks for the mta toolkit.
//!
//! **Status: not yet built.** This crate will evaluate the restriction
//! lists `smtpd_client_restrictions`, `smtpd_helo_restrictions`,
//! `smtpd_sender_restrictions`, `smtpd_relay_restrictions`,
//! `smtpd_recipient_restrictions`, `smtpd_data_restrictions` and
//! `smtpd_end_of_data_restrictions` with Postfix's model (the first permit
//! or reject decides, `DUNNO` goes on), restriction classes, access-table
//! actions, DNSBL and RHSBL checks through the core `Resolver` trait, and
//! the relay-safety check. It will also hold `header_checks`,
//! `mime_header_checks`, `nested_header_checks` and `body_checks` on a
//! streaming MIME-aware line classifier.
//!
//! It will not do I/O of its own beyond what its tables and resolver do.
