//! The admin API (bearer token): rule reload, kill-switch blocks, overrides.

mod actions;
mod reload;
mod routes;

pub use actions::{AdminAction, AdminLog};
pub use reload::Reloader;
pub use routes::{AdminState, admin_router};
