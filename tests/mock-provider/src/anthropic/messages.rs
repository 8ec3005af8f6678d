//! `POST /v1/messages`: a `message` object, or with `stream: true` the real
//! event sequence — `message_start`, `content_block_start`, `ping`, one
//! `content_block_delta` per token, `content_block_stop`, `message_delta`,
//! `message_stop`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::ids;
use crate::server::{Admitted, Dialect, Incoming, Shared};
use crate::stats::Endpoint;
use crate::stream::{self, Frame, Pacing};
use crate::tools::{ToolCallPlan, anthropic_tool_call};
use crate::usage::{Api, MockUsage, output_pieces, output_text, usage_for};

/// Characters per streamed `input_json_delta`, roughly one token.
const ARGUMENT_CHARS_PER_CHUNK: usize = 4;

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = Incoming {
        endpoint: Endpoint::Messages,
        dialect: Dialect::Anthropic,
        path: uri.path(),
        headers: &headers,
        body: &body,
    };
    shared
        .serve(incoming, |admitted, sequence| {
            reply(&shared, &admitted, sequence)
        })
        .await
}

/// What the request asks for, validated like the real API (which requires
/// `model`, `max_tokens` and `messages`).
struct MessagesRequest {
    model: String,
    stream: bool,
    tool_call: Option<ToolCallPlan>,
}

impl MessagesRequest {
    fn parse(body: &Value) -> Result<Self, ApiError> {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::InvalidRequest("model: Field required".into()))?;
        if !body.get("max_tokens").is_some_and(Value::is_u64) {
            return Err(ApiError::InvalidRequest(
                "max_tokens: Field required".into(),
            ));
        }
        if !body.get("messages").is_some_and(Value::is_array) {
            return Err(ApiError::InvalidRequest("messages: Field required".into()));
        }
        Ok(Self {
            model: model.to_owned(),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            tool_call: anthropic_tool_call(body),
        })
    }

    fn stop_reason(&self, usage: &MockUsage) -> &'static str {
        if self.tool_call.is_some() {
            "tool_use"
        } else if usage.truncated {
            "max_tokens"
        } else {
            "end_turn"
        }
    }
}

fn reply(shared: &Arc<Shared>, admitted: &Admitted, sequence: u64) -> Result<Response, ApiError> {
    let request = MessagesRequest::parse(&admitted.body)?;
    let usage = usage_for(
        Api::AnthropicMessages,
        &admitted.body,
        &admitted.knobs,
        shared.config.default_output_tokens,
    );
    shared.stats.bill(u64::from(
        usage.openai_prompt_tokens() + usage.openai_completion_tokens(),
    ));
    if request.stream {
        let pacing = Pacing {
            ttft: admitted.knobs.ttft.unwrap_or(shared.config.ttft),
            inter_chunk: admitted
                .knobs
                .inter_chunk
                .unwrap_or(shared.config.inter_chunk),
            cut_after_chunks: admitted.knobs.cut_after_chunks,
        };
        Ok(stream::respond(
            stream_frames(&request, &usage, sequence),
            &pacing,
            shared,
        ))
    } else {
        Ok(Json(message_json(&request, &usage, sequence)).into_response())
    }
}

/// The message-level usage object; `output_tokens` differs between the final
/// message and `message_start`, where the real API reports a placeholder 1.
fn usage_json(usage: &MockUsage, output_tokens: u32) -> Value {
    json!({
        "input_tokens": usage.anthropic_input_tokens(),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens,
            "ephemeral_1h_input_tokens": 0
        },
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

fn message_json(request: &MessagesRequest, usage: &MockUsage, sequence: u64) -> Value {
    let content = match &request.tool_call {
        Some(call) => json!([{
            "type": "tool_use",
            "id": ids::tool_use_id(sequence),
            "name": call.name,
            "input": call.arguments
        }]),
        None => json!([{"type": "text", "text": output_text(usage.output_tokens)}]),
    };
    json!({
        "id": ids::message_id(sequence),
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": request.stop_reason(usage),
        "stop_sequence": null,
        "usage": usage_json(usage, usage.anthropic_output_tokens())
    })
}

fn event(name: &'static str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

fn stream_frames(request: &MessagesRequest, usage: &MockUsage, sequence: u64) -> Vec<Frame> {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": ids::message_id(sequence),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_json(usage, 1)
        }
    });
    let mut frames = vec![Frame::control(event("message_start", &start))];
    match &request.tool_call {
        Some(call) => {
            let block = json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": ids::tool_use_id(sequence),
                    "name": call.name,
                    "input": {}
                }
            });
            frames.push(Frame::control(event("content_block_start", &block)));
            frames.push(Frame::control(event("ping", &json!({"type": "ping"}))));
            let arguments: Vec<char> = call.arguments_json().chars().collect();
            for piece in arguments.chunks(ARGUMENT_CHARS_PER_CHUNK) {
                let piece: String = piece.iter().collect();
                let delta = json!({
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece}
                });
                frames.push(Frame::content(event("content_block_delta", &delta)));
            }
        }
        None => {
            let block = json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""}
            });
            frames.push(Frame::control(event("content_block_start", &block)));
            frames.push(Frame::control(event("ping", &json!({"type": "ping"}))));
            for piece in output_pieces(usage.output_tokens) {
                let delta = json!({
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece}
                });
                frames.push(Frame::content(event("content_block_delta", &delta)));
            }
        }
    }
    let stop = json!({"type": "content_block_stop", "index": 0});
    frames.push(Frame::control(event("content_block_stop", &stop)));
    let delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": request.stop_reason(usage), "stop_sequence": null},
        "usage": {"output_tokens": usage.anthropic_output_tokens()}
    });
    frames.push(Frame::control(event("message_delta", &delta)));
    let stop = json!({"type": "message_stop"});
    frames.push(Frame::control(event("message_stop", &stop)));
    frames
}
