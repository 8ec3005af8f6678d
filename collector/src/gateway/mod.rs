//! The inline gateway inside `tollgate serve` (`gateway.enabled = true`):
//! what the collector gives it. The gateway admits and settles calls on
//! the collector's rules engine (same counters as observe mode); its rows
//! and the rule events its settlements produced go through the collector's
//! row queue; it asks the kill-switch before every call; virtual keys are
//! the admin API's keys with the `gateway` role; its counters are in
//! `/metrics` (`crate::internal_events`). With `[kafka]` its rows go to the
//! calls topic instead, marked as counted ([`KafkaRows`]).

mod kafka_rows;
mod rows;

pub use kafka_rows::{KafkaDeliveries, KafkaRows};
pub use rows::{KillSwitchBlocks, QueueRows};
