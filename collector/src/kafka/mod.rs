//! Kafka scale-out. With `[kafka] brokers` set, the collector splits into
//! two roles that run in one process (`role = "all"`) or apart:
//!
//! - **ingest**: receivers -> normalise + price -> [`CallProducer`]: one
//!   message per call on the topic, keyed by project; the OTLP request is
//!   answered only once Kafka acknowledged every call (idempotent producer,
//!   `acks=all`);
//! - **process**: [`CallConsumer`] in a consumer group -> dedup -> rules ->
//!   store; offsets are committed only after the store wrote the rows.
//!
//! The inline gateway runs on ingest instances (`ingest` or `all`): its
//! calls go to the same topic, marked as counted ([`SETTLED_HEADER`]), so
//! the process role stores them once and does not count them again
//! (`crate::gateway::KafkaRows`).
//!
//! Delivery: at-least-once into Kafka (a sender retrying a request may
//! produce a call twice), exactly-once rows in the store: repeats are
//! dropped by span identity in the dedup window (refilled from the store on
//! every partition assignment) and a retried store write carries the same
//! deduplication token. Every call of a project goes to one partition, so a
//! project's counters live on one process instance; budgets scoped wider
//! than a project (an org across projects) are counted per instance.
//!
//! The kill-switch is shared: every instance publishes its blocks and lifts
//! to `<topic>.enforcement` and applies the others' ([`EnforcementSync`]),
//! so an agent may watch any instance.

mod consume;
mod enforcement;
mod produce;
mod topics;

pub use crate::config::{KafkaConfig, KafkaConfigError, client_error};
pub(crate) use consume::decode_call;
pub use consume::{CallConsumer, ResyncRequests};
pub(crate) use enforcement::decode_change;
pub use enforcement::{EnforcementSync, enforcement_topic};
pub use produce::{
    CallProducer, Delivery, ProduceError, SETTLED_HEADER, SETTLED_VALUE, SettledCall,
};
pub use topics::ensure_topic;
