//! The writer task: drains the row queue in batches into the sink.
//!
//! Room in the queue is released only after a batch is written, so a full
//! queue means "the store is behind" and receivers push back. A failed write
//! is retried with backoff; shutdown waits for the queue to drain up to the
//! configured timeout, then reports what could not be written.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tollgate_rules::engine::Unstored;
use tollgate_rules::{CallRecord, RuleEvent};

use super::enforcer::Followed;
use super::identity::{CallIdentity, CallMerge};
use super::queue::{Enqueued, RowQueue, RowReceiver};
use super::restore::Restore;
use super::rules_stage::RuleStage;
use crate::alerts::Alerts;
use crate::internal_events::InternalEvents;
use crate::sinks::{Batch, OutboxEntry, Sink};

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Drains a [`RowReceiver`] into a [`Sink`].
pub struct Writer {
    rx: RowReceiver,
    store: StoreWriter,
    batch_max_rows: usize,
    identity: Option<CallIdentity>,
    rules: Option<RuleStage>,
    resync: Option<mpsc::UnboundedReceiver<oneshot::Sender<()>>>,
    restore: Option<Restore>,
}

async fn recv_resync(
    rx: &mut Option<mpsc::UnboundedReceiver<oneshot::Sender<()>>>,
) -> Option<oneshot::Sender<()>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Handle to a running writer.
#[derive(Debug)]
pub struct WriterHandle {
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

impl WriterHandle {
    /// Stops the writer once every queued row is written, or at `deadline`
    /// if the store keeps failing. Call after the receivers have stopped.
    pub async fn drain_and_stop(self, timeout: Duration) {
        let _ = self.stop.send(Some(Instant::now() + timeout));
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "writer task ended abnormally");
        }
    }
}

impl Writer {
    pub fn new(
        rx: RowReceiver,
        queue: RowQueue,
        sink: Arc<dyn Sink>,
        events: Arc<InternalEvents>,
        batch_max_rows: usize,
    ) -> Self {
        Self {
            rx,
            store: StoreWriter {
                sink,
                events,
                queue,
                alerts: None,
            },
            batch_max_rows,
            identity: None,
            rules: None,
            resync: None,
            restore: None,
        }
    }

    /// Rebuilds counters and the dedup window from the store with `restore`
    /// whenever asked on `requests` (between batches).
    pub fn with_resync(
        mut self,
        requests: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
        restore: Restore,
    ) -> Self {
        self.resync = Some(requests);
        self.restore = Some(restore);
        self
    }

    /// Makes one call of the spans that describe one, with `identity`,
    /// before rules and the store.
    pub fn with_identity(mut self, identity: CallIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Runs `stage` on every batch before it is written.
    pub fn with_rules(mut self, stage: RuleStage) -> Self {
        self.store.alerts = Some(stage.enforcer.alerts.clone());
        self.rules = Some(stage);
        self
    }

    /// Starts the writer on the runtime.
    pub fn spawn(self) -> WriterHandle {
        let (stop, stop_rx) = watch::channel(None);
        let task = tokio::spawn(self.run(stop_rx));
        WriterHandle { stop, task }
    }

    async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) {
        let mut pending: Vec<Enqueued> = Vec::with_capacity(64);
        let mut batch = Flight::with_capacity(self.batch_max_rows);
        // The batch being written while the next one is deduplicated and
        // evaluated: the store's one writer thread does nothing but write.
        let mut in_flight: Option<JoinHandle<Flight>> = None;
        self.store
            .events
            .queue_capacity(self.store.queue.capacity());
        loop {
            let deadline = *stop.borrow();
            if pending.is_empty() {
                if deadline.is_some() {
                    // Shutdown: take what is left without waiting.
                    self.take_ready(&mut pending);
                    if pending.is_empty() {
                        break;
                    }
                } else {
                    tokio::select! {
                        n = self.rx.rx.recv_many(&mut pending, 64) => {
                            if n == 0 {
                                break;
                            }
                            // `pending` is consumed with `pop`: oldest last.
                            pending.reverse();
                        }
                        _ = stop.changed() => continue,
                        Some(done) = recv_resync(&mut self.resync) => {
                            // The store must hold every batch before it is read back.
                            land(&mut in_flight).await;
                            self.resync(done).await;
                            continue;
                        }
                    }
                }
            }
            // Fill one batch; a request is never split across batches.
            while batch.calls.len() < self.batch_max_rows {
                if pending.is_empty() {
                    self.take_ready(&mut pending);
                }
                let Some(mut e) = pending.pop() else { break };
                batch.calls.append(&mut e.rows);
                batch.permits.push(e.permit);
                batch.acks.extend(e.ack.take());
                batch.events.append(&mut e.events);
                batch.unstored.extend(e.unstored.take());
                batch.alerts.append(&mut e.alerts);
                batch.wal_end = batch.wal_end.max(e.wal_end);
            }
            self.store.events.queue_depth(self.store.queue.depth());
            // A panic in a stage (a bug) must not stop the writer: the
            // batch is stored without what the stage would have done.
            if let Some(identity) = &mut self.identity {
                let before = batch.calls.len();
                match catch_unwind(AssertUnwindSafe(|| identity.sort(&mut batch.calls))) {
                    Ok(sorted) => {
                        self.store.events.calls_sorted(
                            sorted.retries,
                            sorted.merged,
                            sorted.late.len(),
                        );
                        batch.merges = sorted.late;
                    }
                    Err(_) => {
                        identity.recover(&mut batch.calls);
                        let lost = before.saturating_sub(batch.calls.len());
                        self.store.events.stage_panicked("identity", lost);
                    }
                }
                self.store
                    .events
                    .identity_size(identity.remembered_calls(), identity.heap_bytes());
            }
            // Rules run once per call, before the first attempt: a retried
            // write stores the same rows and events.
            if let Some(stage) = &mut self.rules {
                // The batch's counters stay in memory until it is stored.
                batch.unstored.push(stage.enforcer.engine.unstored());
                stage.rebuild(&batch.calls, &batch.merges).await;
                let mut followed = Followed {
                    events: std::mem::take(&mut batch.events),
                    alerts: std::mem::take(&mut batch.alerts),
                };
                let evaluated = catch_unwind(AssertUnwindSafe(|| {
                    stage.evaluate(&mut batch.calls, &mut followed);
                    stage.correct(&batch.merges, &mut followed);
                }));
                batch.events = followed.events;
                batch.alerts = followed.alerts;
                if evaluated.is_err() {
                    self.store.events.stage_panicked("rules", 0);
                }
                stage.report().await;
            }
            // One batch in flight at a time keeps batches in order.
            let spare = land(&mut in_flight).await;
            if let Some(stage) = &self.rules {
                // Counters the landed batch kept in memory may go now.
                stage.enforcer.engine.trim_ledger();
            }
            let next = std::mem::replace(&mut batch, spare.unwrap_or_default());
            in_flight = Some(tokio::spawn(self.store.clone().write(next, stop.clone())));
        }
        land(&mut in_flight).await;
        self.store.events.queue_depth(self.store.queue.depth());
    }

    /// Moves what is already queued into `pending` (oldest last), without waiting.
    fn take_ready(&mut self, pending: &mut Vec<Enqueued>) {
        while pending.len() < 64 {
            match self.rx.rx.try_recv() {
                Ok(e) => pending.push(e),
                Err(_) => break,
            }
        }
        pending.reverse();
    }

    /// Rebuilds what the writer knows from the store (a Kafka consumer
    /// gained partitions): counters, kill-switch blocks, the dedup window.
    async fn resync(&mut self, done: oneshot::Sender<()>) {
        if let (Some(rules), Some(restore)) = (&mut self.rules, &self.restore) {
            rules.enforcer.engine.forget_usage();
            if let Some(identity) = &mut self.identity {
                identity.clear();
            }
            rules.already_stored = restore
                .run(
                    &rules.enforcer.engine,
                    &rules.enforcer.killswitch,
                    self.identity.as_mut(),
                )
                .await;
        }
        let _ = done.send(());
    }
}

/// A batch with what it holds until written: queue room and the acks of
/// the requests it came from.
#[derive(Default)]
struct Flight {
    calls: Vec<CallRecord>,
    events: Vec<RuleEvent>,
    merges: Vec<CallMerge>,
    permits: Vec<OwnedSemaphorePermit>,
    acks: Vec<oneshot::Sender<bool>>,
    /// Keeps the counters of the batch's calls in memory until it is written.
    unstored: Vec<Unstored>,
    /// Where the batch's last record ends in the write-ahead log.
    wal_end: Option<u64>,
    /// Alerts announcing the batch's rule events, into the outbox.
    alerts: Vec<OutboxEntry>,
}

impl Flight {
    fn with_capacity(rows: usize) -> Self {
        Self {
            calls: Vec::with_capacity(rows),
            permits: Vec::with_capacity(64),
            ..Self::default()
        }
    }
}

/// Waits for the batch in flight, if any; returns it emptied, for reuse.
async fn land(in_flight: &mut Option<JoinHandle<Flight>>) -> Option<Flight> {
    let task = in_flight.take()?;
    match task.await {
        Ok(mut flight) => {
            // Rows are freed here, off the store's thread.
            flight.calls.clear();
            flight.events.clear();
            flight.merges.clear();
            Some(flight)
        }
        Err(e) => {
            tracing::error!(error = %e, "store write task ended abnormally");
            None
        }
    }
}

/// The half of the writer that talks to the sink.
#[derive(Clone)]
struct StoreWriter {
    sink: Arc<dyn Sink>,
    events: Arc<InternalEvents>,
    queue: RowQueue,
    /// Told when a batch put alerts in the outbox.
    alerts: Option<Alerts>,
}

impl StoreWriter {
    /// Writes `flight`, then answers its acks and releases its room.
    async fn write(self, mut flight: Flight, mut stop: watch::Receiver<Option<Instant>>) -> Flight {
        let batch = Batch::new(
            std::mem::take(&mut flight.calls),
            std::mem::take(&mut flight.events),
        )
        .with_merges(std::mem::take(&mut flight.merges))
        .with_alerts(std::mem::take(&mut flight.alerts));
        let written = self.write_with_retry(&batch, &mut stop).await;
        if written
            && !batch.alerts.is_empty()
            && let Some(alerts) = &self.alerts
        {
            alerts.wake();
        }
        if written && let (Some(wal), Some(end)) = (self.queue.wal(), flight.wal_end.take()) {
            // Not on a shutdown that gave up: those rows are read back from
            // the log at the next start.
            wal.stored_through(end);
        }
        flight.wal_end = None;
        // The rows come back to be freed where they were made (`land`).
        (flight.calls, flight.events) = batch.into_parts();
        for ack in flight.acks.drain(..) {
            let _ = ack.send(written);
        }
        flight.permits.clear();
        flight.unstored.clear();
        self.events.queue_depth(self.queue.depth());
        flight
    }

    /// Writes `batch`; `false` if it could not be written (then it was
    /// counted as lost).
    async fn write_with_retry(
        &self,
        batch: &Batch,
        stop: &mut watch::Receiver<Option<Instant>>,
    ) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            match self.sink.write(batch.clone()).await {
                Ok(()) => {
                    self.events
                        .batch_written(batch.calls.len(), started.elapsed());
                    return true;
                }
                Err(e) => {
                    self.events.batch_failed(batch.calls.len(), &e);
                    if !e.is_retryable() {
                        self.events
                            .rows_lost(batch.calls.len(), "the store refused the batch");
                        // Retrying cannot help: a Kafka consumer moves on.
                        return true;
                    }
                }
            }
            let deadline = *stop.borrow();
            if let Some(deadline) = deadline
                && Instant::now() + backoff > deadline
            {
                self.events.rows_lost(
                    self.queue.depth().max(batch.calls.len()),
                    "shutdown timeout reached while the store was failing",
                );
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::row_queue;
    use crate::sinks::SinkError;
    use futures::future::BoxFuture;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Recording {
        rows: Mutex<Vec<CallRecord>>,
        fail_first: AtomicUsize,
    }

    impl Sink for Recording {
        fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(async move {
                if self.fail_first.load(Ordering::SeqCst) > 0 {
                    self.fail_first.fetch_sub(1, Ordering::SeqCst);
                    return Err(SinkError::Unavailable("down".into()));
                }
                self.rows.lock().unwrap().extend_from_slice(&batch.calls);
                Ok(())
            })
        }
    }

    fn rows(n: usize, tag: &str) -> Vec<CallRecord> {
        (0..n)
            .map(|i| CallRecord {
                span_id: format!("{tag}-{i}"),
                ..Default::default()
            })
            .collect()
    }

    #[tokio::test]
    async fn drains_everything_acknowledged_on_shutdown_despite_failures() {
        let (q, rx) = row_queue(1000);
        let sink = Arc::new(Recording::default());
        sink.fail_first.store(3, Ordering::SeqCst);
        let events = InternalEvents::new();
        let handle = Writer::new(rx, q.clone(), sink.clone(), events.clone(), 7).spawn();
        for r in 0..20 {
            q.try_push(rows(10, &format!("r{r}"))).unwrap();
        }
        q.close();
        handle.drain_and_stop(Duration::from_secs(10)).await;
        let stored = sink.rows.lock().unwrap();
        assert_eq!(stored.len(), 200);
        let mut ids: Vec<_> = stored.iter().map(|r| r.span_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200, "a row was written twice");
        assert_eq!(q.depth(), 0);
        assert_eq!(events.rows_written_total(), 200);
    }

    #[tokio::test]
    async fn a_resent_request_is_stored_once_and_its_room_released() {
        let (q, rx) = row_queue(1000);
        let sink = Arc::new(Recording::default());
        let events = InternalEvents::new();
        let handle = Writer::new(rx, q.clone(), sink.clone(), events.clone(), 1000)
            .with_identity(CallIdentity::new(1000, Duration::from_secs(600)))
            .spawn();
        q.try_push(rows(10, "r")).unwrap();
        q.try_push(rows(10, "r")).unwrap();
        q.try_push(rows(5, "s")).unwrap();
        q.close();
        handle.drain_and_stop(Duration::from_secs(10)).await;
        assert_eq!(sink.rows.lock().unwrap().len(), 15);
        assert_eq!(q.depth(), 0, "dropped duplicates give their room back");
        assert!(
            events
                .encode()
                .contains("tollgate_pipeline_duplicates_dropped_total 10"),
            "{}",
            events.encode()
        );
    }

    /// Holds every write until the test opens the gate.
    struct Gated {
        gate: tokio::sync::Semaphore,
        rows: Mutex<Vec<CallRecord>>,
    }

    impl Sink for Gated {
        fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(async move {
                self.gate.acquire().await.unwrap().forget();
                self.rows.lock().unwrap().extend_from_slice(&batch.calls);
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn the_next_batch_is_deduplicated_while_one_is_written_and_batches_land_in_order() {
        let (q, rx) = row_queue(1000);
        let sink = Arc::new(Gated {
            gate: tokio::sync::Semaphore::new(0),
            rows: Mutex::default(),
        });
        let events = InternalEvents::new();
        let handle = Writer::new(rx, q.clone(), sink.clone(), events.clone(), 10)
            .with_identity(CallIdentity::new(1000, Duration::from_secs(600)))
            .spawn();
        q.try_push(rows(10, "a")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The first batch is stuck in the store; the resent one is dropped
        // meanwhile, and a new one waits its turn.
        q.try_push(rows(10, "a")).unwrap();
        q.try_push(rows(10, "b")).unwrap();
        let dropped = "tollgate_pipeline_duplicates_dropped_total 10";
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while !events.encode().contains(dropped) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{}", events.encode());
        assert!(
            sink.rows.lock().unwrap().is_empty(),
            "nothing is written yet"
        );
        sink.gate.add_permits(100);
        q.close();
        handle.drain_and_stop(Duration::from_secs(10)).await;
        let ids: Vec<String> = sink
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.span_id.clone())
            .collect();
        let expected: Vec<String> = (0..10)
            .map(|i| format!("a-{i}"))
            .chain((0..10).map(|i| format!("b-{i}")))
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test]
    async fn room_is_released_only_after_the_write() {
        let (q, rx) = row_queue(10);
        let sink = Arc::new(Recording::default());
        sink.fail_first.store(usize::MAX / 2, Ordering::SeqCst);
        let handle = Writer::new(rx, q.clone(), sink.clone(), InternalEvents::new(), 100).spawn();
        q.try_push(rows(10, "a")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The store is down: the rows still hold their room, so the queue pushes back.
        assert_eq!(
            q.try_push(rows(1, "b")),
            Err(crate::pipeline::QueueError::Full)
        );
        sink.fail_first.store(0, Ordering::SeqCst);
        q.close();
        handle.drain_and_stop(Duration::from_secs(10)).await;
        assert_eq!(sink.rows.lock().unwrap().len(), 10);
    }
}
