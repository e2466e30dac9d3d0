//! lb-examples: runnable examples of the lb crates, one per file under `examples/`
//! (`cargo run -p lb-examples --example NAME`).

#![forbid(unsafe_code)]
