//! Benchmarks for Tollgate.
//!
//! `ingest` measures OTLP ingest throughput of the real `tollgate` binary
//! end to end, side by side with a decode-and-count baseline sink on the
//! same machine, same transports and same runtime size: into SQLite, into
//! ClickHouse (the chdb engine behind the test server), and through Kafka
//! (tansu) into ClickHouse with separate ingest and process instances;
//! and, beside plain `tollgate`, the same with keys and TLS on.
//!
//! `gateway` measures the inline gateway's added latency and throughput
//! against the mock provider, beside a bare pass-through, LiteLLM and
//! Portkey in the same run.
//!
//! `rules` (a criterion benchmark, `benches/rules.rs`) measures the rules
//! engine's `admit` + `settle` and `observe` on rule sets of 10 to 1,000
//! rules; [`rules`] holds its workload and its report.

pub mod child;
pub mod deployment;
pub mod gateway;
pub mod infra;
pub mod ingest;
pub mod load;
pub mod report;
pub mod rules;
pub mod secure;
pub mod sink;
pub mod spans;
pub mod target;
