//! Sinks: where rows are written. One trait, one implementation per store,
//! chosen from `[storage]` by [`StorageConfig::build`].

pub mod clickhouse;
pub mod outbox;
mod sink;
pub mod sqlite;
mod store;

pub use outbox::{AlertOutbox, DeliveryState, OutboxEntry, Outcome, Pending};
pub use sink::{Batch, CallMerge, Correction, Sink, SinkError};
pub use store::{StorageConfig, Store};
