//! The axum router: the endpoints, and the layers every request passes —
//! request id (outermost: every answer carries `x-request-id`), then
//! virtual-key authentication. Handlers stay thin and call [`crate::proxy`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::dialect::{Dialect, Operation};
use crate::keys::{KeyRefusal, Role, VirtualKey, bearer, hash_key};
use crate::proxy::{self, ApiError, Shared, StoredCall};

pub(crate) const REQUEST_ID: &str = "x-request-id";
const ANTHROPIC_REQUEST_ID: &str = "request-id";

/// The caller's key, once authenticated.
#[derive(Clone)]
pub(crate) struct Caller(pub Arc<VirtualKey>);

/// The request's id, as sent back in `x-request-id`.
#[derive(Clone)]
pub(crate) struct RequestId(pub HeaderValue);

/// Request ids: a random per-process prefix and a counter; unique, cheap,
/// and they say nothing about the caller.
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        Self {
            prefix: rand::random(),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("tg-{:016x}{n:016x}", self.prefix);
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("tg-unknown"))
    }
}

/// A caller's own id is kept when it is short, printable and has no spaces.
fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    ids: Arc<RequestIds>,
}

pub(crate) fn build(shared: Arc<Shared>) -> Router {
    let state = AppState {
        shared,
        ids: Arc::new(RequestIds::new()),
    };
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/responses", post(responses))
        .route("/v1/responses/input_tokens", post(input_tokens))
        .route("/v1/responses/{id}", get(retrieve).delete(delete))
        .route("/v1/responses/{id}/cancel", post(cancel))
        .route("/v1/responses/{id}/input_items", get(input_items))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| acceptable_id(v))
        .cloned()
        .unwrap_or_else(|| state.ids.next());
    req.extensions_mut().insert(RequestId(id.clone()));
    let anthropic = dialect_of(req.uri().path()) == Dialect::Anthropic;
    let mut resp = next.run(req).await;
    if anthropic {
        // Anthropic's SDKs read their request id from `request-id`.
        resp.headers_mut().insert(ANTHROPIC_REQUEST_ID, id.clone());
    }
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}

fn dialect_of(path: &str) -> Dialect {
    if path.starts_with("/v1/messages") {
        Dialect::Anthropic
    } else if path.starts_with("/v1/responses") {
        Dialect::Responses
    } else {
        Dialect::OpenAi
    }
}

/// The virtual key a request presents: `Authorization: Bearer` (OpenAI
/// SDKs), `x-api-key` (Anthropic SDKs) or `api-key` (Azure clients).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let dialect = dialect_of(req.uri().path());
    let rid = req
        .extensions()
        .get::<RequestId>()
        .and_then(|r| r.0.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    let events = &state.shared.events;
    let key = match presented_key(req.headers()) {
        None => {
            events.auth_failed(&rid, "missing");
            return ApiError::Unauthorized(
                "no virtual key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
            )
            .into_response(dialect);
        }
        Some(secret) => state.shared.deps.keys.lookup(&hash_key(secret)),
    };
    let key = match key {
        None => {
            events.auth_failed(&rid, "unknown");
            return ApiError::Unauthorized("this virtual key is not valid").into_response(dialect);
        }
        Some(k) => k,
    };
    if let Err(refusal) = key.permits(Role::Gateway, crate::clock::now_unix_nanos()) {
        events.auth_failed(&rid, refusal.reason());
        let message = match refusal {
            KeyRefusal::Revoked => "this virtual key was revoked",
            KeyRefusal::Expired => "this virtual key has expired",
            KeyRefusal::Role(_) => {
                "this key may not call the gateway (it lacks the `gateway` role)"
            }
        };
        return ApiError::Unauthorized(message).into_response(dialect);
    }
    // Nothing past this point needs the caller's secret.
    for name in ["authorization", "x-api-key", "api-key"] {
        req.headers_mut().remove(name);
    }
    req.extensions_mut().insert(Caller(key));
    next.run(req).await
}

async fn chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy::handle(
        state.shared,
        Operation::Chat,
        caller.0,
        rid.0,
        headers,
        body,
    )
    .await
}

async fn embeddings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy::handle(
        state.shared,
        Operation::Embeddings,
        caller.0,
        rid.0,
        headers,
        body,
    )
    .await
}

async fn messages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy::handle(
        state.shared,
        Operation::Messages,
        caller.0,
        rid.0,
        headers,
        body,
    )
    .await
}

async fn responses(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy::handle(
        state.shared,
        Operation::Responses,
        caller.0,
        rid.0,
        headers,
        body,
    )
    .await
}

async fn input_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Response {
    proxy::count_input_tokens(state.shared, caller.0, body).await
}

async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = query.as_deref();
    proxy::stored_response(state.shared, StoredCall::Retrieve, &id, q, &headers).await
}

async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    proxy::stored_response(state.shared, StoredCall::Delete, &id, None, &headers).await
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    proxy::stored_response(state.shared, StoredCall::Cancel, &id, None, &headers).await
}

async fn input_items(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = query.as_deref();
    proxy::stored_response(state.shared, StoredCall::InputItems, &id, q, &headers).await
}

async fn models(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    proxy::list_models(&state.shared, &caller.0, &headers)
}

async fn not_found(req: Request) -> Response {
    let dialect = dialect_of(req.uri().path());
    let mut r = ApiError::NotFound.into_response(dialect);
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_each_header_style() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("tg-b"));
        assert_eq!(presented_key(&h), Some("tg-b"));
        h.insert("authorization", HeaderValue::from_static("Bearer  tg-a "));
        assert_eq!(presented_key(&h), Some("tg-a"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), None);
    }

    #[test]
    fn request_ids_are_unique_and_caller_ids_are_checked() {
        let ids = RequestIds::new();
        assert_ne!(ids.next(), ids.next());
        assert!(acceptable_id(&HeaderValue::from_static("abc-123")));
        assert!(!acceptable_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_id(&HeaderValue::from_static("")));
    }
}
