//! The gateway's request peeking (`model`, `stream`, output limits,
//! `stream_options`) and the same-dialect rewrite of the body for the
//! upstream. Byte 0 picks the caller's dialect; the rest is the body.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
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
    // Values are copied as written, numbers out of f64's range included:
    // read the top level only, values raw.
    let top: BTreeMap<String, &RawValue> =
        serde_json::from_slice(&out).expect("the body sent upstream is a JSON object");
    let model: String = top
        .get("model")
        .and_then(|m| serde_json::from_str(m.get()).ok())
        .expect("the body sent upstream names a model");
    assert_eq!(model, MODEL);
    if caller == Dialect::OpenAi && peeked.stream {
        // Raw values again: the caller's own keys are kept, and one named
        // like serde_json's private RawValue token would make a `Value`
        // refuse the object (found by this target).
        let options: BTreeMap<String, &RawValue> = top
            .get("stream_options")
            .and_then(|o| serde_json::from_str(o.get()).ok())
            .expect("an OpenAI stream sets stream_options");
        let usage = options.get("include_usage").map(|v| v.get());
        assert_eq!(usage, Some("true"), "{options:?}");
    }
});
