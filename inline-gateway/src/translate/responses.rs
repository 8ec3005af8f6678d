//! The Responses API against upstreams without it: a Responses request as
//! a chat completions request (and, through it, as an Anthropic messages
//! request), and a chat completion (or an Anthropic message, through a chat
//! completion) as a Responses `response` object. Streams are in
//! [`super::responses_stream`].
//!
//! Instructions, messages (text, images, files), function tools, function
//! calls and their outputs, tool choice, structured output formats,
//! sampling and the output cap carry over. Reasoning items are dropped (a
//! chat server cannot read them back). What only the provider's own
//! Responses API can do — state it keeps (`previous_response_id`,
//! `conversation`, stored prompts, item references), background runs,
//! hosted tools — is refused with a message naming the field.

use serde_json::{Map, Value, json};

use crate::usage::Usage;

fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn kind(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// The field of a Responses request that needs the provider's own store
/// (or its background runner), if any: such a call can only go to a
/// provider that serves the Responses API.
pub(crate) fn stateful_field(req: &Value) -> Option<&'static str> {
    let set = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    if set("previous_response_id") {
        return Some("previous_response_id");
    }
    if set("conversation") {
        return Some("conversation");
    }
    if set("prompt") {
        return Some("prompt");
    }
    if req.get("background").and_then(Value::as_bool) == Some(true) {
        return Some("background");
    }
    if array(req.get("input"))
        .iter()
        .any(|i| kind(i) == Some("item_reference"))
    {
        return Some("input[].item_reference");
    }
    None
}

/// Text of Responses content (a string or parts), parts joined by newlines.
fn joined_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                let t = p
                    .get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str);
                if let Some(t) = t {
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

/// A user message's Responses content parts as chat content parts.
fn user_content(content: Option<&Value>) -> Result<Value, String> {
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        Some(Value::String(s)) => return Ok(Value::from(s.as_str())),
        _ => return Ok(Value::from("")),
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match kind(p) {
            Some("input_text" | "output_text" | "text") => out.push(json!({
                "type": "text",
                "text": p.get("text").cloned().unwrap_or(Value::from("")),
            })),
            Some("input_image") => {
                let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                    return Err(
                        "an `input_image` given by `file_id` cannot be translated for \
                                this provider; send it as `image_url` (a URL or a data URL)"
                            .to_owned(),
                    );
                };
                let mut image = Map::new();
                image.insert("url".into(), Value::from(url));
                if let Some(d) = p.get("detail").filter(|d| d.is_string()) {
                    image.insert("detail".into(), d.clone());
                }
                out.push(json!({"type": "image_url", "image_url": Value::Object(image)}));
            }
            Some("input_file") => {
                let mut file = Map::new();
                for key in ["file_data", "file_id", "filename"] {
                    if let Some(v) = p.get(key).filter(|v| v.is_string()) {
                        file.insert(key.into(), v.clone());
                    }
                }
                out.push(json!({"type": "file", "file": Value::Object(file)}));
            }
            other => {
                return Err(format!(
                    "content part type `{}` has no equivalent in chat completions",
                    other.unwrap_or("(none)")
                ));
            }
        }
    }
    Ok(Value::from(out))
}

/// Where the last assistant message's tool calls go, if function calls
/// follow it directly.
fn push_call(messages: &mut Vec<Value>, open_assistant: bool, call: Value) {
    if open_assistant
        && let Some(last) = messages.last_mut()
        && let Some(m) = last.as_object_mut()
    {
        match m.get_mut("tool_calls").and_then(Value::as_array_mut) {
            Some(calls) => calls.push(call),
            None => {
                m.insert("tool_calls".into(), Value::from(vec![call]));
            }
        }
        return;
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
}

/// A Responses request as a chat completions request for `model`, its
/// output capped in `cap_field` at `max_output_tokens` (or
/// `default_max_tokens`). Streams ask for the usage chunk. `Err` names
/// what cannot be translated.
pub(crate) fn responses_to_chat(
    req: &Value,
    model: &str,
    cap_field: &str,
    default_max_tokens: u64,
) -> Result<Value, String> {
    if let Some(field) = stateful_field(req) {
        return Err(stateless_message(field));
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::from(model));
    let mut messages: Vec<Value> = Vec::new();
    let instructions = joined_text(req.get("instructions"));
    if !instructions.is_empty() {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    // Whether the last message is an assistant's that function calls
    // following it belong to.
    let mut open_assistant = false;
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for item in items {
                let t = kind(item).unwrap_or("message");
                match t {
                    "message" => {
                        let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                        open_assistant = false;
                        match role {
                            "system" | "developer" => messages.push(json!({
                                "role": "system",
                                "content": joined_text(item.get("content")),
                            })),
                            "assistant" => {
                                messages.push(json!({
                                    "role": "assistant",
                                    "content": joined_text(item.get("content")),
                                }));
                                open_assistant = true;
                            }
                            "user" => messages.push(json!({
                                "role": "user",
                                "content": user_content(item.get("content"))?,
                            })),
                            other => {
                                return Err(format!("input message role `{other}` is not known"));
                            }
                        }
                    }
                    "function_call" => {
                        let call = json!({
                            "id": item.get("call_id").cloned().unwrap_or(Value::from("")),
                            "type": "function",
                            "function": {
                                "name": item.get("name").cloned().unwrap_or(Value::from("")),
                                "arguments": item.get("arguments").cloned().unwrap_or(Value::from("{}")),
                            },
                        });
                        push_call(&mut messages, open_assistant, call);
                        open_assistant = true;
                    }
                    "function_call_output" => {
                        open_assistant = false;
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::from("")),
                            "content": joined_text(item.get("output")),
                        }));
                    }
                    // The model's own reasoning, encrypted for its provider.
                    "reasoning" => {}
                    other => {
                        return Err(format!(
                            "input item type `{other}` has no equivalent in chat completions; \
                             send it to a provider that serves the Responses API"
                        ));
                    }
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err("`input` must be a string or an array of input items".to_owned());
        }
    }
    out.insert("messages".into(), Value::from(messages));
    let cap = req
        .get("max_output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(default_max_tokens);
    out.insert(cap_field.into(), Value::from(cap));
    for key in [
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "service_tier",
    ] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(n) = req
        .get("top_logprobs")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
    {
        out.insert("logprobs".into(), Value::Bool(true));
        out.insert("top_logprobs".into(), Value::from(n));
    }
    if let Some(user) = req
        .get("safety_identifier")
        .or_else(|| req.get("user"))
        .filter(|u| u.is_string())
    {
        out.insert("user".into(), user.clone());
    }
    if let Some(effort) = req.pointer("/reasoning/effort").filter(|e| e.is_string()) {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(format) = req.pointer("/text/format") {
        match kind(format) {
            Some("json_schema") => {
                let mut schema = Map::new();
                for key in ["name", "description", "schema", "strict"] {
                    if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                        schema.insert(key.into(), v.clone());
                    }
                }
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": Value::Object(schema)}),
                );
            }
            Some("json_object") => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            _ => {}
        }
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let mut tools = Vec::new();
    for t in array(req.get("tools")) {
        match kind(t) {
            Some("function") => {
                let mut f = Map::new();
                f.insert(
                    "name".into(),
                    t.get("name").cloned().unwrap_or(Value::from("")),
                );
                for key in ["description", "parameters", "strict"] {
                    if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                        f.insert(key.into(), v.clone());
                    }
                }
                tools.push(json!({"type": "function", "function": Value::Object(f)}));
            }
            other => {
                return Err(format!(
                    "tool type `{}` is not a function tool: it needs a provider that serves \
                     the Responses API",
                    other.unwrap_or("(none)")
                ));
            }
        }
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::from(tools));
        let choice = match req.get("tool_choice") {
            Some(Value::String(s)) => Some(Value::from(s.as_str())),
            Some(c) if kind(c) == Some("function") => c
                .get("name")
                .map(|name| json!({"type": "function", "function": {"name": name}})),
            Some(c) if kind(c) == Some("allowed_tools") => c.get("mode").cloned(),
            _ => None,
        };
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(Value::Object(out))
}

/// Why a call that builds on stored state cannot go to an upstream that
/// keeps none.
pub(crate) fn stateless_message(field: &str) -> String {
    format!(
        "`{field}` needs a provider that serves the Responses API (it keeps the responses, \
         conversations and prompts, and runs background calls); this model's providers are \
         reached through chat completions or Anthropic messages, which keep nothing: send the \
         whole conversation in `input` instead"
    )
}

/// A row's usage as the Responses API reports it.
pub(crate) fn responses_usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.total()
    })
}

/// What every `response` object of one translated call repeats: its id,
/// creation time, and the request parameters the API echoes.
#[derive(Debug, Clone)]
pub(crate) struct ResponseFrame {
    pub id: String,
    pub created_at: u64,
    echoed: Map<String, Value>,
}

impl ResponseFrame {
    /// `id` is `resp_…`; the request's parameters are echoed, with the
    /// API's defaults for those not sent. Nothing is stored (`store: false`).
    pub(crate) fn new(req: &Value, id: String, created_at: u64) -> Self {
        let sent = |key: &str| req.get(key).filter(|v| !v.is_null()).cloned();
        let or = |key: &str, default: Value| sent(key).unwrap_or(default);
        let echoed = json!({
            "background": false,
            "instructions": or("instructions", Value::Null),
            "max_output_tokens": or("max_output_tokens", Value::Null),
            "metadata": or("metadata", json!({})),
            "parallel_tool_calls": req.get("parallel_tool_calls").and_then(Value::as_bool).unwrap_or(true),
            "previous_response_id": Value::Null,
            "reasoning": {
                "effort": req.pointer("/reasoning/effort").cloned().unwrap_or(Value::Null),
                "summary": Value::Null
            },
            "store": false,
            "temperature": or("temperature", json!(1.0)),
            "text": or("text", json!({"format": {"type": "text"}})),
            "tool_choice": or("tool_choice", json!("auto")),
            "tools": or("tools", json!([])),
            "top_p": or("top_p", json!(1.0)),
            "truncation": or("truncation", json!("disabled")),
            "user": or("user", Value::Null)
        });
        Self {
            id,
            created_at,
            echoed: match echoed {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        }
    }

    /// The suffix item ids are built from.
    pub(crate) fn suffix(&self) -> &str {
        self.id.strip_prefix("resp_").unwrap_or(&self.id)
    }

    /// The `response` object: `status` is `in_progress`, `completed` or
    /// `incomplete` (then `incomplete_reason` says why).
    pub(crate) fn object(
        &self,
        model: &str,
        status: &str,
        incomplete_reason: Option<&str>,
        output: Vec<Value>,
        usage: Option<&Usage>,
    ) -> Value {
        let mut o = self.echoed.clone();
        for (k, v) in [
            ("id", Value::from(self.id.as_str())),
            ("object", Value::from("response")),
            ("created_at", Value::from(self.created_at)),
            ("status", Value::from(status)),
            ("error", Value::Null),
            (
                "incomplete_details",
                incomplete_reason.map_or(Value::Null, |r| json!({"reason": r})),
            ),
            ("model", Value::from(model)),
            ("output", Value::from(output)),
            ("usage", usage.map_or(Value::Null, responses_usage_json)),
        ] {
            o.insert(k.to_owned(), v);
        }
        Value::Object(o)
    }
}

/// A chat `finish_reason` as a response's status and incomplete reason.
pub(crate) fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A finished `message` output item holding `parts`.
pub(crate) fn message_item(id: &str, status: &str, parts: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": parts})
}

pub(crate) fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `function_call` output item.
pub(crate) fn function_call_item(
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id,
           "name": name, "arguments": arguments})
}

/// A chat completion as a Responses `response` object; `usage` is the one
/// read from the upstream's answer (in row terms).
pub(crate) fn chat_to_responses(resp: &Value, usage: &Usage, frame: &ResponseFrame) -> Value {
    let choice = resp.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let suffix = frame.suffix();
    let mut output = Vec::new();
    let mut parts = Vec::new();
    if let Some(t) = message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        parts.push(output_text_part(t));
    }
    if let Some(r) = message
        .and_then(|m| m.get("refusal"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        parts.push(json!({"type": "refusal", "refusal": r}));
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let (status, reason) = status_of(finish);
    if !parts.is_empty() {
        output.push(message_item(&format!("msg_{suffix}"), status, parts));
    }
    for (i, call) in array(message.and_then(|m| m.get("tool_calls")))
        .iter()
        .enumerate()
    {
        let s = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or("");
        output.push(function_call_item(
            &format!("fc_{suffix}_{i}"),
            "completed",
            s("/id"),
            s("/function/name"),
            s("/function/arguments"),
        ));
    }
    let model = resp.get("model").and_then(Value::as_str).unwrap_or("");
    frame.object(model, status, reason, output, Some(usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(req: &Value) -> ResponseFrame {
        ResponseFrame::new(req, "resp_abc".to_owned(), 7)
    }

    #[test]
    fn a_responses_request_becomes_chat_completions() {
        let req = json!({
            "model": "support-chat",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "weather?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]},
                {"role": "user", "content": "thanks"}
            ],
            "max_output_tokens": 50,
            "temperature": 0.5,
            "stream": true,
            "tools": [{"type": "function", "name": "get_weather", "description": "d",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": false,
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "reasoning": {"effort": "low"},
            "store": true,
            "safety_identifier": "alice"
        });
        let out = responses_to_chat(&req, "gpt-4o-mini", "max_tokens", 4096).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "system", "content": "Answer in French."},
                    {"role": "user", "content": [{"type": "text", "text": "weather?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
                    {"role": "user", "content": "thanks"}
                ],
                "max_tokens": 50,
                "temperature": 0.5,
                "parallel_tool_calls": false,
                "user": "alice",
                "reasoning_effort": "low",
                "response_format": {"type": "json_schema", "json_schema":
                    {"name": "w", "schema": {"type": "object"}, "strict": true}},
                "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
            })
        );
        let plain =
            responses_to_chat(&json!({"input": "hi"}), "m", "max_completion_tokens", 321).unwrap();
        assert_eq!(
            plain,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "max_completion_tokens": 321})
        );
    }

    #[test]
    fn what_needs_the_providers_own_api_is_refused_by_name() {
        let err = |req: Value| responses_to_chat(&req, "m", "max_tokens", 1).unwrap_err();
        assert!(
            err(json!({"input": "x", "previous_response_id": "resp_1"}))
                .contains("`previous_response_id`")
        );
        assert!(
            err(json!({"input": "x", "conversation": {"id": "conv_1"}})).contains("`conversation`")
        );
        assert!(err(json!({"input": "x", "background": true})).contains("`background`"));
        assert!(
            err(json!({"input": [{"type": "item_reference", "id": "msg_1"}]}))
                .contains("item_reference")
        );
        assert!(
            err(json!({"input": "x", "tools": [{"type": "web_search"}]})).contains("`web_search`")
        );
        assert!(
            err(json!({"input": [{"type": "web_search_call", "id": "ws_1"}]}))
                .contains("`web_search_call`")
        );
        assert!(err(json!({"input": 3})).contains("`input` must be"));
        assert!(
            err(json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}))
                .contains("file_id")
        );
        assert_eq!(
            stateful_field(&json!({"input": "x", "previous_response_id": null})),
            None
        );
    }

    #[test]
    fn a_chat_completion_becomes_a_response() {
        let chat = json!({
            "id": "chatcmpl-1", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "Checking.", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}]
        });
        let usage = Usage {
            input: 140,
            output: 12,
            cache_read: 100,
            reasoning: 4,
            ..Usage::default()
        };
        let req =
            json!({"input": "weather?", "instructions": "Be brief.", "max_output_tokens": 50});
        let out = chat_to_responses(&chat, &usage, &frame(&req));
        assert_eq!(out["id"], "resp_abc");
        assert_eq!(out["object"], "response");
        assert_eq!(out["created_at"], 7);
        assert_eq!(out["status"], "completed");
        assert_eq!(out["model"], "gpt-4o-mini");
        assert_eq!(out["instructions"], "Be brief.");
        assert_eq!(out["max_output_tokens"], 50);
        assert_eq!(out["store"], false);
        assert_eq!(
            out["output"],
            json!([
                {"id": "msg_abc", "type": "message", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
                {"id": "fc_abc_0", "type": "function_call", "status": "completed", "call_id": "call_1",
                 "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
            ])
        );
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 140, "input_tokens_details": {"cached_tokens": 100},
                   "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 4},
                   "total_tokens": 152})
        );
        let cut = json!({"model": "m", "choices": [{"finish_reason": "length",
            "message": {"role": "assistant", "content": "w0"}}]});
        let out = chat_to_responses(&cut, &usage, &frame(&req));
        assert_eq!(out["status"], "incomplete");
        assert_eq!(
            out["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(out["output"][0]["status"], "incomplete");
    }
}
