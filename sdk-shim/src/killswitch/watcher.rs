//! The background task: follow the gRPC watch stream, poll HTTP while it
//! is down, and publish every state received, or why the key was refused.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tollgate_proto::enforcement::v1::EnforcementState;
use tollgate_proto::enforcement::v1::enforcement_client::EnforcementClient;
use tonic::{Code, Streaming};

use super::config::ValidatedConfig;
use super::state::{EnforcementSnapshot, JsonRefusal, JsonState, KeyRefused, StateSource};

/// Why a gRPC watch could not be opened or kept; logged, then retried.
#[derive(Debug, thiserror::Error)]
enum WatchFailure {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error(transparent)]
    Refused(KeyRefused),
    #[error("the collector answered {}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    #[error("the stream ended")]
    Ended,
    #[error("no first state within {0:?}")]
    FirstStateTimeout(Duration),
}

impl From<tonic::Status> for WatchFailure {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        let via = StateSource::Grpc;
        match status.code() {
            Code::Unauthenticated => Self::Refused(KeyRefused::Unauthenticated { message, via }),
            Code::PermissionDenied => Self::Refused(KeyRefused::Forbidden { message, via }),
            _ => Self::Status(status),
        }
    }
}

/// Why an HTTP poll failed; logged, then retried at the next tick (a
/// refused key after a backoff).
#[derive(Debug, thiserror::Error)]
enum PollFailure {
    #[error("polling {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(transparent)]
    Refused(KeyRefused),
}

/// Owns the sending side of the state channels; see [`Watcher::run`].
pub(crate) struct Watcher {
    config: ValidatedConfig,
    tx: watch::Sender<Option<EnforcementSnapshot>>,
    /// Set on a refused key, cleared by the next state.
    refused: watch::Sender<Option<KeyRefused>>,
}

impl Watcher {
    pub(crate) fn new(
        config: ValidatedConfig,
        tx: watch::Sender<Option<EnforcementSnapshot>>,
        refused: watch::Sender<Option<KeyRefused>>,
    ) -> Self {
        Self {
            config,
            tx,
            refused,
        }
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
            if let WatchFailure::Refused(refused) = &failure {
                self.report_refusal(refused.clone());
            }
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
                Err(WatchFailure::Refused(refused)) => {
                    // Retried with the same backoff: the key may be
                    // created or widened on the collector meanwhile.
                    self.report_refusal(refused);
                    delay = Some(backoff.next_delay());
                }
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
        let mut request = tonic::Request::new(self.config.watch_request.clone());
        if let Some(authorization) = &self.config.watch_authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        let mut stream = client.watch(request).await?.into_inner();
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, stream.message()).await {
            Ok(Ok(Some(first))) => Ok((stream, first)),
            Ok(Ok(None)) => Err(WatchFailure::Ended),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(WatchFailure::FirstStateTimeout(timeout)),
        }
    }

    /// Publishes every state on the stream; returns why it stopped.
    async fn follow(&self, mut stream: Streaming<EnforcementState>) -> WatchFailure {
        loop {
            match stream.message().await {
                Ok(Some(state)) => self.publish(state, StateSource::Grpc),
                Ok(None) => return WatchFailure::Ended,
                Err(status) => return status.into(),
            }
        }
    }

    /// Polls `GET /v1/enforcement` forever, the first time at once. Runs
    /// only while no gRPC stream is up (it is dropped when one opens).
    async fn poll_http(&self) -> Infallible {
        let poll_interval = self.config.poll_interval;
        let mut ticks = tokio::time::interval(poll_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refused_backoff =
            Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            ticks.tick().await;
            match self.fetch().await {
                Ok(state) => {
                    refused_backoff.reset();
                    self.publish(state, StateSource::Http);
                }
                Err(PollFailure::Refused(refused)) => {
                    self.report_refusal(refused);
                    // A refused key stays refused until someone changes
                    // it: back off like the gRPC reconnects rather than
                    // ask at every tick.
                    ticks.reset_after(refused_backoff.next_delay().max(poll_interval));
                }
                Err(failure) => tracing::debug!(error = %failure, "kill-switch: HTTP poll failed"),
            }
        }
    }

    async fn fetch(&self) -> Result<EnforcementState, PollFailure> {
        let url = &self.config.poll_url;
        let failure = |source| PollFailure::Request {
            url: url.to_string(),
            source,
        };
        let response = self
            .config
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(failure)?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // `{"error": .., "message": ..}`; without one the status says enough.
            let body: JsonRefusal = response.json().await.unwrap_or_default();
            let message = if body.message.is_empty() {
                status.to_string()
            } else {
                body.message
            };
            let via = StateSource::Http;
            return Err(PollFailure::Refused(if status == StatusCode::FORBIDDEN {
                KeyRefused::Forbidden { message, via }
            } else {
                KeyRefused::Unauthenticated { message, via }
            }));
        }
        let json: JsonState = response
            .error_for_status()
            .map_err(failure)?
            .json()
            .await
            .map_err(failure)?;
        Ok(json.into())
    }

    /// Keeps `refused` for [`KillSwitch::key_refused`](super::KillSwitch::key_refused)
    /// and logs it when it is news: the first refusal since the last
    /// state, or one of another kind. Returns whether it was logged.
    fn report_refusal(&self, refused: KeyRefused) -> bool {
        let mut news = false;
        self.refused.send_modify(|current| {
            news = current.as_ref().is_none_or(|c| !c.same_kind(&refused));
            *current = Some(refused.clone());
        });
        if news {
            if self.tx.borrow().is_some() {
                tracing::error!(
                    error = %refused,
                    "kill-switch: the collector refused the key; keeping the last state received until it accepts one"
                );
            } else {
                tracing::error!(
                    error = %refused,
                    "kill-switch: the collector refused the key; calls go through unchecked (fail-open) until it accepts one"
                );
            }
        }
        news
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
        if self
            .refused
            .send_if_modified(|refused| refused.take().is_some())
        {
            tracing::info!(?source, "kill-switch: the collector accepts the key");
        }
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
    use crate::call::Scope;
    use crate::killswitch::KillSwitchConfig;

    #[test]
    fn a_refusal_is_news_once_until_a_state_arrives() {
        let config = KillSwitchConfig::new(
            "http://127.0.0.1:4317",
            "http://127.0.0.1:7070",
            Scope::default(),
        )
        .validate()
        .unwrap();
        let (tx, _states) = watch::channel(None);
        let (refused_tx, refused) = watch::channel(None);
        let watcher = Watcher::new(config, tx, refused_tx);
        let unauthenticated = |via| KeyRefused::Unauthenticated {
            message: "no key".to_owned(),
            via,
        };

        assert!(watcher.report_refusal(unauthenticated(StateSource::Grpc)));
        // The other path refused too: the same news, kept but not logged again.
        assert!(!watcher.report_refusal(unauthenticated(StateSource::Http)));
        assert_eq!(*refused.borrow(), Some(unauthenticated(StateSource::Http)));
        let forbidden = KeyRefused::Forbidden {
            message: "another tenant".to_owned(),
            via: StateSource::Http,
        };
        assert!(watcher.report_refusal(forbidden.clone()));
        assert!(!watcher.report_refusal(forbidden));

        // A state means the key was accepted; a later refusal is news again.
        watcher.publish(EnforcementState::default(), StateSource::Http);
        assert_eq!(*refused.borrow(), None);
        assert!(watcher.report_refusal(unauthenticated(StateSource::Grpc)));
    }

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
