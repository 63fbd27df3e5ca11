//! The `oxkeeper` binary: `oxkeeper` (= `oxkeeper server`) runs a member.
fn main() {}
