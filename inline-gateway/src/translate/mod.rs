//! Bodies and streams between the caller's dialect and a link's: pass-through
//! with the few top-level fields the gateway sets, or OpenAI <-> Anthropic
//! translation of requests, answers and SSE events.

mod passthrough;
pub(crate) mod request;
pub(crate) mod response;
mod stream;

pub(crate) use passthrough::{RequestPeek, rewrite_top_level};
pub(crate) use stream::StreamTranslator;
