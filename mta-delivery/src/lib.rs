//! Delivery agents of the mta toolkit.
//!
//! **Status: not yet built.** This crate will implement the core
//! delivery-agent trait for Postfix's agents: `maildir` and `mbox` mailbox
//! writers, `local` (aliases, `.forward`, `mailbox_command`), `virtual`,
//! `pipe`, `lmtp`, `smtp`, `error` and `discard`. Each takes a queued
//! message and a batch of recipients and returns one result per recipient:
//! delivered, deferred, bounced, or "resubmit to these addresses" for
//! aliases and `.forward`.
//!
//! It will not schedule or retry: the queue in `mta-queue` does.
