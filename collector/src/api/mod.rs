//! The HTTP API on port 7070: usage queries, latest calls, events, health
//! and metrics, and the admin API (`/admin/v1`).

mod admin;
mod error;
mod routes;

pub use admin::{AdminState, admin_router};
pub use error::ApiError;
pub use routes::{ApiState, api_router};
