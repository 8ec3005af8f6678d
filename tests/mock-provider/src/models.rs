//! `GET /v1/models` in whichever dialect the caller speaks (OpenAI's
//! `{"object": "list"}` or Anthropic's paged list, chosen by the
//! `anthropic-version` / `x-api-key` headers), and the 404 for unknown paths.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::ids;
use crate::server::{Dialect, Incoming, Shared};
use crate::stats::Endpoint;

/// Model ids the OpenAI listing returns.
const OPENAI_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
];

/// Model ids, display names and release dates the Anthropic listing returns.
const ANTHROPIC_MODELS: &[(&str, &str, &str)] = &[
    (
        "claude-sonnet-4-20250514",
        "Claude Sonnet 4",
        "2025-05-14T00:00:00Z",
    ),
    (
        "claude-3-5-haiku-20241022",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
    ),
];

/// Fixed `created` of the OpenAI listing, so the answer never changes.
const OPENAI_MODELS_CREATED: u64 = 1_715_367_049;

fn dialect_of(headers: &HeaderMap) -> Dialect {
    let anthropic = headers.contains_key("anthropic-version")
        || (headers.contains_key("x-api-key") && !headers.contains_key("authorization"));
    if anthropic {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

fn error_response(dialect: Dialect, err: &ApiError, request_id: &str) -> Response {
    match dialect {
        Dialect::OpenAi => crate::openai::error::response(err, request_id),
        Dialect::Anthropic => crate::anthropic::error::response(err, request_id),
    }
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let sequence = shared.next_sequence();
    let request_id = ids::request_id(sequence);
    let dialect = dialect_of(&headers);
    let incoming = Incoming {
        endpoint: Endpoint::Models,
        dialect,
        path: uri.path(),
        headers: &headers,
        body: &[],
    };
    if let Err(err) = shared.admit(incoming).await {
        return error_response(dialect, &err, &request_id);
    }
    let (body, header) = match dialect {
        Dialect::OpenAi => (openai_list(), "x-request-id"),
        Dialect::Anthropic => (anthropic_list(), "request-id"),
    };
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(header, value);
    }
    response
}

fn openai_list() -> Value {
    let data: Vec<Value> = OPENAI_MODELS
        .iter()
        .map(|id| {
            json!({"id": id, "object": "model", "created": OPENAI_MODELS_CREATED, "owned_by": "system"})
        })
        .collect();
    json!({"object": "list", "data": data})
}

fn anthropic_list() -> Value {
    let data: Vec<Value> = ANTHROPIC_MODELS
        .iter()
        .map(|(id, name, created)| {
            json!({"type": "model", "id": id, "display_name": name, "created_at": created})
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": ANTHROPIC_MODELS.first().map(|m| m.0),
        "last_id": ANTHROPIC_MODELS.last().map(|m| m.0)
    })
}

/// Router fallback: counted under [`Endpoint::Unknown`], answered 404 in the
/// caller's dialect so a wrong base URL fails loudly and recognisably.
pub(crate) async fn unknown_path(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record_unknown(uri.path(), &headers, &body);
    let request_id = ids::request_id(shared.next_sequence());
    let err = ApiError::UnknownPath {
        method: method.to_string(),
        path: uri.path().to_owned(),
    };
    error_response(dialect_of(&headers), &err, &request_id)
}
