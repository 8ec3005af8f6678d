//! The sink trait every store implements.

use std::sync::Arc;

use futures::future::BoxFuture;
use tollgate_rules::{CallRecord, RuleEvent};

use super::outbox::OutboxEntry;

/// What one write stores: calls and the rule events they caused, together.
///
/// Shared rather than borrowed, so that a store can hand it to a thread of
/// its own (the embedded store does); cloning it copies no rows.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub calls: Arc<Vec<CallRecord>>,
    pub events: Arc<Vec<RuleEvent>>,
    /// Later descriptions of calls already stored, merged into their rows
    /// after `calls` are written (a row may be in this very batch).
    pub merges: Arc<Vec<CallMerge>>,
    /// Alerts announcing `events`, into the outbox (an entry already there,
    /// by its key, is kept as it is).
    pub alerts: Arc<Vec<OutboxEntry>>,
}

impl Batch {
    pub fn new(calls: Vec<CallRecord>, events: Vec<RuleEvent>) -> Self {
        Self {
            calls: Arc::new(calls),
            events: Arc::new(events),
            merges: Arc::default(),
            alerts: Arc::default(),
        }
    }

    /// With the alerts to put in the outbox.
    pub fn with_alerts(mut self, alerts: Vec<OutboxEntry>) -> Self {
        self.alerts = Arc::new(alerts);
        self
    }

    /// With the merges to apply after the calls.
    pub fn with_merges(mut self, merges: Vec<CallMerge>) -> Self {
        self.merges = Arc::new(merges);
        self
    }

    /// The rows back, once this is the last handle on them; empty vectors
    /// otherwise (the rows are then freed by whoever holds them last).
    pub fn into_parts(self) -> (Vec<CallRecord>, Vec<RuleEvent>) {
        (
            Arc::try_unwrap(self.calls).unwrap_or_default(),
            Arc::try_unwrap(self.events).unwrap_or_default(),
        )
    }
}

/// A later description of a call already stored: the store fills the
/// stored row's empty fields from `description` and sets its usage and
/// cost to the merged values.
#[derive(Debug, Clone)]
pub struct CallMerge {
    /// The stored row, by its identity and start time.
    pub trace_id: String,
    pub span_id: String,
    pub start_unix_nanos: i64,
    /// The later description, its usage and cost replaced by the merged
    /// ones, its parent by the outermost known parent of the call.
    pub description: CallRecord,
    /// Usage the stored row did not count yet (zero when the later
    /// description adds nothing, the usual case).
    pub correction: Correction,
}

/// Usage to count on top of what a call's first description counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Correction {
    pub tokens: u64,
    pub cost_usd: f64,
}

impl Correction {
    pub fn is_zero(&self) -> bool {
        self.tokens == 0 && self.cost_usd <= 0.0
    }
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The store cannot be reached or is busy; the batch may be retried as is.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the batch itself; retrying will not help.
    #[error("store refused the batch: {0}")]
    Rejected(String),
}

impl SinkError {
    /// Whether writing the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Unavailable(_))
    }
}

/// A store of call records.
///
/// `write` is called by one writer task at a time, with batches in queue
/// order; it must be idempotent for a retried batch where the store allows
/// (the embedded store writes a batch in one transaction, so a failed write
/// left nothing behind; ClickHouse drops a retried insert by its token).
/// It must not hold the runtime's worker threads for long: blocking I/O
/// belongs on a thread of the store's own.
pub trait Sink: Send + Sync {
    /// Writes every row of `batch`, or none.
    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), SinkError>>;
}
