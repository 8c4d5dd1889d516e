//! Baton's comparison benchmark (work in progress).
fn main() {}
