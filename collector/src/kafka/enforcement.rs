//! The kill-switch across instances. A block is decided on the process
//! instance that owns the scope's project, but an agent may watch any
//! instance. Every kill-switch change made here (a `block` rule tripping, an
//! admin block or lift) is published to `<topic>.enforcement` (one
//! partition, so one order for all instances), and every instance applies
//! the changes the others published, from the beginning of the topic at
//! start-up. Block expiry needs no message: each block carries its end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::KafkaConfig;
use crate::killswitch::{Block, Change, KillSwitch};

/// The topic of kill-switch changes next to the calls topic.
pub fn enforcement_topic(config: &KafkaConfig) -> String {
    format!("{}.enforcement", config.topic)
}

/// One change on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Wire {
    /// The instance that made the change (its own messages are skipped).
    origin: String,
    op: Op,
    block: Block,
    /// `Block::dims` is not part of the block's wire format; it is here.
    dims: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Set,
    Lift,
}

impl Wire {
    fn new(origin: &str, change: Change) -> Self {
        let (op, block) = match change {
            Change::Set(b) => (Op::Set, b),
            Change::Lift(b) => (Op::Lift, b),
        };
        Self {
            origin: origin.to_owned(),
            op,
            dims: block.dims.clone(),
            block,
        }
    }

    fn into_change(self) -> Change {
        let mut block = self.block;
        block.dims = self.dims;
        match self.op {
            Op::Set => Change::Set(block),
            Op::Lift => Change::Lift(block),
        }
    }
}

/// A message of the kill-switch topic: the instance that made the change,
/// and the change.
pub(crate) fn decode_change(payload: &[u8]) -> Result<(String, Change), serde_json::Error> {
    let mut wire: Wire = serde_json::from_slice(payload)?;
    let origin = std::mem::take(&mut wire.origin);
    Ok((origin, wire.into_change()))
}

/// Publishes local changes and applies remote ones until stopped.
pub struct EnforcementSync {
    stop: Arc<AtomicBool>,
    consumer: Option<JoinHandle<()>>,
    publisher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EnforcementSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnforcementSync").finish_non_exhaustive()
    }
}

impl EnforcementSync {
    pub fn start(config: &KafkaConfig, killswitch: &KillSwitch) -> Result<Self, KafkaError> {
        let topic = enforcement_topic(config);
        let origin = format!("{:016x}", rand::random::<u64>());

        let producer: FutureProducer = config
            .client()
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
        killswitch.publish_changes(tx);
        let publish_topic = topic.clone();
        let publish_origin = origin.clone();
        let publisher = tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let wire = Wire::new(&publish_origin, change);
                let key = format!("{}\u{1f}{}", wire.block.rule_id, wire.block.scope);
                let Ok(payload) = serde_json::to_vec(&wire) else {
                    continue;
                };
                let record = FutureRecord::to(&publish_topic).key(&key).payload(&payload);
                if let Err((e, _)) = producer.send(record, Duration::from_secs(10)).await {
                    tracing::error!(error = %e, scope = %wire.block.scope, "kill-switch change not published to other instances");
                }
            }
        });

        let consumer: BaseConsumer = config
            .client()
            // A group of its own: every instance reads every change.
            .set(
                "group.id",
                format!("{}-enforcement-{origin}", config.group_id),
            )
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let ks = killswitch.clone();
        let consumer = std::thread::Builder::new()
            .name("kafka-enforcement".to_owned())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => match m.payload().map(decode_change) {
                            Some(Ok((from, change))) if from != origin => ks.apply_remote(change),
                            Some(Ok(_)) => {}
                            _ => tracing::warn!("undecodable kill-switch change skipped"),
                        },
                        Some(Err(e)) => tracing::debug!(error = %e, "kill-switch change consumer"),
                        None => {}
                    }
                }
            })
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Self {
            stop,
            consumer: Some(consumer),
            publisher,
        })
    }

    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.consumer.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // The kill-switch held the sender: after it closes, queued changes go out.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.publisher).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_round_trips_with_its_dimensions() {
        let block = Block {
            rule_id: "daily".into(),
            scope: "project=search".into(),
            reason: "budget_exceeded".into(),
            until_unix_nanos: 42,
            limit: 10.0,
            used: 12.0,
            metric: "tokens".into(),
            dims: vec![("project".into(), "search".into())],
        };
        let wire = Wire::new("a", Change::Lift(block.clone()));
        let back: Wire = serde_json::from_slice(&serde_json::to_vec(&wire).unwrap()).unwrap();
        assert_eq!(back.into_change(), Change::Lift(block));
    }
}
