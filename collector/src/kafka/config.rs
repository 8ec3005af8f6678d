//! `[kafka]`, validated.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::{KafkaRole, KafkaSection};

/// librdkafka properties the collector sets itself because the delivery
/// guarantee depends on them; `kafka.options` may not change them.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "compression.type",
    "compression.codec",
];

/// Kafka settings for the ingest and process roles.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub role: KafkaRole,
    pub group_id: String,
    pub compression: &'static str,
    pub partitions: i32,
    pub replication_factor: i32,
    pub produce_timeout: Duration,
    /// Extra librdkafka properties (may hold SASL passwords: never printed).
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("role", &self.role)
            .field("group_id", &self.group_id)
            .field("compression", &self.compression)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("produce_timeout", &self.produce_timeout)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What is wrong with `[kafka]`: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfigError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> KafkaConfigError {
    KafkaConfigError {
        field,
        message: message.into(),
    }
}

impl KafkaSection {
    /// `None` when Kafka is off (no brokers).
    pub fn validate(self) -> Result<Option<KafkaConfig>, KafkaConfigError> {
        let brokers = self.brokers.trim().to_owned();
        if brokers.is_empty() {
            return Ok(None);
        }
        for b in brokers.split(',') {
            let b = b.trim();
            let port_ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(bad(
                    "kafka.brokers",
                    format!("`{b}` is not host:port; write e.g. kafka:9092,kafka-2:9092"),
                ));
            }
        }
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self.topic != "."
            && self.topic != ".."
            && self
                .topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !topic_ok {
            return Err(bad(
                "kafka.topic",
                "must be 1-249 characters of letters, digits, `.`, `_`, `-`",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(bad("kafka.group_id", "must not be empty"));
        }
        let compression = match self.compression.as_str() {
            "none" => "none",
            "gzip" => "gzip",
            "snappy" => "snappy",
            "lz4" => "lz4",
            other => {
                return Err(bad(
                    "kafka.compression",
                    format!("`{other}` is not one of: none, gzip, snappy, lz4"),
                ));
            }
        };
        if self.partitions < 1 {
            return Err(bad("kafka.partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(bad("kafka.replication_factor", "must be at least 1"));
        }
        if self.produce_timeout.is_zero() {
            return Err(bad("kafka.produce_timeout", "must be greater than 0"));
        }
        if let Some(key) = self.options.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return Err(bad(
                "kafka.options",
                format!(
                    "`{key}` is set by the collector (its delivery guarantee depends on it); use the [kafka] field instead or remove it"
                ),
            ));
        }
        Ok(Some(KafkaConfig {
            brokers,
            topic: self.topic,
            role: self.role,
            group_id: self.group_id,
            compression,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            produce_timeout: self.produce_timeout,
            options: self.options,
        }))
    }
}

impl KafkaConfig {
    /// Whether receivers run here (and produce to Kafka).
    pub fn ingests(&self) -> bool {
        matches!(self.role, KafkaRole::All | KafkaRole::Ingest)
    }

    /// Whether a consumer runs here (and writes the store).
    pub fn processes(&self) -> bool {
        matches!(self.role, KafkaRole::All | KafkaRole::Process)
    }

    /// Client settings shared by producer, consumer and admin client.
    pub(super) fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(brokers: &str) -> KafkaSection {
        KafkaSection {
            brokers: brokers.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn off_without_brokers_and_defaults_otherwise() {
        assert_eq!(section("  ").validate(), Ok(None));
        let c = section("k1:9092, k2:9093").validate().unwrap().unwrap();
        assert_eq!(c.topic, "tollgate.calls");
        assert_eq!(c.compression, "lz4");
        assert!(c.ingests() && c.processes());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(KafkaSection, &str)> = vec![
            (section("kafka"), "kafka.brokers"),
            (
                KafkaSection {
                    topic: "a b".into(),
                    ..section("k:1")
                },
                "kafka.topic",
            ),
            (
                KafkaSection {
                    compression: "brotli".into(),
                    ..section("k:1")
                },
                "kafka.compression",
            ),
            (
                KafkaSection {
                    partitions: 0,
                    ..section("k:1")
                },
                "kafka.partitions",
            ),
            (
                KafkaSection {
                    group_id: " ".into(),
                    ..section("k:1")
                },
                "kafka.group_id",
            ),
            (
                KafkaSection {
                    options: [("enable.idempotence".to_owned(), "false".to_owned())].into(),
                    ..section("k:1")
                },
                "kafka.options",
            ),
        ];
        for (s, field) in cases {
            assert_eq!(s.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn option_values_are_not_printed() {
        let c = KafkaSection {
            options: [("sasl.password".to_owned(), "hunter2-canary".to_owned())].into(),
            ..section("k:1")
        }
        .validate()
        .unwrap()
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("sasl.password") && !shown.contains("hunter2-canary"));
    }
}
