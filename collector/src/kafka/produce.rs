//! The ingest role's producer: one message per call, keyed by project, so
//! that every call of a project lands on one partition and therefore on one
//! process instance. Idempotent, `acks=all`; a request is acknowledged to its
//! sender only once Kafka acknowledged every call in it.
//!
//! The inline gateway's calls go the same way, but are handed over without
//! waiting ([`CallProducer::enqueue_settled`]) and carry [`SETTLED_HEADER`]:
//! the gateway's engine counted them when it settled them, so the process
//! role stores them without counting them again.

use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tollgate_rules::CallRecord;

use super::KafkaConfig;

/// Why calls were not accepted by Kafka.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The producer's local queue is full: the sender should retry later.
    #[error("the Kafka producer queue is full")]
    Full,
    /// Kafka did not acknowledge in time, or refused.
    #[error("Kafka did not acknowledge the calls: {0}")]
    Failed(String),
}

/// The header of a message whose call the rules engine already counted (a
/// gateway call, settled when it ended): its value is [`SETTLED_VALUE`].
/// The process role stores such a call without counting it; a call without
/// the header is counted there.
pub const SETTLED_HEADER: &str = "tollgate-settled";
pub const SETTLED_VALUE: &[u8] = b"gateway";

/// A settled call encoded once, to hand to the producer (again, after a
/// failed delivery).
#[derive(Debug, Clone)]
pub struct SettledCall {
    key: String,
    payload: Vec<u8>,
}

impl SettledCall {
    pub fn encode(call: &CallRecord) -> Result<Self, ProduceError> {
        Ok(Self {
            key: call.project.clone().unwrap_or_default(),
            payload: serde_json::to_vec(call)
                .map_err(|e| ProduceError::Failed(format!("cannot encode a call: {e}")))?,
        })
    }
}

/// Resolves once Kafka acknowledged one message, or gave up on it.
pub type Delivery = BoxFuture<'static, Result<(), ProduceError>>;

/// Produces call records to the configured topic.
#[derive(Clone)]
pub struct CallProducer {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for CallProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl CallProducer {
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut client = config.client();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", config.compression)
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set(
                "message.timeout.ms",
                config.produce_timeout.as_millis().to_string(),
            );
        Ok(Self {
            producer: client.create()?,
            topic: config.topic.clone(),
        })
    }

    /// Sends `calls` and waits until Kafka acknowledged all of them.
    ///
    /// On an error some calls may already be in Kafka; the sender retries
    /// the whole request and the process role drops the repeats (the dedup
    /// window keys on span identity), so delivery into Kafka is
    /// at-least-once and rows in the store are exactly-once.
    pub async fn send(&self, calls: &[CallRecord]) -> Result<(), ProduceError> {
        let mut pending = Vec::with_capacity(calls.len());
        for call in calls {
            let payload = serde_json::to_vec(call)
                .map_err(|e| ProduceError::Failed(format!("cannot encode a call: {e}")))?;
            let record = FutureRecord::to(&self.topic)
                .key(call.project.as_deref().unwrap_or_default())
                .payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(ProduceError::Full);
                }
                Err((e, _)) => return Err(ProduceError::Failed(e.to_string())),
            }
        }
        for outcome in join_all(pending).await {
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(ProduceError::Failed(e.to_string())),
                Err(_) => return Err(ProduceError::Failed("the producer stopped".to_owned())),
            }
        }
        Ok(())
    }

    /// Hands one settled call to the producer without waiting for Kafka;
    /// the returned [`Delivery`] tells whether Kafka took it. `Full` when
    /// the producer's local queue has no room now.
    pub fn enqueue_settled(&self, call: &SettledCall) -> Result<Delivery, ProduceError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: SETTLED_HEADER,
            value: Some(SETTLED_VALUE),
        });
        let record = FutureRecord::to(&self.topic)
            .key(&call.key)
            .payload(&call.payload)
            .headers(headers);
        match self.producer.send_result(record) {
            Ok(delivery) => Ok(delivery
                .map(|outcome| match outcome {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(ProduceError::Failed(e.to_string())),
                    Err(_) => Err(ProduceError::Failed("the producer stopped".to_owned())),
                })
                .boxed()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(ProduceError::Full)
            }
            Err((e, _)) => Err(ProduceError::Failed(e.to_string())),
        }
    }

    /// Waits for what is in flight (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "Kafka producer did not flush before shutdown");
        }
    }
}
