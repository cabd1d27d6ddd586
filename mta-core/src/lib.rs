//! The I/O-free core of the mta toolkit: configuration, addresses, and the
//! types and interfaces that the other crates share.
//!
//! What is here:
//! - [`config`]: `main.cf` and `master.cf` read as Postfix reads them, the
//!   registry of every Postfix 3.7 parameter with its default and kind,
//!   Postfix's full expansion syntax, and typed access whose errors name
//!   the file and line.
//! - [`address`] and [`address_class`]: RFC 5321 paths and mailboxes, and
//!   Postfix's trivial-rewrite (canonical form, address classes,
//!   `transport:nexthop`).
//! - [`reply`]: SMTP reply codes and RFC 3463 enhanced status codes;
//!   [`queue_id`]: unique, time-ordered queue IDs; [`units`]: Postfix's
//!   time, size and boolean values; [`date`]: dates as headers, logs and
//!   `postcat` show them.
//! - [`dns`]: the `Resolver` trait the DNS users share, with a
//!   deterministic stub behind the `test-util` feature; [`delivery`]: the
//!   delivery-agent trait through which the queue drives the agents.
//!
//! What is not here: any I/O. Nothing in this crate reads the clock, the
//! environment or a file; time, host facts and file contents are passed
//! in. That is what makes every part of it testable on its own and usable
//! by programs other than `mtad`.
//!
//! # Example
//! ```
//! use mta_core::config::{Config, HostFacts};
//!
//! let main_cf = "myhostname = mail.example.com\nmyorigin = $mydomain\n";
//! let config = Config::parse(main_cf, "main.cf", HostFacts::default()).unwrap();
//! assert_eq!(config.expanded("myorigin").unwrap(), "example.com");
//! assert_eq!(config.integer("message_size_limit").unwrap(), 10_240_000);
//! ```

pub mod address;
pub mod address_class;
pub mod config;
pub mod date;
pub mod delivery;
pub mod dns;
pub mod header;
pub mod queue_id;
pub mod reply;
pub mod units;

#[cfg(test)]
mod test_support;
