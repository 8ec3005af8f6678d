//! Responses API streams: reading a Responses upstream's events for the
//! row (its bytes go to the caller untouched, see `proxy::relay`), and
//! writing the Responses event sequence for a caller whose call a chat
//! completions (or, through chat chunks, an Anthropic) upstream served:
//! `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, `response.content_part.added`,
//! `response.output_text.delta`… `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done` (function
//! calls: `response.function_call_arguments.delta`… `.done`), and last
//! `response.completed` (or `response.incomplete`) with the whole response
//! and its usage. Every event is named and carries `sequence_number`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::responses::{
    ResponseFrame, function_call_item, message_item, output_text_part, status_of,
};
use super::stream::{ChunkPeek, StreamAcct};
use crate::sse::{SseEvent, write_event};
use crate::usage::{ResponsesUsage, Usage};

/// The `response` object of an answer or of a stream's lifecycle event:
/// the fields rows need.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ResponsePeek {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub incomplete_details: Option<IncompletePeek>,
    #[serde(default)]
    pub usage: Option<ResponsesUsage>,
    #[serde(default)]
    pub error: Option<ResponseErrorPeek>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct IncompletePeek {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ResponseErrorPeek {
    #[serde(default)]
    pub code: Option<String>,
}

impl ResponsePeek {
    /// The row's finish reason: why an incomplete response stopped
    /// (`max_output_tokens`, `content_filter`), else its status.
    pub(crate) fn finish_reason(&self) -> Option<String> {
        match self.status.as_deref() {
            Some("incomplete") => self
                .incomplete_details
                .as_ref()
                .and_then(|d| d.reason.clone())
                .or_else(|| Some("incomplete".to_owned())),
            other => other.map(str::to_owned),
        }
    }
}

#[derive(Deserialize)]
struct EventPeek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(default)]
    response: Option<ResponsePeek>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

/// Accounts one event of a Responses upstream: the response's id and
/// model, the bytes of every text delta (text, refusals, function call
/// arguments, reasoning), and the terminal event's usage — the usage of
/// `response.completed`, `response.incomplete` or `response.failed`; an
/// `error` event ends the stream too.
pub(super) fn read_responses_event(acct: &mut StreamAcct, ev: &SseEvent) {
    let Ok(peek) = serde_json::from_str::<EventPeek<'_>>(&ev.data) else {
        return;
    };
    let kind = peek.kind.as_deref().or(ev.event.as_deref()).unwrap_or("");
    if let Some(r) = &peek.response {
        if acct.response_id.is_none() {
            acct.response_id.clone_from(&r.id);
        }
        if acct.response_model.is_none() {
            acct.response_model = r.model.clone().filter(|m| !m.is_empty());
        }
    }
    if kind.ends_with(".delta")
        && let Some(raw) = peek.delta
        && let Ok(text) = serde_json::from_str::<Cow<'_, str>>(raw.get())
    {
        acct.token(text.len());
    }
    match kind {
        "response.completed" | "response.incomplete" | "response.failed" => {
            let r = peek.response.unwrap_or_default();
            acct.finish_reason = r.finish_reason();
            acct.openai_usage = r.usage.map(ResponsesUsage::to_usage);
            if kind == "response.failed" {
                acct.error = Some(
                    r.error
                        .and_then(|e| e.code)
                        .unwrap_or_else(|| "response_failed".to_owned()),
                );
            }
            acct.done = true;
        }
        "error" => {
            acct.error = Some(peek.code.as_deref().unwrap_or("stream_error").to_owned());
            acct.done = true;
        }
        _ => {}
    }
}

/// The output item being streamed.
#[derive(Debug)]
enum OpenItem {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        /// The chat tool call's index.
        tool_index: u64,
    },
}

/// Writes the Responses events of one call from chat completion chunks.
#[derive(Debug)]
pub(crate) struct ResponsesWriter {
    frame: ResponseFrame,
    sequence: u64,
    started: bool,
    model: String,
    /// Finished output items.
    output: Vec<Value>,
    open: Option<OpenItem>,
    /// The chat finish reason, once seen.
    finish: Option<String>,
    messages: usize,
    calls: usize,
}

impl ResponsesWriter {
    pub(crate) fn new(frame: ResponseFrame) -> Self {
        Self {
            frame,
            sequence: 0,
            started: false,
            model: String::new(),
            output: Vec::new(),
            open: None,
            finish: None,
            messages: 0,
            calls: 0,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, fields: Value) {
        let mut data = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        data.insert("type".into(), Value::from(kind));
        data.insert("sequence_number".into(), Value::from(self.sequence));
        self.sequence += 1;
        write_event(out, Some(kind), &Value::Object(data).to_string());
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self
            .frame
            .object(&self.model, "in_progress", None, Vec::new(), None);
        self.emit(
            out,
            "response.created",
            json!({"response": response.clone()}),
        );
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let Some(item) = self.open.take() else {
            return;
        };
        let index = self.output.len();
        match item {
            OpenItem::Message { id, text } => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let with = |extra: Value| {
                    let mut m = at.as_object().cloned().unwrap_or_default();
                    if let Value::Object(e) = extra {
                        m.extend(e);
                    }
                    Value::Object(m)
                };
                self.emit(
                    out,
                    "response.output_text.done",
                    with(json!({"text": text, "logprobs": []})),
                );
                let part = output_text_part(&text);
                self.emit(
                    out,
                    "response.content_part.done",
                    with(json!({"part": part.clone()})),
                );
                let (status, _) = status_of(self.finish.as_deref());
                let item = message_item(&id, status, vec![part]);
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item.clone()}),
                );
                self.output.push(item);
            }
            OpenItem::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
                );
                let item = function_call_item(&id, "completed", &call_id, &name, &arguments);
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item.clone()}),
                );
                self.output.push(item);
            }
        }
    }

    fn text(&mut self, delta: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(OpenItem::Message { .. })) {
            self.close(out);
            let suffix = self.frame.suffix();
            let id = match self.messages {
                0 => format!("msg_{suffix}"),
                n => format!("msg_{suffix}_{n}"),
            };
            self.messages += 1;
            let index = self.output.len();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": message_item(&id, "in_progress", Vec::new())}),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": output_text_part("")}),
            );
            self.open = Some(OpenItem::Message {
                id,
                text: String::new(),
            });
        }
        let index = self.output.len();
        let item_id = match &mut self.open {
            Some(OpenItem::Message { id, text }) => {
                text.push_str(delta);
                id.clone()
            }
            _ => return,
        };
        self.emit(
            out,
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": index, "content_index": 0,
                   "delta": delta, "logprobs": []}),
        );
    }

    fn call(
        &mut self,
        tool_index: u64,
        call_id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
        out: &mut Vec<u8>,
    ) {
        let same =
            matches!(&self.open, Some(OpenItem::Call { tool_index: t, .. }) if *t == tool_index);
        if !same || call_id.is_some_and(|c| !c.is_empty()) && !self.open_call_is(call_id) {
            self.close(out);
            let id = format!("fc_{}_{}", self.frame.suffix(), self.calls);
            self.calls += 1;
            let index = self.output.len();
            let call_id = call_id.unwrap_or("").to_owned();
            let name = name.unwrap_or("").to_owned();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index,
                       "item": function_call_item(&id, "in_progress", &call_id, &name, "")}),
            );
            self.open = Some(OpenItem::Call {
                id,
                call_id,
                name,
                arguments: String::new(),
                tool_index,
            });
        }
        if arguments.is_empty() {
            return;
        }
        let index = self.output.len();
        let item_id = match &mut self.open {
            Some(OpenItem::Call {
                id, arguments: a, ..
            }) => {
                a.push_str(arguments);
                id.clone()
            }
            _ => return,
        };
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": index, "delta": arguments}),
        );
    }

    fn open_call_is(&self, call_id: Option<&str>) -> bool {
        matches!((&self.open, call_id), (Some(OpenItem::Call { call_id: c, .. }), Some(id)) if c == id)
    }

    /// One chat completion chunk (already accounted by the caller).
    pub(super) fn chunk(&mut self, chunk: &ChunkPeek<'_>, out: &mut Vec<u8>) {
        if self.model.is_empty()
            && let Some(m) = chunk.model.as_deref()
        {
            m.clone_into(&mut self.model);
        }
        if let Some(e) = &chunk.error {
            let kind = e.kind.as_deref().unwrap_or("api_error").to_owned();
            let message = e
                .message
                .as_deref()
                .unwrap_or("upstream stream error")
                .to_owned();
            self.error(&kind, &message, out);
            return;
        }
        self.start(out);
        for c in chunk.choices.as_deref().unwrap_or_default() {
            if let Some(d) = &c.delta {
                if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                    self.text(t, out);
                }
                for t in d.tool_calls.as_deref().unwrap_or_default() {
                    let f = t.function.as_ref();
                    self.call(
                        t.index.unwrap_or(0),
                        t.id.as_deref(),
                        f.and_then(|f| f.name.as_deref()),
                        f.and_then(|f| f.arguments.as_deref()).unwrap_or(""),
                        out,
                    );
                }
            }
            if let Some(f) = &c.finish_reason {
                self.finish = Some(f.to_string());
            }
        }
    }

    /// The upstream ended the stream with an error.
    pub(super) fn error(&mut self, code: &str, message: &str, out: &mut Vec<u8>) {
        self.emit(
            out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
    }

    /// The chat stream ended (`[DONE]`): the open item closes and the
    /// response completes with `usage`.
    pub(super) fn finish(&mut self, usage: Option<Usage>, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let (status, reason) = status_of(self.finish.as_deref());
        let output = std::mem::take(&mut self.output);
        let response = self
            .frame
            .object(&self.model, status, reason, output, usage.as_ref());
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, kind, json!({"response": response}));
    }
}
