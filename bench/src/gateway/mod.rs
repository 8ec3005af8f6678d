//! `gateway`: the inline gateway's added latency (p50/p99) and maximum
//! throughput on loopback against the mock provider, side by side in one
//! run with the mock itself (direct), a bare axum -> reqwest pass-through,
//! LiteLLM proxy and Portkey gateway.

pub mod load;
pub mod passthrough;
pub mod peers;
pub mod report;
pub mod rules;
pub mod run;
pub mod servers;
