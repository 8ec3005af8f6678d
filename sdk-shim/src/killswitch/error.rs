//! Why a kill-switch could not be started.

use std::time::Duration;

/// A [`KillSwitchConfig`](super::KillSwitchConfig) that cannot work, or no
/// Tokio runtime to run in. Every message names the field and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KillSwitchError {
    #[error(
        "kill-switch grpc_endpoint `{endpoint}` is not a valid URI ({source}); use e.g. http://127.0.0.1:4317"
    )]
    GrpcEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "kill-switch api_base `{url}` is not a valid URL ({source}); use e.g. http://127.0.0.1:7070"
    )]
    ApiBase {
        url: String,
        #[source]
        source: url::ParseError,
    },
    /// TLS is not compiled in; a `https://` URL would fail on every attempt.
    #[error("kill-switch {field} `{url}` must be a plain http:// URL (TLS is not supported yet)")]
    Scheme { field: &'static str, url: String },
    #[error("kill-switch {field} is zero; give it a positive duration")]
    ZeroDuration { field: &'static str },
    #[error(
        "kill-switch reconnect_min ({min:?}) is longer than reconnect_max ({max:?}); swap or raise reconnect_max"
    )]
    Backoff { min: Duration, max: Duration },
    /// Never carries the key itself, which would then be printed.
    #[error("kill-switch key {0}; give the `read` key exactly as it was issued (tg-...)")]
    Key(&'static str),
    #[error("cannot build the kill-switch HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("KillSwitch::start must be called from inside a Tokio runtime: {0}")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
}
