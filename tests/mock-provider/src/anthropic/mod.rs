//! The Anthropic dialect: messages (JSON and the SSE event sequence), token
//! counting, and the `{"type": "error", "error": {...}}` envelope.

pub(crate) mod count_tokens;
pub(crate) mod error;
pub(crate) mod messages;
