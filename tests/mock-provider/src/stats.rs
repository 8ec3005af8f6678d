//! What the mock has seen: request counts per endpoint and the last request,
//! so tests can assert what a gateway or SDK actually sent upstream.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use serde_json::Value;

/// The endpoints the mock serves, whatever path alias was used to reach them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// OpenAI chat completions (`/v1/chat/completions`, `/chat/completions`, Azure).
    ChatCompletions,
    /// OpenAI Responses API (`/v1/responses`, `/responses`, `/openai/v1/responses`).
    Responses,
    /// OpenAI embeddings (`/v1/embeddings`, `/embeddings`, Azure).
    Embeddings,
    /// Model listing (`GET /v1/models`, either dialect).
    Models,
    /// Anthropic messages (`/v1/messages`).
    Messages,
    /// Anthropic token counting (`/v1/messages/count_tokens`).
    CountTokens,
    /// Calls on stored responses and the Responses API's token count
    /// (`/v1/responses/{id}`, `…/input_items`, `/v1/responses/input_tokens`).
    StoredResponses,
    /// Any path the mock does not serve (answered 404).
    Unknown,
}

impl Endpoint {
    /// A stable name, e.g. for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
            Self::StoredResponses => "stored_responses",
            Self::Unknown => "unknown",
        }
    }
}

/// A snapshot of what the mock has seen since it started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MockStats {
    /// Requests per endpoint, rejected ones included.
    pub requests: BTreeMap<Endpoint, u64>,
    /// All requests.
    pub total_requests: u64,
    /// The path (without query) of the last request.
    pub last_path: Option<String>,
    /// The last request's headers, lower-case names, in arrival order.
    pub last_headers: Vec<(String, String)>,
    /// The last request's body; `Null` when empty or not JSON.
    pub last_body: Value,
    /// Tokens billed: input plus output of the usage of every chat
    /// completion and message answered (what a provider would charge for).
    pub billed_tokens: u64,
}

impl MockStats {
    /// Requests seen by `endpoint`.
    pub fn requests_to(&self, endpoint: Endpoint) -> u64 {
        self.requests.get(&endpoint).copied().unwrap_or(0)
    }

    /// The first value of header `name` (case-insensitive) in the last request.
    pub fn last_header(&self, name: &str) -> Option<&str> {
        self.last_headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// The shared, mutable side of [`MockStats`].
#[derive(Default)]
pub(crate) struct StatsRecorder {
    inner: Mutex<MockStats>,
}

impl StatsRecorder {
    pub(crate) fn record(&self, endpoint: Endpoint, path: &str, headers: &HeaderMap, body: &Value) {
        let last_headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut stats = self.lock();
        *stats.requests.entry(endpoint).or_insert(0) += 1;
        stats.total_requests += 1;
        stats.last_path = Some(path.to_owned());
        stats.last_headers = last_headers;
        stats.last_body = body.clone();
    }

    /// Counts the usage of an answered model call as billed.
    pub(crate) fn bill(&self, tokens: u64) {
        self.lock().billed_tokens += tokens;
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        self.lock().clone()
    }

    /// A panic while holding the lock cannot leave the counters half-written
    /// in a way that matters to a test, so a poisoned lock is simply reused.
    fn lock(&self) -> std::sync::MutexGuard<'_, MockStats> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
