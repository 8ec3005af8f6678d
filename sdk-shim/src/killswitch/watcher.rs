//! The background task: follow the gRPC watch stream, poll HTTP while it
//! is down, and publish every state received.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tollgate_proto::enforcement::v1::EnforcementState;
use tollgate_proto::enforcement::v1::enforcement_client::EnforcementClient;
use tonic::Streaming;

use super::config::ValidatedConfig;
use super::state::{EnforcementSnapshot, JsonState, StateSource};

/// Why a gRPC watch could not be opened or kept; logged, then retried.
#[derive(Debug, thiserror::Error)]
enum WatchFailure {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the collector answered {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("the stream ended")]
    Ended,
    #[error("no first state within {0:?}")]
    FirstStateTimeout(Duration),
}

/// Why an HTTP poll failed; logged, then retried at the next tick.
#[derive(Debug, thiserror::Error)]
#[error("polling {url} failed: {source}")]
struct PollFailure {
    url: String,
    #[source]
    source: reqwest::Error,
}

/// Owns the sending side of the state channel; see [`Watcher::run`].
pub(crate) struct Watcher {
    config: ValidatedConfig,
    tx: watch::Sender<Option<EnforcementSnapshot>>,
}

impl Watcher {
    pub(crate) fn new(
        config: ValidatedConfig,
        tx: watch::Sender<Option<EnforcementSnapshot>>,
    ) -> Self {
        Self { config, tx }
    }

    /// Watches until every [`KillSwitch`](super::KillSwitch) handle is gone.
    pub(crate) async fn run(self) {
        tokio::select! {
            () = self.tx.closed() => {}
            never = self.watch_forever() => match never {},
        }
    }

    async fn watch_forever(&self) -> Infallible {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        // The first attempt goes at once; later ones wait their backoff.
        let mut delay = None;
        loop {
            // No stream is up: open one, and poll HTTP until it is.
            let (stream, first) = tokio::select! {
                opened = self.open_stream(&mut backoff, delay) => opened,
                never = self.poll_http() => match never {},
            };
            tracing::info!(
                endpoint = %self.config.grpc.uri(),
                "kill-switch: following the gRPC enforcement stream"
            );
            self.publish(first, StateSource::Grpc);
            let opened_at = Instant::now();
            let failure = self.follow(stream).await;
            tracing::warn!(
                endpoint = %self.config.grpc.uri(),
                error = %failure,
                "kill-switch: gRPC enforcement stream lost; polling HTTP until it is back"
            );
            // A stream that lived a while was healthy: start the backoff
            // over. One that dies at once keeps growing it, so a collector
            // that accepts and drops streams is not hammered.
            if opened_at.elapsed() >= self.config.reconnect_max {
                backoff.reset();
            }
            delay = Some(backoff.next_delay());
        }
    }

    /// Retries until a stream delivers its first state.
    async fn open_stream(
        &self,
        backoff: &mut Backoff,
        mut delay: Option<Duration>,
    ) -> (Streaming<EnforcementState>, EnforcementState) {
        loop {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match self.try_open().await {
                Ok(opened) => return opened,
                Err(failure) => {
                    let next = backoff.next_delay();
                    tracing::debug!(
                        endpoint = %self.config.grpc.uri(),
                        error = %failure,
                        retry_in = ?next,
                        "kill-switch: cannot open the gRPC enforcement stream"
                    );
                    delay = Some(next);
                }
            }
        }
    }

    /// Only a stream that has delivered a state counts as up: one that
    /// opens and then stays silent must not stop the HTTP fallback.
    async fn try_open(
        &self,
    ) -> Result<(Streaming<EnforcementState>, EnforcementState), WatchFailure> {
        let channel = self.config.grpc.connect().await?;
        let mut client = EnforcementClient::new(channel);
        let mut stream = client
            .watch(self.config.watch_request.clone())
            .await?
            .into_inner();
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, stream.message()).await {
            Ok(Ok(Some(first))) => Ok((stream, first)),
            Ok(Ok(None)) => Err(WatchFailure::Ended),
            Ok(Err(status)) => Err(WatchFailure::Status(status)),
            Err(_) => Err(WatchFailure::FirstStateTimeout(timeout)),
        }
    }

    /// Publishes every state on the stream; returns why it stopped.
    async fn follow(&self, mut stream: Streaming<EnforcementState>) -> WatchFailure {
        loop {
            match stream.message().await {
                Ok(Some(state)) => self.publish(state, StateSource::Grpc),
                Ok(None) => return WatchFailure::Ended,
                Err(status) => return WatchFailure::Status(status),
            }
        }
    }

    /// Polls `GET /v1/enforcement` forever, the first time at once. Runs
    /// only while no gRPC stream is up (it is dropped when one opens).
    async fn poll_http(&self) -> Infallible {
        let mut ticks = tokio::time::interval(self.config.poll_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.fetch().await {
                Ok(state) => self.publish(state, StateSource::Http),
                Err(failure) => tracing::debug!(error = %failure, "kill-switch: HTTP poll failed"),
            }
        }
    }

    async fn fetch(&self) -> Result<EnforcementState, PollFailure> {
        let url = &self.config.poll_url;
        let failure = |source| PollFailure {
            url: url.to_string(),
            source,
        };
        let json: JsonState = self
            .config
            .http
            .get(url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failure)?
            .json()
            .await
            .map_err(failure)?;
        Ok(json.into())
    }

    fn publish(&self, state: EnforcementState, source: StateSource) {
        let snapshot = EnforcementSnapshot::from_proto(state, source);
        let was_blocked = self
            .tx
            .borrow()
            .as_ref()
            .is_some_and(|s| !s.blocks.is_empty());
        let blocked = !snapshot.blocks.is_empty();
        if blocked != was_blocked {
            tracing::info!(
                blocked,
                revision = snapshot.revision,
                ?source,
                "kill-switch: enforcement state changed"
            );
        }
        // Last state wins whatever its revision: a restarted collector
        // starts counting again, and only one path publishes at a time.
        self.tx.send_replace(Some(snapshot));
    }
}

/// Exponential backoff with jitter, so that agents reconnecting after a
/// collector restart do not all arrive at the same instant.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    /// The next delay: the current step scaled by a random 50-100 %, after
    /// which the step doubles up to `max`.
    fn next_delay(&mut self) -> Duration {
        let delay = self.current.mul_f64(rand::random_range(0.5..=1.0));
        self.current = self.current.saturating_mul(2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(5_000));
        let steps: Vec<Duration> = (0..9).map(|_| backoff.next_delay()).collect();
        let caps = [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000];
        for (delay, cap) in steps.iter().zip(caps) {
            assert!(
                *delay <= ms(cap) && *delay >= ms(cap / 2),
                "{delay:?} vs {cap}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(100));
    }
}
