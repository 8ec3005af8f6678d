//! The body of both stream targets (each includes this file).
//!
//! Input: byte 0 holds flags (bit 0: the caller speaks another dialect,
//! so events are translated; bit 1: the caller asked for usage; bit 2: that
//! dialect is the Responses API rather than the other chat dialect), byte 1
//! the chunk size the upstream's bytes arrive in (0: one chunk), then the
//! upstream's SSE bytes.

use tollgate_gateway::fuzzing::{Dialect, parse_sse, relay_stream};

use crate::common;

pub fn run(upstream: Dialect, data: &[u8]) {
    let [flags, size, bytes @ ..] = data else {
        return;
    };
    let caller = match (flags & 1 == 1, flags & 4 == 4, upstream) {
        (false, _, d) | (true, _, d @ Dialect::Responses) => d,
        (true, true, _) => Dialect::Responses,
        (true, false, Dialect::OpenAi) => Dialect::Anthropic,
        (true, false, Dialect::Anthropic) => Dialect::OpenAi,
    };
    let wants_usage = flags & 2 == 2;
    let chunks: Vec<&[u8]> = match *size {
        0 => vec![bytes],
        n => bytes.chunks(usize::from(n)).collect(),
    };
    let streamed = relay_stream(chunks, caller, upstream, wants_usage);
    // Same-dialect streams pass the upstream's events on as they are.
    if caller != upstream {
        let clean_end = streamed.complete && streamed.error.is_none();
        common::assert_sse_is_well_formed(&parse_sse(&streamed.out), clean_end);
    }
}
