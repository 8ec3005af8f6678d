//! A queue bounded in rows, not in requests.
//!
//! Receivers reserve room for a whole request with one semaphore call and
//! either get it or are told to push back; the room is given back only when
//! the store has written the rows. The queue depth is therefore "rows
//! acknowledged but not yet stored", which is what shutdown must drain.
//!
//! With a write-ahead log ([`super::wal`]), rows are appended to it before
//! they are queued, under one lock, so the log's order is the queue's and
//! the writer can tell the log how far the store got.

use std::sync::{Arc, Mutex, PoisonError};

use super::wal::{Wal, WalError};
use crate::sinks::OutboxEntry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};
use tollgate_rules::engine::Unstored;
use tollgate_rules::{CallRecord, RuleEvent};

/// Why rows were not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    #[error("the row queue is full")]
    Full,
    #[error("a request of {rows} rows exceeds the queue capacity of {capacity} rows")]
    TooLarge { rows: usize, capacity: usize },
    #[error("the collector is shutting down")]
    Closed,
    /// The write-ahead log cannot take the rows (its size limit, or the
    /// disk is full or failing): retry later.
    #[error("the write-ahead log cannot take the rows: {0}")]
    Disk(&'static str),
}

impl QueueError {
    /// Whether the sender should retry later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            QueueError::Full | QueueError::Closed | QueueError::Disk(_)
        )
    }
}

/// Rows in the queue, holding their room until dropped.
#[derive(Debug)]
pub struct Enqueued {
    pub rows: Vec<CallRecord>,
    pub permit: OwnedSemaphorePermit,
    /// Told `true` once the rows are stored (or dropped as duplicates),
    /// `false` if they could not be written; a Kafka consumer commits its
    /// offsets on `true` only.
    pub ack: Option<oneshot::Sender<bool>>,
    /// Rule events already decided for these rows (gateway calls, settled
    /// synchronously), stored with them.
    pub events: Vec<RuleEvent>,
    /// Keeps the counters these rows were counted on in memory until the
    /// rows are stored (gateway calls, counted before they are queued).
    pub unstored: Option<Unstored>,
    /// Where the rows' record ends in the write-ahead log.
    pub wal_end: Option<u64>,
    /// Alerts announcing `events`, stored with them in the outbox.
    pub alerts: Vec<OutboxEntry>,
}

/// Room for one row, reserved ahead (see [`RowQueue::reserve_one`]).
#[derive(Debug)]
pub struct RoomForOne(OwnedSemaphorePermit);

/// Log space a gateway call needs free to be admitted: far more than one
/// row's record.
const WAL_HEADROOM: u64 = 1 << 20;

/// The sending side, cloned into every receiver.
#[derive(Clone)]
pub struct RowQueue {
    room: Arc<Semaphore>,
    capacity: usize,
    tx: mpsc::UnboundedSender<Enqueued>,
    wal: Option<Arc<Wal>>,
    /// Held while appending to the log and queueing, so both have one order.
    order: Arc<Mutex<()>>,
}

impl std::fmt::Debug for RowQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowQueue")
            .field("capacity", &self.capacity)
            .field("wal", &self.wal.as_ref().map(|w| w.durability()))
            .finish_non_exhaustive()
    }
}

/// The receiving side, owned by the writer.
#[derive(Debug)]
pub struct RowReceiver {
    pub(crate) rx: mpsc::UnboundedReceiver<Enqueued>,
}

/// A queue holding at most `capacity` rows.
pub fn row_queue(capacity: usize) -> (RowQueue, RowReceiver) {
    // The channel itself is unbounded; the semaphore bounds what is in it.
    let (tx, rx) = mpsc::unbounded_channel();
    (
        RowQueue {
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
            tx,
            wal: None,
            order: Arc::new(Mutex::new(())),
        },
        RowReceiver { rx },
    )
}

impl RowQueue {
    /// Appends what receivers and the gateway queue to `wal` first.
    pub fn with_wal(mut self, wal: Arc<Wal>) -> Self {
        self.wal = Some(wal);
        self
    }

    pub fn wal(&self) -> Option<&Arc<Wal>> {
        self.wal.as_ref()
    }

    /// Waits until rows queued at `wal_end` survive what the log's level
    /// promises (a flush to the device at level `power`).
    pub async fn durable(&self, wal_end: Option<u64>) {
        if let (Some(wal), Some(end)) = (&self.wal, wal_end) {
            wal.durable(end).await;
        }
    }

    /// Queues rows read back from the log at start-up, waiting for room.
    pub async fn replay(&self, rows: Vec<CallRecord>, wal_end: u64) -> Result<(), QueueError> {
        let n = u32::try_from(rows.len().min(self.capacity)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.room)
            .acquire_many_owned(n)
            .await
            .map_err(|_| QueueError::Closed)?;
        self.tx
            .send(Enqueued {
                rows,
                permit,
                ack: None,
                events: Vec::new(),
                unstored: None,
                wal_end: Some(wal_end),
                alerts: Vec::new(),
            })
            .map_err(|_| QueueError::Closed)
    }

    /// Appends `rows` to the log (if any) and queues them, in one order.
    fn send_logged(&self, e: Enqueued) -> Result<Option<u64>, QueueError> {
        self.send(e, false)
    }

    /// `send_logged`; with `keep`, rows the log cannot take are queued in
    /// memory only instead of refused.
    fn send(&self, mut e: Enqueued, keep: bool) -> Result<Option<u64>, QueueError> {
        let Some(wal) = &self.wal else {
            self.tx.send(e).map_err(|_| QueueError::Closed)?;
            return Ok(None);
        };
        let record = Wal::encode(&e.rows);
        let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        let end = match record.and_then(|r| wal.append(&r)) {
            Ok(end) => Some(end),
            Err(err) if keep => {
                tracing::error!(error = %err, "a served gateway call's row is kept in memory only: the write-ahead log cannot take it");
                None
            }
            Err(WalError::Full { .. }) => {
                return Err(QueueError::Disk(
                    "its size limit (durability.max_disk_mib) is reached",
                ));
            }
            Err(err) => {
                tracing::warn!(error = %err, "write-ahead log append failed");
                return Err(QueueError::Disk("the disk refused the write"));
            }
        };
        e.wal_end = end;
        self.tx.send(e).map_err(|_| QueueError::Closed)?;
        Ok(end)
    }

    /// Room for one row of a gateway call, taken before the call reaches a
    /// provider: `None` when the queue, or the log, has none (the gateway
    /// answers 503 rather than serve a call it could not record).
    pub fn reserve_one(&self) -> Option<RoomForOne> {
        if let Some(wal) = &self.wal {
            let (pending, max) = wal.pending_bytes();
            if pending.saturating_add(WAL_HEADROOM) > max {
                return None;
            }
        }
        self.try_reserve(1).ok().map(RoomForOne)
    }

    /// Queues a gateway call's row in the room reserved for it. The log is
    /// written first; if it cannot be (the disk filled meanwhile) the row
    /// is still queued, in memory only, rather than dropped: the call was
    /// served.
    pub fn push_reserved(
        &self,
        rows: Vec<CallRecord>,
        events: Vec<RuleEvent>,
        alerts: Vec<OutboxEntry>,
        unstored: Option<Unstored>,
        room: RoomForOne,
    ) -> Result<(), QueueError> {
        let e = Enqueued {
            rows,
            permit: room.0,
            ack: None,
            events,
            unstored,
            wal_end: None,
            alerts,
        };
        self.send(e, true).map(|_| ())
    }

    /// Rows the queue can take now.
    pub fn room(&self) -> usize {
        self.room.available_permits()
    }

    /// Queues `rows` whole (in the log first, if any; returns where their
    /// record ends), or refuses them whole.
    pub fn try_push(&self, rows: Vec<CallRecord>) -> Result<Option<u64>, QueueError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        if n > self.capacity {
            return Err(QueueError::TooLarge {
                rows: n,
                capacity: self.capacity,
            });
        }
        let permit = self.try_reserve(n)?;
        self.send_logged(Enqueued {
            rows,
            permit,
            ack: None,
            events: Vec::new(),
            unstored: None,
            wal_end: None,
            alerts: Vec::new(),
        })
    }

    /// Reserves room for `rows` rows (`rows` may be 0), or says why not.
    pub fn try_reserve(&self, rows: usize) -> Result<OwnedSemaphorePermit, QueueError> {
        if rows > self.capacity {
            return Err(QueueError::TooLarge {
                rows,
                capacity: self.capacity,
            });
        }
        let permits = u32::try_from(rows).map_err(|_| QueueError::TooLarge {
            rows,
            capacity: self.capacity,
        })?;
        match Arc::clone(&self.room).try_acquire_many_owned(permits) {
            Ok(p) => Ok(p),
            Err(TryAcquireError::NoPermits) => Err(QueueError::Full),
            Err(TryAcquireError::Closed) => Err(QueueError::Closed),
        }
    }

    /// Queues `rows` in the room `permit` holds; `ack` is told the outcome.
    pub fn send_reserved(
        &self,
        rows: Vec<CallRecord>,
        permit: OwnedSemaphorePermit,
        ack: Option<oneshot::Sender<bool>>,
    ) -> Result<(), QueueError> {
        self.tx
            .send(Enqueued {
                rows,
                permit,
                ack,
                events: Vec::new(),
                unstored: None,
                wal_end: None,
                alerts: Vec::new(),
            })
            .map_err(|_| QueueError::Closed)
    }

    /// Queues `rows` with the rule events decided for them, or refuses both.
    pub fn try_push_with_events(
        &self,
        rows: Vec<CallRecord>,
        events: Vec<RuleEvent>,
        alerts: Vec<OutboxEntry>,
        unstored: Option<Unstored>,
    ) -> Result<Option<u64>, QueueError> {
        let permit = self.try_reserve(rows.len())?;
        self.send_logged(Enqueued {
            rows,
            permit,
            ack: None,
            events,
            unstored,
            wal_end: None,
            alerts,
        })
    }

    /// Rows queued and not yet written.
    pub fn depth(&self) -> usize {
        self.capacity - self.room.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Refuses new rows from now on (shutdown); queued rows still drain.
    pub fn close(&self) {
        self.room.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<CallRecord> {
        vec![CallRecord::default(); n]
    }

    #[test]
    fn bounded_in_rows_and_room_returns_on_drop() {
        let (q, mut rx) = row_queue(10);
        q.try_push(rows(6)).unwrap();
        assert_eq!(q.depth(), 6);
        assert_eq!(q.try_push(rows(5)), Err(QueueError::Full));
        q.try_push(rows(4)).unwrap();
        assert_eq!(q.depth(), 10);
        let first = rx.rx.try_recv().unwrap();
        assert_eq!(first.rows.len(), 6);
        drop(first);
        assert_eq!(q.depth(), 4);
        q.try_push(rows(6)).unwrap();
    }

    #[test]
    fn oversized_and_closed_are_distinct() {
        let (q, _rx) = row_queue(3);
        assert_eq!(
            q.try_push(rows(4)),
            Err(QueueError::TooLarge {
                rows: 4,
                capacity: 3
            })
        );
        assert!(
            !QueueError::TooLarge {
                rows: 4,
                capacity: 3
            }
            .is_retryable()
        );
        q.close();
        assert_eq!(q.try_push(rows(1)), Err(QueueError::Closed));
        assert!(q.try_push(Vec::new()).is_ok());
    }
}
