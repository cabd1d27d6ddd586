//! The durable mail queue of the mta toolkit: cleanup, scheduler, bounces.
//!
//! **Status: not yet built.** This crate will hold the queue layout under
//! `queue_directory` (`maildrop`, `incoming`, `active`, `deferred`, `hold`,
//! `corrupt`, defer and bounce logs), a versioned queue-file format of
//! typed records that is marked complete only at its end, group-committed
//! fsyncs, crash recovery, cleanup (the one way into the queue, with header
//! fixes, `Received:`, rewriting and content checks), the scheduler (active
//! queue limits, per-destination concurrency, backoff, lifetimes) that
//! drives delivery agents through the core delivery-agent trait, and RFC
//! 3464 delivery status notifications. The administration operations behind
//! `postqueue`, `postsuper` and `postcat` will live here too.
//!
//! It will not deliver mail itself: agents in `mta-delivery` do.
