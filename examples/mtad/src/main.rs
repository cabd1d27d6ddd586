//! mtad: placeholder.
fn main() {}
