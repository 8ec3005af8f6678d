//! The error at the crate boundary: why the gateway cannot start. Errors of
//! single requests are answered to the caller ([`crate::proxy::ApiError`]),
//! never returned from here.

/// Why [`crate::router`] (or [`crate::Gateway::new`]) refused to build the gateway.
/// Displayed as one line naming the field and the fix; never shows a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A contradiction or a missing value in `[gateway]`.
    #[error("invalid config: `{field}`: {message}")]
    Config { field: String, message: String },
    /// A provider key could not be read from its environment variable or file.
    #[error("invalid config: `{field}`: {message}")]
    ProviderKey { field: String, message: String },
    /// The HTTP client of a provider could not be built.
    #[error("provider `{provider}`: cannot build its HTTP client: {message}")]
    Client { provider: String, message: String },
}

impl GatewayError {
    /// Start-up errors do not go away by trying again.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
