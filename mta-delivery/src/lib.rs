//! Delivery agents of the mta toolkit: they take a queued message and a
//! batch of its recipients and return one result per recipient, through
//! the delivery-agent interface of [`mta_core::delivery`].
//!
//! What is here:
//! - [`maildir`] and [`mbox`]: the mailbox writers. A maildir message is
//!   written in `tmp/`, fsynced, renamed into `new/`, and `new/` fsynced
//!   before it counts as delivered; an mbox delivery is locked (`fcntl`,
//!   `flock`, `dotlock`), quoted, fsynced, and truncated back on failure.
//! - [`headers`]: the `Return-Path:`, `X-Original-To:` and `Delivered-To:`
//!   lines Postfix prepends, and the `Delivered-To:` loop check.
//! - [`virtual_agent`]: Postfix's `virtual(8)` (`virtual_mailbox_maps`,
//!   `virtual_uid_maps`, `virtual_gid_maps`, `virtual_minimum_uid`,
//!   `virtual_mailbox_limit`).
//! - [`smtp`]: Postfix's `smtp(8)` and `lmtp(8)`: next hops, MX lookups
//!   with the null-MX and loop checks, the next server on failure, a
//!   result per recipient worded as Postfix words it, connection reuse.
//! - [`discard`] and [`error`]: `discard(8)`, and `error(8)` with its
//!   `retry` form.
//!
//! - [`local`]: Postfix's `local(8)`: `alias_maps` (addresses, files,
//!   commands, `:include:`, `owner-` aliases, nested local names),
//!   `.forward`, `mailbox_command`, `home_mailbox`, the spool,
//!   `luser_relay`; forwarded addresses come back as a resubmission.
//! - [`pipe`]: Postfix's `pipe(8)`: a `master.cf` command with macros,
//!   flags and `pipe(8)`'s exit-status rules.
//!
//! The agents do not schedule, retry, log or write
//! bounces: the queue (`mta-queue`) does that with the results. They read
//! no clock of their own: the time of delivery comes from a [`Clock`]
//! the caller passes in.
//!
//! # Example
//!
//! The reference site's virtual mailboxes: `alice@example.com` has a
//! maildir under `virtual_mailbox_base`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use mta_core::address::ReversePath;
//! use mta_core::config::{Config, HostFacts};
//! use mta_core::delivery::*;
//! use mta_core::queue_id::QueueId;
//! use mta_delivery::virtual_agent::{VirtualAgent, VirtualConfig};
//! use mta_maps::registry::{OpenContext, Registry};
//!
//! let base = std::env::temp_dir().join(format!("vmail-doc-{}", std::process::id()));
//! let main_cf = format!(
//!     "myhostname = mail.example.com\n\
//!      virtual_mailbox_base = {}\n\
//!      virtual_mailbox_maps = inline:{{ alice@example.com=example.com/alice/ }}\n\
//!      virtual_uid_maps = static:5000\nvirtual_gid_maps = static:5000\n",
//!     base.display()
//! );
//! let config = Config::parse(&main_cf, "main.cf", HostFacts::default())?;
//! let registry = Registry::new(OpenContext::default());
//! let agent = VirtualAgent::new(VirtualConfig::from_config(&config, &registry)?,
//!                               Arc::new(SystemTime::now), "virtual");
//!
//! let id = QueueId::from_parts(1_700_000_000, 0, 1);
//! let sender = ReversePath::Mailbox("bob@example.org".parse().unwrap());
//! let envelope = Envelope::new(id, sender, SystemTime::now(), 20);
//! let rcpts = vec![
//!     Recipient::new("Alice@example.com".parse().unwrap(), 1),
//!     Recipient::new("nobody@example.com".parse().unwrap(), 2),
//! ];
//! let content = Arc::new(MemoryContent::new(b"Subject: hello\n\nHi Alice\n".to_vec()));
//! let request = DeliveryRequest::new(envelope, rcpts, "example.com", Duration::from_secs(60), content);
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! let report = runtime.block_on(agent.deliver(request));
//! let texts: Vec<_> = report.results.iter().map(|r| r.status.detail().unwrap().text.clone()).collect();
//! assert_eq!(texts, ["delivered to maildir", "unknown user: \"nobody@example.com\""]);
//! let new = base.join("example.com/alice/new");
//! let file = std::fs::read_dir(&new)?.next().unwrap()?.path();
//! assert!(std::fs::read_to_string(file)?.starts_with(
//!     "Return-Path: <bob@example.org>\nX-Original-To: Alice@example.com\nDelivered-To: Alice@example.com\nSubject: hello\n"));
//! # std::fs::remove_dir_all(&base)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;
use std::time::SystemTime;

mod command;
mod content;
pub mod discard;
pub mod error;
pub mod headers;
pub mod local;
mod macros;
pub mod mailbox;
pub mod maildir;
pub mod mbox;
pub mod pipe;
pub mod smtp;
pub mod virtual_agent;

/// Where agents read the time of delivery (maildir file names, mbox
/// `From_` lines): `Arc::new(SystemTime::now)` in a real system, a fixed
/// or stepped time in tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;
