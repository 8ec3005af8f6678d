//! The inline gateway: an OpenAI- and Anthropic-compatible proxy that the
//! `tollgate` binary mounts when `gateway.enabled = true`.
//!
//! It runs the same compiled rules as the collector, synchronously: every
//! call is admitted (`Engine::admit`, worst case reserved) before any
//! provider sees it and settled (`Engine::settle`) once it ends, and becomes
//! one [`tollgate_rules::CallRecord`] with mode `gateway`, handed to the
//! collector's pipeline through [`RowSink`].
//!
//! # Interface
//!
//! ```ignore
//! let deps = GatewayDeps { engine, prices, rows, keys, blocks, rebuild: None };
//! let app: axum::Router = tollgate_gateway::router(&config.gateway, deps)?;
//! let listener = tokio::net::TcpListener::bind(config.gateway.listen.as_str()).await?;
//! tollgate_gateway::serve(listener, app, shutdown).await?;
//! ```
//!
//! - [`GatewayConfig`] is `[gateway]` of `tollgate.toml`; [`GatewayConfig::validate`]
//!   checks it and reads provider keys (env or file) into a [`ValidConfig`].
//! - [`GatewayDeps`]: the shared [`Engine`](tollgate_rules::engine::Engine),
//!   the price table, a [`RowSink`], a [`KeyStore`] and a [`BlockCheck`].
//! - [`router`] (or [`Gateway`] for stats) builds the axum router; [`serve`]
//!   serves it with `TCP_NODELAY` on every accepted connection.
//! - Virtual keys: [`VirtualKey`], [`hash_key`], [`generate_key`],
//!   [`MemoryKeyStore`].
//!
//! # Endpoints
//!
//! | Route | Dialect |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI chat (JSON, SSE) |
//! | `POST /v1/embeddings` | OpenAI embeddings |
//! | `GET /v1/models` | what the key may use (Anthropic's format with `anthropic-version`) |
//! | `POST /v1/messages` | Anthropic messages (JSON, SSE) |
//! | `POST /v1/responses` | OpenAI Responses API (JSON, SSE); translated for upstreams without it |
//! | `GET`/`DELETE /v1/responses/{id}`, `POST …/cancel`, `GET …/input_items`, `POST /v1/responses/input_tokens` | calls on stored responses, passed to a Responses API provider; no rows |
//! | `GET /healthz` | unauthenticated liveness |
//!
//! Callers authenticate with a virtual key in `Authorization: Bearer` or
//! `x-api-key`. `X-Tollgate-User` sets the user when the key is bound to
//! none, `X-Tollgate-Session` the session, `X-Tollgate-Route` the row's
//! route (for budgets; a route chain is chosen by `model`). Every answer
//! carries `x-request-id` (the caller's own when it sent a sane one).
//!
//! `model` is a route name, `provider/model`, or a bare model that a
//! provider lists in `models`. The request never chooses an upstream URL.
//!
//! # Enforcement and rows
//!
//! Each attempt is admitted for its link's provider, model and region, with
//! the worst case, an upper bound rather than a guess (see `worst_case`):
//! the input's UTF-8 bytes plus per-message and tool overheads and a
//! per-image worst case, and `max_tokens` / `max_completion_tokens` (or
//! `default_max_tokens`, which is then sent to the provider) times `n` as
//! output, priced at the link's model. A Responses call whose input is
//! partly kept by the provider (`previous_response_id`, `conversation`,
//! stored prompts, item references, hosted tools) reserves
//! `unseen_input_tokens` more, and is settled with the billed usage. A refused link is skipped for the
//! next one; when none is admitted the caller gets 429 (403 for model,
//! region and custom rules, and for a model without a price under a budget
//! on cost: `model_unpriced`) with `Retry-After` and the rule's figures in
//! the dialect's error envelope. Kill-switch blocks and the key's
//! `allowed_models` refuse before that. An attempt that timed out after
//! the provider may have taken it on is settled at its worst case, not
//! released.
//!
//! Rows carry the virtual key id in `labels["key"]` (what `scope = ["key"]`
//! reads) and the gateway's request id in `labels["request_id"]`; tokens
//! are the provider's own figures, priced at the model that served. A row
//! whose usage is (partly) estimated — a stream cut by either side, a
//! provider that reported none — has `labels["usage_estimated"] = "true"`.
//!
//! # Fallback
//!
//! Timeouts, connection errors, 408, 429 and 5xx move to the next attempt
//! (retries on the same link with doubling backoff, then the next link); a
//! provider's circuit breaker opens after repeated failures. A stream falls
//! back until its first event reached the caller. Other 4xx are answered.

mod clock;
mod config;
mod deps;
mod dialect;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod glob;
mod internal_events;
mod keys;
mod providers;
mod proxy;
mod router;
mod secret;
mod sse;
mod translate;
mod usage;
mod worst_case;

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt;

pub use config::{
    CircuitBreakerConfig, GatewayConfig, InlineKey, ProviderConfig, ProviderKind, RouteConfig,
    TargetConfig, ValidConfig,
};
pub use deps::{
    Block, BlockCheck, BudgetLeases, CounterRebuild, GatewayDeps, Leased, MemoryRows, NoBlocks,
    RowRoom, RowSink, StaticBlocks,
};
pub use error::GatewayError;
pub use internal_events::GatewayStats;
pub use keys::{
    CONFIG_KEY_PREFIX, KEY_PREFIX, KeyLimits, KeyRefusal, KeyStore, MemoryKeyStore, Role,
    VirtualKey, bearer, check_roles_and_scope, generate_key, hash_key,
};
pub use proxy::overloaded;
pub use secret::Secret;

/// Row label holding the virtual key id.
pub const LABEL_KEY: &str = proxy::KEY_LABEL;
/// Row label holding the gateway's `x-request-id`.
pub const LABEL_REQUEST_ID: &str = proxy::REQUEST_ID_LABEL;
/// Row label set to `"true"` when the row's usage is (partly) estimated.
pub const LABEL_USAGE_ESTIMATED: &str = proxy::USAGE_ESTIMATED;

/// A built gateway: its router and its counters.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<proxy::Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("providers", &self.shared.providers)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates `config`, reads provider keys and builds one pooled client
    /// per provider.
    pub fn new(config: &GatewayConfig, deps: GatewayDeps) -> Result<Self, GatewayError> {
        Self::from_valid(&config.validate()?, deps)
    }

    /// Like [`Gateway::new`] from an already validated config.
    pub fn from_valid(config: &ValidConfig, deps: GatewayDeps) -> Result<Self, GatewayError> {
        Ok(Self {
            shared: Arc::new(proxy::Shared::new(config, deps)?),
        })
    }

    /// The gateway's routes, ready to serve.
    pub fn router(&self) -> axum::Router {
        router::build(Arc::clone(&self.shared))
    }

    /// Counters since start-up.
    pub fn stats(&self) -> GatewayStats {
        self.shared.events.snapshot()
    }
}

/// Builds the gateway's router from `[gateway]` and its collaborators.
pub fn router(config: &GatewayConfig, deps: GatewayDeps) -> Result<axum::Router, GatewayError> {
    Ok(Gateway::new(config, deps)?.router())
}

/// Serves `router` on `listener` with `TCP_NODELAY` on every accepted
/// connection (streamed chunks are small; Nagle would hold them back) until
/// `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(%err, "gateway: could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
