//! Placeholder while this module is being written.
