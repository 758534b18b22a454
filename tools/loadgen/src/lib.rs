//! The load generator: drives a running system over gRPC (`seed`, `run`, `sweep`,
//! `check`), and the in-process micro-benchmarks (`bench`, run by `scripts/bench`).

pub mod bench;
pub mod check;
pub mod load;
pub mod procs;
pub mod seed;
pub mod target;
pub mod timelines;
