//! Why the mock refuses a request. Provider-neutral; each dialect renders it
//! in its own error envelope (`openai::error`, `anthropic::error`).

use axum::http::StatusCode;

use crate::knobs::KnobError;

/// A request the mock answers with an error status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No API key header at all.
    #[error("no API key provided")]
    MissingApiKey,
    /// The body is not JSON.
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not a valid request for this endpoint.
    #[error("{0}")]
    InvalidRequest(String),
    /// An `x-mock-*` header could not be read.
    #[error("tollgate mock provider: {0}")]
    BadKnob(#[from] KnobError),
    /// `x-mock-status`, or the configured error / rate-limit rate.
    #[error("forced status {0}")]
    Forced(StatusCode),
    /// The path is not served.
    #[error("unknown path {method} {path}")]
    UnknownPath {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// No stored response has this id (never stored, or deleted).
    #[error("No response found with id '{0}'.")]
    ResponseNotFound(String),
    /// The mock is shutting down (ends hung requests).
    #[error("the mock provider is shutting down")]
    ShuttingDown,
}

impl ApiError {
    /// The HTTP status the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingApiKey => StatusCode::UNAUTHORIZED,
            Self::InvalidJson(_) | Self::InvalidRequest(_) | Self::BadKnob(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Forced(status) => *status,
            Self::UnknownPath { .. } | Self::ResponseNotFound(_) => StatusCode::NOT_FOUND,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A forced error from a knob's numeric status; the knob parser already
    /// restricted it to 400..=599, so the fallback is unreachable in practice.
    pub(crate) fn forced(code: u16) -> Self {
        Self::Forced(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
    }
}

/// Seconds a client is told to wait after a 429, in `retry-after`.
pub(crate) const RETRY_AFTER_SECS: &str = "1";
