//! `POST /v1/chat/completions` (also `/chat/completions`, `/openai/v1/…` and
//! Azure's `/openai/deployments/{deployment}/chat/completions`): a
//! `chat.completion` object, or with `stream: true` a sequence of
//! `chat.completion.chunk` events ending in `data: [DONE]`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::ResponseIds;
use crate::error::ApiError;
use crate::ids;
use crate::server::{Admitted, Dialect, Incoming, Shared};
use crate::stats::Endpoint;
use crate::stream::{self, Frame, Pacing};
use crate::tools::{ToolCallPlan, openai_tool_call};
use crate::usage::{Api, MockUsage, output_pieces, output_text, usage_for};

/// Each streamed tool-argument delta carries this many characters, roughly
/// one token, like the real API's small argument fragments.
pub(crate) const ARGUMENT_CHARS_PER_CHUNK: usize = 4;

/// OpenAI's `system_fingerprint`; a constant marks answers as the mock's.
const SYSTEM_FINGERPRINT: &str = "fp_tollgate_mock";

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&shared, uri.path(), &headers, &body, None).await
}

pub(crate) async fn handle_azure(
    State(shared): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&shared, uri.path(), &headers, &body, Some(deployment)).await
}

async fn respond(
    shared: &Arc<Shared>,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    deployment: Option<String>,
) -> Response {
    let incoming = Incoming {
        endpoint: Endpoint::ChatCompletions,
        dialect: Dialect::OpenAi,
        path,
        headers,
        body,
    };
    shared
        .serve(incoming, |admitted, sequence| {
            complete(shared, admitted, deployment, sequence)
        })
        .await
}

/// What the request asks for, validated the way the real API does.
struct ChatRequest {
    model: String,
    stream: bool,
    include_usage: bool,
    tool_call: Option<ToolCallPlan>,
}

impl ChatRequest {
    fn parse(body: &Value, deployment: Option<String>) -> Result<Self, ApiError> {
        if !body.is_object() {
            return Err(ApiError::InvalidRequest(
                "The request body must be a JSON object.".into(),
            ));
        }
        // Azure names the model by deployment; the body's `model` is optional there.
        let model = match (body.get("model").and_then(Value::as_str), deployment) {
            (Some(model), _) => model.to_owned(),
            (None, Some(deployment)) => deployment,
            (None, None) => {
                return Err(ApiError::InvalidRequest(
                    "you must provide a model parameter".into(),
                ));
            }
        };
        if !body.get("messages").is_some_and(Value::is_array) {
            return Err(ApiError::InvalidRequest(
                "Missing required parameter: 'messages'.".into(),
            ));
        }
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let stream_options = body.get("stream_options").filter(|v| !v.is_null());
        if stream_options.is_some() && !stream {
            return Err(ApiError::InvalidRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into(),
            ));
        }
        let include_usage = stream_options
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            model,
            stream,
            include_usage,
            tool_call: openai_tool_call(body),
        })
    }

    fn finish_reason(&self, usage: &MockUsage) -> &'static str {
        if self.tool_call.is_some() {
            "tool_calls"
        } else if usage.truncated {
            "length"
        } else {
            "stop"
        }
    }
}

fn complete(
    shared: &Arc<Shared>,
    admitted: Admitted,
    deployment: Option<String>,
    sequence: u64,
) -> Result<Response, ApiError> {
    let request = ChatRequest::parse(&admitted.body, deployment)?;
    let usage = usage_for(
        Api::OpenAiChat,
        &admitted.body,
        &admitted.knobs,
        shared.config.default_output_tokens,
    );
    shared.stats.bill(u64::from(
        usage.openai_prompt_tokens() + usage.openai_completion_tokens(),
    ));
    let envelope = Envelope {
        id: match &shared.config.response_ids {
            ResponseIds::Unique => ids::chat_completion_id(sequence),
            ResponseIds::Cycle(n) => format!("chatcmpl-{}", sequence % (*n).max(1)),
            ResponseIds::Constant(id) => id.clone(),
        },
        created: ids::unix_now(),
        model: request.model.clone(),
    };
    if request.stream {
        let pacing = Pacing {
            ttft: admitted.knobs.ttft.unwrap_or(shared.config.ttft),
            inter_chunk: admitted
                .knobs
                .inter_chunk
                .unwrap_or(shared.config.inter_chunk),
            cut_after_chunks: admitted.knobs.cut_after_chunks,
        };
        let frames = stream_frames(&request, &envelope, &usage, sequence);
        Ok(stream::respond(frames, &pacing, shared))
    } else {
        Ok(Json(completion_json(&request, &envelope, &usage, sequence)).into_response())
    }
}

/// Fields repeated on the completion and on every chunk.
struct Envelope {
    id: String,
    created: u64,
    model: String,
}

fn usage_json(usage: &MockUsage) -> Value {
    json!({
        "prompt_tokens": usage.openai_prompt_tokens(),
        "completion_tokens": usage.openai_completion_tokens(),
        "total_tokens": usage.openai_total_tokens(),
        "prompt_tokens_details": {
            "cached_tokens": usage.openai_cached_tokens(),
            "audio_tokens": 0
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn completion_json(
    request: &ChatRequest,
    envelope: &Envelope,
    usage: &MockUsage,
    sequence: u64,
) -> Value {
    let message = match &request.tool_call {
        Some(call) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": ids::tool_call_id(sequence),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()}
            }],
            "refusal": null,
            "annotations": []
        }),
        None => json!({
            "role": "assistant",
            "content": output_text(usage.output_tokens),
            "refusal": null,
            "annotations": []
        }),
    };
    json!({
        "id": envelope.id,
        "object": "chat.completion",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": request.finish_reason(usage)
        }],
        "usage": usage_json(usage),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT
    })
}

/// The chunk sequence of the real API: a role chunk, one delta per token, a
/// chunk with `finish_reason`, then (only with `include_usage`) a chunk with
/// empty `choices` and the usage, then `[DONE]`. With `include_usage` every
/// earlier chunk carries `"usage": null`, as the real API does.
fn stream_frames(
    request: &ChatRequest,
    envelope: &Envelope,
    usage: &MockUsage,
    sequence: u64,
) -> Vec<Frame> {
    let chunk = |choices: Value, usage_value: Option<Value>| {
        let mut value = json!({
            "id": envelope.id,
            "object": "chat.completion.chunk",
            "created": envelope.created,
            "model": envelope.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices
        });
        if request.include_usage
            && let Some(object) = value.as_object_mut()
        {
            object.insert("usage".into(), usage_value.unwrap_or(Value::Null));
        }
        Event::default().data(value.to_string())
    };
    let choice = |delta: Value, finish_reason: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);

    let mut frames = Vec::new();
    match &request.tool_call {
        Some(call) => {
            let opening = json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": 0,
                    "id": ids::tool_call_id(sequence),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""}
                }],
                "refusal": null
            });
            frames.push(Frame::control(chunk(choice(opening, Value::Null), None)));
            let arguments: Vec<char> = call.arguments_json().chars().collect();
            for piece in arguments.chunks(ARGUMENT_CHARS_PER_CHUNK) {
                let piece: String = piece.iter().collect();
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                frames.push(Frame::content(chunk(choice(delta, Value::Null), None)));
            }
        }
        None => {
            let opening = json!({"role": "assistant", "content": "", "refusal": null});
            frames.push(Frame::control(chunk(choice(opening, Value::Null), None)));
            for piece in output_pieces(usage.output_tokens) {
                let delta = json!({"content": piece});
                frames.push(Frame::content(chunk(choice(delta, Value::Null), None)));
            }
        }
    }
    let finish = Value::from(request.finish_reason(usage));
    frames.push(Frame::control(chunk(choice(json!({}), finish), None)));
    if request.include_usage {
        frames.push(Frame::control(chunk(json!([]), Some(usage_json(usage)))));
    }
    frames.push(Frame::control(Event::default().data("[DONE]")));
    frames
}
