//! The gateway's request peeking (`model`, `stream`, output limits,
//! `stream_options`) and the same-dialect rewrite of the body for the
//! upstream. Byte 0 picks the caller's dialect; the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_gateway::fuzzing::{Dialect, peek_and_rewrite};

const MODEL: &str = "gpt-4o-mini-\u{e9}\"";

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let caller = if first & 1 == 0 {
        Dialect::OpenAi
    } else {
        Dialect::Anthropic
    };
    let Some(peeked) = peek_and_rewrite(body, caller, MODEL) else {
        return;
    };
    let Ok(out) = peeked.upstream_body else {
        return;
    };
    let v: serde_json::Value =
        serde_json::from_slice(&out).expect("the body sent upstream is JSON");
    assert_eq!(v["model"], MODEL, "{v}");
    if caller == Dialect::OpenAi && peeked.stream {
        assert_eq!(v["stream_options"]["include_usage"], true, "{v}");
    }
});
