//! Placeholder: the load bench is being written.
fn main() {}
