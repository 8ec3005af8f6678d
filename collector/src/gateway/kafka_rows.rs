//! The gateway's rows on an instance with `[kafka]` (role `ingest` or
//! `all`): each call's row goes to the calls topic, like an OTLP call, and
//! a process instance stores it. The row is marked as counted
//! ([`crate::kafka::SETTLED_HEADER`]): the gateway's engine counted it when
//! it admitted and settled the call, so the process role does not count it
//! again.
//!
//! What a gateway call's row is promised, as with the row queue:
//! - room is reserved before the call reaches a provider
//!   ([`RowSink::reserve`]): at most `pipeline.queue_capacity_rows` rows are
//!   handed to Kafka and not acknowledged yet; past that the gateway answers
//!   503 instead of serving a call it could not record;
//! - the answer never waits for Kafka: `submit` hands the row to the
//!   producer and returns. A delivery that fails (Kafka down longer than
//!   `kafka.produce_timeout`) is handed over again, holding its room, until
//!   Kafka takes it or shutdown gives up (`tollgate_store_rows_lost_total`);
//! - while a row is not acknowledged, the engine keeps its counters in
//!   memory (its `Unstored` is held until then).
//!
//! The rule events, alerts and kill-switch blocks of the gateway's
//! settlements are this instance's to follow, once: the kill-switch applies
//! blocks here and publishes them to every instance (`<topic>.enforcement`),
//! and events and alerts go through this instance's own row queue into the
//! shared store (with no rows: the process instance storing the row does
//! not run the rules on it, so nothing is recorded twice).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tollgate_gateway::{RowRoom, RowSink};
use tollgate_rules::CallRecord;
use tollgate_rules::engine::{Unstored, Violation};

use crate::internal_events::InternalEvents;
use crate::kafka::{CallProducer, Delivery, SettledCall};
use crate::pipeline::{Enforcer, Followed, RowQueue};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Gateway calls onto the calls topic; their rule events into the store.
pub struct KafkaRows {
    producer: CallProducer,
    /// One permit per row handed to Kafka and not acknowledged yet.
    room: Arc<Semaphore>,
    handed: mpsc::UnboundedSender<Handed>,
    /// This instance's row queue, for the rule events and alerts.
    queue: RowQueue,
    /// Events, alerts and blocks of violations, as for observed spans.
    enforcer: Enforcer,
    events: Arc<InternalEvents>,
}

/// A row handed to the producer, until Kafka acknowledged it.
struct Handed {
    call: SettledCall,
    /// `None`: the producer has not taken it yet.
    delivery: Option<Delivery>,
    /// Its room: given back once Kafka has the row.
    _room: Option<OwnedSemaphorePermit>,
    /// Keeps the call's counters in memory until then.
    _unstored: Unstored,
}

/// Waits for Kafka's acknowledgements of the gateway's rows and hands over
/// again the rows it did not take.
#[derive(Debug)]
pub struct KafkaDeliveries {
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

impl KafkaDeliveries {
    /// Waits (up to `timeout`) until Kafka acknowledged every row handed
    /// to it; rows still unacknowledged then are counted as lost. Call
    /// after the gateway stopped serving.
    pub async fn finish(self, timeout: Duration) {
        let _ = self.stop.send(Some(Instant::now() + timeout));
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the gateway's Kafka delivery task ended abnormally");
        }
    }
}

impl KafkaRows {
    /// A sink holding at most `capacity` unacknowledged rows, and the task
    /// that follows their deliveries (to finish at shutdown).
    pub fn start(
        producer: CallProducer,
        capacity: usize,
        queue: RowQueue,
        enforcer: Enforcer,
        events: Arc<InternalEvents>,
    ) -> (Arc<Self>, KafkaDeliveries) {
        let (handed, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(None);
        let task = tokio::spawn(follow_deliveries(
            rx,
            producer.clone(),
            Arc::clone(&events),
            stop_rx,
        ));
        let rows = Arc::new(Self {
            producer,
            room: Arc::new(Semaphore::new(capacity)),
            handed,
            queue,
            enforcer,
            events,
        });
        (rows, KafkaDeliveries { stop, task })
    }
}

impl RowSink for KafkaRows {
    fn reserve(&self) -> Option<RowRoom> {
        Arc::clone(&self.room)
            .try_acquire_owned()
            .ok()
            .map(RowRoom::new)
    }

    fn submit(
        &self,
        mut record: CallRecord,
        violations: Vec<Violation>,
        unstored: Unstored,
        room: RowRoom,
    ) {
        let Followed {
            events: rule_events,
            alerts,
        } = self.enforcer.follow_settled(&mut record, &violations);
        if !(rule_events.is_empty() && alerts.is_empty()) {
            let n = rule_events.len();
            if self
                .queue
                .try_push_with_events(Vec::new(), rule_events, alerts, None)
                .is_err()
            {
                tracing::error!(
                    events = n,
                    "a gateway call's rule events were not stored: the collector is shutting down"
                );
            }
        }
        // Room taken now if the call had none reserved (it always has).
        let room = room
            .take::<OwnedSemaphorePermit>()
            .or_else(|| Arc::clone(&self.room).try_acquire_owned().ok());
        let call = match SettledCall::encode(&record) {
            Ok(call) => call,
            Err(e) => {
                return self.events.rows_lost(1, &e.to_string());
            }
        };
        let delivery = match self.producer.enqueue_settled(&call) {
            Ok(delivery) => Some(delivery),
            Err(e) => {
                // Handed over again by the delivery task.
                self.events.kafka_gateway_row_retried(&e.to_string());
                None
            }
        };
        let handed = Handed {
            call,
            delivery,
            _room: room,
            _unstored: unstored,
        };
        if self.handed.send(handed).is_err() {
            self.events.rows_lost(
                1,
                "a gateway call was not produced to Kafka: the collector is shutting down",
            );
        }
    }
}

/// Delivers one row: waits for Kafka, hands it over again (with backoff)
/// until Kafka took it. Its room and `Unstored` are dropped when it returns.
async fn deliver(mut handed: Handed, producer: CallProducer, events: Arc<InternalEvents>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let delivery = match handed.delivery.take() {
            Some(d) => Ok(d),
            None => producer.enqueue_settled(&handed.call),
        };
        let outcome = match delivery {
            Ok(d) => d.await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => return events.kafka_produced(1),
            Err(e) => {
                events.kafka_gateway_row_retried(&e.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn follow_deliveries(
    mut rx: mpsc::UnboundedReceiver<Handed>,
    producer: CallProducer,
    events: Arc<InternalEvents>,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    let mut pending = FuturesUnordered::new();
    // Whether the gateway may still hand rows, and shutdown may still ask.
    let (mut open, mut stoppable) = (true, true);
    loop {
        let deadline = *stop.borrow();
        if let Some(deadline) = deadline {
            // Shutdown: the gateway has stopped; what it handed is all there is.
            while let Ok(h) = rx.try_recv() {
                pending.push(deliver(h, producer.clone(), Arc::clone(&events)));
            }
            if pending.is_empty() {
                return;
            }
            let deadline = tokio::time::Instant::from_std(deadline);
            while tokio::time::timeout_at(deadline, pending.next())
                .await
                .is_ok_and(|d| d.is_some())
            {}
            if !pending.is_empty() {
                events.rows_lost(
                    pending.len(),
                    "Kafka did not acknowledge the gateway's calls before the shutdown timeout",
                );
            }
            return;
        }
        if !open && pending.is_empty() {
            return;
        }
        tokio::select! {
            handed = rx.recv(), if open => match handed {
                Some(h) => pending.push(deliver(h, producer.clone(), Arc::clone(&events))),
                None => open = false,
            },
            Some(()) = pending.next(), if !pending.is_empty() => {}
            changed = stop.changed(), if stoppable => stoppable = changed.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_rules::engine::{Engine, RuleSet};

    use super::*;
    use crate::alerts::Alerts;
    use crate::config::{AlertsSection, KafkaSection};
    use crate::killswitch::KillSwitch;
    use crate::pipeline::row_queue;

    /// A sink whose Kafka never answers (nothing listens on port 9).
    fn silent_kafka(capacity: usize) -> (Arc<KafkaRows>, KafkaDeliveries, Arc<InternalEvents>) {
        let config = KafkaSection {
            brokers: "127.0.0.1:9".to_owned(),
            produce_timeout: Duration::from_secs(60),
            ..Default::default()
        }
        .validate()
        .unwrap()
        .unwrap();
        let events = InternalEvents::new();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::sinks::sqlite::SqliteStore::open(dir.path()).unwrap();
        let (alerts, _task) = Alerts::start(
            &AlertsSection::default(),
            &crate::tls::OutboundRoots::default(),
            Arc::new(store),
            Arc::clone(&events),
        );
        let enforcer = Enforcer {
            engine: tollgate_rules::engine::Engine::new(Default::default()),
            killswitch: KillSwitch::new(),
            alerts,
            events: Arc::clone(&events),
        };
        let (queue, _rx) = row_queue(10);
        let (rows, deliveries) = KafkaRows::start(
            CallProducer::new(&config).unwrap(),
            capacity,
            queue,
            enforcer,
            Arc::clone(&events),
        );
        (rows, deliveries, events)
    }

    fn lost(events: &InternalEvents) -> String {
        events
            .encode()
            .lines()
            .find(|l| l.starts_with("tollgate_store_rows_lost_total"))
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn a_row_holds_its_room_until_kafka_has_it() {
        let (rows, deliveries, events) = silent_kafka(2);
        let engine = Engine::new(RuleSet::default());
        let first = rows.reserve().expect("room for the first call");
        let second = rows.reserve().expect("room for the second call");
        // Kafka slow: the third call is refused before any provider sees it.
        assert!(rows.reserve().is_none());
        // The first call is served and handed over without waiting; Kafka
        // does not answer, so its row keeps its room.
        rows.submit(
            CallRecord {
                span_id: "01".into(),
                ..CallRecord::default()
            },
            Vec::new(),
            engine.unstored(),
            first,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rows.reserve().is_none(), "the row gave its room back");
        // A call refused after its reservation gives the room back at once.
        drop(second);
        assert!(rows.reserve().is_some());
        // Shutdown waits for the acknowledgement, then counts the row lost.
        deliveries.finish(Duration::from_millis(200)).await;
        assert!(lost(&events).ends_with(" 1"), "{}", lost(&events));
    }
}
