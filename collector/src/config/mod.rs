//! `tollgate.toml`: raw serde structs (the user documentation), loading with
//! `${VAR}` expansion and `TOLLGATE_` env overrides, and validation into the
//! typed [`Config`] the rest of the collector uses.

mod error;
mod expand;
mod kafka;
mod load;
mod raw;
mod reload;
mod validate;

pub use error::ConfigError;
pub use expand::expand_env;
pub use kafka::{KafkaConfig, KafkaConfigError, client_error};
pub(crate) use load::from_text;
pub use load::load;
pub use raw::{
    AdminSection, AlertsSection, ApiSection, AuthKeySection, AuthMode, AuthSection, Durability,
    KafkaRole, KafkaSection, LogFormat, LogSection, OtlpSection, PipelineSection, PricingSection,
    RawConfig, ReceiversSection, StorageSection, TlsSection, WebhookFormat, WebhookSection,
    is_secret_kafka_option, redacted_kafka_options,
};
pub use reload::Reloader;
pub use validate::{
    AuthConfig, Config, DEFAULT_MAX_QUERY_RANGE, DurabilityConfig, LabelPolicy, ListenerLimits,
    Secret, StorageConfig,
};
