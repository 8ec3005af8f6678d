//! The project's one fake: a mock LLM provider that speaks the OpenAI and
//! Anthropic wire formats (JSON and server-sent events) closely enough for
//! the official SDKs, instrumentation libraries, gateways and benchmarks to
//! treat it as the real thing.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tollgate_mock_provider::{MockConfig, MockProvider};
//! let mock = MockProvider::start(MockConfig::default()).await?;
//! let openai_base = format!("{}/v1", mock.base_url()); // OpenAI(base_url=…)
//! let anthropic_base = mock.base_url();               // Anthropic(base_url=…)
//! # let _ = (openai_base, anthropic_base);
//! mock.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! | Route | Dialect |
//! |---|---|
//! | `POST /v1/chat/completions`, `/chat/completions`, `/openai/v1/chat/completions`, `/openai/deployments/{d}/chat/completions` | OpenAI chat (JSON, SSE) |
//! | `POST /v1/responses`, `/responses`, `/openai/v1/responses` | OpenAI Responses API (JSON, SSE with named, numbered events) |
//! | `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, `POST /v1/responses/input_tokens` | stored responses (kept unless `store: false`), their input items, input token counts |
//! | `POST /v1/embeddings`, `/embeddings`, `/openai/v1/embeddings`, `/openai/deployments/{d}/embeddings` | OpenAI embeddings (`float` or `base64`) |
//! | `GET /v1/models`, `/models` | OpenAI or Anthropic list (Anthropic when `anthropic-version` is sent) |
//! | `POST /v1/messages` | Anthropic messages (JSON, SSE) |
//! | `POST /v1/messages/count_tokens` | Anthropic token count |
//!
//! Auth: OpenAI routes need `Authorization: Bearer …` (or Azure's `api-key`),
//! Anthropic routes `x-api-key` (or a bearer token); otherwise 401. Only
//! presence is checked. When a request offers tools, the answer is a call to
//! the first (or the forced) tool with arguments built from its schema,
//! unless `tool_choice` is none or the last turn is already a tool result
//! (for the Responses API: the last `input` item is a `function_call_output`;
//! built-in tools such as `web_search` are never called).
//!
//! # Deterministic usage
//!
//! Tests assert exact token counts; the rule (implemented by [`usage_for`]):
//!
//! * **text input tokens** `T = max(1, ceil(C / 4) + I)`, where `C` counts the
//!   Unicode characters of the request text and `I` the pre-tokenised ids:
//!   OpenAI chat — every message `content` string and every content part's
//!   `text`; OpenAI Responses — `instructions`, `input` as a string, and in an
//!   item list every message's `content` (string or its parts' `text`) and
//!   every `function_call_output`'s `output` (not `function_call` arguments
//!   nor `reasoning` items); Anthropic — `system` and every message's string content, `text`
//!   blocks and `tool_result` contents; embeddings — every `input` string
//!   (token-id inputs count one per id). Tool definitions are not counted.
//! * **output tokens** `N` = `x-mock-output-tokens` if sent, else
//!   `min(max_completion_tokens | max_tokens, default_output_tokens)`
//!   (`max_output_tokens` for the Responses API).
//!   The text is `N` words `"w0 w1 … w{N-1}"`, streamed one word per chunk.
//!   If `max_tokens` was the limit, the finish reason is `length` /
//!   `max_tokens` (a Responses API answer is `status: "incomplete"` with
//!   `incomplete_details.reason = "max_output_tokens"`), else `stop` /
//!   `end_turn` / `completed` (`tool_calls` / `tool_use` for tool calls,
//!   whose arguments stream in 4-character pieces).
//! * **cache** `R` = `x-mock-cache-read-tokens`, `W` = `x-mock-cache-write-tokens`,
//!   **reasoning** `X` = `x-mock-reasoning-tokens` (all default 0), on top of `T`.
//!
//! On the wire:
//!
//! | | OpenAI chat | OpenAI Responses | Anthropic |
//! |---|---|---|---|
//! | input | `prompt_tokens = T + R + W` (includes cache) | `input_tokens = T + R + W` (includes cache) | `input_tokens = T` (excludes cache) |
//! | cache | `prompt_tokens_details.cached_tokens = R` | `input_tokens_details.cached_tokens = R`, `input_tokens_details.cache_write_tokens = W` | `cache_read_input_tokens = R`, `cache_creation_input_tokens = W` |
//! | output | `completion_tokens = N + X`, `completion_tokens_details.reasoning_tokens = X` | `output_tokens = N + X`, `output_tokens_details.reasoning_tokens = X` | `output_tokens = N + X` |
//! | total | `total_tokens = T + R + W + N + X` | `total_tokens = T + R + W + N + X` | — |
//!
//! A Responses API answer with `X > 0` also carries an empty `reasoning`
//! item (`summary: []`) before its message or function call, as reasoning
//! models' answers do.
//!
//! Embeddings report `prompt_tokens = total_tokens = T`; knobs for output,
//! cache and reasoning do not apply to them.
//!
//! # Knobs
//!
//! Server-wide defaults live in [`MockConfig`]; request headers override them
//! for one call (see [`knobs`]): `x-mock-latency-ms` (before the response
//! headers), `x-mock-ttft-ms` (streaming, before the first event),
//! `x-mock-inter-chunk-ms`, `x-mock-status` (400–599, answered in the
//! dialect's error envelope; 429 carries `retry-after: 1`), `x-mock-hang`
//! (never answer until shutdown), `x-mock-output-tokens`,
//! `x-mock-cache-read-tokens`, `x-mock-cache-write-tokens`,
//! `x-mock-reasoning-tokens`, `x-mock-cut-after-chunks` (drop the connection
//! after N content chunks: no finish chunk, no usage, no `[DONE]`),
//! `x-mock-wide-char-tokens` (each non-ASCII character of the request text
//! is one input token, as real tokenizers about count CJK text). An
//! unreadable knob is a 400. The configured `error_rate` / `rate_limit_rate`
//! are applied deterministically (see the `faults` module docs).
//!
//! Streams pace as: TTFT, then the opening events and the first token
//! together, then `inter_chunk` before each further token; the closing
//! events follow the last token immediately.

mod anthropic;
mod config;
mod error;
mod faults;
mod ids;
pub mod knobs;
mod models;
mod openai;
mod server;
mod stats;
mod stream;
mod tools;
mod usage;

pub use config::{ConfigError, DEFAULT_OUTPUT_TOKENS, MockConfig, ResponseIds};
pub use error::ApiError;
pub use knobs::{KnobError, Knobs};
pub use openai::embeddings::DEFAULT_EMBEDDING_DIMENSIONS;
pub use server::{MockProvider, router};
pub use stats::{Endpoint, MockStats};
pub use usage::{
    Api, MockUsage, RequestText, input_tokens, output_pieces, output_text, request_text, usage_for,
};
