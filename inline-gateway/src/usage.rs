//! Token usage as providers report it, in the row's terms (input includes
//! cached tokens, output includes reasoning tokens). What a call may cost at
//! most, and the estimates a cut stream is settled on, are in
//! [`crate::worst_case`].

use serde::Deserialize;

/// Token counts of one call in the row's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// All input tokens, cache reads and writes included.
    pub input: u64,
    /// All output tokens, reasoning included.
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Usage {
    pub(crate) fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct OpenAiUsage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub(crate) struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl OpenAiUsage {
    pub(crate) fn to_usage(&self) -> Usage {
        Usage {
            input: self.prompt_tokens.unwrap_or(0),
            output: self.completion_tokens.unwrap_or(0),
            cache_read: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write: 0,
            reasoning: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// The Responses API's usage object (`response.usage`, in JSON answers and
/// in the final `response.completed` / `response.incomplete` event).
#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub(crate) struct ResponsesUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub input_tokens_details: Option<ResponsesInputDetails>,
    #[serde(default)]
    pub output_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub(crate) struct ResponsesInputDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

impl ResponsesUsage {
    /// In row terms: `input_tokens` already counts cached and cache-written
    /// tokens, `output_tokens` the reasoning tokens.
    pub(crate) fn to_usage(self) -> Usage {
        let details = self.input_tokens_details.unwrap_or_default();
        Usage {
            input: self.input_tokens.unwrap_or(0),
            output: self.output_tokens.unwrap_or(0),
            cache_read: details.cached_tokens.unwrap_or(0),
            cache_write: details.cache_write_tokens.unwrap_or(0),
            reasoning: self
                .output_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Anthropic's usage object; in a stream `message_start` carries the input
/// side and `message_delta` the (cumulative) output, sometimes more.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub(crate) struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Fields present in `later` replace ours.
    pub(crate) fn merge(&mut self, later: &AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }

    pub(crate) fn to_usage(self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let cache_write = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            input: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(cache_read)
                .saturating_add(cache_write),
            output: self.output_tokens.unwrap_or(0),
            cache_read,
            cache_write,
            reasoning: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_usage_counts_cache_inside_input() {
        let u: OpenAiUsage = serde_json::from_value(json!({
            "prompt_tokens": 140, "completion_tokens": 10, "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 6}
        }))
        .unwrap();
        assert_eq!(
            u.to_usage(),
            Usage {
                input: 140,
                output: 10,
                cache_read: 100,
                cache_write: 0,
                reasoning: 6
            }
        );
    }

    #[test]
    fn responses_usage_reads_cache_and_reasoning_details() {
        let u: ResponsesUsage = serde_json::from_value(json!({
            "input_tokens": 140, "output_tokens": 10, "total_tokens": 150,
            "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 30},
            "output_tokens_details": {"reasoning_tokens": 6}
        }))
        .unwrap();
        assert_eq!(
            u.to_usage(),
            Usage {
                input: 140,
                output: 10,
                cache_read: 100,
                cache_write: 30,
                reasoning: 6
            }
        );
        let bare: ResponsesUsage =
            serde_json::from_value(json!({"input_tokens": 3, "output_tokens": 2})).unwrap();
        assert_eq!((bare.to_usage().input, bare.to_usage().output), (3, 2));
    }

    #[test]
    fn anthropic_usage_adds_cache_to_input_and_merges_stream_parts() {
        let mut u: AnthropicUsage = serde_json::from_value(json!({
            "input_tokens": 10, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 30, "output_tokens": 1
        }))
        .unwrap();
        u.merge(&serde_json::from_value(json!({"output_tokens": 42})).unwrap());
        assert_eq!(
            u.to_usage(),
            Usage {
                input: 140,
                output: 42,
                cache_read: 100,
                cache_write: 30,
                reasoning: 0
            }
        );
    }
}
