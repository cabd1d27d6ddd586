//! The I/O-free core of the mta toolkit.
//!
//! TODO(crate docs): written when the modules land.

pub mod address;
pub mod address_class;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod queue_id;
pub mod reply;
pub mod units;
