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

mod config;
mod consume;
mod enforcement;
mod produce;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

pub use config::{KafkaConfig, KafkaConfigError};
pub(crate) use consume::decode_call;
pub use consume::{CallConsumer, ResyncRequests};
pub(crate) use enforcement::decode_change;
pub use enforcement::{EnforcementSync, enforcement_topic};
pub use produce::{CallProducer, ProduceError};

/// Creates the topic unless it exists; fails when the brokers cannot be reached.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = config
        .client()
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
    let topic = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    );
    // Kill-switch changes: one partition (one order), compacted (the last
    // change of each block is what matters).
    let changes_topic = enforcement_topic(config);
    let changes = NewTopic::new(
        &changes_topic,
        1,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", "compact");
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics([&topic, &changes], &options)
        .await
        .map_err(|e| format!("cannot reach Kafka at {}: {e}", config.brokers))?;
    for r in results {
        match r {
            Ok(_) => {
                tracing::info!(topic = %config.topic, partitions = config.partitions, "Kafka topic created")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(format!("cannot create Kafka topic `{name}`: {code}"));
            }
        }
    }
    Ok(())
}
