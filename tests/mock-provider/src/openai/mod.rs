//! The OpenAI dialect: chat completions and the Responses API (JSON and
//! SSE), embeddings, and the `{"error": {...}}` envelope.

pub(crate) mod chat;
pub(crate) mod embeddings;
pub(crate) mod error;
pub(crate) mod responses;
