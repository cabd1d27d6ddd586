//! Lookup tables for the mta toolkit, as Postfix's `*_maps` parameters use
//! them.
//!
//! **Status: not yet built.** This crate will hold one `Map` trait with
//! three outcomes (found, not found, error: temporary or configuration),
//! a registry that opens `type:name` references, and one module per table
//! type: `hash` (compiled by `mtad postmap` to an `fst` file and opened by
//! mmap), `texthash`, `inline`, `static`, `regexp`, `pcre`, `cidr`, and
//! later the network tables `pgsql`, `mysql` and `ldap`. It will also hold
//! the alias-file and `.forward` syntax and the address-key search order
//! (`user+ext@domain`, `user@domain`, `user+ext`, `user`, `@domain`) that
//! access, virtual, canonical and transport tables share.
//!
//! It will not speak SMTP, decide policy, or touch the queue: callers ask
//! a question and get one of the three answers.

/// The lookup table types this crate implements, as `postconf -m` lists
/// them. Empty until the table types land.
pub const TABLE_TYPES: &[&str] = &[];
