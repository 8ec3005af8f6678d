//! The process role's consumer: a consumer-group member that feeds the row
//! queue, and commits a partition's offsets only after the writer stored
//! the rows up to them.
//!
//! It runs on its own thread (librdkafka's poll loop and rebalance callbacks
//! are blocking). On a rebalance:
//! - *revoke*: rows consumed from the partitions being given up are written
//!   and their offsets committed before the partitions go, so the next
//!   owner starts exactly where this one stopped;
//! - *assign*: the writer rebuilds rule counters, kill-switch blocks and the
//!   dedup window from the store, so the counters of the projects gained
//!   continue from what the previous owner stored, and calls that owner
//!   stored but could not commit (it was killed) are dropped as duplicates.
//!
//! A message marked [`SETTLED_HEADER`] (a gateway call) was counted by the
//! engine of the instance whose gateway served it: its row is deduplicated
//! and stored here like any other, but not counted again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tollgate_rules::CallRecord;

use super::{KafkaConfig, SETTLED_HEADER, SETTLED_VALUE};
use crate::internal_events::InternalEvents;
use crate::pipeline::{QueueError, RowQueue};

/// Longest wait for buffered messages before they are queued.
const LINGER: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(50);

/// Asks the writer to rebuild from the store; answered when done.
pub type ResyncRequests = mpsc::UnboundedSender<oneshot::Sender<()>>;

/// A batch handed to the writer whose offsets are not committed yet.
struct InFlight {
    /// Next offset to read, per partition.
    next: BTreeMap<i32, i64>,
    ack: oneshot::Receiver<bool>,
}

/// Consumed, not yet queued.
#[derive(Default)]
struct Buffer {
    rows: Vec<CallRecord>,
    next: BTreeMap<i32, i64>,
    since: Option<Instant>,
}

struct Shared {
    topic: String,
    queue: RowQueue,
    resync: ResyncRequests,
    events: Arc<InternalEvents>,
    max_rows: usize,
    /// How long a rebalance or shutdown waits for the writer.
    settle_timeout: Duration,
    stop: AtomicBool,
    /// A batch handed to the writer was not stored: no offset after it may
    /// be committed, ever (its rows are read again after a restart).
    gave_up: AtomicBool,
    buffer: Mutex<Buffer>,
    in_flight: Mutex<VecDeque<InFlight>>,
}

/// A message of the calls topic: one [`CallRecord`] as JSON, as the
/// producer writes it.
pub(crate) fn decode_call(payload: &[u8]) -> Result<CallRecord, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// Whether the message's call was counted already ([`SETTLED_HEADER`]).
fn settled(message: &BorrowedMessage<'_>) -> bool {
    message.headers().is_some_and(|headers| {
        headers
            .iter()
            .any(|h| h.key == SETTLED_HEADER && h.value == Some(SETTLED_VALUE))
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.0.events.kafka_rebalance("revoke", tpl.count());
            self.0.hand_over(consumer);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.0.events.kafka_rebalance("assign", tpl.count());
            // Nothing of ours may be in flight while the store is read.
            self.0.hand_over(consumer);
            let (done, wait) = oneshot::channel();
            if self.0.resync.send(done).is_ok() {
                let _ = wait_for(wait, Instant::now() + self.0.settle_timeout);
            }
            tracing::info!(
                partitions = tpl.count(),
                "Kafka partitions assigned; counters rebuilt from the store"
            );
        }
    }
}

/// Waits for a oneshot without a runtime (this is the consumer's thread).
fn wait_for<T>(mut rx: oneshot::Receiver<T>, deadline: Instant) -> Option<T> {
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(oneshot::error::TryRecvError::Closed) => return None,
            Err(oneshot::error::TryRecvError::Empty) => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Hands the buffer to the writer, waiting for room (backpressure).
    fn flush(&self) {
        let mut buf = lock(&self.buffer);
        if buf.next.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut buf.rows);
        let next = std::mem::take(&mut buf.next);
        buf.since = None;
        drop(buf);
        let permit = loop {
            match self.queue.try_reserve(rows.len()) {
                Ok(p) => break p,
                Err(QueueError::Full) => std::thread::sleep(Duration::from_millis(10)),
                // Shutdown: not committed, the next owner reads them again.
                Err(_) => return self.give_up(),
            }
        };
        let (ack, wait) = oneshot::channel();
        if self.queue.send_reserved(rows, permit, Some(ack)).is_ok() {
            lock(&self.in_flight).push_back(InFlight { next, ack: wait });
        } else {
            self.give_up();
        }
    }

    /// Commits the offsets of batches already written, oldest first, without waiting.
    fn commit_written(&self, consumer: &BaseConsumer<Ctx>) {
        loop {
            let mut in_flight = lock(&self.in_flight);
            let Some(front) = in_flight.front_mut() else {
                return;
            };
            match front.ack.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return,
                Ok(true) => {
                    let Some(done) = in_flight.pop_front() else {
                        return;
                    };
                    drop(in_flight);
                    self.commit(consumer, &done.next, CommitMode::Async);
                }
                // Not written (shutdown gave up): nothing after it may be committed.
                Ok(false) | Err(oneshot::error::TryRecvError::Closed) => {
                    self.give_up();
                    in_flight.clear();
                    return;
                }
            }
        }
    }

    /// Queues the buffer, waits until the writer stored everything handed
    /// to it, and commits synchronously (rebalance, shutdown).
    fn hand_over(&self, consumer: &BaseConsumer<Ctx>) {
        self.flush();
        let deadline = Instant::now() + self.settle_timeout;
        let batches: Vec<InFlight> = lock(&self.in_flight).drain(..).collect();
        let mut next = BTreeMap::new();
        let mut stored = true;
        for b in batches {
            match wait_for(b.ack, deadline) {
                Some(true) => next.extend(b.next),
                _ => {
                    tracing::warn!(
                        "rows handed to the writer were not stored in time; their offsets stay uncommitted and will be read again"
                    );
                    stored = false;
                    break;
                }
            }
        }
        // The batches stored before the first one that was not.
        self.commit(consumer, &next, CommitMode::Sync);
        if !stored {
            self.give_up();
        }
    }

    fn give_up(&self) {
        self.gave_up.store(true, Ordering::Release);
    }

    fn commit(&self, consumer: &BaseConsumer<Ctx>, next: &BTreeMap<i32, i64>, mode: CommitMode) {
        if next.is_empty() || self.gave_up.load(Ordering::Acquire) {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(next.len());
        for (&partition, &offset) in next {
            if let Err(e) = tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
            {
                tracing::error!(error = %e, "cannot build an offset commit");
                return;
            }
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => self.events.kafka_committed(),
            // A partition revoked meanwhile: its next owner re-reads and drops the repeats.
            Err(e) => tracing::warn!(error = %e, "Kafka offset commit failed"),
        }
    }

    fn take(&self, message: &BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        let mut buf = lock(&self.buffer);
        match message.payload().map(decode_call) {
            Some(Ok(mut call)) => {
                // The rules stage skips it, as it skips the gateway's rows
                // queued on its own instance.
                call.settled = settled(message);
                buf.rows.push(call);
                self.events.kafka_consumed(1);
            }
            Some(Err(e)) => self.events.kafka_invalid(&e.to_string()),
            None => self.events.kafka_invalid("empty message"),
        }
        buf.next.insert(partition, offset + 1);
        buf.since.get_or_insert_with(Instant::now);
    }

    fn due(&self) -> bool {
        let buf = lock(&self.buffer);
        buf.rows.len() >= self.max_rows || buf.since.is_some_and(|s| s.elapsed() >= LINGER)
    }
}

/// A running consumer.
pub struct CallConsumer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CallConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallConsumer")
            .field("topic", &self.shared.topic)
            .finish_non_exhaustive()
    }
}

impl CallConsumer {
    /// Joins the consumer group and starts consuming into `queue`.
    pub fn start(
        config: &KafkaConfig,
        queue: RowQueue,
        resync: ResyncRequests,
        events: Arc<InternalEvents>,
        settle_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let max_rows = queue.capacity().min(10_000);
        let shared = Arc::new(Shared {
            topic: config.topic.clone(),
            queue,
            resync,
            events,
            max_rows,
            settle_timeout,
            stop: AtomicBool::new(false),
            gave_up: AtomicBool::new(false),
            buffer: Mutex::new(Buffer::default()),
            in_flight: Mutex::new(VecDeque::new()),
        });
        let mut client = config.client();
        for (key, value) in [
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
        ] {
            if client.get(key).is_none() {
                client.set(key, value);
            }
        }
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer<Ctx> = client.create_with_context(Ctx(Arc::clone(&shared)))?;
        consumer.subscribe(&[&config.topic])?;
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kafka-consumer".to_owned())
            .spawn(move || run(&consumer, &worker))
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Stops consuming: what was consumed is written and committed first
    /// (up to the settle timeout), then the consumer leaves its group.
    pub async fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn run(consumer: &BaseConsumer<Ctx>, shared: &Shared) {
    let mut last_error: Option<String> = None;
    while !shared.stopping() {
        match consumer.poll(POLL) {
            None => {}
            Some(Ok(m)) => {
                last_error = None;
                shared.take(&m);
            }
            Some(Err(e)) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "Kafka consumer error; retrying");
                    last_error = Some(text);
                }
            }
        }
        if shared.due() {
            shared.flush();
        }
        shared.commit_written(consumer);
    }
    shared.hand_over(consumer);
    consumer.unsubscribe();
}
