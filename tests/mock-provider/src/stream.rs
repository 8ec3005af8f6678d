//! Server-sent event responses with provider-like pacing: a TTFT delay before
//! the first event, an inter-chunk delay between content chunks, and the
//! `x-mock-cut-after-chunks` knob that drops the connection mid-stream.

use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::server::Shared;

/// One event of a planned stream.
pub(crate) struct Frame {
    event: Event,
    /// Carries a token (text or tool arguments); only these are paced by
    /// `inter_chunk` and counted by the cut knob.
    content: bool,
}

impl Frame {
    /// An event that carries no token (role, block start, usage, `[DONE]` …).
    pub(crate) fn control(event: Event) -> Self {
        Self {
            event,
            content: false,
        }
    }

    /// An event carrying one token.
    pub(crate) fn content(event: Event) -> Self {
        Self {
            event,
            content: true,
        }
    }
}

/// Delays and cut point of one stream.
pub(crate) struct Pacing {
    pub(crate) ttft: Duration,
    pub(crate) inter_chunk: Duration,
    pub(crate) cut_after_chunks: Option<u32>,
}

/// Emitted in place of the rest of the stream when the cut knob fires; an
/// error from the body stream makes hyper drop the connection without the
/// terminating chunk, which is what a client sees when a provider dies.
#[derive(Debug, thiserror::Error)]
#[error("x-mock-cut-after-chunks: connection dropped mid-stream")]
pub(crate) struct StreamCut;

enum Item {
    Send(Event),
    Cut,
}

struct Step {
    delay: Duration,
    item: Item,
}

/// Turns planned frames into an SSE response that stops early if the mock
/// shuts down, so graceful shutdown never waits on a slow stream.
pub(crate) fn respond(frames: Vec<Frame>, pacing: &Pacing, shared: &Arc<Shared>) -> Response {
    let steps = schedule(frames, pacing);
    let shared = Arc::clone(shared);
    let stream = futures::stream::iter(steps)
        .then(|step| async move {
            if !step.delay.is_zero() {
                tokio::time::sleep(step.delay).await;
            }
            match step.item {
                Item::Send(event) => Ok(event),
                Item::Cut => {
                    // Give hyper one turn to flush what was already sent, so
                    // the client sees headers and chunks before the drop, as
                    // it would from a provider dying mid-answer.
                    tokio::task::yield_now().await;
                    Err(StreamCut)
                }
            }
        })
        .take_until(async move { shared.wait_for_shutdown().await });
    Sse::new(stream).into_response()
}

fn schedule(frames: Vec<Frame>, pacing: &Pacing) -> Vec<Step> {
    let mut steps = Vec::with_capacity(frames.len() + 1);
    let mut sent_content = 0u32;
    let mut last_content_step = None;
    for frame in frames {
        if frame.content && pacing.cut_after_chunks == Some(sent_content) {
            steps.push(Step {
                delay: Duration::ZERO,
                item: Item::Cut,
            });
            return steps;
        }
        let delay = if steps.is_empty() {
            pacing.ttft
        } else if frame.content && sent_content > 0 {
            pacing.inter_chunk
        } else {
            Duration::ZERO
        };
        if frame.content {
            sent_content += 1;
            last_content_step = Some(steps.len());
        }
        steps.push(Step {
            delay,
            item: Item::Send(frame.event),
        });
    }
    // Asked to cut after more chunks than there are: cut right after the
    // last one, so the stream still never completes normally.
    if pacing.cut_after_chunks.is_some() {
        if let Some(last) = last_content_step {
            steps.truncate(last + 1);
        }
        steps.push(Step {
            delay: Duration::ZERO,
            item: Item::Cut,
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(kinds: &str) -> Vec<Frame> {
        kinds
            .chars()
            .map(|kind| {
                if kind == 'c' {
                    Frame::content(Event::default())
                } else {
                    Frame::control(Event::default())
                }
            })
            .collect()
    }

    fn shape(steps: &[Step]) -> Vec<(u64, char)> {
        steps
            .iter()
            .map(|step| {
                let kind = match step.item {
                    Item::Send(_) => 's',
                    Item::Cut => 'X',
                };
                (
                    u64::try_from(step.delay.as_millis()).unwrap_or(u64::MAX),
                    kind,
                )
            })
            .collect()
    }

    fn pacing(cut: Option<u32>) -> Pacing {
        Pacing {
            ttft: Duration::from_millis(100),
            inter_chunk: Duration::from_millis(10),
            cut_after_chunks: cut,
        }
    }

    #[test]
    fn ttft_first_then_inter_chunk_between_contents() {
        let steps = schedule(frames("rcccfu"), &pacing(None));
        assert_eq!(
            shape(&steps),
            vec![
                (100, 's'),
                (0, 's'),
                (10, 's'),
                (10, 's'),
                (0, 's'),
                (0, 's')
            ]
        );
    }

    #[test]
    fn cut_after_two_contents() {
        let steps = schedule(frames("rcccfu"), &pacing(Some(2)));
        assert_eq!(
            shape(&steps),
            vec![(100, 's'), (0, 's'), (10, 's'), (0, 'X')]
        );
    }

    #[test]
    fn cut_after_zero_keeps_only_the_preamble() {
        let steps = schedule(frames("rcccfu"), &pacing(Some(0)));
        assert_eq!(shape(&steps), vec![(100, 's'), (0, 'X')]);
    }

    #[test]
    fn cut_beyond_the_end_still_cuts_before_the_tail() {
        let steps = schedule(frames("rccfu"), &pacing(Some(9)));
        assert_eq!(
            shape(&steps),
            vec![(100, 's'), (0, 's'), (10, 's'), (0, 'X')]
        );
    }
}
