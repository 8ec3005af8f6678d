//! The Tollgate collector: OTLP receivers -> normalise + price -> bounded
//! queue -> sink, plus the query API and the `tollgate` CLI.

pub mod admin;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod internal_events;
pub mod kafka;
pub mod killswitch;
pub mod ledger;
pub mod listen;
pub mod memory;
pub mod normalize;
pub mod pipeline;
pub mod query;
pub mod receivers;
pub mod server;
pub mod shared_state;
pub mod sinks;
pub mod tls;
