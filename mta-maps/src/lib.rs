//! Lookup tables for the mta toolkit, as Postfix's `*_maps` parameters use
//! them.
//!
//! TODO(crate docs): written as the table types land.

pub mod aliases;
pub mod cidr;
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

pub use map::{KeyKind, Lookup, LookupResult, Map, MapError};

/// The lookup table types this crate implements, as `postconf -m` lists
/// them.
pub const TABLE_TYPES: &[&str] = &[];
