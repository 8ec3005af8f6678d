//! Benchmarks for Tollgate.
//!
//! `ingest` measures OTLP ingest throughput of the real `tollgate` binary,
//! end to end into SQLite, side by side with a decode-and-count baseline
//! sink on the same machine, same transports and same runtime size.
//!
//! `rules` (a criterion benchmark, `benches/rules.rs`) measures the rules
//! engine's `admit` + `settle` and `observe` on rule sets of 10 to 1,000
//! rules; [`rules`] holds its workload and its report.

pub mod ingest;
pub mod load;
pub mod report;
pub mod rules;
pub mod sink;
pub mod spans;
pub mod target;
