//! lb-benches: criterion benchmarks of the lb crates (`cargo bench -p lb-benches --bench NAME`)
//! and what they share: the workloads, so tests can check a workload is what a bench claims,
//! and a counting allocator, so tests can prove a hot path allocates nothing.

pub mod alloc_counter;
pub mod workloads;
