//! Checks and sample calls shared by the targets (each includes this file).

#![allow(dead_code)]

use tollgate_rules::CallRecord;

/// Rows survive the Kafka hop: what the producer writes as JSON, the
/// consumer reads back equal.
pub fn assert_json_round_trip(r: &CallRecord) {
    let bytes = serde_json::to_vec(r).expect("a row encodes as JSON");
    let back: CallRecord = serde_json::from_slice(&bytes).expect("a row decodes from its JSON");
    assert_eq!(&back, r);
}

/// Calls that meet and miss the usual rule terms.
pub fn sample_calls() -> Vec<CallRecord> {
    let now = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
    let mut a = CallRecord {
        request_model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        project: Some("search".into()),
        user: Some("zoë".into()),
        input_tokens: 9_000,
        output_tokens: 12_000,
        cost_usd: Some(2.5),
        start_unix_nanos: now,
        ..Default::default()
    };
    a.labels.insert("team".into(), "core".into());
    let b = CallRecord {
        request_model: Some("claude-sonnet-4-5".into()),
        environment: Some("batch".into()),
        stream: true,
        start_unix_nanos: now,
        ..Default::default()
    };
    vec![a, b, CallRecord::default()]
}

/// Events of an SSE body the gateway wrote: each `data` is JSON or
/// `[DONE]`, and a stream that completed without an upstream error ends
/// with the caller's terminal event (chat: `[DONE]`; Anthropic:
/// `message_stop`; Responses: `response.completed` or, cut by the output
/// cap, `response.incomplete`).
pub fn assert_sse_is_well_formed(
    events: &[(Option<String>, String)],
    complete_without_error: bool,
) {
    for (name, data) in events {
        assert!(
            data == "[DONE]" || serde_json::from_str::<serde_json::Value>(data).is_ok(),
            "event {name:?} carries data that is not JSON: {data:?}"
        );
    }
    if complete_without_error {
        let last = events.last().map(|(n, d)| (n.as_deref(), d.as_str()));
        assert!(
            matches!(
                last,
                Some((None, "[DONE]"))
                    | Some((Some("message_stop"), _))
                    | Some((Some("response.completed" | "response.incomplete"), _))
            ),
            "a complete stream ends with {last:?}"
        );
    }
}
