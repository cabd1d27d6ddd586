//! Placeholder while this module is being written.

pub mod master_cf;
