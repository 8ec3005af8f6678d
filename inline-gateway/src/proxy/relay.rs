//! Streams: the upstream's SSE bytes, parsed and passed on (or translated)
//! chunk by chunk as the response body; a Responses stream to a Responses
//! caller goes on exactly as the upstream wrote it. The body owns the call's
//! [`CallLog`]: the call is settled when the terminal event passes (before
//! the caller reads it), when either side cuts the stream, or when the body
//! is dropped because the caller went away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use super::call::CallLog;
use crate::sse::{SseEvent, SseParser};
use crate::translate::StreamTranslator;

pub(crate) struct Relay {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    events: Vec<SseEvent>,
    pub translator: StreamTranslator,
    out: Vec<u8>,
}

impl Relay {
    pub(crate) fn new(resp: reqwest::Response, translator: StreamTranslator) -> Self {
        Self {
            upstream: resp.bytes_stream().boxed(),
            parser: SseParser::default(),
            events: Vec::with_capacity(4),
            translator,
            out: Vec::new(),
        }
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    pub(crate) fn done(&self) -> bool {
        self.translator.acct.done
    }

    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Bytes, ()>> {
        self.upstream.next().await.map(|r| r.map_err(|_| ()))
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if self.translator.passes_bytes() {
            // Passed on byte for byte; the events are parsed only to be read.
            self.out.extend_from_slice(chunk);
        }
        self.parser.feed(chunk, &mut self.events);
        self.process();
    }

    fn process(&mut self) {
        for ev in self.events.drain(..) {
            self.translator.on_event(&ev, &mut self.out);
        }
    }

    /// The upstream ended; returns whether the stream was complete.
    pub(crate) fn end(&mut self) -> bool {
        self.parser.finish(&mut self.events);
        self.process();
        self.translator.on_eof(&mut self.out)
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.out))
    }
}

/// The response body of a streamed call.
pub(crate) struct RelayBody {
    relay: Relay,
    log: CallLog,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    finished: bool,
}

impl RelayBody {
    pub(crate) fn new(relay: Relay, log: CallLog, idle: Duration) -> Self {
        Self {
            relay,
            log,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            finished: false,
        }
    }

    fn fill_record(&mut self) {
        let acct = &self.relay.translator.acct;
        let started = self.log.started();
        let r = &mut self.log.record;
        r.ttft_nanos = acct.first_token.map(|t| {
            i64::try_from(t.saturating_duration_since(started).as_nanos()).unwrap_or(i64::MAX)
        });
        if let Some(m) = &acct.response_model {
            r.response_model = Some(m.clone());
        }
        if let Some(id) = &acct.response_id {
            r.request_id = Some(id.clone());
        }
        if let Some(f) = &acct.finish_reason {
            r.finish_reason = Some(f.clone());
        }
    }

    /// The terminal event passed (or the upstream ended after its final usage).
    fn complete(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.fill_record();
        let acct = &self.relay.translator.acct;
        let (usage, bytes) = (acct.reported_usage(), acct.output_bytes);
        match acct.error.clone() {
            Some(kind) => {
                self.log.record.labels.insert("upstream_error".into(), kind);
                self.log.cut("upstream_stream_error", usage, bytes);
            }
            None => self.log.complete(200, usage, bytes),
        }
    }

    fn cut(&mut self, why: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.fill_record();
        let acct = &self.relay.translator.acct;
        let (usage, bytes) = (acct.reported_usage(), acct.output_bytes);
        self.log.cut(why, usage, bytes);
    }

    /// The provider went quiet past the link's timeout: it may still be
    /// generating, so the call is settled at its worst case.
    fn stall(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.fill_record();
        let usage = self.relay.translator.acct.reported_usage();
        self.log.stalled(usage);
    }
}

impl Stream for RelayBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.relay.has_output() {
                if this.relay.done() {
                    // Settled before the caller can read the last event.
                    this.complete();
                }
                return Poll::Ready(Some(Ok(this.relay.take())));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if this.relay.done() {
                this.complete();
                return Poll::Ready(None);
            }
            match this.relay.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.relay.feed(&chunk);
                    let next = Instant::now() + this.idle;
                    this.sleep.as_mut().reset(next);
                }
                Poll::Ready(Some(Err(_))) => {
                    this.cut("upstream_stream_cut");
                    return Poll::Ready(Some(Err(std::io::Error::other(
                        "the provider's stream broke off",
                    ))));
                }
                Poll::Ready(None) => {
                    if this.relay.end() {
                        continue;
                    }
                    this.cut("upstream_stream_cut");
                    return Poll::Ready(Some(Err(std::io::Error::other(
                        "the provider's stream ended early",
                    ))));
                }
                Poll::Pending => {
                    if this.sleep.as_mut().poll(cx).is_ready() {
                        this.stall();
                        return Poll::Ready(Some(Err(std::io::Error::other(
                            "the provider's stream stalled",
                        ))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // The caller went away mid-stream (hyper drops the body).
        self.cut("client_disconnected");
    }
}
