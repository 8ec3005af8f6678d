//! `POST /v1/responses` (also `/responses` and `/openai/v1/responses`): the
//! OpenAI Responses API. A `response` object whose `output` holds one
//! `message` item (with an `output_text` part) or one `function_call` item,
//! preceded by a `reasoning` item when `x-mock-reasoning-tokens` is set; or
//! with `stream: true` the real API's typed event sequence, every event named
//! (`event: <type>`) and numbered (`sequence_number`).
//!
//! Fields the clients send and the mock has no use for (`store`,
//! `previous_response_id`, `include`, `truncation`, unknown ones …) are
//! accepted; the ones the real API echoes are echoed on the response, with
//! the real API's defaults when absent. A finished response is kept unless
//! the request says `store: false`: `GET /v1/responses/{id}` returns it,
//! `DELETE` forgets it (`{"id", "object": "response.deleted", "deleted":
//! true}`), `GET …/input_items` lists its input as items with ids
//! (`{"object": "list", "data", "first_id", "last_id", "has_more"}`); an
//! unknown id is a 404. `POST /v1/responses/input_tokens` answers
//! `{"object": "response.input_tokens", "input_tokens": T}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::chat::ARGUMENT_CHARS_PER_CHUNK;
use crate::error::ApiError;
use crate::ids;
use crate::server::{Admitted, Dialect, Incoming, Shared};
use crate::stats::Endpoint;
use crate::stream::{self, Frame, Pacing};
use crate::tools::{ToolCallPlan, responses_tool_call};
use crate::usage::{Api, MockUsage, output_pieces, output_text, usage_for};

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = Incoming {
        endpoint: Endpoint::Responses,
        dialect: Dialect::OpenAi,
        path: uri.path(),
        headers: &headers,
        body: &body,
    };
    shared
        .serve(incoming, |admitted, sequence| {
            complete(&shared, admitted, sequence)
        })
        .await
}

/// What the request asks for, validated the way the real API does.
struct ResponsesRequest {
    model: String,
    stream: bool,
    tool_call: Option<ToolCallPlan>,
    /// Request parameters the response object repeats back.
    echoed: Map<String, Value>,
}

impl ResponsesRequest {
    fn parse(body: &Value) -> Result<Self, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::InvalidRequest(
                "The request body must be a JSON object.".into(),
            ));
        };
        let Some(model) = object.get("model").and_then(Value::as_str) else {
            return Err(ApiError::InvalidRequest(
                "Missing required parameter: 'model'.".into(),
            ));
        };
        match object.get("input") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(ApiError::InvalidRequest(
                    "Invalid type for 'input': expected a string or an array of input items."
                        .into(),
                ));
            }
        }
        Ok(Self {
            model: model.to_owned(),
            stream: object
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            tool_call: responses_tool_call(body),
            echoed: echoed_fields(object),
        })
    }
}

/// The request parameters the real API repeats on the response object, with
/// its defaults for those not sent (or sent as `null`).
fn echoed_fields(request: &Map<String, Value>) -> Map<String, Value> {
    let sent = |key: &str| request.get(key).filter(|value| !value.is_null()).cloned();
    let or = |key: &str, default: Value| sent(key).unwrap_or(default);
    let reasoning = request.get("reasoning");
    let reasoning_field = |key: &str| {
        reasoning
            .and_then(|r| r.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let tools: Vec<Value> = request
        .get("tools")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(echoed_tool)
        .collect();
    let fields = json!({
        "background": or("background", Value::Bool(false)),
        "instructions": or("instructions", Value::Null),
        "max_output_tokens": or("max_output_tokens", Value::Null),
        "max_tool_calls": or("max_tool_calls", Value::Null),
        "metadata": or("metadata", json!({})),
        "parallel_tool_calls": request
            .get("parallel_tool_calls")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        "previous_response_id": or("previous_response_id", Value::Null),
        "prompt_cache_key": or("prompt_cache_key", Value::Null),
        "reasoning": {"effort": reasoning_field("effort"), "summary": reasoning_field("summary")},
        "safety_identifier": or("safety_identifier", Value::Null),
        "service_tier": "default",
        "store": request.get("store").and_then(Value::as_bool).unwrap_or(true),
        "temperature": or("temperature", json!(1.0)),
        "text": or("text", json!({"format": {"type": "text"}, "verbosity": "medium"})),
        "tool_choice": or("tool_choice", json!("auto")),
        "tools": tools,
        "top_logprobs": or("top_logprobs", json!(0)),
        "top_p": or("top_p", json!(1.0)),
        "truncation": or("truncation", json!("disabled")),
        "user": or("user", Value::Null)
    });
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Function tools come back with the fields the real API fills in
/// (`description: null`, `strict: true`); built-in tools as sent.
fn echoed_tool(tool: &Value) -> Value {
    let mut tool = tool.clone();
    if tool.get("type").and_then(Value::as_str) == Some("function")
        && let Some(object) = tool.as_object_mut()
    {
        object.entry("description").or_insert(Value::Null);
        object.entry("parameters").or_insert(Value::Null);
        if object.get("strict").is_none_or(Value::is_null) {
            object.insert("strict".into(), Value::Bool(true));
        }
    }
    tool
}

/// Everything the answer consists of, fixed before the first byte is sent so
/// the JSON answer and every stream event agree on ids and content.
struct Answer {
    id: String,
    created_at: u64,
    model: String,
    /// A `reasoning` item (only with reasoning tokens), at output index 0.
    reasoning: Option<Value>,
    main: MainItem,
    /// The text was cut short by `max_output_tokens`.
    incomplete: bool,
}

enum MainItem {
    Message {
        id: String,
        text_tokens: u32,
    },
    Call {
        id: String,
        call_id: String,
        plan: ToolCallPlan,
    },
}

impl Answer {
    fn new(request: &ResponsesRequest, usage: &MockUsage, sequence: u64) -> Self {
        let main = match &request.tool_call {
            Some(plan) => MainItem::Call {
                id: ids::function_call_item_id(sequence),
                call_id: ids::tool_call_id(sequence),
                plan: plan.clone(),
            },
            None => MainItem::Message {
                id: ids::response_message_id(sequence),
                text_tokens: usage.output_tokens,
            },
        };
        let reasoning = (usage.reasoning_tokens > 0).then(
            || json!({"id": ids::reasoning_item_id(sequence), "type": "reasoning", "summary": []}),
        );
        Self {
            id: ids::response_id(sequence),
            created_at: ids::unix_now(),
            model: request.model.clone(),
            reasoning,
            incomplete: usage.truncated && request.tool_call.is_none(),
            main,
        }
    }

    fn main_index(&self) -> usize {
        usize::from(self.reasoning.is_some())
    }

    fn item_status(&self) -> &'static str {
        if self.incomplete {
            "incomplete"
        } else {
            "completed"
        }
    }

    /// The main output item as it stands finished (`done`) or just opened.
    fn main_item(&self, done: bool) -> Value {
        let status = if done {
            self.item_status()
        } else {
            "in_progress"
        };
        match &self.main {
            MainItem::Message { id, text_tokens } => {
                let content = if done {
                    json!([output_text_part(&output_text(*text_tokens))])
                } else {
                    json!([])
                };
                json!({
                    "id": id,
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": content
                })
            }
            MainItem::Call { id, call_id, plan } => json!({
                "id": id,
                "type": "function_call",
                "status": status,
                "call_id": call_id,
                "name": plan.name,
                "arguments": if done { plan.arguments_json() } else { String::new() }
            }),
        }
    }

    fn output(&self) -> Vec<Value> {
        self.reasoning
            .iter()
            .cloned()
            .chain([self.main_item(true)])
            .collect()
    }
}

fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// `usage` of a response. The counts are the chat completion's
/// (`input_tokens` = `prompt_tokens`, `output_tokens` = `completion_tokens`).
fn usage_json(usage: &MockUsage) -> Value {
    json!({
        "input_tokens": usage.openai_prompt_tokens(),
        "input_tokens_details": {
            "cached_tokens": usage.openai_cached_tokens(),
            "cache_write_tokens": usage.openai_cache_write_tokens()
        },
        "output_tokens": usage.openai_completion_tokens(),
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.openai_total_tokens()
    })
}

/// The `response` object: finished (`Some(usage)`) or, for the opening
/// stream events, in progress with no output and no usage yet.
fn response_json(request: &ResponsesRequest, answer: &Answer, usage: Option<&MockUsage>) -> Value {
    let (status, output, incomplete_details, completed_at, usage) = match usage {
        None => (
            "in_progress",
            json!([]),
            Value::Null,
            Value::Null,
            Value::Null,
        ),
        Some(usage) if answer.incomplete => (
            "incomplete",
            Value::from(answer.output()),
            json!({"reason": "max_output_tokens"}),
            Value::Null,
            usage_json(usage),
        ),
        Some(usage) => (
            "completed",
            Value::from(answer.output()),
            Value::Null,
            Value::from(ids::unix_now()),
            usage_json(usage),
        ),
    };
    let mut object = request.echoed.clone();
    for (key, value) in [
        ("id", Value::from(answer.id.as_str())),
        ("object", Value::from("response")),
        ("created_at", Value::from(answer.created_at)),
        ("completed_at", completed_at),
        ("status", Value::from(status)),
        ("error", Value::Null),
        ("incomplete_details", incomplete_details),
        ("model", Value::from(answer.model.as_str())),
        ("output", output),
        ("usage", usage),
    ] {
        object.insert(key.to_owned(), value);
    }
    Value::Object(object)
}

fn complete(shared: &Arc<Shared>, admitted: Admitted, sequence: u64) -> Result<Response, ApiError> {
    let request = ResponsesRequest::parse(&admitted.body)?;
    let usage = usage_for(
        Api::OpenAiResponses,
        &admitted.body,
        &admitted.knobs,
        shared.config.default_output_tokens,
    );
    let answer = Answer::new(&request, &usage, sequence);
    if admitted.body.get("store").and_then(Value::as_bool) != Some(false) {
        shared.stored.keep(
            answer.id.clone(),
            response_json(&request, &answer, Some(&usage)),
            items_of_input(&admitted.body, sequence),
        );
    }
    if request.stream {
        let pacing = Pacing {
            ttft: admitted.knobs.ttft.unwrap_or(shared.config.ttft),
            inter_chunk: admitted
                .knobs
                .inter_chunk
                .unwrap_or(shared.config.inter_chunk),
            cut_after_chunks: admitted.knobs.cut_after_chunks,
        };
        let frames = stream_frames(&request, &answer, &usage);
        Ok(stream::respond(frames, &pacing, shared))
    } else {
        Ok(Json(response_json(&request, &answer, Some(&usage))).into_response())
    }
}

/// Builds the named, numbered events of one stream.
struct Events {
    frames: Vec<Frame>,
    next_sequence: u64,
}

impl Events {
    /// Adds `event: kind` with `fields` plus `type` and `sequence_number`.
    fn push(&mut self, kind: &'static str, fields: Value, content: bool) {
        let mut data = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        data.insert("type".into(), Value::from(kind));
        data.insert("sequence_number".into(), Value::from(self.next_sequence));
        self.next_sequence += 1;
        let event = Event::default()
            .event(kind)
            .data(Value::Object(data).to_string());
        self.frames.push(if content {
            Frame::content(event)
        } else {
            Frame::control(event)
        });
    }
}

/// The real API's sequence: `response.created`, `response.in_progress`, the
/// reasoning item (added and done) if any, then for a message
/// `output_item.added`, `content_part.added`, one `output_text.delta` per
/// token, `output_text.done`, `content_part.done`, `output_item.done`; for a
/// function call `output_item.added`, `function_call_arguments.delta` per
/// 4-character piece, `function_call_arguments.done`, `output_item.done`;
/// and last `response.completed` (or `response.incomplete`) carrying the
/// whole response with its usage. Only the deltas count as content chunks
/// for pacing and the cut knob.
fn stream_frames(request: &ResponsesRequest, answer: &Answer, usage: &MockUsage) -> Vec<Frame> {
    let mut events = Events {
        frames: Vec::new(),
        next_sequence: 0,
    };
    let opening = response_json(request, answer, None);
    events.push(
        "response.created",
        json!({"response": opening.clone()}),
        false,
    );
    events.push("response.in_progress", json!({"response": opening}), false);
    if let Some(reasoning) = &answer.reasoning {
        let fields = json!({"output_index": 0, "item": reasoning});
        events.push("response.output_item.added", fields.clone(), false);
        events.push("response.output_item.done", fields, false);
    }
    let index = answer.main_index();
    events.push(
        "response.output_item.added",
        json!({"output_index": index, "item": answer.main_item(false)}),
        false,
    );
    match &answer.main {
        MainItem::Message { id, text_tokens } => {
            let at = |extra: Value| {
                let mut fields = json!({"item_id": id, "output_index": index, "content_index": 0});
                if let (Some(fields), Value::Object(extra)) = (fields.as_object_mut(), extra) {
                    fields.extend(extra);
                }
                fields
            };
            events.push(
                "response.content_part.added",
                at(json!({"part": output_text_part("")})),
                false,
            );
            for piece in output_pieces(*text_tokens) {
                events.push(
                    "response.output_text.delta",
                    at(json!({"delta": piece, "logprobs": []})),
                    true,
                );
            }
            let text = output_text(*text_tokens);
            events.push(
                "response.output_text.done",
                at(json!({"text": text, "logprobs": []})),
                false,
            );
            events.push(
                "response.content_part.done",
                at(json!({"part": output_text_part(&text)})),
                false,
            );
        }
        MainItem::Call { id, plan, .. } => {
            let arguments = plan.arguments_json();
            let chars: Vec<char> = arguments.chars().collect();
            for piece in chars.chunks(ARGUMENT_CHARS_PER_CHUNK) {
                let delta: String = piece.iter().collect();
                events.push(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": delta}),
                    true,
                );
            }
            events.push(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": plan.name, "arguments": arguments}),
                false,
            );
        }
    }
    events.push(
        "response.output_item.done",
        json!({"output_index": index, "item": answer.main_item(true)}),
        false,
    );
    let closing = if answer.incomplete {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push(
        closing,
        json!({"response": response_json(request, answer, Some(usage))}),
        false,
    );
    events.frames
}

/// Finished responses kept for retrieval, with their input items.
#[derive(Default)]
pub(crate) struct Store {
    responses: Mutex<HashMap<String, (Value, Vec<Value>)>>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Value, Vec<Value>)>> {
        // A poisoned map is still a map of finished responses.
        self.responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keep(&self, id: String, response: Value, input: Vec<Value>) {
        self.lock().insert(id, (response, input));
    }
}

/// The request's `input` as the API lists it back: a string is one user
/// message; every item gets an id; message text becomes `input_text` parts.
fn items_of_input(body: &Value, sequence: u64) -> Vec<Value> {
    let message = |n: usize, role: &Value, content: &Value| {
        let content = match content {
            Value::String(text) => json!([{"type": "input_text", "text": text}]),
            other => other.clone(),
        };
        json!({"id": format!("msg_mockin{sequence:08x}{n:04x}"), "type": "message",
               "role": role, "status": "completed", "content": content})
    };
    match body.get("input") {
        Some(Value::String(text)) => vec![message(0, &json!("user"), &Value::from(text.as_str()))],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(n, item)| match item.get("role") {
                Some(role) if item.get("type").is_none_or(|t| t == "message") => {
                    message(n, role, item.get("content").unwrap_or(&Value::Null))
                }
                _ => {
                    let mut item = item.clone();
                    if let Some(object) = item.as_object_mut() {
                        object.entry("id").or_insert_with(|| {
                            Value::from(format!("item_mockin{sequence:08x}{n:04x}"))
                        });
                    }
                    item
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn stored_incoming<'a>(uri: &'a Uri, headers: &'a HeaderMap, body: &'a [u8]) -> Incoming<'a> {
    Incoming {
        endpoint: Endpoint::StoredResponses,
        dialect: Dialect::OpenAi,
        path: uri.path(),
        headers,
        body,
    }
}

/// `GET /v1/responses/{id}`.
pub(crate) async fn retrieve(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = stored_incoming(&uri, &headers, &[]);
    shared
        .serve(incoming, |_, _| match shared.stored.lock().get(&id) {
            Some((response, _)) => Ok(Json(response.clone()).into_response()),
            None => Err(ApiError::ResponseNotFound(id.clone())),
        })
        .await
}

/// `DELETE /v1/responses/{id}`.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = stored_incoming(&uri, &headers, &[]);
    shared
        .serve(incoming, |_, _| match shared.stored.lock().remove(&id) {
            Some(_) => Ok(
                Json(json!({"id": id, "object": "response.deleted", "deleted": true}))
                    .into_response(),
            ),
            None => Err(ApiError::ResponseNotFound(id.clone())),
        })
        .await
}

/// `GET /v1/responses/{id}/input_items` (one page holds them all).
fn input_items_list(shared: &Shared, id: &str) -> Result<Response, ApiError> {
    let Some((_, items)) = shared.stored.lock().get(id).cloned() else {
        return Err(ApiError::ResponseNotFound(id.to_owned()));
    };
    let id_of = |item: Option<&Value>| {
        item.and_then(|i| i.get("id"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    Ok(Json(json!({
        "object": "list",
        "first_id": id_of(items.first()),
        "last_id": id_of(items.last()),
        "has_more": false,
        "data": items
    }))
    .into_response())
}

pub(crate) async fn input_items(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = stored_incoming(&uri, &headers, &[]);
    shared
        .serve(incoming, |_, _| input_items_list(&shared, &id))
        .await
}

/// `POST /v1/responses/input_tokens`: the text input tokens `T` of the
/// usage rule.
pub(crate) async fn input_tokens(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = stored_incoming(&uri, &headers, &body);
    shared
        .serve(incoming, |admitted, _| {
            let usage = usage_for(
                Api::OpenAiResponses,
                &admitted.body,
                &admitted.knobs,
                shared.config.default_output_tokens,
            );
            Ok(Json(json!({"object": "response.input_tokens",
                           "input_tokens": usage.text_input_tokens}))
            .into_response())
        })
        .await
}
