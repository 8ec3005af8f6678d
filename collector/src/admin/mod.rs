//! The admin API (bearer token): rule reload, kill-switch blocks, overrides.

mod reload;
mod routes;

pub use reload::Reloader;
pub use routes::{AdminState, admin_router};
