//! What administrators change at run time, kept in the store's admin log:
//! overrides, snoozes, blocks and lifts ([`AdminAction`]), and keys
//! ([`KeyCache`]). The HTTP routes that make them are in `crate::api`.

mod actions;
mod keys;

pub use actions::{AdminAction, AdminLog};
pub use keys::{KeyCache, KeyInfo, NewKey};
