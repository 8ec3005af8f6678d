//! The deterministic usage rule: how many tokens the mock says a request
//! consumed and produced. Public so tests compute exact expectations with the
//! same code the server uses; the rule itself is spelled out in the crate doc.

use serde_json::Value;

use crate::knobs::Knobs;

/// Which request shape [`usage_for`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions` (and the Azure / no-`/v1` aliases).
    OpenAiChat,
    /// OpenAI `POST /v1/responses` (and the `/responses`, `/openai/v1/…` aliases).
    OpenAiResponses,
    /// OpenAI `POST /v1/embeddings`.
    OpenAiEmbeddings,
    /// Anthropic `POST /v1/messages` (and `/v1/messages/count_tokens`).
    AnthropicMessages,
}

/// Provider-neutral token counts of one call; the `openai_*`/`anthropic_*`
/// methods give the numbers each provider puts on the wire, which differ in
/// whether cache tokens are part of the input count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockUsage {
    /// Tokens of the request's own text: `max(1, ceil(chars / 4) + token_ids)`.
    pub text_input_tokens: u32,
    /// Prompt tokens served from the cache (`x-mock-cache-read-tokens`).
    pub cache_read_tokens: u32,
    /// Prompt tokens written to the cache (`x-mock-cache-write-tokens`).
    pub cache_write_tokens: u32,
    /// Visible output tokens, one per word of the answer (0 for embeddings).
    pub output_tokens: u32,
    /// Hidden reasoning tokens (`x-mock-reasoning-tokens`).
    pub reasoning_tokens: u32,
    /// The output was cut short by the request's `max_tokens`.
    pub truncated: bool,
}

impl MockUsage {
    /// OpenAI `prompt_tokens`: includes cached tokens (and, since OpenAI has no
    /// separate cache-write count, the written ones too).
    pub fn openai_prompt_tokens(&self) -> u32 {
        self.text_input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    /// OpenAI `prompt_tokens_details.cached_tokens`.
    pub fn openai_cached_tokens(&self) -> u32 {
        self.cache_read_tokens
    }

    /// OpenAI `completion_tokens`: includes reasoning tokens.
    pub fn openai_completion_tokens(&self) -> u32 {
        self.output_tokens.saturating_add(self.reasoning_tokens)
    }

    /// OpenAI Responses `input_tokens_details.cache_write_tokens`; the write
    /// count is already inside [`MockUsage::openai_prompt_tokens`].
    pub fn openai_cache_write_tokens(&self) -> u32 {
        self.cache_write_tokens
    }

    /// OpenAI `total_tokens`.
    pub fn openai_total_tokens(&self) -> u32 {
        self.openai_prompt_tokens()
            .saturating_add(self.openai_completion_tokens())
    }

    /// Anthropic `input_tokens`: excludes both kinds of cache tokens.
    pub fn anthropic_input_tokens(&self) -> u32 {
        self.text_input_tokens
    }

    /// Anthropic `output_tokens`: includes thinking (reasoning) tokens.
    pub fn anthropic_output_tokens(&self) -> u32 {
        self.output_tokens.saturating_add(self.reasoning_tokens)
    }
}

/// The usage the mock reports for `request` (a parsed JSON body) of shape
/// `api` with the given knobs.
///
/// * input: `max(1, ceil(chars / 4) + token_ids)` over the request text
///   (see [`request_text`]); with `knobs.wide_char_tokens`, non-ASCII
///   characters count one token each and only the others four a token;
/// * output: `knobs.output_tokens` if set, else
///   `min(max_completion_tokens | max_tokens, default_output_tokens)`
///   (`max_output_tokens` for the Responses API);
/// * cache and reasoning tokens: straight from the knobs (chat/messages only).
pub fn usage_for(
    api: Api,
    request: &Value,
    knobs: &Knobs,
    default_output_tokens: u32,
) -> MockUsage {
    let text = request_text(api, request);
    let text_input_tokens = if knobs.wide_char_tokens {
        let narrow = text.chars.saturating_sub(text.wide_chars);
        input_tokens(narrow, text.token_ids.saturating_add(text.wide_chars))
    } else {
        input_tokens(text.chars, text.token_ids)
    };
    if api == Api::OpenAiEmbeddings {
        return MockUsage {
            text_input_tokens,
            ..MockUsage::default()
        };
    }
    let max_tokens = requested_max_tokens(api, request);
    let (output_tokens, truncated) = match (knobs.output_tokens, max_tokens) {
        (Some(exact), _) => (exact, false),
        (None, Some(max)) if max < default_output_tokens => (max, true),
        (None, _) => (default_output_tokens, false),
    };
    MockUsage {
        text_input_tokens,
        cache_read_tokens: knobs.cache_read_tokens,
        cache_write_tokens: knobs.cache_write_tokens,
        output_tokens,
        reasoning_tokens: knobs.reasoning_tokens,
        truncated,
    }
}

/// `max(1, ceil(chars / 4) + token_ids)`, saturating at `u32::MAX`.
pub fn input_tokens(chars: usize, token_ids: usize) -> u32 {
    let tokens = chars.div_ceil(4).saturating_add(token_ids).max(1);
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

/// How much text a request carries, as counted by the usage rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestText {
    /// Unicode scalar values (Python's `len(str)`) of every counted string.
    pub chars: usize,
    /// Of those, the non-ASCII ones.
    pub wide_chars: usize,
    /// Pre-tokenised inputs (embeddings given as token ids).
    pub token_ids: usize,
}

/// Counts the text the usage rule looks at:
///
/// * OpenAI chat: every message's `content` when it is a string, and the
///   `text` of every content part when it is an array. Tool definitions,
///   tool-call arguments and names are not counted.
/// * Anthropic: `system` (string or the `text` of its blocks), and each
///   message's `content` (string, `text` blocks, and the string or `text`
///   blocks inside `tool_result` blocks).
/// * OpenAI Responses: `instructions` (a string), and `input` as a string or
///   as a list of items: each message's `content` (string, or the `text` of
///   its parts: `input_text`, `output_text`, …) and each
///   `function_call_output`'s `output` (string or the `text` of its parts).
///   `function_call` arguments, `reasoning` items and tool definitions are
///   not counted.
/// * Embeddings: `input` as a string, array of strings, array of token ids
///   or array of arrays of token ids.
pub fn request_text(api: Api, request: &Value) -> RequestText {
    let mut text = RequestText::default();
    match api {
        Api::OpenAiChat => {
            for message in array(request.get("messages")) {
                count_content(message.get("content"), &mut text);
            }
        }
        Api::AnthropicMessages => {
            count_content(request.get("system"), &mut text);
            for message in array(request.get("messages")) {
                count_content(message.get("content"), &mut text);
            }
        }
        Api::OpenAiResponses => {
            count_content(request.get("instructions"), &mut text);
            match request.get("input") {
                Some(Value::String(s)) => count_str(s, &mut text),
                Some(Value::Array(items)) => {
                    for item in items {
                        count_response_item(item, &mut text);
                    }
                }
                _ => {}
            }
        }
        Api::OpenAiEmbeddings => count_embedding_input(request.get("input"), &mut text),
    }
    text
}

/// The output text of `n` tokens: `"w0 w1 … w{n-1}"`.
pub fn output_text(n: u32) -> String {
    output_pieces(n).collect()
}

/// The output text split the way it is streamed, one token per chunk:
/// `"w0"`, `" w1"`, `" w2"`, …
pub fn output_pieces(n: u32) -> impl Iterator<Item = String> {
    (0..n).map(|i| {
        if i == 0 {
            "w0".to_owned()
        } else {
            format!(" w{i}")
        }
    })
}

fn requested_max_tokens(api: Api, request: &Value) -> Option<u32> {
    let read = |key: &str| {
        request
            .get(key)
            .and_then(Value::as_u64)
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
    };
    match api {
        // OpenAI deprecated max_tokens in favour of max_completion_tokens; the
        // newer one wins when both are sent, as on the real API.
        Api::OpenAiChat => read("max_completion_tokens").or_else(|| read("max_tokens")),
        Api::OpenAiResponses => read("max_output_tokens"),
        Api::AnthropicMessages => read("max_tokens"),
        Api::OpenAiEmbeddings => None,
    }
}

fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn count_str(s: &str, text: &mut RequestText) {
    text.chars = text.chars.saturating_add(s.chars().count());
    let wide = s.chars().filter(|c| !c.is_ascii()).count();
    text.wide_chars = text.wide_chars.saturating_add(wide);
}

/// A `content` (or Anthropic `system`) value: a string or an array of parts.
fn count_content(content: Option<&Value>, text: &mut RequestText) {
    match content {
        Some(Value::String(s)) => count_str(s, text),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(s) = part.get("text").and_then(Value::as_str) {
                    count_str(s, text);
                }
                // Anthropic tool results carry their own content; they are
                // prompt text the model reads like any other.
                if part.get("type").and_then(Value::as_str) == Some("tool_result") {
                    count_content(part.get("content"), text);
                }
            }
        }
        _ => {}
    }
}

/// One item of a Responses API `input` list. Items without a `type` are
/// messages (the "easy input message" shape `{role, content}`).
fn count_response_item(item: &Value, text: &mut RequestText) {
    match item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message")
    {
        "message" => count_content(item.get("content"), text),
        "function_call_output" | "custom_tool_call_output" => {
            count_content(item.get("output"), text);
        }
        _ => {}
    }
}

fn count_embedding_input(input: Option<&Value>, text: &mut RequestText) {
    match input {
        Some(Value::String(s)) => count_str(s, text),
        Some(Value::Number(_)) => text.token_ids = text.token_ids.saturating_add(1),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::Array(ids) => {
                        text.token_ids = text.token_ids.saturating_add(ids.len());
                    }
                    other => count_embedding_input(Some(other), text),
                }
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
    fn input_is_a_quarter_of_the_chars_rounded_up_at_least_one() {
        assert_eq!(input_tokens(0, 0), 1);
        assert_eq!(input_tokens(1, 0), 1);
        assert_eq!(input_tokens(4, 0), 1);
        assert_eq!(input_tokens(5, 0), 2);
        assert_eq!(input_tokens(8, 3), 5);
    }

    #[test]
    fn wide_characters_can_count_a_token_each() {
        let body = json!({"messages": [{"role": "user", "content": "你好, world"}]});
        let wide = Knobs {
            wide_char_tokens: true,
            ..Knobs::default()
        };
        // "你好" two tokens; ", world" 7 characters, two tokens.
        assert_eq!(
            usage_for(Api::OpenAiChat, &body, &wide, 20).text_input_tokens,
            4
        );
        let cjk = json!({"messages": [{"role": "user", "content": "你好"}]});
        assert_eq!(
            usage_for(Api::OpenAiChat, &cjk, &wide, 20).text_input_tokens,
            2
        );
        // Otherwise 9 characters at four a token.
        assert_eq!(
            usage_for(Api::OpenAiChat, &body, &Knobs::default(), 20).text_input_tokens,
            3
        );
    }

    #[test]
    fn openai_chat_counts_string_and_part_contents() {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},                       // 9
                {"role": "user", "content": [{"type": "text", "text": "héllo"}, // 5
                                             {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "sunny"}        // 5
            ]
        });
        assert_eq!(
            request_text(Api::OpenAiChat, &body),
            RequestText {
                chars: 19,
                wide_chars: 1,
                token_ids: 0
            }
        );
        let usage = usage_for(Api::OpenAiChat, &body, &Knobs::default(), 20);
        assert_eq!(usage.text_input_tokens, 5);
        assert_eq!(usage.output_tokens, 20);
        assert!(!usage.truncated);
    }

    #[test]
    fn anthropic_counts_system_text_blocks_and_tool_results() {
        let body = json!({
            "model": "claude-3-5-haiku-20241022",
            "max_tokens": 7,
            "system": [{"type": "text", "text": "abcd"}],                        // 4
            "messages": [
                {"role": "user", "content": "hi"},                                  // 2
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                    "content": [{"type": "text", "text": "123456"}]}]}             // 6
            ]
        });
        let usage = usage_for(Api::AnthropicMessages, &body, &Knobs::default(), 20);
        assert_eq!(usage.text_input_tokens, 3);
        assert_eq!(usage.output_tokens, 7);
        assert!(usage.truncated);
    }

    #[test]
    fn openai_responses_counts_instructions_messages_and_tool_outputs() {
        let body = json!({
            "model": "gpt-4.1-mini",
            "instructions": "Be brief.",                                           // 9
            "max_output_tokens": 4,
            "input": [
                {"role": "user", "content": "hello"},                              // 5
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "abc"},              // 3
                             {"type": "input_image", "image_url": "x"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "zzzz"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c", "output": "sunny"} // 5
            ]
        });
        assert_eq!(
            request_text(Api::OpenAiResponses, &body),
            RequestText {
                chars: 22,
                wide_chars: 0,
                token_ids: 0
            }
        );
        let usage = usage_for(Api::OpenAiResponses, &body, &Knobs::default(), 20);
        assert_eq!(usage.text_input_tokens, 6);
        assert_eq!(usage.output_tokens, 4);
        assert!(usage.truncated);
        let plain = json!({"model": "m", "input": "abcdefghi"});
        assert_eq!(
            usage_for(Api::OpenAiResponses, &plain, &Knobs::default(), 20).text_input_tokens,
            3
        );
    }

    #[test]
    fn knob_output_tokens_win_over_max_tokens() {
        let body = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 3});
        let knobs = Knobs {
            output_tokens: Some(50),
            ..Knobs::default()
        };
        let usage = usage_for(Api::OpenAiChat, &body, &knobs, 20);
        assert_eq!(usage.output_tokens, 50);
        assert!(!usage.truncated);
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let body = json!({"messages": [], "max_tokens": 3, "max_completion_tokens": 9});
        let usage = usage_for(Api::OpenAiChat, &body, &Knobs::default(), 20);
        assert_eq!(usage.output_tokens, 9);
    }

    #[test]
    fn cache_tokens_are_inside_openai_prompt_but_outside_anthropic_input() {
        let usage = MockUsage {
            text_input_tokens: 10,
            cache_read_tokens: 100,
            cache_write_tokens: 30,
            output_tokens: 4,
            reasoning_tokens: 6,
            truncated: false,
        };
        assert_eq!(usage.openai_prompt_tokens(), 140);
        assert_eq!(usage.openai_cached_tokens(), 100);
        assert_eq!(usage.openai_completion_tokens(), 10);
        assert_eq!(usage.openai_total_tokens(), 150);
        assert_eq!(usage.anthropic_input_tokens(), 10);
        assert_eq!(usage.anthropic_output_tokens(), 10);
    }

    #[test]
    fn embeddings_count_strings_and_token_ids_and_produce_nothing() {
        let body = json!({"model": "text-embedding-3-small", "input": ["abcde", "fgh"]});
        let knobs = Knobs {
            output_tokens: Some(9),
            cache_read_tokens: 5,
            ..Knobs::default()
        };
        let usage = usage_for(Api::OpenAiEmbeddings, &body, &knobs, 20);
        assert_eq!(
            usage,
            MockUsage {
                text_input_tokens: 2,
                ..MockUsage::default()
            }
        );
        let ids = json!({"input": [[1, 2, 3], [4]]});
        assert_eq!(
            usage_for(Api::OpenAiEmbeddings, &ids, &Knobs::default(), 20).text_input_tokens,
            4
        );
    }

    #[test]
    fn output_text_is_numbered_words() {
        assert_eq!(output_text(0), "");
        assert_eq!(output_text(3), "w0 w1 w2");
        assert_eq!(
            output_pieces(3).collect::<Vec<_>>(),
            vec!["w0", " w1", " w2"]
        );
    }
}
