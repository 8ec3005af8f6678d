//! `tollgate demo`: a small fleet of agents sending realistic GenAI spans
//! over OTLP (several orgs, projects, users, sessions and models; some
//! errors, some streamed, cache tokens), through the Rust SDK shim.

mod fleet;
mod run;

pub use run::{DemoError, run_until};
