//! The admin API (admin token or `admin` key): rule reload, kill-switch
//! blocks, overrides, keys.

mod actions;
mod keys;
mod reload;
mod routes;

pub use actions::{AdminAction, AdminLog};
pub use keys::{KeyCache, KeyInfo, NewKey};
pub use reload::Reloader;
pub use routes::{AdminState, admin_router};
