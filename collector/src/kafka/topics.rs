//! Start-up: reach the brokers once, then create the topics unless they
//! exist. A client that cannot connect (a refused TLS handshake, a failed
//! SASL login, a TLS client talking to a plaintext listener) stops start-up
//! with librdkafka's reason, not only "timed out".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaConfig, enforcement_topic};
use crate::config::client_error;

/// How long start-up waits for the brokers, and for the topics.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects, then creates the calls topic and its enforcement topic unless
/// they exist; fails, naming the reason, when the brokers cannot be reached.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<(), String> {
    let probe = config.clone();
    tokio::task::spawn_blocking(move || reach(&probe, START_TIMEOUT))
        .await
        .map_err(|e| format!("cannot reach Kafka: {e}"))??;

    let admin: AdminClient<DefaultClientContext> = config
        .client()
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {}", client_error(&e)))?;
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
    let options = AdminOptions::new().request_timeout(Some(START_TIMEOUT));
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

/// Asks the brokers for metadata until they answer, `timeout` passes, or a
/// TLS handshake or SASL login is refused; on failure, the last reason
/// librdkafka gave for a broker connection.
///
/// A producer, not the admin client: only a client whose event queue is
/// polled hands librdkafka's connection errors to its context.
fn reach(config: &KafkaConfig, timeout: Duration) -> Result<(), String> {
    let probe: BaseProducer<ConnectionErrors> = config
        .client()
        .create_with_context(ConnectionErrors::default())
        .map_err(|e| format!("cannot create a Kafka client: {}", client_error(&e)))?;
    let deadline = Instant::now() + timeout;
    let answer = loop {
        // Every topic's metadata: asking for ours could have a broker
        // create it with its own defaults (a producer may auto-create).
        let answer = probe
            .client()
            .fetch_metadata(None, Duration::from_millis(500));
        // Serves the log and error events queued meanwhile.
        probe.poll(Duration::from_millis(50));
        if answer.is_ok() || probe.context().refused() || Instant::now() >= deadline {
            break answer;
        }
    };
    match answer {
        Ok(_) => Ok(()),
        Err(e) => {
            let reason = probe.context().last().unwrap_or_else(|| e.to_string());
            let within = if probe.context().refused() {
                String::new()
            } else {
                format!(" within {}s", timeout.as_secs())
            };
            Err(format!(
                "cannot reach Kafka at {}{within}: {reason}",
                config.brokers
            ))
        }
    }
}

/// Remembers why librdkafka's last broker connection failed; logs as the
/// default context does.
#[derive(Default)]
struct ConnectionErrors {
    last: Mutex<Option<String>>,
    /// A TLS handshake or a SASL login failed: trying again until the
    /// deadline would not change the answer.
    refused: AtomicBool,
}

impl ConnectionErrors {
    fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    fn remember(&self, reason: &str) {
        // The refusal's own words are kept: later lines repeat it, shorter.
        if !self.refused() {
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
        }
    }

    fn last(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for ConnectionErrors {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // `FAIL`: a broker connection failed (a TLS handshake, a SASL
        // login, a refused or timed-out connection) and why.
        if fac == "FAIL" {
            // Without librdkafka's `[thrd:…]: ` prefix.
            let reason = message
                .strip_prefix("[thrd:")
                .and_then(|m| m.split_once("]: "))
                .map_or(message, |(_, reason)| reason);
            self.remember(reason);
        }
        DefaultClientContext.log(level, fac, message);
    }

    /// Not logged: the `FAIL` log line says the same.
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            // Follows every failed connection; the `FAIL` line says why.
            Some(RDKafkaErrorCode::AllBrokersDown) => {}
            Some(RDKafkaErrorCode::SSL | RDKafkaErrorCode::Authentication) => {
                self.remember(reason);
                self.refused.store(true, Ordering::Release);
            }
            _ => self.remember(reason),
        }
    }
}

impl ProducerContext for ConnectionErrors {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}
