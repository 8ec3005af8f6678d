//! Bodies and streams between the caller's dialect and a link's: pass-through
//! with the few top-level fields the gateway sets, or translation of
//! requests, answers and SSE events between OpenAI chat, Anthropic
//! messages and the Responses API (Responses -> chat -> Anthropic).

mod passthrough;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod responses;
mod responses_stream;
mod stream;

pub(crate) use passthrough::{RequestPeek, rewrite_top_level, upstream_body};
pub(crate) use responses_stream::ResponsePeek;
pub(crate) use stream::StreamTranslator;

use serde_json::{Value, json};

/// Anthropic content blocks in OpenAI terms: the text blocks joined, and
/// each `tool_use` block as an OpenAI `tool_calls` entry. Shared by the
/// request (assistant turns) and response translations.
pub(crate) fn anthropic_blocks_as_openai(blocks: &[Value]) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::from("")),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(Value::from("")),
                    "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    (text, calls)
}
