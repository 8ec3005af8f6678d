//! Token usage as providers report it, in the row's terms (input includes
//! cached tokens, output includes reasoning tokens), and the estimates used
//! when a provider reported nothing (a cut stream): about four characters a
//! token, the rule of thumb both providers document.

use serde::Deserialize;
use serde_json::Value;

use crate::dialect::Dialect;

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

#[derive(Debug, Deserialize, Default)]
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

/// Tokens of `chars` characters of text, rounded up.
pub(crate) fn tokens_of_chars(chars: u64) -> u64 {
    chars.div_ceil(4)
}

/// The input tokens of a request, estimated from its text: message contents,
/// system prompts, tool results, embedding inputs, tool definitions.
pub(crate) fn estimate_input_tokens(dialect: Dialect, request: &Value) -> u64 {
    let mut chars = 0u64;
    match dialect {
        Dialect::OpenAi => {
            for m in array(request.get("messages")) {
                count_content(m.get("content"), &mut chars);
                for call in array(m.get("tool_calls")) {
                    count_str(
                        call.pointer("/function/arguments").and_then(Value::as_str),
                        &mut chars,
                    );
                }
            }
            count_embedding_input(request.get("input"), &mut chars);
        }
        Dialect::Anthropic => {
            count_content(request.get("system"), &mut chars);
            for m in array(request.get("messages")) {
                count_content(m.get("content"), &mut chars);
            }
        }
    }
    if let Some(tools) = request.get("tools") {
        chars = chars.saturating_add(tools.to_string().len() as u64);
    }
    tokens_of_chars(chars).max(1)
}

fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn count_str(s: Option<&str>, chars: &mut u64) {
    if let Some(s) = s {
        *chars = chars.saturating_add(s.chars().count() as u64);
    }
}

fn count_content(content: Option<&Value>, chars: &mut u64) {
    match content {
        Some(Value::String(s)) => count_str(Some(s), chars),
        Some(Value::Array(parts)) => {
            for p in parts {
                count_str(p.get("text").and_then(Value::as_str), chars);
                if p.get("type").and_then(Value::as_str) == Some("tool_result") {
                    count_content(p.get("content"), chars);
                }
                if let Some(input) = p.get("input").filter(|v| v.is_object()) {
                    *chars = chars.saturating_add(input.to_string().len() as u64);
                }
            }
        }
        _ => {}
    }
}

fn count_embedding_input(input: Option<&Value>, chars: &mut u64) {
    match input {
        Some(Value::String(s)) => count_str(Some(s), chars),
        // Token ids: four "characters" each, so one token each.
        Some(Value::Number(_)) => *chars = chars.saturating_add(4),
        Some(Value::Array(items)) => {
            for i in items {
                count_embedding_input(Some(i), chars);
            }
        }
        _ => {}
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

    #[test]
    fn estimates_count_text_at_four_chars_a_token() {
        let chat = json!({"messages": [{"role": "user", "content": "12345678"},
                                       {"role": "user", "content": [{"type": "text", "text": "abcd"}]}]});
        assert_eq!(estimate_input_tokens(Dialect::OpenAi, &chat), 3);
        let msgs = json!({"system": "abcd", "messages": [{"role": "user", "content": "abcd"}]});
        assert_eq!(estimate_input_tokens(Dialect::Anthropic, &msgs), 2);
        assert_eq!(estimate_input_tokens(Dialect::OpenAi, &json!({})), 1);
        assert_eq!(tokens_of_chars(9), 3);
    }
}
