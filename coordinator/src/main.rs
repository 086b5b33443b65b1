//! The rewind binary.
fn main() {}
