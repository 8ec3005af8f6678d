//! The kill-switch watcher: what an agent consults before every model call.
//!
//! [`KillSwitch`] (in `switch.rs`) is the handle; `watcher.rs` is the
//! background task that follows the collector over gRPC, falling back to
//! HTTP polling; `state.rs` holds the received state, the [`Blocked`]
//! refusal and [`KeyRefused`] (the collector refused the key);
//! `guard.rs` the result of a guarded call.

mod config;
mod error;
mod guard;
mod state;
mod switch;
mod watcher;

#[cfg(test)]
mod tests;

pub use config::KillSwitchConfig;
pub use error::KillSwitchError;
pub use guard::GuardError;
pub use state::{BlockUsage, Blocked, EnforcementSnapshot, KeyRefused, StateSource};
pub use switch::KillSwitch;
