//! The sink trait every store implements.

use futures::future::BoxFuture;
use tollgate_rules::{CallRecord, RuleEvent};

/// What one write stores: calls and the rule events they caused, together.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub calls: &'a [CallRecord],
    pub events: &'a [RuleEvent],
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
/// (the embedded store ignores rows whose trace and span ids it already has).
/// It may block on I/O internally but must not hold the runtime's worker
/// threads for long without telling the runtime (`block_in_place`).
pub trait Sink: Send + Sync {
    /// Writes every row of `batch`, or none.
    fn write<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), SinkError>>;
}
