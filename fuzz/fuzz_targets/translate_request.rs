//! OpenAI <-> Anthropic request translation (and the input-token bound
//! admission uses). Byte 0 picks the caller's dialect; the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_gateway::fuzzing::{Dialect, translate_request};

const MODEL: &str = "claude-sonnet-4-5";

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let caller = if first & 1 == 0 {
        Dialect::OpenAi
    } else {
        Dialect::Anthropic
    };
    let Some((out, _estimate)) = translate_request(body, caller, MODEL) else {
        return;
    };
    assert_eq!(out["model"], MODEL, "{out}");
    serde_json::to_vec(&out).expect("a translated request encodes");
});
