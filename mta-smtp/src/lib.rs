//! SMTP and LMTP for the mta toolkit.
//!
//! The protocol cores do no I/O and read no clock, in the manner of
//! `quinn-proto`: bytes and the current time go in; events, replies,
//! bytes to send and deadlines come out. That makes every dialogue
//! deterministic and testable in memory on a virtual clock, and lets a
//! program embed the engine with its own policy.
//!
//! - [`command`]: command lines into typed [`command::Command`]s, with
//!   ESMTP parameters, and the reply each syntax error gets.
//! - [`server`]: the RFC 5321 server session (and LMTP, RFC 2033): one
//!   event per command, the caller's decision as the answer; DATA and
//!   BDAT receivers that stream content.
//! - [`sasl`]: `PLAIN` and `LOGIN` as sans-IO exchanges, and the
//!   server's authentication back ends (Dovecot's auth protocol, a
//!   password check).
//! - [`client`]: the client session of Postfix's `smtp(8)` and `lmtp(8)`:
//!   greeting, EHLO with HELO fallback, STARTTLS, AUTH plumbing,
//!   pipelined MAIL/RCPT/DATA or BDAT, dot-stuffing, a result per
//!   recipient, Postfix's per-stage deadlines.
//!
//! - [`transport`] (feature `tokio`, on by default): the part that moves
//!   bytes: per-connection driving of a server session with the caller's
//!   [`transport::SessionHandler`], STARTTLS and wrapper-mode TLS with
//!   tokio-rustls, the listener with global and per-client connection
//!   limits, graceful shutdown.
//! - [`connector`] (feature `tokio`): the client side's bytes: connect
//!   with `smtp_connect_timeout`, STARTTLS with tokio-rustls (plaintext
//!   retry under `may`, as Postfix), transactions streamed from any
//!   reader, connection reuse, Postfix's failure wording.
//! - [`client_tls`] (feature `tokio`): the rustls client configuration
//!   of `smtp_tls_security_level` and its trust anchors.
//! - [`server_tls`] (feature `tokio`): the rustls server configuration
//!   of `smtpd_tls_cert_file`, `smtpd_tls_chain_files` and the protocol
//!   lists.
//! - [`dns`] (feature `tokio`): `mta-core`'s DNS `Resolver` on
//!   hickory-resolver.
//!
//! Replies and enhanced status codes are [`mta_core::reply`]'s.
//!
//! It does not decide policy: restrictions live in `mta-restrictions`,
//! and an embedding program answers the session's events with its own.

pub mod client;
#[cfg(feature = "tokio")]
pub mod client_tls;
pub mod command;
#[cfg(feature = "tokio")]
pub mod connector;
#[cfg(feature = "tokio")]
pub mod dns;
pub mod sasl;
pub mod server;
#[cfg(feature = "tokio")]
pub mod server_tls;
#[cfg(feature = "tokio")]
mod stream;
#[cfg(feature = "tokio")]
pub mod transport;
