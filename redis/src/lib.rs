//! The shared budget ledger on a Redis-protocol server (Redis >= 7,
//! Valkey, DragonflyDB), so that several gateway instances enforce one
//! budget exactly.
//!
//! - [`config`]: `[redis]` as written, validated into a [`RedisTarget`];
//! - [`client`]: [`Redis`], one self-healing connection with timeouts and
//!   a round-trip count;
//! - [`ledger`]: [`RedisLedger`], the lease exchange of
//!   `tollgate_rules::engine::lease` as a Lua script, one round trip per
//!   exchange;
//! - [`error`]: what can go wrong ([`RedisError`]);
//! - `testing` (feature `testing`): a `redis-server` per test.

pub mod client;
pub mod config;
pub mod error;
pub mod ledger;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::Redis;
pub use config::{RedisConfig, RedisTarget};
pub use error::RedisError;
pub use ledger::{KEY_GRACE, MAX_AMOUNT, RedisLedger};
