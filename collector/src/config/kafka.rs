//! `[kafka]`, validated.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use super::raw::{KafkaRole, KafkaSection, is_secret_kafka_option, redacted_kafka_options};

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

/// librdkafka properties naming a file (or a directory of CA certificates)
/// that librdkafka reads when a client is created.
const FILE_OPTIONS: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.crl.location",
    "ssl.keystore.location",
    "sasl.kerberos.keytab",
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
    /// Extra librdkafka properties (may hold passwords: secret values are
    /// never printed).
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
            .field("options", &redacted_kafka_options(&self.options))
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
        // librdkafka checks names and values here (an unknown property, a
        // protocol this build lacks); what is in the files is checked when a
        // client is created, at start-up.
        let mut native = ClientConfig::new();
        native.extend(self.options.clone());
        native
            .create_native_config()
            .map_err(|e| bad("kafka.options", client_error(&e)))?;
        for (key, path) in &self.options {
            // `probe`: librdkafka looks for the system's CA certificates.
            if !FILE_OPTIONS.contains(&key.as_str())
                || (key == "ssl.ca.location" && path == "probe")
            {
                continue;
            }
            if let Err(e) = readable(path) {
                return Err(bad(
                    "kafka.options",
                    format!("`{key}`: cannot read `{path}`: {e}"),
                ));
            }
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
    pub(crate) fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

/// A file that can be opened, or a directory.
fn readable(path: &str) -> std::io::Result<()> {
    if std::fs::metadata(path)?.is_dir() {
        return Ok(());
    }
    std::fs::File::open(path).map(drop)
}

/// librdkafka's reason a client could not be configured or created, naming
/// the property and never a secret value (librdkafka's own text quotes the
/// value it refused).
pub fn client_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, _, key, _) if is_secret_kafka_option(key) => {
            format!("`{key}`: invalid value")
        }
        KafkaError::ClientConfig(_, reason, key, _) => format!("`{key}`: {reason}"),
        KafkaError::ClientCreation(reason) => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::BaseProducer;

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

    fn with_options(options: &[(&str, &str)]) -> KafkaSection {
        KafkaSection {
            options: options
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            // Nothing listens there; creating a client connects to nothing yet.
            ..section("127.0.0.1:1")
        }
    }

    #[test]
    fn secret_option_values_are_not_printed() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let ca = ca.path().to_str().unwrap();
        let section = with_options(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.password", "hunter2-canary"),
            ("ssl.key.password", "keypass-canary"),
            ("ssl.ca.location", ca),
        ]);
        let raw = format!("{section:?}");
        let validated = format!("{:?}", section.validate().unwrap().unwrap());
        for shown in [raw, validated] {
            assert!(!shown.contains("hunter2-canary"), "{shown}");
            assert!(!shown.contains("keypass-canary"), "{shown}");
            assert!(
                shown.contains(r#""sasl.password": "<redacted>""#),
                "{shown}"
            );
            assert!(
                shown.contains(r#""ssl.key.password": "<redacted>""#),
                "{shown}"
            );
            // What is not a secret stays visible, for whoever debugs TLS.
            assert!(shown.contains(ca), "{shown}");
        }
        for secret in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
        ] {
            assert!(is_secret_kafka_option(secret), "{secret}");
        }
        assert!(!is_secret_kafka_option("sasl.username"));
    }

    /// A build of librdkafka without OpenSSL refuses this at validation:
    /// `kafka.options`: `security.protocol`: Unsupported value "SSL" for
    /// configuration property "security.protocol": OpenSSL not available at
    /// build time.
    #[test]
    fn tls_protocols_are_accepted_by_librdkafka() {
        for options in [
            vec![("security.protocol", "SSL")],
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "tollgate"),
                ("sasl.password", "secret"),
            ],
        ] {
            let config = with_options(&options)
                .validate()
                .unwrap_or_else(|e| panic!("{options:?}: {}: {}", e.field, e.message))
                .unwrap();
            let created: Result<BaseProducer, _> = config.client().create();
            if let Err(e) = created {
                panic!("{options:?}: {}", client_error(&e));
            }
        }
    }

    #[test]
    fn a_bad_option_is_named_at_validation() {
        for (options, named, why) in [
            (
                vec![("security.protocol", "TLS")],
                "`security.protocol`",
                "Invalid value \"TLS\"",
            ),
            (
                vec![("ssl.ca.locaton", "/ca.pem")],
                "`ssl.ca.locaton`",
                "No such configuration property",
            ),
        ] {
            let e = with_options(&options).validate().unwrap_err();
            assert_eq!(e.field, "kafka.options");
            assert!(
                e.message.contains(named) && e.message.contains(why),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn a_missing_tls_file_is_named_at_validation() {
        for key in [
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
        ] {
            let e = with_options(&[
                ("security.protocol", "SSL"),
                (key, "/nonexistent/tollgate-test.pem"),
            ])
            .validate()
            .unwrap_err();
            assert_eq!(e.field, "kafka.options");
            assert!(
                e.message.starts_with(&format!(
                    "`{key}`: cannot read `/nonexistent/tollgate-test.pem`"
                )),
                "{}",
                e.message
            );
        }
        // librdkafka's own word for the system's CA certificates.
        with_options(&[("security.protocol", "SSL"), ("ssl.ca.location", "probe")])
            .validate()
            .unwrap();
    }

    /// What is in the files is read when a client is created (at start-up):
    /// the error names the property, on one line.
    #[test]
    fn an_unreadable_tls_file_is_named_when_the_client_is_created() {
        let garbage = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(garbage.path(), "not a PEM file\n").unwrap();
        let path = garbage.path().to_str().unwrap();
        for key in [
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
        ] {
            let config = with_options(&[("security.protocol", "SSL"), (key, path)])
                .validate()
                .unwrap()
                .unwrap();
            let created: Result<BaseProducer, _> = config.client().create();
            let Err(e) = created else {
                panic!("{key}: a client was created from a file that is not PEM");
            };
            let shown = client_error(&e);
            assert!(
                shown.starts_with(&format!("{key} failed: ")),
                "{key}: {shown}"
            );
            assert!(!shown.contains('\n'), "one line: {shown}");
        }
    }

    #[test]
    fn a_refused_secret_value_is_not_repeated() {
        let e = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"sasl.password\"".to_owned(),
            "sasl.password".to_owned(),
            "hunter2".to_owned(),
        );
        let shown = client_error(&e);
        assert!(
            shown.contains("sasl.password") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
