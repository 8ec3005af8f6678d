//! The running mock: shared state, the request admission steps every
//! endpoint goes through (stats, knobs, latency, auth, forced errors), the
//! router and the [`MockProvider`] handle that starts and stops it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::MockConfig;
use crate::error::ApiError;
use crate::faults::FaultSequence;
use crate::knobs::Knobs;
use crate::stats::{Endpoint, MockStats, StatsRecorder};
use crate::{anthropic, models, openai};

/// Request bodies larger than axum's 2 MiB default are normal for LLM calls
/// with long contexts; benchmarks must not trip over the mock's limit.
const BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// How long [`MockProvider::shutdown`] waits for in-flight requests before
/// abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The wire dialect an endpoint speaks; decides auth headers and error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
}

/// State shared by every handler of one mock instance.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) stats: StatsRecorder,
    faults: FaultSequence,
    sequence: AtomicU64,
    /// Responses API answers kept for retrieval (`store` not false), by id.
    pub(crate) stored: openai::responses::Store,
    /// Kept here (not only in [`MockProvider`]) so a router embedded without
    /// a handle never sees the channel close and end its hung requests.
    shutdown: watch::Sender<bool>,
}

/// One request as it arrives, before admission.
pub(crate) struct Incoming<'a> {
    pub(crate) endpoint: Endpoint,
    pub(crate) dialect: Dialect,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

/// A request that passed admission.
pub(crate) struct Admitted {
    pub(crate) knobs: Knobs,
    pub(crate) body: Value,
}

impl Shared {
    fn new(config: MockConfig) -> Self {
        Self {
            config,
            stats: StatsRecorder::default(),
            faults: FaultSequence::default(),
            sequence: AtomicU64::new(1),
            stored: openai::responses::Store::default(),
            shutdown: watch::Sender::new(false),
        }
    }

    /// A per-instance sequence number; ids derived from it are deterministic
    /// for a fresh mock, which keeps captured fixtures reproducible.
    pub(crate) fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Serves one request the way every endpoint does: a sequence number
    /// and the request id derived from it, admission (stats, knobs, faults),
    /// then `reply`; errors in the dialect's envelope; the request id header
    /// under the dialect's name (`x-request-id`, Anthropic's `request-id`).
    pub(crate) async fn serve(
        &self,
        incoming: Incoming<'_>,
        reply: impl FnOnce(Admitted, u64) -> Result<axum::response::Response, ApiError>,
    ) -> axum::response::Response {
        let sequence = self.next_sequence();
        let request_id = crate::ids::request_id(sequence);
        let dialect = incoming.dialect;
        let result = match self.admit(incoming).await {
            Ok(admitted) => reply(admitted, sequence),
            Err(err) => Err(err),
        };
        let (mut response, header) = match (result, dialect) {
            (Ok(response), Dialect::OpenAi) => (response, "x-request-id"),
            (Ok(response), Dialect::Anthropic) => (response, "request-id"),
            (Err(err), Dialect::OpenAi) => return openai::error::response(&err, &request_id),
            (Err(err), Dialect::Anthropic) => {
                return anthropic::error::response(&err, &request_id);
            }
        };
        if let Ok(value) = axum::http::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(header, value);
        }
        response
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) async fn wait_for_shutdown(&self) {
        let mut receiver = self.shutdown.subscribe();
        // An error means the sender is gone, which is a shutdown as well.
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }

    /// The steps every endpoint shares, in the order a real provider's edge
    /// would apply them: record, hang, latency, auth, forced errors, body.
    pub(crate) async fn admit(&self, incoming: Incoming<'_>) -> Result<Admitted, ApiError> {
        let parsed = if incoming.body.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(incoming.body)
        };
        let recorded = parsed.as_ref().unwrap_or(&Value::Null);
        self.stats
            .record(incoming.endpoint, incoming.path, incoming.headers, recorded);
        tracing::debug!(
            endpoint = incoming.endpoint.as_str(),
            path = incoming.path,
            "request"
        );

        let knobs = Knobs::from_headers(incoming.headers)?;
        if knobs.hang {
            self.wait_for_shutdown().await;
            return Err(ApiError::ShuttingDown);
        }
        let latency = knobs.latency.unwrap_or(self.config.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if !has_api_key(incoming.dialect, incoming.headers) {
            return Err(ApiError::MissingApiKey);
        }
        if let Some(code) = knobs.status {
            return Err(ApiError::forced(code));
        }
        if is_model_call(incoming.endpoint)
            && let Some(status) = self
                .faults
                .next_fault(self.config.error_rate, self.config.rate_limit_rate)
        {
            return Err(ApiError::Forced(status));
        }
        let body = parsed.map_err(|err| ApiError::InvalidJson(err.to_string()))?;
        Ok(Admitted { knobs, body })
    }

    /// Records a request that matched no route.
    pub(crate) fn record_unknown(&self, path: &str, headers: &HeaderMap, body: &[u8]) {
        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.stats.record(Endpoint::Unknown, path, headers, &body);
    }
}

fn is_model_call(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Embeddings | Endpoint::Messages
    )
}

/// OpenAI takes `Authorization: Bearer`, Azure `api-key`; Anthropic takes
/// `x-api-key`, or a bearer token (its OAuth path). Only presence is checked.
fn has_api_key(dialect: Dialect, headers: &HeaderMap) -> bool {
    let present = |name: &str| {
        headers
            .get(name)
            .is_some_and(|value| !value.as_bytes().trim_ascii().is_empty())
    };
    let bearer = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| !token.trim().is_empty());
    match dialect {
        Dialect::OpenAi => bearer || present("api-key"),
        Dialect::Anthropic => present("x-api-key") || bearer,
    }
}

/// The mock's routes, for embedding in another server or test harness.
/// Requests counted by this router are not visible through a
/// [`MockProvider`]; use [`MockProvider::start`] when a test needs stats.
pub fn router(config: MockConfig) -> Router {
    build_router(Arc::new(Shared::new(config)))
}

fn build_router(shared: Arc<Shared>) -> Router {
    Router::new()
        // OpenAI, with and without `/v1` in the base URL, plus both Azure styles.
        .route("/v1/chat/completions", post(openai::chat::handle))
        .route("/chat/completions", post(openai::chat::handle))
        .route("/openai/v1/chat/completions", post(openai::chat::handle))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(openai::chat::handle_azure),
        )
        .route("/v1/responses", post(openai::responses::handle))
        .route("/responses", post(openai::responses::handle))
        .route("/openai/v1/responses", post(openai::responses::handle))
        .route(
            "/v1/responses/input_tokens",
            post(openai::responses::input_tokens),
        )
        .route(
            "/v1/responses/{id}",
            get(openai::responses::retrieve).delete(openai::responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(openai::responses::input_items),
        )
        .route("/v1/embeddings", post(openai::embeddings::handle))
        .route("/embeddings", post(openai::embeddings::handle))
        .route("/openai/v1/embeddings", post(openai::embeddings::handle))
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(openai::embeddings::handle_azure),
        )
        .route("/v1/models", get(models::handle))
        .route("/models", get(models::handle))
        // Anthropic.
        .route("/v1/messages", post(anthropic::messages::handle))
        .route(
            "/v1/messages/count_tokens",
            post(anthropic::count_tokens::handle),
        )
        .fallback(models::unknown_path)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(shared)
}

/// A mock provider serving on a local port until [`MockProvider::shutdown`]
/// (or drop, which stops it without waiting).
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl MockProvider {
    /// Binds `127.0.0.1:0` and starts serving on a background task.
    pub async fn start(config: MockConfig) -> std::io::Result<MockProvider> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Like [`MockProvider::start`] on a chosen address (the binary's `--listen`).
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockProvider> {
        config
            .validate()
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        // Streamed chunks are tiny; Nagle's algorithm would hold them back and
        // blur the TTFT and inter-chunk timings benchmarks measure.
        let listener = listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::warn!(%err, "could not set TCP_NODELAY");
            }
        });
        let shared = Arc::new(Shared::new(config));
        let app = build_router(Arc::clone(&shared));
        let stopping = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopping.wait_for_shutdown().await })
                .await
        });
        Ok(MockProvider {
            addr,
            shared,
            server: Some(server),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing slash or `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the mock has seen so far.
    pub fn stats(&self) -> MockStats {
        self.shared.stats.snapshot()
    }

    /// Stops accepting, ends hung requests and open streams, and waits (up
    /// to a few seconds) for in-flight responses to finish.
    pub async fn shutdown(mut self) {
        self.shared.begin_shutdown();
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => tracing::warn!(%err, "mock provider server failed"),
                Ok(Err(err)) => tracing::warn!(%err, "mock provider server task failed"),
                Err(_) => {
                    tracing::warn!("mock provider did not stop in time; aborting");
                    server.abort();
                }
            }
        }
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}
