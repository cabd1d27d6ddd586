//! Lookup tables for the mta toolkit, as Postfix's `*_maps` parameters use
//! them.
//!
//! Every table answers through one trait, [`Map`], with Postfix's three
//! outcomes: found (a value), not found, or an error that is either
//! *temporary* (the caller answers 4xx or defers and tries again) or
//! *configuration* (fatal, naming the file and line). A
//! [`registry::Registry`] opens tables by `type:name`, keeps one instance
//! of each, and reopens those whose files changed, so a table rebuilt by
//! `mtad postmap` is picked up without a restart. A [`list::MapList`]
//! searches the tables of one `*_maps` parameter in order, and
//! [`search`] gives the key sequences (`user+ext@domain`, `user@domain`,
//! ..., `@domain`) that virtual, canonical, access and transport lookups
//! try, in one place for every caller.
//!
//! Table types: `hash` and its synonym `btree` (compiled by `mtad postmap`
//! into an `fst` file opened by mmap, see [`hash`]), `texthash`, `inline`,
//! `static`, `regexp`, `pcre` and `cidr`; [`aliases`] parses `aliases(5)`
//! and `.forward` files.
//!
//! # Network tables and the async runtime
//!
//! A lookup returns a [`Lookup`], a future that is either ready at once or
//! pending. Tables in memory or mapped from a file (every type here) are
//! always ready: the lookup costs no allocation and no task switch, and
//! synchronous callers such as `postmap` take the answer with
//! [`Lookup::now`]. Network tables (`pgsql:`, `mysql:`, `ldap:`, a later
//! issue) return a pending future that does its I/O on the caller's
//! runtime, with its own connection pool, so an SMTP session that awaits a
//! database lookup never blocks a runtime thread. They register their type
//! with [`registry::Registry::register`]. A database that is down gives a
//! [`MapError::Temporary`], never "not found".
//!
//! What this crate does not do: decide what a value means (an access
//! action, an alias target, a transport). Its callers do.
//!
//! # Example
//! ```
//! use mta_maps::registry::{OpenContext, Registry};
//! let registry = Registry::new(OpenContext::default());
//! let uids = registry.open_list("inline:{ alice=5001 }, static:5000").unwrap();
//! assert_eq!(uids.lookup_now("Alice").unwrap().as_deref(), Some("5001"));
//! assert_eq!(uids.lookup_now("bob").unwrap().as_deref(), Some("5000"));
//! ```

pub mod aliases;
pub mod cidr;
pub mod class;
pub mod domains;
pub mod hash;
pub mod inline;
pub mod key;
pub mod list;
mod map;
pub mod pcre;
pub mod regexp;
pub mod registry;
pub mod search;
pub mod source;
pub mod static_map;
pub mod texthash;
pub mod unix;

pub use map::{KeyKind, Lookup, LookupResult, Map, MapError};
