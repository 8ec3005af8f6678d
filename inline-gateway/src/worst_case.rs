//! The most a call can be billed, as admission reserves it: input counted so
//! it is never below what the provider bills, output the cap times `n`.
//!
//! # Input: UTF-8 bytes, not a guess
//!
//! Every tokenizer the gateway's providers use is a byte-level BPE
//! (OpenAI's `cl100k_base`/`o200k_base`, Anthropic's, Gemini's SentencePiece
//! with byte fallback): each token stands for at least one byte of text, so
//! a text of `b` UTF-8 bytes is at most `b` tokens. The bound counts:
//!
//! - the UTF-8 bytes of every object key and string value the model reads
//!   (message roles, names and contents, text parts, tool calls and their
//!   arguments, tool results, system prompts, tool and function definitions,
//!   response formats, embedding inputs), and the printed length of every
//!   other scalar among them;
//! - [`MESSAGE_OVERHEAD`] tokens per message (the chat template's separators;
//!   OpenAI documents 3 per message plus 1 for a name), and
//!   [`REQUEST_OVERHEAD`] per request (OpenAI's 3 tokens priming the reply,
//!   Anthropic's turn markers);
//! - when tools are offered, [`TOOLS_OVERHEAD`] tokens once (Anthropic
//!   documents a tool-use system prompt of at most 346 tokens; OpenAI wraps
//!   definitions in a namespace) and [`TOOL_OVERHEAD`] per tool;
//! - each image part at the link's per-image worst case ([`image_tokens`]):
//!   an image's tokens depend on its pixels, not on its URL's bytes;
//! - embedding inputs given as token ids at one token each.
//!
//! Only request fields that carry no prompt text are skipped
//! ([`NOT_PROMPT`]); a field the gateway does not know is counted, so a new
//! prompt-bearing field errs high, never low.
//!
//! The margin: English text is about 4 bytes a token, so its input is
//! reserved at about 4 times what is billed (settled to the provider's
//! figure after the call); CJK text at about 3 times; the worst text (one
//! token a byte) at exactly its size. The property test in this module
//! checks the bound against `o200k_base` and `cl100k_base`.
//!
//! Not bounded by this count: documents the request only points at (a file
//! id, a PDF by URL), whose pages the gateway never sees. Inline documents
//! count their bytes plus one image.
//!
//! # Responses API
//!
//! `instructions` and `input` (a string, or items: messages, function calls
//! and their outputs, reasoning items with their encrypted content, images,
//! files) count like messages, one [`MESSAGE_OVERHEAD`] per item. What the
//! provider keeps and the gateway never sees — the conversation behind
//! `previous_response_id` or `conversation`, a stored `prompt`,
//! `item_reference` items, what hosted tools (`web_search`, `file_search`,
//! `mcp`...) feed the model — is reserved at
//! `gateway.unseen_input_tokens` on top ([`InputBound::unseen`]), and the
//! call is settled with the tokens the provider bills.

use serde_json::Value;

use crate::dialect::Operation;

/// Tokens per request beyond its text: reply priming and turn markers.
pub(crate) const REQUEST_OVERHEAD: u64 = 16;
/// Tokens per message beyond its text: the chat template's separators.
pub(crate) const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens once per request that offers tools: the providers' tool preamble.
pub(crate) const TOOLS_OVERHEAD: u64 = 512;
/// Tokens per tool definition beyond its text.
pub(crate) const TOOL_OVERHEAD: u64 = 16;

/// Per-image worst cases documented above the configured one, by model glob.
/// `gpt-4o-mini` bills an image at 2,833 tokens plus 5,667 per 512-pixel
/// tile (to price images like `gpt-4o`); a high-detail image is at most 8
/// tiles.
const IMAGE_TOKENS_BY_MODEL: &[(&str, u64)] = &[("gpt-4o-mini*", 2_833 + 8 * 5_667)];

/// Top-level request fields that carry no prompt text: sampling, limits,
/// streaming, metadata. Everything else is counted.
pub(crate) const NOT_PROMPT: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stop_sequences",
    "metadata",
    "user",
    "seed",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "service_tier",
    "store",
    "parallel_tool_calls",
    "modalities",
    "reasoning_effort",
    "thinking",
    "encoding_format",
    "dimensions",
    "safety_identifier",
    "prompt_cache_key",
    "verbosity",
    "previous_response_id",
    "background",
    "include",
    "truncation",
    "max_tool_calls",
    "reasoning",
];

/// Tool types whose calls the caller runs and answers in its next request
/// (what they return is sent, and counted, then); any other tool type is
/// hosted by the provider and feeds the model what the gateway never sees.
const CLIENT_TOOLS: &[&str] = &["function", "custom"];

/// The input side of a request's worst case, before the link's per-image
/// cost is known: text tokens and images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InputBound {
    /// Tokens of everything but images (text bytes and overheads).
    pub text: u64,
    /// Image parts, each billed at the link's per-image worst case.
    pub images: u64,
    /// A Responses request whose input is partly kept by the provider
    /// (stored conversation, prompt, item references, hosted tools' results):
    /// `gateway.unseen_input_tokens` more are reserved.
    pub unseen: bool,
}

impl InputBound {
    /// The bound in tokens when an image costs at most `image_tokens`.
    pub(crate) fn tokens(&self, image_tokens: u64) -> u64 {
        self.text
            .saturating_add(self.images.saturating_mul(image_tokens))
            .max(1)
    }

    /// [`InputBound::tokens`] plus `unseen_tokens` when part of the input
    /// is kept where the gateway cannot count it.
    pub(crate) fn tokens_with_unseen(&self, image_tokens: u64, unseen_tokens: u64) -> u64 {
        let unseen = if self.unseen { unseen_tokens } else { 0 };
        self.tokens(image_tokens).saturating_add(unseen)
    }

    /// The bound of a parsed request body asking for `op`.
    pub(crate) fn of(op: Operation, request: &Value) -> Self {
        let mut b = Bound::default();
        let Some(fields) = request.as_object() else {
            return InputBound {
                text: REQUEST_OVERHEAD,
                images: 0,
                unseen: false,
            };
        };
        if op != Operation::Embeddings {
            b.text = REQUEST_OVERHEAD;
        }
        for (key, value) in fields {
            if NOT_PROMPT.contains(&key.as_str()) {
                continue;
            }
            match key.as_str() {
                "messages" => {
                    for m in array(value) {
                        b.add(MESSAGE_OVERHEAD);
                        b.walk(m);
                    }
                }
                // Anthropic's system prompt: one more turn.
                "system" => {
                    b.add(MESSAGE_OVERHEAD);
                    b.walk(value);
                }
                "tools" | "functions" => {
                    let tools = array(value);
                    if !tools.is_empty() {
                        b.add(TOOLS_OVERHEAD);
                    }
                    for t in tools {
                        b.add(TOOL_OVERHEAD);
                        b.walk(t);
                        if op == Operation::Responses
                            && t.get("type")
                                .and_then(Value::as_str)
                                .is_some_and(|k| !CLIENT_TOOLS.contains(&k))
                        {
                            b.unseen = true;
                        }
                    }
                }
                "input" if op == Operation::Embeddings => b.embedding_input(value),
                "input" | "instructions" if op == Operation::Responses => match value {
                    Value::Array(items) => {
                        for item in items {
                            b.add(MESSAGE_OVERHEAD);
                            if item.get("type").and_then(Value::as_str) == Some("item_reference") {
                                b.unseen = true;
                            }
                            b.walk(item);
                        }
                    }
                    other => {
                        b.add(MESSAGE_OVERHEAD);
                        b.walk(other);
                    }
                },
                // State the provider keeps: the conversation so far, a
                // stored prompt template.
                "conversation" | "prompt" if op == Operation::Responses => {
                    if !value.is_null() {
                        b.unseen = true;
                    }
                    b.walk(value);
                }
                _ => b.walk(value),
            }
        }
        if op == Operation::Responses
            && fields
                .get("previous_response_id")
                .is_some_and(|v| !v.is_null())
        {
            b.unseen = true;
        }
        InputBound {
            text: b.text,
            images: b.images,
            unseen: b.unseen,
        }
    }
}

/// The worst case of one image on `model`: the documented figure of the
/// models that bill more, else `configured` (`gateway.image_input_tokens`).
pub(crate) fn image_tokens(model: &str, configured: u64) -> u64 {
    IMAGE_TOKENS_BY_MODEL
        .iter()
        .filter(|(glob, _)| crate::glob::matches(glob, model))
        .map(|(_, tokens)| *tokens)
        .fold(configured, u64::max)
}

/// The most output a call may be billed: its cap (or the gateway's
/// default, which the gateway then sends) for each of its `n` choices.
pub(crate) fn output_tokens(cap: u64, n: Option<u64>) -> u64 {
    cap.saturating_mul(n.unwrap_or(1).max(1))
}

#[derive(Default)]
struct Bound {
    text: u64,
    images: u64,
    unseen: bool,
}

impl Bound {
    fn add(&mut self, tokens: u64) {
        self.text = self.text.saturating_add(tokens);
    }

    fn bytes(&mut self, s: &str) {
        self.add(s.len() as u64);
    }

    /// Every key and string's bytes, every other scalar's printed length;
    /// image parts at one image each.
    fn walk(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.bytes(s),
            Value::Number(n) => self.add(printed_len(n)),
            Value::Bool(true) => self.add(4),
            Value::Bool(false) => self.add(5),
            Value::Null => {}
            Value::Array(items) => {
                for i in items {
                    self.walk(i);
                }
            }
            Value::Object(o) => {
                match o.get("type").and_then(Value::as_str) {
                    Some(kind) if is_image(kind) => {
                        self.images = self.images.saturating_add(1);
                        return;
                    }
                    // Legacy image parts without a type.
                    None if o.contains_key("image_url") => {
                        self.images = self.images.saturating_add(1);
                        return;
                    }
                    // A document is read as text and as page images: its
                    // bytes and one image (see the module doc for what a
                    // document only referred to costs).
                    Some("file" | "document" | "input_file") => {
                        self.images = self.images.saturating_add(1);
                    }
                    _ => {}
                }
                for (k, v) in o {
                    self.bytes(k);
                    self.walk(v);
                }
            }
        }
    }

    /// Embeddings: strings by bytes, token ids one each, no chat framing.
    fn embedding_input(&mut self, v: &Value) {
        match v {
            Value::Number(_) => self.add(1),
            Value::Array(items) => {
                for i in items {
                    self.embedding_input(i);
                }
            }
            other => self.walk(other),
        }
    }
}

fn is_image(kind: &str) -> bool {
    matches!(kind, "image_url" | "image" | "input_image")
}

fn printed_len(n: &serde_json::Number) -> u64 {
    // At most 24 characters (a negative f64 in exponent form); the exact
    // figure needs no allocation for integers.
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => u64::from(u.checked_ilog10().unwrap_or(0)) + 1,
        (None, Some(i)) => u64::from(i.unsigned_abs().checked_ilog10().unwrap_or(0)) + 2,
        (None, None) => 24,
    }
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests;
