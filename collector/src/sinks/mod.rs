//! Sinks: where rows are written. One trait, one implementation per store,
//! chosen from `[storage]` by [`crate::config::StorageConfig::build`].

mod sink;
pub mod sqlite;

pub use sink::{Sink, SinkError};
