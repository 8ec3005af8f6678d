//! Entry points for the fuzz targets in `fuzz/` (hidden from the docs, not
//! a stable API). Each runs one of the gateway's parsers on untrusted bytes
//! the way a request or an upstream answer reaches it, and returns what the
//! gateway would send on, so that a target can check the output too.

use serde_json::Value;

pub use crate::dialect::{Dialect, Operation};
use crate::sse::SseParser;
use crate::translate::{self, RequestPeek, StreamTranslator};
use crate::worst_case::InputBound;

/// What the gateway reads of a caller's body, and the body it would send
/// to an upstream of the same dialect.
#[derive(Debug)]
pub struct Peeked {
    pub model: Option<String>,
    pub stream: bool,
    pub max_output: Option<u64>,
    pub wants_usage: bool,
    /// The body for the upstream, or why it could not be written.
    pub upstream_body: Result<Vec<u8>, String>,
}

/// A caller's body peeked and rewritten for a link whose model is
/// `model`; `None` when the gateway would refuse it as not a request.
pub fn peek_and_rewrite(body: &[u8], caller: Dialect, model: &str) -> Option<Peeked> {
    let peek: RequestPeek<'_> = serde_json::from_slice(body).ok()?;
    let ask_usage = caller == Dialect::OpenAi && peek.stream();
    let upstream_body =
        translate::upstream_body(body, &peek, model, ask_usage, None).map_err(|e| e.to_string());
    Some(Peeked {
        model: peek.model.as_deref().map(str::to_owned),
        stream: peek.stream(),
        max_output: peek.max_output(),
        wants_usage: peek.wants_usage(),
        upstream_body,
    })
}

/// A caller's body in the other dialect, for a link whose model is
/// `model`, and the input bound admission reserves for the caller's body; `None`
/// when the body is not JSON.
pub fn translate_request(body: &[u8], caller: Dialect, model: &str) -> Option<(Value, u64)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let op = match caller {
        Dialect::OpenAi => Operation::Chat,
        Dialect::Anthropic => Operation::Messages,
        Dialect::Responses => Operation::Responses,
    };
    let estimate = InputBound::of(op, &v).tokens(4096);
    let out = match caller {
        Dialect::OpenAi => translate::request::openai_to_anthropic(&v, model, 4096),
        Dialect::Anthropic => {
            translate::request::anthropic_to_openai(&v, model, "max_completion_tokens", 4096)
        }
        // What cannot be translated is answered as a 400 naming it.
        Dialect::Responses => {
            translate::responses::responses_to_chat(&v, model, "max_completion_tokens", 4096)
                .unwrap_or_else(Value::String)
        }
    };
    Some((out, estimate))
}

/// An upstream's JSON answer as the caller gets it: read for the row, then
/// translated when the dialects differ. `None` when the gateway would treat
/// the answer as a broken provider (not JSON).
pub fn translate_response(body: &[u8], op: Operation, upstream: Dialect) -> Option<Value> {
    let answer = match crate::proxy::read_answer(op, upstream, body) {
        Some(a) => a,
        None if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() => return None,
        None => crate::proxy::Answer::default(),
    };
    let usage = answer.usage.unwrap_or_default();
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Some(match (op.dialect(), upstream) {
        (Dialect::OpenAi, Dialect::Anthropic) => {
            translate::response::anthropic_to_openai(&v, &usage, 1_767_225_600)
        }
        (Dialect::Anthropic, Dialect::OpenAi) => {
            translate::response::openai_to_anthropic(&v, &usage)
        }
        _ => v,
    })
}

/// What a streamed answer became.
#[derive(Debug)]
pub struct Streamed {
    /// The SSE bytes the caller got.
    pub out: Vec<u8>,
    /// Whether the stream reached its end (terminal event, or finish reason
    /// and final usage before the upstream closed).
    pub complete: bool,
    /// (input, output) tokens the upstream reported.
    pub usage: Option<(u64, u64)>,
    /// The error kind, when the upstream ended the stream with an error.
    pub error: Option<String>,
}

/// An upstream's SSE stream, arriving in `chunks`, relayed to a `caller`
/// (translated when the dialects differ), as the gateway's relay does.
pub fn relay_stream<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    caller: Dialect,
    upstream: Dialect,
    wants_usage: bool,
) -> Streamed {
    let mut parser = SseParser::default();
    let mut translator = StreamTranslator::between(caller, upstream, wants_usage, 1_767_225_600);
    let (mut events, mut out) = (Vec::new(), Vec::new());
    for chunk in chunks {
        parser.feed(chunk, &mut events);
        for ev in events.drain(..) {
            translator.on_event(&ev, &mut out);
        }
    }
    parser.finish(&mut events);
    for ev in events.drain(..) {
        translator.on_event(&ev, &mut out);
    }
    let complete = translator.on_eof(&mut out);
    let usage = translator
        .acct
        .reported_usage()
        .map(|u| (u.input, u.output));
    Streamed {
        out,
        complete,
        usage,
        error: translator.acct.error,
    }
}

/// SSE bytes split into events (`event:` name, `data:`), as the relay
/// parses an upstream: for checking what [`relay_stream`] wrote.
pub fn parse_sse(bytes: &[u8]) -> Vec<(Option<String>, String)> {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    parser.feed(bytes, &mut events);
    parser.finish(&mut events);
    events.into_iter().map(|e| (e.event, e.data)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_rewrites_model_and_asks_for_usage_on_openai_streams() {
        let body = br#"{"model":"fast","stream":true,"stream_options":{"x":1},"messages":[]}"#;
        let p = peek_and_rewrite(body, Dialect::OpenAi, "gpt-4o-mini").unwrap();
        assert_eq!(p.model.as_deref(), Some("fast"));
        assert!(p.stream && !p.wants_usage);
        let v: Value = serde_json::from_slice(&p.upstream_body.unwrap()).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"x": 1, "include_usage": true})
        );
        assert!(peek_and_rewrite(b"nope", Dialect::OpenAi, "m").is_none());
    }

    #[test]
    fn a_translated_stream_ends_with_the_callers_terminal_event() {
        let upstream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":7,\"output_tokens\":0}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hé\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        // Split inside the two-byte letter: the parser joins the halves.
        let cut = upstream.find('é').unwrap() + 1;
        let (a, b) = upstream.as_bytes().split_at(cut);
        let s = relay_stream([a, b], Dialect::OpenAi, Dialect::Anthropic, true);
        assert!(s.complete);
        assert_eq!((s.usage, s.error), (Some((7, 3)), None));
        let events = parse_sse(&s.out);
        assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
        assert!(events.iter().any(|e| e.1.contains("hé")), "{events:?}");
    }
}
