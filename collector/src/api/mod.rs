//! The HTTP API on port 7070: usage queries, latest calls, health and metrics.

mod error;
mod routes;

pub use error::ApiError;
pub use routes::{ApiState, api_router};
