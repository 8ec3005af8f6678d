//! Streamed answers: each upstream event is read for accounting (usage,
//! text sent, finish reason, first token) and either passed on as it came
//! or rewritten into the caller's dialect.
//!
//! OpenAI streams always ask the upstream for the usage chunk; when the
//! caller did not ask for it, that chunk is not passed on.

use std::borrow::Cow;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use super::response::{
    anthropic_usage_json, finish_reason_to_anthropic, finish_reason_to_openai, openai_usage_json,
};
use super::responses::ResponseFrame;
use super::responses_stream::{ResponsesWriter, read_responses_event};
use crate::dialect::Dialect;
use crate::sse::{SseEvent, SseParser, write_event};
use crate::usage::{AnthropicUsage, OpenAiUsage, Usage};

/// What a stream told us so far.
#[derive(Debug, Default)]
pub(crate) struct StreamAcct {
    /// Usage as reported (OpenAI's final chunk).
    pub openai_usage: Option<Usage>,
    /// Usage as reported so far (Anthropic's `message_start` + `message_delta`).
    pub anthropic_usage: Option<AnthropicUsage>,
    /// UTF-8 bytes of generated text and tool arguments passed on (a
    /// bound on their tokens).
    pub output_bytes: u64,
    /// When the first token (text or tool arguments) was passed on.
    pub first_token: Option<Instant>,
    /// As the upstream spelled it.
    pub finish_reason: Option<String>,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    /// The terminal event (`[DONE]`, `message_stop`, an error event) was seen.
    pub done: bool,
    /// An error event ended the stream: its type.
    pub error: Option<String>,
}

impl StreamAcct {
    /// Usage the provider reported, if it reported any.
    pub(crate) fn reported_usage(&self) -> Option<Usage> {
        self.openai_usage
            .or_else(|| self.anthropic_usage.map(AnthropicUsage::to_usage))
    }

    /// Whether the provider's final usage arrived (Anthropic's input-side
    /// usage alone, from `message_start`, is not final).
    fn final_usage_seen(&self) -> bool {
        self.openai_usage.is_some()
            || self.finish_reason.is_some() && self.anthropic_usage.is_some()
    }

    pub(super) fn token(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.output_bytes = self.output_bytes.saturating_add(bytes as u64);
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ChunkPeek<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) choices: Option<Vec<ChoicePeek<'a>>>,
    #[serde(default)]
    pub(super) usage: Option<OpenAiUsage>,
    #[serde(borrow, default)]
    pub(super) error: Option<ErrorPeek<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ChoicePeek<'a> {
    #[serde(borrow, default)]
    pub(super) delta: Option<DeltaPeek<'a>>,
    #[serde(borrow, default)]
    pub(super) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct DeltaPeek<'a> {
    #[serde(borrow, default)]
    pub(super) content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) tool_calls: Option<Vec<ToolDeltaPeek<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct ToolDeltaPeek<'a> {
    #[serde(default)]
    pub(super) index: Option<u64>,
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) function: Option<FnPeek<'a>>,
}

#[derive(Deserialize)]
pub(super) struct FnPeek<'a> {
    #[serde(borrow, default)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct ErrorPeek<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnthEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<AnthMessagePeek<'a>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    content_block: Option<BlockPeek<'a>>,
    #[serde(borrow, default)]
    delta: Option<AnthDeltaPeek<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(borrow, default)]
    error: Option<ErrorPeek<'a>>,
}

#[derive(Deserialize)]
struct AnthMessagePeek<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct BlockPeek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnthDeltaPeek<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

fn bytes(s: &Option<Cow<'_, str>>) -> usize {
    s.as_deref().map_or(0, str::len)
}

/// A block open in the Anthropic stream we write for an OpenAI upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text { index: u32 },
    Tool { index: u32, openai_index: u64 },
}

impl OpenBlock {
    fn index(self) -> u32 {
        match self {
            OpenBlock::Text { index } | OpenBlock::Tool { index, .. } => index,
        }
    }
}

#[derive(Debug)]
enum Mode {
    /// OpenAI upstream, OpenAI caller.
    OpenAiPass { client_wants_usage: bool },
    /// Anthropic upstream, Anthropic caller.
    AnthropicPass,
    /// Anthropic upstream, OpenAI caller.
    AnthropicToOpenAi {
        client_wants_usage: bool,
        created: u64,
        /// (Anthropic block index, OpenAI tool-call index).
        tools: Vec<(u64, u32)>,
    },
    /// OpenAI upstream, Anthropic caller.
    OpenAiToAnthropic {
        started: bool,
        open: Option<OpenBlock>,
        next_index: u32,
    },
    /// Responses upstream, Responses caller: events are only read; the
    /// relay passes the upstream's bytes on as they came.
    ResponsesPass,
    /// OpenAI chat upstream, Responses caller.
    OpenAiToResponses { writer: Box<ResponsesWriter> },
    /// Anthropic upstream, Responses caller: each event becomes chat chunks
    /// (as for an OpenAI caller), which become Responses events.
    AnthropicToResponses(Box<AnthropicToResponses>),
}

#[derive(Debug)]
struct AnthropicToResponses {
    tools: Vec<(u64, u32)>,
    writer: ResponsesWriter,
    /// The chat chunks of the current event, and their parser.
    chat: Vec<u8>,
    parser: SseParser,
    events: Vec<SseEvent>,
}

/// Reads (and rewrites) one stream.
#[derive(Debug)]
pub(crate) struct StreamTranslator {
    mode: Mode,
    pub acct: StreamAcct,
}

impl StreamTranslator {
    /// The translator for a `caller` served by an `upstream` of this
    /// dialect; `created` is the OpenAI chunks' timestamp when translated.
    pub(crate) fn between(
        caller: Dialect,
        upstream: Dialect,
        client_wants_usage: bool,
        created: u64,
    ) -> Self {
        match (caller, upstream) {
            (Dialect::OpenAi, Dialect::OpenAi) => Self::openai_pass(client_wants_usage),
            (Dialect::Anthropic, Dialect::Anthropic) => Self::anthropic_pass(),
            (Dialect::OpenAi, Dialect::Anthropic) => {
                Self::anthropic_to_openai(client_wants_usage, created)
            }
            (Dialect::Anthropic, Dialect::OpenAi) => Self::openai_to_anthropic(),
            (Dialect::Responses, Dialect::Responses) => Self::responses_pass(),
            (Dialect::Responses, upstream) => {
                let frame = ResponseFrame::new(&Value::Null, format!("resp_{created}"), created);
                Self::to_responses(upstream, frame)
            }
            // Only Responses calls go to a Responses upstream.
            (Dialect::OpenAi | Dialect::Anthropic, Dialect::Responses) => Self::responses_pass(),
        }
    }

    pub(crate) fn responses_pass() -> Self {
        Self::new(Mode::ResponsesPass)
    }

    /// A Responses caller served by a chat (`OpenAi`) or Anthropic
    /// upstream; `frame` is the response's id and echoed parameters.
    pub(crate) fn to_responses(upstream: Dialect, frame: ResponseFrame) -> Self {
        let writer = ResponsesWriter::new(frame);
        match upstream {
            Dialect::Anthropic => {
                Self::new(Mode::AnthropicToResponses(Box::new(AnthropicToResponses {
                    tools: Vec::new(),
                    writer,
                    chat: Vec::new(),
                    parser: SseParser::default(),
                    events: Vec::new(),
                })))
            }
            Dialect::OpenAi => Self::new(Mode::OpenAiToResponses {
                writer: Box::new(writer),
            }),
            Dialect::Responses => Self::responses_pass(),
        }
    }

    /// Whether the caller gets the upstream's bytes as they came (the
    /// events are only read).
    pub(crate) fn passes_bytes(&self) -> bool {
        matches!(self.mode, Mode::ResponsesPass)
    }

    pub(crate) fn openai_pass(client_wants_usage: bool) -> Self {
        Self::new(Mode::OpenAiPass { client_wants_usage })
    }

    pub(crate) fn anthropic_pass() -> Self {
        Self::new(Mode::AnthropicPass)
    }

    pub(crate) fn anthropic_to_openai(client_wants_usage: bool, created: u64) -> Self {
        Self::new(Mode::AnthropicToOpenAi {
            client_wants_usage,
            created,
            tools: Vec::new(),
        })
    }

    pub(crate) fn openai_to_anthropic() -> Self {
        Self::new(Mode::OpenAiToAnthropic {
            started: false,
            open: None,
            next_index: 0,
        })
    }

    fn new(mode: Mode) -> Self {
        Self {
            mode,
            acct: StreamAcct::default(),
        }
    }

    /// Handles one upstream event, appending what the caller gets to `out`.
    pub(crate) fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<u8>) {
        if self.acct.done {
            return;
        }
        match &mut self.mode {
            Mode::OpenAiPass { client_wants_usage } => {
                let wants = *client_wants_usage;
                openai_pass(&mut self.acct, wants, ev, out);
            }
            Mode::AnthropicPass => anthropic_pass(&mut self.acct, ev, out),
            Mode::AnthropicToOpenAi {
                client_wants_usage,
                created,
                tools,
            } => {
                let wants = *client_wants_usage;
                let created = *created;
                anthropic_to_openai(&mut self.acct, wants, created, tools, ev, out);
            }
            Mode::OpenAiToAnthropic {
                started,
                open,
                next_index,
            } => openai_to_anthropic(&mut self.acct, started, open, next_index, ev, out),
            Mode::ResponsesPass => read_responses_event(&mut self.acct, ev),
            Mode::OpenAiToResponses { writer } => {
                openai_to_responses(&mut self.acct, writer, ev, out)
            }
            Mode::AnthropicToResponses(state) => {
                let AnthropicToResponses {
                    tools,
                    writer,
                    chat,
                    parser,
                    events,
                } = &mut **state;
                // The usage chunk is always asked for: the response's
                // final event carries the usage.
                anthropic_to_openai(&mut self.acct, true, 0, tools, ev, chat);
                parser.feed(chat, events);
                chat.clear();
                for chat_event in events.drain(..) {
                    write_responses_from_chat(writer, &chat_event, &self.acct, out);
                }
            }
        }
    }

    /// The upstream ended. A stream that did not reach its terminal event
    /// still counts as complete when its finish reason and final usage
    /// arrived (some servers omit `[DONE]`); then the caller gets the
    /// closing events it expects. Returns whether the stream is complete.
    pub(crate) fn on_eof(&mut self, out: &mut Vec<u8>) -> bool {
        if self.acct.done {
            return true;
        }
        if !(self.acct.finish_reason.is_some() && self.acct.final_usage_seen()) {
            return false;
        }
        let done = SseEvent {
            event: None,
            data: "[DONE]".to_owned(),
        };
        let stop = SseEvent {
            event: Some("message_stop".to_owned()),
            data: "{\"type\":\"message_stop\"}".to_owned(),
        };
        match &self.mode {
            Mode::OpenAiPass { .. }
            | Mode::OpenAiToAnthropic { .. }
            | Mode::OpenAiToResponses { .. } => self.on_event(&done, out),
            Mode::AnthropicPass
            | Mode::AnthropicToOpenAi { .. }
            | Mode::AnthropicToResponses(_) => self.on_event(&stop, out),
            // Its final usage only comes with its terminal event.
            Mode::ResponsesPass => {}
        }
        self.acct.done = true;
        true
    }
}

fn openai_pass(acct: &mut StreamAcct, client_wants_usage: bool, ev: &SseEvent, out: &mut Vec<u8>) {
    if ev.data.trim() == "[DONE]" {
        acct.done = true;
        write_event(out, None, &ev.data);
        return;
    }
    let Ok(chunk) = serde_json::from_str::<ChunkPeek<'_>>(&ev.data) else {
        write_event(out, ev.event.as_deref(), &ev.data);
        return;
    };
    let is_usage_chunk = read_openai_chunk(acct, &chunk);
    if is_usage_chunk && !client_wants_usage {
        return;
    }
    write_event(out, ev.event.as_deref(), &ev.data);
}

/// Accounts one OpenAI chunk; returns whether it is the usage-only chunk.
fn read_openai_chunk(acct: &mut StreamAcct, chunk: &ChunkPeek<'_>) -> bool {
    if let Some(e) = &chunk.error {
        acct.error = Some(e.kind.as_deref().unwrap_or("stream_error").to_owned());
        acct.done = true;
        return false;
    }
    if acct.response_id.is_none()
        && let Some(id) = &chunk.id
    {
        acct.response_id = Some(id.to_string());
    }
    if acct.response_model.is_none()
        && let Some(m) = chunk.model.as_deref().filter(|m| !m.is_empty())
    {
        acct.response_model = Some(m.to_owned());
    }
    let choices = chunk.choices.as_deref().unwrap_or_default();
    for c in choices {
        if let Some(d) = &c.delta {
            let mut n = bytes(&d.content) + bytes(&d.reasoning_content);
            for t in d.tool_calls.as_deref().unwrap_or_default() {
                if let Some(f) = &t.function {
                    n += bytes(&f.arguments);
                }
            }
            acct.token(n);
        }
        if let Some(f) = &c.finish_reason {
            acct.finish_reason = Some(f.to_string());
        }
    }
    match &chunk.usage {
        Some(u) => {
            acct.openai_usage = Some(u.to_usage());
            choices.is_empty()
        }
        None => false,
    }
}

fn openai_to_responses(
    acct: &mut StreamAcct,
    writer: &mut ResponsesWriter,
    ev: &SseEvent,
    out: &mut Vec<u8>,
) {
    if ev.data.trim() == "[DONE]" {
        writer.finish(acct.reported_usage(), out);
        acct.done = true;
        return;
    }
    let Ok(chunk) = serde_json::from_str::<ChunkPeek<'_>>(&ev.data) else {
        return;
    };
    read_openai_chunk(acct, &chunk);
    writer.chunk(&chunk, out);
}

/// One chat event written by the Anthropic translation, as Responses
/// events (the Anthropic events were accounted already).
fn write_responses_from_chat(
    writer: &mut ResponsesWriter,
    ev: &SseEvent,
    acct: &StreamAcct,
    out: &mut Vec<u8>,
) {
    if ev.data.trim() == "[DONE]" {
        writer.finish(acct.reported_usage(), out);
        return;
    }
    if let Ok(chunk) = serde_json::from_str::<ChunkPeek<'_>>(&ev.data) {
        writer.chunk(&chunk, out);
    }
}

fn anthropic_kind<'a>(ev: &'a SseEvent, parsed: &'a AnthEvent<'a>) -> &'a str {
    parsed
        .kind
        .as_deref()
        .or(ev.event.as_deref())
        .unwrap_or_default()
}

/// Accounts one Anthropic event; returns its parsed form.
fn read_anthropic_event<'a>(acct: &mut StreamAcct, ev: &'a SseEvent) -> Option<AnthEvent<'a>> {
    let parsed = serde_json::from_str::<AnthEvent<'_>>(&ev.data).ok()?;
    match anthropic_kind(ev, &parsed) {
        "message_start" => {
            if let Some(m) = &parsed.message {
                acct.response_id = m.id.as_deref().map(str::to_owned);
                acct.response_model = m.model.as_deref().map(str::to_owned);
                if let Some(u) = &m.usage {
                    acct.anthropic_usage.get_or_insert_default().merge(u);
                }
            }
        }
        "content_block_delta" => {
            if let Some(d) = &parsed.delta {
                acct.token(bytes(&d.text) + bytes(&d.partial_json) + bytes(&d.thinking));
            }
        }
        "message_delta" => {
            if let Some(r) = parsed.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                acct.finish_reason = Some(r.to_owned());
            }
            if let Some(u) = &parsed.usage {
                acct.anthropic_usage.get_or_insert_default().merge(u);
            }
        }
        "message_stop" => acct.done = true,
        "error" => {
            acct.error = Some(
                parsed
                    .error
                    .as_ref()
                    .and_then(|e| e.kind.as_deref())
                    .unwrap_or("stream_error")
                    .to_owned(),
            );
            acct.done = true;
        }
        _ => {}
    }
    Some(parsed)
}

fn anthropic_pass(acct: &mut StreamAcct, ev: &SseEvent, out: &mut Vec<u8>) {
    let _ = read_anthropic_event(acct, ev);
    write_event(out, ev.event.as_deref(), &ev.data);
}

fn openai_chunk(acct: &StreamAcct, created: u64, delta: Value, finish: Option<&str>) -> String {
    json!({
        "id": acct.response_id.as_deref().unwrap_or(""),
        "object": "chat.completion.chunk",
        "created": created,
        "model": acct.response_model.as_deref().unwrap_or(""),
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    })
    .to_string()
}

fn anthropic_to_openai(
    acct: &mut StreamAcct,
    client_wants_usage: bool,
    created: u64,
    tools: &mut Vec<(u64, u32)>,
    ev: &SseEvent,
    out: &mut Vec<u8>,
) {
    let Some(parsed) = read_anthropic_event(acct, ev) else {
        return;
    };
    match anthropic_kind(ev, &parsed) {
        "message_start" => {
            let data = openai_chunk(
                acct,
                created,
                json!({"role": "assistant", "content": ""}),
                None,
            );
            write_event(out, None, &data);
        }
        "content_block_start" => {
            let Some(block) = &parsed.content_block else {
                return;
            };
            if block.kind.as_deref() == Some("tool_use") {
                let openai_index = u32::try_from(tools.len()).unwrap_or(u32::MAX);
                tools.push((parsed.index.unwrap_or(0), openai_index));
                let delta = json!({"tool_calls": [{
                    "index": openai_index,
                    "id": block.id.as_deref().unwrap_or(""),
                    "type": "function",
                    "function": {"name": block.name.as_deref().unwrap_or(""), "arguments": ""}
                }]});
                write_event(out, None, &openai_chunk(acct, created, delta, None));
            }
        }
        "content_block_delta" => {
            let Some(d) = &parsed.delta else {
                return;
            };
            if let Some(t) = d.text.as_deref() {
                let data = openai_chunk(acct, created, json!({"content": t}), None);
                write_event(out, None, &data);
            } else if let Some(args) = d.partial_json.as_deref() {
                let index = parsed.index.unwrap_or(0);
                let openai_index = tools
                    .iter()
                    .find(|(a, _)| *a == index)
                    .map_or(0, |(_, o)| *o);
                let delta = json!({"tool_calls": [{"index": openai_index, "function": {"arguments": args}}]});
                write_event(out, None, &openai_chunk(acct, created, delta, None));
            }
        }
        "message_delta" => {
            if let Some(r) = parsed.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                let finish = finish_reason_to_openai(r);
                write_event(
                    out,
                    None,
                    &openai_chunk(acct, created, json!({}), Some(finish)),
                );
            }
        }
        "message_stop" => {
            if client_wants_usage {
                let usage = acct.reported_usage().unwrap_or_default();
                let data = json!({
                    "id": acct.response_id.as_deref().unwrap_or(""),
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": acct.response_model.as_deref().unwrap_or(""),
                    "choices": [],
                    "usage": openai_usage_json(&usage)
                });
                write_event(out, None, &data.to_string());
            }
            write_event(out, None, "[DONE]");
        }
        "error" => {
            let e = parsed.error.as_ref();
            let data = json!({"error": {
                "type": e.and_then(|e| e.kind.as_deref()).unwrap_or("api_error"),
                "message": e.and_then(|e| e.message.as_deref()).unwrap_or("upstream stream error"),
                "code": null
            }});
            write_event(out, None, &data.to_string());
        }
        _ => {}
    }
}

fn close_block(open: &mut Option<OpenBlock>, out: &mut Vec<u8>) {
    if let Some(b) = open.take() {
        let data = json!({"type": "content_block_stop", "index": b.index()});
        write_event(out, Some("content_block_stop"), &data.to_string());
    }
}

fn openai_to_anthropic(
    acct: &mut StreamAcct,
    started: &mut bool,
    open: &mut Option<OpenBlock>,
    next_index: &mut u32,
    ev: &SseEvent,
    out: &mut Vec<u8>,
) {
    let start = |acct: &StreamAcct, started: &mut bool, out: &mut Vec<u8>| {
        if *started {
            return;
        }
        *started = true;
        let data = json!({"type": "message_start", "message": {
            "id": acct.response_id.as_deref().unwrap_or(""),
            "type": "message",
            "role": "assistant",
            "model": acct.response_model.as_deref().unwrap_or(""),
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}
        }});
        write_event(out, Some("message_start"), &data.to_string());
    };
    if ev.data.trim() == "[DONE]" {
        start(acct, started, out);
        close_block(open, out);
        let stop = acct
            .finish_reason
            .as_deref()
            .map_or("end_turn", finish_reason_to_anthropic);
        let usage = acct.reported_usage().unwrap_or_default();
        let data = json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": anthropic_usage_json(&usage)});
        write_event(out, Some("message_delta"), &data.to_string());
        write_event(out, Some("message_stop"), "{\"type\":\"message_stop\"}");
        acct.done = true;
        return;
    }
    let Ok(chunk) = serde_json::from_str::<ChunkPeek<'_>>(&ev.data) else {
        return;
    };
    read_openai_chunk(acct, &chunk);
    if let Some(e) = &chunk.error {
        let data = json!({"type": "error", "error": {
            "type": e.kind.as_deref().unwrap_or("api_error"),
            "message": e.message.as_deref().unwrap_or("upstream stream error")
        }});
        write_event(out, Some("error"), &data.to_string());
        return;
    }
    start(acct, started, out);
    for c in chunk.choices.as_deref().unwrap_or_default() {
        let Some(d) = &c.delta else { continue };
        if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
            if !matches!(open, Some(OpenBlock::Text { .. })) {
                close_block(open, out);
                let index = *next_index;
                *next_index += 1;
                *open = Some(OpenBlock::Text { index });
                let data = json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""}});
                write_event(out, Some("content_block_start"), &data.to_string());
            }
            let index = open.map_or(0, OpenBlock::index);
            let data = json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}});
            write_event(out, Some("content_block_delta"), &data.to_string());
        }
        for t in d.tool_calls.as_deref().unwrap_or_default() {
            let openai_index = t.index.unwrap_or(0);
            let same =
                matches!(open, Some(OpenBlock::Tool { openai_index: o, .. }) if *o == openai_index);
            if !same || t.id.is_some() {
                close_block(open, out);
                let index = *next_index;
                *next_index += 1;
                *open = Some(OpenBlock::Tool {
                    index,
                    openai_index,
                });
                let f = t.function.as_ref();
                let data = json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use",
                        "id": t.id.as_deref().unwrap_or(""),
                        "name": f.and_then(|f| f.name.as_deref()).unwrap_or(""),
                        "input": {}}});
                write_event(out, Some("content_block_start"), &data.to_string());
            }
            if let Some(args) = t
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_deref())
                .filter(|a| !a.is_empty())
            {
                let index = open.map_or(0, OpenBlock::index);
                let data = json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": args}});
                write_event(out, Some("content_block_delta"), &data.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    fn run(mut t: StreamTranslator, input: &str) -> (StreamTranslator, Vec<SseEvent>) {
        let mut events = Vec::new();
        let mut p = SseParser::default();
        p.feed(input.as_bytes(), &mut events);
        p.finish(&mut events);
        let mut out = Vec::new();
        for e in &events {
            t.on_event(e, &mut out);
        }
        let mut parsed = Vec::new();
        let mut p = SseParser::default();
        p.feed(&out, &mut parsed);
        p.finish(&mut parsed);
        (t, parsed)
    }

    const OPENAI: &str = concat!(
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w0\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w1\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
        "data: [DONE]\n\n"
    );

    const ANTHROPIC: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-3-5-haiku\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"w0\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );

    #[test]
    fn openai_pass_strips_the_injected_usage_chunk_but_counts_it() {
        let (t, out) = run(StreamTranslator::openai_pass(false), OPENAI);
        assert_eq!(out.len(), 5, "{out:?}");
        assert!(out.iter().all(|e| !e.data.contains("prompt_tokens")));
        assert_eq!(out.last().map(|e| e.data.as_str()), Some("[DONE]"));
        assert_eq!(
            t.acct.reported_usage().map(|u| (u.input, u.output)),
            Some((5, 2))
        );
        assert_eq!(t.acct.output_bytes, 5);
        assert!(t.acct.done);
        assert_eq!(t.acct.finish_reason.as_deref(), Some("stop"));
        let (_, kept) = run(StreamTranslator::openai_pass(true), OPENAI);
        assert_eq!(kept.len(), 6);
    }

    #[test]
    fn anthropic_stream_becomes_openai_chunks() {
        let (t, out) = run(StreamTranslator::anthropic_to_openai(true, 1), ANTHROPIC);
        let data: Vec<Value> = out
            .iter()
            .filter(|e| e.data != "[DONE]")
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        assert_eq!(data[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(data[1]["choices"][0]["delta"]["content"], "w0");
        assert_eq!(
            data[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "toolu_1"
        );
        assert_eq!(
            data[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(data[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(data[5]["usage"]["prompt_tokens"], 5);
        assert_eq!(data[5]["usage"]["completion_tokens"], 9);
        assert_eq!(out.last().map(|e| e.data.as_str()), Some("[DONE]"));
        assert!(data.iter().all(|d| d["model"] == "claude-3-5-haiku"));
        assert_eq!(t.acct.reported_usage().map(|u| u.output), Some(9));
    }

    #[test]
    fn openai_stream_becomes_anthropic_events() {
        let (t, out) = run(StreamTranslator::openai_to_anthropic(), OPENAI);
        let names: Vec<&str> = out.iter().filter_map(|e| e.event.as_deref()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let delta: Value = serde_json::from_str(&out[5].data).unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(delta["usage"]["output_tokens"], 2);
        assert_eq!(delta["usage"]["input_tokens"], 5);
        assert!(t.acct.done);
    }

    #[test]
    fn openai_tool_call_stream_becomes_tool_use_blocks() {
        let input = concat!(
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
            "data: [DONE]\n\n"
        );
        let (_, out) = run(StreamTranslator::openai_to_anthropic(), input);
        let start: Value = serde_json::from_str(&out[1].data).unwrap();
        assert_eq!(start["content_block"]["type"], "tool_use");
        assert_eq!(start["content_block"]["id"], "call_1");
        let args: String = out
            .iter()
            .filter(|e| e.event.as_deref() == Some("content_block_delta"))
            .map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                v["delta"]["partial_json"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(args, "{\"a\":1}");
        let delta: Value = serde_json::from_str(&out[out.len() - 2].data).unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn a_cut_stream_is_not_complete_but_counts_what_was_sent() {
        let cut: String = OPENAI
            .split("\n\n")
            .take(3)
            .collect::<Vec<_>>()
            .join("\n\n");
        let (mut t, _) = run(StreamTranslator::openai_pass(false), &cut);
        let mut out = Vec::new();
        assert!(!t.on_eof(&mut out));
        assert_eq!(t.acct.output_bytes, 5);
        assert!(t.acct.reported_usage().is_none());
        assert!(t.acct.first_token.is_some());
    }

    #[test]
    fn a_stream_without_done_but_with_usage_is_complete() {
        let no_done = OPENAI.replace("data: [DONE]\n\n", "");
        let (mut t, _) = run(StreamTranslator::openai_pass(false), &no_done);
        let mut out = Vec::new();
        assert!(t.on_eof(&mut out));
        assert_eq!(String::from_utf8(out).unwrap(), "data: [DONE]\n\n");
    }
}
