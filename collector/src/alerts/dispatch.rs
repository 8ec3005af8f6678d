//! The alert dispatcher: a bounded queue in front of a task that delivers
//! each alert to its webhooks. Ingest never waits for it: when the queue is
//! full, alerts are dropped and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tollgate_rules::RuleEvent;
use tollgate_rules::engine::Violation;
use tollgate_rules::engine::config::Action;

use super::webhook::Webhook;
use crate::config::AlertsSection;
use crate::internal_events::InternalEvents;

const QUEUE: usize = 1024;
/// Alerts of rules without windows (model access, custom...) repeat at most this often.
const REPEAT_AFTER: i64 = 3_600 * 1_000_000_000;

struct Job {
    event: RuleEvent,
    sinks: Vec<Arc<Webhook>>,
}

/// The sending side, held by the rules stage.
#[derive(Clone)]
pub struct Alerts {
    tx: Option<mpsc::Sender<Job>>,
    webhooks: Arc<Vec<Arc<Webhook>>>,
    events: Arc<InternalEvents>,
}

/// The dispatcher task; await [`AlertsHandle::stop`] at shutdown.
pub struct AlertsHandle {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AlertsHandle {
    /// Delivers what is queued (bounded by `timeout`), then stops.
    pub async fn stop(self, timeout: Duration) {
        if let Some(task) = self.task {
            let _ = tokio::time::timeout(timeout, task).await;
        }
    }
}

impl Alerts {
    /// Starts the dispatcher (none when no webhook is configured).
    pub fn start(config: &AlertsSection, events: Arc<InternalEvents>) -> (Alerts, AlertsHandle) {
        let webhooks: Vec<Arc<Webhook>> = config
            .webhooks
            .iter()
            .map(|w| Arc::new(Webhook::from(w)))
            .collect();
        if webhooks.is_empty() {
            let alerts = Alerts {
                tx: None,
                webhooks: Arc::new(webhooks),
                events,
            };
            return (alerts, AlertsHandle { task: None });
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(rx, config.max_attempts, Arc::clone(&events)));
        (
            Alerts {
                tx: Some(tx),
                webhooks: Arc::new(webhooks),
                events,
            },
            AlertsHandle { task: Some(task) },
        )
    }

    /// Queues the alert of a violation for its rule's webhooks (or the default ones).
    pub fn notify(&self, violation: &Violation, event: &RuleEvent) {
        let Some(tx) = &self.tx else { return };
        if violation.action == Action::Log || !violation.notify {
            return;
        }
        let sinks: Vec<Arc<Webhook>> = self
            .webhooks
            .iter()
            .filter(|w| {
                if violation.alerts.is_empty() {
                    w.default
                } else {
                    violation.alerts.iter().any(|n| *n == w.name)
                }
            })
            .cloned()
            .collect();
        if sinks.is_empty() {
            return;
        }
        if tx
            .try_send(Job {
                event: event.clone(),
                sinks,
            })
            .is_err()
        {
            self.events.alert_dropped();
        }
    }
}

fn dedupe_key(e: &RuleEvent) -> AlertKey {
    let window = e
        .window_end_unix_nanos
        .unwrap_or_else(|| e.time_unix_nanos.div_euclid(REPEAT_AFTER));
    (
        e.rule_id.clone(),
        e.scope.clone(),
        e.kind.clone(),
        e.threshold.map_or(0, f64::to_bits),
        window,
    )
}

/// Most alert identities remembered; past it the least recently sent are
/// forgotten first (counted in `tollgate_alerts_dedup_evicted_total`): an
/// alert forgotten that way could be sent a second time if its crossing
/// were seen again, never lost.
const SENT_MAX: u64 = 100_000;

/// The alerts already sent, each remembered for 32 days (the longest window).
fn sent_alerts(events: Arc<InternalEvents>) -> moka::sync::Cache<AlertKey, ()> {
    moka::sync::Cache::builder()
        .max_capacity(SENT_MAX)
        .time_to_live(Duration::from_secs(32 * 86_400))
        .eviction_listener(move |_, (), cause| {
            if cause == moka::notification::RemovalCause::Size {
                events.alert_dedup_evicted();
            }
        })
        .build()
}

type AlertKey = (String, String, String, u64, i64);

async fn run(mut rx: mpsc::Receiver<Job>, max_attempts: u32, events: Arc<InternalEvents>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    // One ordered queue and task per webhook: a slow or failing webhook
    // delays only its own alerts, and each receives them in order.
    let mut queues: HashMap<String, mpsc::Sender<RuleEvent>> = HashMap::new();
    let mut deliveries = JoinSet::new();
    let sent = sent_alerts(Arc::clone(&events));
    while let Some(job) = rx.recv().await {
        // Each (rule, scope, threshold, window) is sent once.
        let key = dedupe_key(&job.event);
        if sent.contains_key(&key) {
            continue;
        }
        sent.insert(key, ());
        for sink in job.sinks {
            let queue = queues.entry(sink.name.clone()).or_insert_with(|| {
                let (tx, mut rx) = mpsc::channel::<RuleEvent>(QUEUE);
                let client = client.clone();
                let events = Arc::clone(&events);
                deliveries.spawn(async move {
                    while let Some(event) = rx.recv().await {
                        if sink.deliver(&client, &event, max_attempts).await {
                            events.alert_delivered();
                        } else {
                            events.alert_failed();
                        }
                    }
                });
                tx
            });
            if queue.try_send(job.event.clone()).is_err() {
                events.alert_dropped();
            }
        }
    }
    // The queue closed (shutdown): each webhook finishes what it has.
    drop(queues);
    while deliveries.join_next().await.is_some() {}
}
