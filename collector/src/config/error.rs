//! Why a configuration was refused.

/// Why a configuration was refused. Displayed as one line at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Expand { path: String, message: String },
    #[error("{0}")]
    Parse(String),
    #[error("invalid config: `{field}`: {message}")]
    Invalid { field: String, message: String },
    #[error("invalid config: {0}")]
    Rules(tollgate_rules::engine::RuleError),
}
