//! Server-wide defaults for the mock provider; each one can be overridden per
//! request by an `x-mock-*` header (see [`crate::knobs`]).

use std::time::Duration;

/// Default output length when neither `x-mock-output-tokens` nor a smaller
/// `max_tokens` is given.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 20;

/// Behaviour of a [`crate::MockProvider`] when a request carries no knob headers.
#[derive(Clone, Debug, PartialEq)]
pub struct MockConfig {
    /// Delay before the response headers are sent (every endpoint, errors included).
    pub latency: Duration,
    /// Streaming only: delay between the response headers and the first chunk.
    pub ttft: Duration,
    /// Streaming only: delay between two consecutive content chunks.
    pub inter_chunk: Duration,
    /// Output tokens when the request sets no smaller `max_tokens` (default 20).
    pub default_output_tokens: u32,
    /// Fraction of model calls (chat, messages, embeddings) answered with a 500.
    pub error_rate: f64,
    /// Fraction of model calls answered with a 429.
    pub rate_limit_rate: f64,
    /// How chat completion ids are drawn. Real servers do not all return
    /// unique ids: Ollama's OpenAI-compatible API draws `chatcmpl-<0..998>`,
    /// others return a constant.
    pub response_ids: ResponseIds,
}

/// How the mock names its chat completions.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ResponseIds {
    /// `chatcmpl-mock<sequence>`: unique per instance.
    #[default]
    Unique,
    /// `chatcmpl-<sequence % n>`, as Ollama does with n = 999.
    Cycle(u64),
    /// The same id for every completion.
    Constant(String),
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            inter_chunk: Duration::ZERO,
            default_output_tokens: DEFAULT_OUTPUT_TOKENS,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            response_ids: ResponseIds::Unique,
        }
    }
}

/// A [`MockConfig`] that cannot be served.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate is not a fraction.
    #[error("{field} must be between 0.0 and 1.0, got {value}")]
    RateOutOfRange {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// The two rates together exceed every request.
    #[error("error_rate + rate_limit_rate must be at most 1.0, got {0}; lower one of them")]
    RatesExceedOne(f64),
}

impl MockConfig {
    /// Rejects rates that are not fractions, so a typo in a benchmark's flags
    /// fails at start-up instead of silently answering every call with an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::RateOutOfRange { field, value });
            }
        }
        let sum = self.error_rate + self.rate_limit_rate;
        if sum > 1.0 {
            return Err(ConfigError::RatesExceedOne(sum));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_instant_and_error_free() {
        let config = MockConfig::default();
        assert_eq!(config.default_output_tokens, 20);
        assert_eq!(config.latency, Duration::ZERO);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn rates_must_be_fractions() {
        let config = MockConfig {
            error_rate: 1.5,
            ..MockConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::RateOutOfRange {
                field: "error_rate",
                value: 1.5
            })
        );
        let config = MockConfig {
            error_rate: 0.6,
            rate_limit_rate: 0.6,
            ..MockConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::RatesExceedOne(_))
        ));
    }
}
