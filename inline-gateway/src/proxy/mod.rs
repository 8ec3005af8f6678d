//! The proxy: from an authenticated request to the provider's answer, with
//! synchronous enforcement, fallback, translation and one row per call.
//!
//! - [`state`]: shared state and `model` -> chain resolution;
//! - [`handle`]: the flow of one call (admit, attempt, fall back, answer);
//! - [`attempt`]: one attempt on one link and what counts as a failure;
//! - [`relay`]: streamed answers, settled when they end or are cut;
//! - [`call`]: the row and reservations of a call, settled exactly once;
//! - [`limits`]: per-key limits;
//! - [`error`]: every non-provider answer, in the caller's dialect;
//! - [`models`]: `GET /v1/models`;
//! - [`stored`]: calls on responses a Responses API provider stores.

mod attempt;
mod call;
mod error;
mod handle;
mod limits;
mod models;
mod relay;
mod state;
mod stored;

pub(crate) use call::{KEY_LABEL, REQUEST_ID_LABEL, USAGE_ESTIMATED};
pub(crate) use error::ApiError;
pub use error::overloaded;
pub(crate) use handle::{Answer, handle, read_answer};
pub(crate) use models::list_models;
pub(crate) use state::Shared;
pub(crate) use stored::{StoredCall, count_input_tokens, stored_response};
