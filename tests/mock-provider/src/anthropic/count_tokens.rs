//! `POST /v1/messages/count_tokens`: `{"input_tokens": N}` by the same rule
//! as the messages endpoint (cache knobs do not apply; nothing is cached by
//! counting).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::knobs::Knobs;
use crate::server::{Dialect, Incoming, Shared};
use crate::stats::Endpoint;
use crate::usage::{Api, usage_for};

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = Incoming {
        endpoint: Endpoint::CountTokens,
        dialect: Dialect::Anthropic,
        path: uri.path(),
        headers: &headers,
        body: &body,
    };
    shared
        .serve(incoming, |admitted, _| {
            count(&admitted.body, shared.config.default_output_tokens)
                .map(|value| Json(value).into_response())
        })
        .await
}

fn count(body: &Value, default_output_tokens: u32) -> Result<Value, ApiError> {
    if body.get("model").and_then(Value::as_str).is_none() {
        return Err(ApiError::InvalidRequest("model: Field required".into()));
    }
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(ApiError::InvalidRequest("messages: Field required".into()));
    }
    let usage = usage_for(
        Api::AnthropicMessages,
        body,
        &Knobs::default(),
        default_output_tokens,
    );
    Ok(json!({"input_tokens": usage.anthropic_input_tokens()}))
}
