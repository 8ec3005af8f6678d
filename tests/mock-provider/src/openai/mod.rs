//! The OpenAI dialect: chat completions (JSON and SSE), embeddings, and the
//! `{"error": {...}}` envelope.

pub(crate) mod chat;
pub(crate) mod embeddings;
pub(crate) mod error;
