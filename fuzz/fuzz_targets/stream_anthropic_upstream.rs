//! SSE streams from an Anthropic upstream, relayed as they are or translated
//! for a caller of the other dialect (layout of the input: `stream.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_gateway::fuzzing::Dialect;

mod common;
mod stream;

fuzz_target!(|data: &[u8]| stream::run(Dialect::Anthropic, data));
