//! lb-examples: runnable examples of the lb crates, one per file under `examples/`
//! (`cargo run -p lb-examples --example NAME`).

#![forbid(unsafe_code)]

/// The README's code blocks, compiled and run as doc tests so the README stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
