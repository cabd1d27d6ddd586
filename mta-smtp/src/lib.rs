//! SMTP and LMTP for the mta toolkit.
//!
//! **Status: not yet built.** This crate will hold sans-IO protocol cores
//! in the manner of `quinn-proto`: command and reply parsers that borrow
//! from the input, a server session state machine that emits one event per
//! command and takes the caller's decision, a client session state machine,
//! DATA and BDAT receivers, and SASL mechanisms with their authentication
//! back ends. A `tokio` module (default feature) will only move bytes:
//! listeners, STARTTLS through rustls, deadlines, the client connector with
//! MX lookup, and the hickory-resolver implementation of the core
//! `Resolver` trait.
//!
//! It will not decide policy: restrictions live in `mta-restrictions`, and
//! an embedding program can answer the session's events with its own.
