//! Upstream JSON answers: read for the row (id, model, finish reason,
//! usage), then translated to the caller's dialect. Byte 0 picks the case:
//! 0 an OpenAI answer to an Anthropic caller, 1 an Anthropic answer to an
//! OpenAI caller, 2 an OpenAI embeddings answer; the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_gateway::fuzzing::{Dialect, Operation, translate_response};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let (op, upstream) = match first % 3 {
        0 => (Operation::Messages, Dialect::OpenAi),
        1 => (Operation::Chat, Dialect::Anthropic),
        _ => (Operation::Embeddings, Dialect::OpenAi),
    };
    if let Some(out) = translate_response(body, op, upstream) {
        serde_json::to_vec(&out).expect("a translated answer encodes");
    }
});
