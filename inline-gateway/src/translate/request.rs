//! Request bodies across dialects: an OpenAI chat request for an Anthropic
//! link, an Anthropic messages request for an OpenAI link. Messages, system
//! prompts, images, tools, tool calls and results, tool choice, stop
//! sequences, sampling and the output limit carry over; parameters the
//! other side has no equivalent for are dropped.

use serde_json::{Map, Value, json};

fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                }
            }
            out
        }
        _ => String::new(),
    }
}

/// `data:image/png;base64,AAAA` -> (media type, data).
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

/// OpenAI content (string or parts) as Anthropic content blocks.
fn openai_content_to_blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(|t| json!({"type": "text", "text": t})),
                Some("image_url") => {
                    let url = p
                        .pointer("/image_url/url")
                        .or_else(|| p.get("image_url"))
                        .and_then(Value::as_str)?;
                    Some(match data_url(url) {
                        Some((media, data)) => json!({"type": "image", "source":
                            {"type": "base64", "media_type": media, "data": data}}),
                        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
                    })
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Appends to the last message when it has the same role (Anthropic wants
/// turns to alternate; OpenAI sends one message per tool result).
fn push_turn(messages: &mut Vec<Value>, role: &str, mut blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last.get("role").and_then(Value::as_str) == Some(role)
        && let Some(content) = last.get_mut("content").and_then(Value::as_array_mut)
    {
        content.append(&mut blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// An OpenAI chat request as an Anthropic messages request for `model`.
pub(crate) fn openai_to_anthropic(req: &Value, model: &str, default_max_tokens: u64) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), Value::from(model));
    let max = req
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| req.get("max_tokens").and_then(Value::as_u64))
        .unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), Value::from(max));

    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in array(req.get("messages")) {
        match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                let t = text_of(m.get("content"));
                if !t.is_empty() {
                    system.push(t);
                }
            }
            Some("user") => push_turn(
                &mut messages,
                "user",
                openai_content_to_blocks(m.get("content")),
            ),
            Some("assistant") => {
                let mut blocks = openai_content_to_blocks(m.get("content"));
                for call in array(m.get("tool_calls")) {
                    let args = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input = serde_json::from_str::<Value>(args)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(Value::from("")),
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::from("")),
                        "input": input,
                    }));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Some("tool") => {
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::from("")),
                    "content": text_of(m.get("content")),
                });
                push_turn(&mut messages, "user", vec![block]);
            }
            _ => {}
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::from(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::from(messages));

    if let Some(t) = req.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0..2, Anthropic's 0..1.
        out.insert("temperature".into(), Value::from(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.get("top_p").filter(|v| v.is_number()) {
        out.insert("top_p".into(), p.clone());
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            out.insert("stop_sequences".into(), Value::from(list.clone()));
        }
        _ => {}
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
    }
    let tools: Vec<Value> = array(req.get("tools"))
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str).unwrap_or("function") == "function")
        .filter_map(|t| {
            let f = t.get("function")?;
            let mut tool = Map::new();
            tool.insert("name".into(), f.get("name")?.clone());
            if let Some(d) = f.get("description").filter(|d| d.is_string()) {
                tool.insert("description".into(), d.clone());
            }
            tool.insert(
                "input_schema".into(),
                f.get("parameters")
                    .filter(|p| p.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            );
            Some(Value::Object(tool))
        })
        .collect();
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::from(tools));
    }
    let mut choice = match req.get("tool_choice") {
        Some(Value::String(s)) => match s.as_str() {
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            "auto" => Some(json!({"type": "auto"})),
            _ => None,
        },
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|name| json!({"type": "tool", "name": name})),
        _ => None,
    };
    if has_tools && req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none")
            && let Some(o) = c.as_object_mut()
        {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(c) = choice.filter(|_| has_tools) {
        out.insert("tool_choice".into(), c);
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Value::Object(out)
}

/// Anthropic content blocks of a user turn as OpenAI messages: tool results
/// become `tool` messages (first, as OpenAI wants them right after the
/// assistant's calls), the rest one user message.
fn anthropic_user_turn(content: Option<&Value>, out: &mut Vec<Value>) {
    let blocks = match content {
        Some(Value::String(s)) => {
            out.push(json!({"role": "user", "content": s}));
            return;
        }
        Some(Value::Array(b)) => b,
        _ => return,
    };
    let mut parts = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("tool_result") => out.push(json!({
                "role": "tool",
                "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::from("")),
                "content": text_of(b.get("content")),
            })),
            Some("text") => {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    parts.push(json!({"type": "text", "text": t}));
                }
            }
            Some("image") => {
                let src = b.get("source");
                let url = match src.and_then(|s| s.get("type")).and_then(Value::as_str) {
                    Some("base64") => Some(format!(
                        "data:{};base64,{}",
                        src.and_then(|s| s.get("media_type"))
                            .and_then(Value::as_str)
                            .unwrap_or("image/png"),
                        src.and_then(|s| s.get("data"))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    )),
                    Some("url") => src
                        .and_then(|s| s.get("url"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    _ => None,
                };
                if let Some(url) = url {
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
            }
            _ => {}
        }
    }
    match parts.as_slice() {
        [] => {}
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
            out.push(json!({"role": "user", "content": only.get("text").cloned().unwrap_or(Value::from(""))}));
        }
        _ => out.push(json!({"role": "user", "content": parts})),
    }
}

fn anthropic_assistant_turn(content: Option<&Value>, out: &mut Vec<Value>) {
    let blocks = match content {
        Some(Value::String(s)) => {
            out.push(json!({"role": "assistant", "content": s}));
            return;
        }
        Some(Value::Array(b)) => b,
        _ => return,
    };
    let (text, calls) = super::anthropic_blocks_as_openai(blocks);
    let mut m = Map::new();
    m.insert("role".into(), Value::from("assistant"));
    m.insert(
        "content".into(),
        if text.is_empty() {
            Value::Null
        } else {
            Value::from(text)
        },
    );
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::from(calls));
    }
    out.push(Value::Object(m));
}

/// An Anthropic messages request as an OpenAI chat request for `model`,
/// its output capped in `cap_field` (the link's own name for it) at the
/// request's `max_tokens`, or `default_max_tokens` when it sets none.
/// Streams always ask for the usage chunk.
pub(crate) fn anthropic_to_openai(
    req: &Value,
    model: &str,
    cap_field: &str,
    default_max_tokens: u64,
) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), Value::from(model));
    let mut messages = Vec::new();
    let system = text_of(req.get("system"));
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in array(req.get("messages")) {
        match m.get("role").and_then(Value::as_str) {
            Some("user") => anthropic_user_turn(m.get("content"), &mut messages),
            Some("assistant") => anthropic_assistant_turn(m.get("content"), &mut messages),
            _ => {}
        }
    }
    out.insert("messages".into(), Value::from(messages));
    let max = req
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(default_max_tokens);
    out.insert(cap_field.into(), Value::from(max));
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key).filter(|v| v.is_number()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stops) = req.get("stop_sequences").and_then(Value::as_array)
        && !stops.is_empty()
    {
        out.insert("stop".into(), Value::from(stops.clone()));
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let tools: Vec<Value> = array(req.get("tools"))
        .iter()
        .filter(|t| {
            t.get("type")
                .and_then(Value::as_str)
                .is_none_or(|k| k == "custom")
        })
        .filter_map(|t| {
            let mut f = Map::new();
            f.insert("name".into(), t.get("name")?.clone());
            if let Some(d) = t.get("description").filter(|d| d.is_string()) {
                f.insert("description".into(), d.clone());
            }
            f.insert(
                "parameters".into(),
                t.get("input_schema")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            );
            Some(json!({"type": "function", "function": Value::Object(f)}))
        })
        .collect();
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::from(tools));
        if let Some(c) = req.get("tool_choice") {
            let mapped = match c.get("type").and_then(Value::as_str) {
                Some("auto") => Some(Value::from("auto")),
                Some("any") => Some(Value::from("required")),
                Some("none") => Some(Value::from("none")),
                Some("tool") => c
                    .get("name")
                    .map(|n| json!({"type": "function", "function": {"name": n}})),
                _ => None,
            };
            if let Some(m) = mapped {
                out.insert("tool_choice".into(), m);
            }
            if c.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    if let Some(user) = req.pointer("/metadata/user_id").and_then(Value::as_str) {
        out.insert("user".into(), Value::from(user));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chat_becomes_anthropic_messages() {
        let req = json!({
            "model": "support-chat",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "user", "content": "thanks"}
            ],
            "max_completion_tokens": 50,
            "temperature": 1.7,
            "stop": "END",
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "user": "alice"
        });
        let out = openai_to_anthropic(&req, "claude-3-5-haiku-20241022", 4096);
        assert_eq!(
            out,
            json!({
                "model": "claude-3-5-haiku-20241022",
                "max_tokens": 50,
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "weather?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather",
                        "input": {"city": "Paris"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                        {"type": "text", "text": "thanks"}]}
                ],
                "temperature": 1.0,
                "stop_sequences": ["END"],
                "stream": true,
                "tools": [{"name": "get_weather", "description": "d",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "alice"}
            })
        );
    }

    #[test]
    fn missing_max_tokens_takes_the_default() {
        let out = openai_to_anthropic(&json!({"messages": []}), "m", 123);
        assert_eq!(out["max_tokens"], 123);
    }

    #[test]
    fn anthropic_messages_become_openai_chat() {
        let req = json!({
            "model": "gpt-4o-mini",
            "max_tokens": 64,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny"}]}, {"type": "text", "text": "thanks"}]}
            ],
            "stop_sequences": ["END"],
            "stream": true,
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "alice"}
        });
        let out = anthropic_to_openai(&req, "gpt-4o-mini", "max_completion_tokens", 4096);
        assert_eq!(
            out,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "toolu_1",
                        "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                    {"role": "user", "content": "thanks"}
                ],
                "max_completion_tokens": 64,
                "stop": ["END"],
                "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": false,
                "user": "alice"
            })
        );
        assert_eq!(
            anthropic_to_openai(&json!({"max_tokens": 5}), "m", "max_tokens", 4096)["max_tokens"],
            5
        );
        // No cap from the caller: the gateway's default, in the link's field.
        let capped = anthropic_to_openai(&json!({"messages": []}), "m", "max_tokens", 321);
        assert_eq!(capped["max_tokens"], 321);
        assert!(capped.get("max_completion_tokens").is_none());
    }
}
