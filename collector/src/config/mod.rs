//! `tollgate.toml`: raw serde structs (the user documentation), loading with
//! `${VAR}` expansion and `TOLLGATE_` env overrides, and validation into the
//! typed [`Config`] the rest of the collector uses.

mod expand;
mod load;
mod raw;
mod validate;

pub use expand::expand_env;
pub(crate) use load::from_text;
pub use load::{ConfigError, load};
pub use raw::{
    AdminSection, AlertsSection, ApiSection, AuthKeySection, AuthMode, AuthSection, Durability,
    KafkaRole, KafkaSection, LogFormat, LogSection, OtlpSection, PipelineSection, PricingSection,
    RawConfig, ReceiversSection, StorageSection, TlsSection, WebhookFormat, WebhookSection,
    is_secret_kafka_option, redacted_kafka_options,
};
pub use validate::{
    AuthConfig, Config, DEFAULT_MAX_QUERY_RANGE, DurabilityConfig, LabelPolicy, ListenerLimits,
    Secret, StorageConfig,
};
