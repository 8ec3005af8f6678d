//! One attempt on one link: send, wait (within the link's timeout) for the
//! answer or, for streams, its first event, and classify what went wrong.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode};
use tokio::time::{Instant, timeout_at};

use super::relay::Relay;

/// Upstream error bodies read at most this far (they go back to callers).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Why an attempt did not produce an answer.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout,
    /// The connection could not be made or broke before an answer.
    Connect,
    /// The provider answered with an error status.
    Status {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<HeaderValue>,
    },
    /// The answer's body broke off or was not what its dialect promises.
    Body,
    /// The provider answered with a redirect. It is never followed: the
    /// provider key would go to an address the configuration does not name
    /// (an HTTP client only strips `authorization` on a redirect to another
    /// host, not `x-api-key` or `api-key`).
    Redirect,
}

impl Failure {
    /// Timeouts, connection errors, broken bodies, redirects, 408, 429 and
    /// 5xx move on to the next attempt; other statuses are the caller's
    /// problem and are answered.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Failure::Timeout | Failure::Connect | Failure::Body | Failure::Redirect => true,
            Failure::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
        }
    }

    /// Whether trying the same link again may help. A redirect will not
    /// change between tries (it is the provider's `base_url` that is out of
    /// date), so a chain moves on from it at once, without the link's
    /// retries or their backoff.
    pub(crate) fn may_pass_on_retry(&self) -> bool {
        !matches!(self, Failure::Redirect)
    }

    /// When the provider may have taken the request on without answering
    /// (and so may bill it): the status and error type of such an attempt.
    /// A timeout once the request may have gone out (a connection that
    /// could not be made is [`Failure::Connect`]), or a success whose body
    /// broke off or was not the answer.
    pub(crate) fn unanswered(&self) -> Option<(u16, &'static str)> {
        match self {
            Failure::Timeout => Some((504, "upstream_timeout")),
            Failure::Body => Some((502, "upstream_unreachable")),
            Failure::Connect | Failure::Redirect | Failure::Status { .. } => None,
        }
    }

    /// For logs: never the body.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connection_error",
            Failure::Body => "broken_body",
            Failure::Redirect => "redirect",
            Failure::Status { status, .. } => match status.as_u16() {
                429 => "status_429",
                500 => "status_500",
                502 => "status_502",
                503 => "status_503",
                504 => "status_504",
                529 => "status_529",
                400..=499 => "status_4xx",
                _ => "status_5xx",
            },
        }
    }
}

/// Sends `req` and waits for a success status before `deadline`.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    deadline: Instant,
) -> Result<reqwest::Response, Failure> {
    let resp = match timeout_at(deadline, req.send()).await {
        Err(_) => return Err(Failure::Timeout),
        // Not connected (even if it timed out): nothing reached the provider.
        Ok(Err(e)) if e.is_connect() => return Err(Failure::Connect),
        Ok(Err(e)) if e.is_timeout() => return Err(Failure::Timeout),
        Ok(Err(_)) => return Err(Failure::Connect),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status.is_redirection() {
        return Err(Failure::Redirect);
    }
    let retry_after = resp.headers().get(http::header::RETRY_AFTER).cloned();
    let body = read_limited(resp, deadline).await.unwrap_or_default();
    Err(Failure::Status {
        status,
        body,
        retry_after,
    })
}

async fn read_limited(resp: reqwest::Response, deadline: Instant) -> Option<Bytes> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    loop {
        match timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                let room = ERROR_BODY_LIMIT.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if buf.len() >= ERROR_BODY_LIMIT {
                    break;
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                if buf.is_empty() {
                    return None;
                }
                break;
            }
        }
    }
    Some(Bytes::from(buf))
}

/// The whole body of a JSON answer, before `deadline`.
pub(crate) async fn read_json(
    resp: reqwest::Response,
    deadline: Instant,
) -> Result<Bytes, Failure> {
    match timeout_at(deadline, resp.bytes()).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(e)) if e.is_timeout() => Err(Failure::Timeout),
        Ok(Err(_)) => Err(Failure::Body),
        Ok(Ok(b)) => Ok(b),
    }
}

/// Waits for the first event of a stream before `deadline`: a stream that
/// opens and then stalls still falls back, since the caller saw nothing.
pub(crate) async fn prime(relay: &mut Relay, deadline: Instant) -> Result<(), Failure> {
    loop {
        if relay.has_output() || relay.done() {
            return Ok(());
        }
        match timeout_at(deadline, relay.next_chunk()).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Some(Ok(chunk))) => relay.feed(&chunk),
            Ok(Some(Err(()))) => return Err(Failure::Body),
            Ok(None) => {
                relay.end();
                return if relay.has_output() {
                    Ok(())
                } else {
                    Err(Failure::Body)
                };
            }
        }
    }
}

/// Backoff before retry `n` (1-based) on the same link: `base`, doubled each time.
pub(crate) fn backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1u32 << n.saturating_sub(1).min(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_moves_on_and_what_is_answered() {
        let status = |s: u16| Failure::Status {
            status: StatusCode::from_u16(s).unwrap(),
            body: Bytes::new(),
            retry_after: None,
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(status(408).is_retryable());
        assert!(Failure::Redirect.is_retryable());
        assert!(!Failure::Redirect.may_pass_on_retry());
        assert!(Failure::Timeout.may_pass_on_retry());
        assert!(status(503).may_pass_on_retry());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(Failure::Timeout.is_retryable());
        assert!(Failure::Connect.is_retryable());
    }

    #[test]
    fn what_the_provider_may_bill_without_answering() {
        assert_eq!(
            Failure::Timeout.unanswered(),
            Some((504, "upstream_timeout"))
        );
        assert_eq!(
            Failure::Body.unanswered(),
            Some((502, "upstream_unreachable"))
        );
        assert_eq!(Failure::Connect.unanswered(), None);
        assert_eq!(Failure::Redirect.unanswered(), None);
        let refused = Failure::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::new(),
            retry_after: None,
        };
        assert_eq!(refused.unanswered(), None, "a provider error is not billed");
    }

    #[test]
    fn backoff_doubles() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, 3), Duration::from_millis(400));
    }
}
