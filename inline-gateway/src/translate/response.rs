//! Non-streamed answers and finish reasons across dialects.

use serde_json::{Map, Value, json};

use crate::usage::Usage;

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
pub(crate) fn finish_reason_to_openai(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI `finish_reason` -> Anthropic `stop_reason`.
pub(crate) fn finish_reason_to_anthropic(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// A row's usage as OpenAI reports it.
pub(crate) fn openai_usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning}
    })
}

/// A row's usage as Anthropic reports it (input without cache tokens).
pub(crate) fn anthropic_usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input.saturating_sub(u.cache_read).saturating_sub(u.cache_write),
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": u.output
    })
}

/// An Anthropic message as an OpenAI chat completion; `usage` is the one
/// read from it (in row terms).
pub(crate) fn anthropic_to_openai(resp: &Value, usage: &Usage, created: u64) -> Value {
    let (text, calls) = super::anthropic_blocks_as_openai(
        resp.get("content")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice),
    );
    let mut message = Map::new();
    message.insert("role".into(), Value::from("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::from(text)
        },
    );
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::from(calls));
    }
    let finish = resp
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason_to_openai);
    json!({
        "id": resp.get("id").cloned().unwrap_or(Value::from("")),
        "object": "chat.completion",
        "created": created,
        "model": resp.get("model").cloned().unwrap_or(Value::from("")),
        "choices": [{
            "index": 0,
            "message": Value::Object(message),
            "logprobs": null,
            "finish_reason": finish
        }],
        "usage": openai_usage_json(usage)
    })
}

/// An OpenAI chat completion as an Anthropic message.
pub(crate) fn openai_to_anthropic(resp: &Value, usage: &Usage) -> Value {
    let choice = resp.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(t) = message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::from("")),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::from("")),
            "input": serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or_else(|| json!({})),
        }));
    }
    let stop = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map_or("end_turn", finish_reason_to_anthropic);
    json!({
        "id": resp.get("id").cloned().unwrap_or(Value::from("")),
        "type": "message",
        "role": "assistant",
        "model": resp.get("model").cloned().unwrap_or(Value::from("")),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": anthropic_usage_json(usage)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_message_becomes_a_chat_completion() {
        let resp = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5}
        });
        let usage = Usage {
            input: 10,
            output: 5,
            ..Usage::default()
        };
        let out = anthropic_to_openai(&resp, &usage, 7);
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["model"], "claude-3-5-haiku-20241022");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["content"], "Checking.");
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(out["usage"]["prompt_tokens"], 10);
        assert_eq!(out["usage"]["total_tokens"], 15);
    }

    #[test]
    fn chat_completion_becomes_an_anthropic_message() {
        let resp = json!({
            "id": "chatcmpl-1", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant",
                "content": "w0 w1", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]
        });
        let usage = Usage {
            input: 140,
            output: 2,
            cache_read: 100,
            ..Usage::default()
        };
        let out = openai_to_anthropic(&resp, &usage);
        assert_eq!(
            out["content"],
            json!([{"type": "text", "text": "w0 w1"},
                   {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}])
        );
        assert_eq!(out["stop_reason"], "max_tokens");
        assert_eq!(out["usage"]["input_tokens"], 40);
        assert_eq!(out["usage"]["cache_read_input_tokens"], 100);
        assert_eq!(out["usage"]["output_tokens"], 2);
    }
}
