//! Benchmarks for Tollgate.
//!
//! `ingest` measures OTLP ingest throughput of the real `tollgate` binary,
//! end to end into SQLite, side by side with a decode-and-count baseline
//! sink on the same machine, same transports and same runtime size.

pub mod ingest;
pub mod load;
pub mod report;
pub mod sink;
pub mod spans;
pub mod target;
