//! The handle agents hold: a cheap check on the hot path, fed by a
//! background watcher.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::config::KillSwitchConfig;
use super::error::KillSwitchError;
use super::guard::GuardError;
use super::state::{Blocked, EnforcementSnapshot, KeyRefused};
use super::watcher::Watcher;

/// The kill-switch for one scope.
///
/// The collector blocks a scope (project, user, ...) when a `block` rule
/// trips or an admin says so. [`KillSwitch`] keeps the state for the agent's
/// scope fresh in a background task, so [`check`](Self::check) on the hot path
/// only reads memory:
///
/// - **Primary path**: the gRPC stream `tollgate.enforcement.v1.Enforcement/Watch`
///   on the collector's OTLP gRPC port. The first message is the current
///   state, then one message per change. When the stream cannot be opened or
///   breaks, it is reopened with jittered exponential backoff
///   ([`KillSwitchConfig::reconnect_min`] doubling up to
///   [`KillSwitchConfig::reconnect_max`]).
/// - **Fallback**: while no gRPC stream is up, `GET {api}/v1/enforcement` is
///   polled every [`KillSwitchConfig::poll_interval`]. Polling stops as soon
///   as a gRPC stream delivers its first state.
/// - **Fail-open**: until a first state arrives from either path, `check`
///   lets calls through ([`wait_ready`](Self::wait_ready) waits for that state).
///   Once a state has arrived, it is kept while both paths are down: a
///   blocked agent stays blocked until told otherwise, except that a block
///   whose `until` has passed counts as lifted without waiting for news.
/// - **Keys**: a collector that requires keys gets
///   [`KillSwitchConfig::key`] as `Authorization: Bearer <key>` on both
///   paths. A refused key (HTTP 401/403, gRPC UNAUTHENTICATED or
///   PERMISSION_DENIED) is logged once with the collector's message and
///   kept in [`key_refused`](Self::key_refused); it is treated like an
///   unreachable collector (fail-open, last state kept), and both paths
///   retry with the backoff rather than at every poll.
///
/// Cheap to clone; clones share one background task. Dropping the last
/// clone stops that task at its next await point, closing its gRPC stream.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    /// `None` until a first state arrives (fail-open).
    state: watch::Receiver<Option<EnforcementSnapshot>>,
    /// Set while the collector refuses the key; cleared by the next state.
    key_refused: watch::Receiver<Option<KeyRefused>>,
}

impl KillSwitch {
    /// Validates `config` and starts watching in the current Tokio runtime.
    ///
    /// Never blocks and never waits for the collector: until a first state
    /// arrives, [`check`](Self::check) lets calls through (fail-open), so
    /// an agent keeps working while the collector is unreachable. Use
    /// [`wait_ready`](Self::wait_ready) to wait for that first state when a
    /// block that already exists must be honoured from the first call.
    pub fn start(config: KillSwitchConfig) -> Result<Self, KillSwitchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(KillSwitchError::NoRuntime)?;
        let config = config.validate()?;
        let (tx, rx) = watch::channel(None);
        let (refused_tx, refused_rx) = watch::channel(None);
        runtime.spawn(Watcher::new(config, tx, refused_tx).run());
        Ok(Self {
            state: rx,
            key_refused: refused_rx,
        })
    }

    /// `Err(Blocked)` when a block is in force for this scope; the hot path
    /// before each model call.
    ///
    /// Reads shared memory under an uncontended read lock (written only when
    /// a new state arrives) and allocates only when refusing. A block whose
    /// `until` has passed is not enforced even before the collector says so.
    #[allow(
        clippy::result_large_err,
        reason = "the Ok path carries nothing; a refusal is rare and callers read all of it"
    )]
    pub fn check(&self) -> Result<(), Blocked> {
        let state = self.state.borrow();
        let Some(snapshot) = state.as_ref() else {
            return Ok(());
        };
        if snapshot.blocks.is_empty() {
            return Ok(());
        }
        match snapshot.active_block(SystemTime::now()) {
            Some(block) => Err(block.clone()),
            None => Ok(()),
        }
    }

    /// Whether a first state has arrived.
    pub fn is_ready(&self) -> bool {
        self.state.borrow().is_some()
    }

    /// Waits up to `timeout` for a first state; `true` once one arrived.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut state = self.state.clone();
        let ready = tokio::time::timeout(timeout, state.wait_for(Option::is_some)).await;
        // `wait_for` fails only when the watcher is gone; then a state is
        // there or will never be, and `is_ready` tells which.
        matches!(ready, Ok(Ok(_))) || self.is_ready()
    }

    /// Why no state is coming, when the collector's last answer refused
    /// the key; `None` once a state arrives. Useful after
    /// [`wait_ready`](Self::wait_ready) returned `false`.
    pub fn key_refused(&self) -> Option<KeyRefused> {
        self.key_refused.borrow().clone()
    }

    /// The state last received, for display and diagnostics.
    pub fn snapshot(&self) -> Option<EnforcementSnapshot> {
        self.state.borrow().clone()
    }

    /// Runs `call` only if the scope is not blocked.
    ///
    /// A refusal is [`GuardError::Blocked`] and `call` is never invoked, so
    /// nothing reaches the provider; the call's own error is
    /// [`GuardError::Call`].
    pub async fn guarded_call<F, Fut, T, E>(&self, call: F) -> Result<T, GuardError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.check()?;
        call().await.map_err(GuardError::Call)
    }
}
