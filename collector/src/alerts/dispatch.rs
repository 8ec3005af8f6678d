//! Alerts, delivered at least once. The rules stage (and the gateway) turn a
//! violation into one outbox entry per webhook it goes to
//! ([`Alerts::entries`]), stored in the same batch as its rule event. One
//! task per webhook reads that webhook's pending entries from the store,
//! oldest first, and delivers each before the next (in order), retrying
//! with backoff until it is delivered or older than `alerts.max_age`. A
//! crash or a restart loses nothing: the tasks read what is pending when
//! they start.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_rules::RuleEvent;
use tollgate_rules::engine::Violation;
use tollgate_rules::engine::config::Action;

use super::webhook::{Attempt, Webhook};
use crate::config::AlertsSection;
use crate::internal_events::InternalEvents;
use crate::sinks::outbox::{AlertOutbox, OutboxEntry, Outcome, entry_key};
use crate::tls::OutboundRoots;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle webhook task looks for new entries without being woken.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Entries read from the store at a time.
const PAGE: usize = 64;

/// The producing side, held by the rules stage and the gateway's row sink.
#[derive(Clone)]
pub struct Alerts {
    webhooks: Arc<Vec<Arc<Webhook>>>,
    wake: Arc<Notify>,
}

/// The delivery tasks; await [`AlertsHandle::stop`] at shutdown.
pub struct AlertsHandle {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl AlertsHandle {
    /// Stops the delivery tasks (within `timeout`); what is pending stays
    /// in the store for the next start.
    pub async fn stop(self, timeout: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(timeout, futures::future::join_all(self.tasks)).await;
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Alerts {
    /// Starts one delivery task per configured webhook, reading `outbox`.
    pub fn start(
        config: &AlertsSection,
        roots: &OutboundRoots,
        outbox: Arc<dyn AlertOutbox>,
        events: Arc<InternalEvents>,
    ) -> (Alerts, AlertsHandle) {
        if config.max_attempts.is_some() {
            tracing::warn!(
                "alerts.max_attempts is no longer used: alerts are retried until alerts.max_age"
            );
        }
        let webhooks: Vec<Arc<Webhook>> = config
            .webhooks
            .iter()
            .map(|w| Arc::new(Webhook::from(w)))
            .collect();
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // A webhook's URL may be a secret: its answer may not send the
            // alert elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_merge(roots.reqwest_certificates())
            .build()
            .unwrap_or_default();
        let tasks = webhooks
            .iter()
            .map(|w| {
                tokio::spawn(deliver(Delivery {
                    webhook: Arc::clone(w),
                    outbox: Arc::clone(&outbox),
                    client: client.clone(),
                    wake: Arc::clone(&wake),
                    stop: stop.clone(),
                    max_age: config.max_age,
                    events: Arc::clone(&events),
                }))
            })
            .collect();
        (
            Alerts {
                webhooks: Arc::new(webhooks),
                wake,
            },
            AlertsHandle { stop, tasks },
        )
    }

    /// The outbox entries announcing `event` (a violation of `violation`'s
    /// rule): one per webhook the rule alerts (its `alerts`, or the default
    /// webhooks), none for `log` rules or an exceeded limit already
    /// announced by its 100 % threshold.
    pub fn entries(&self, violation: &Violation, event: &RuleEvent) -> Vec<OutboxEntry> {
        if violation.action == Action::Log || !violation.notify {
            return Vec::new();
        }
        self.webhooks
            .iter()
            .filter(|w| {
                if violation.alerts.is_empty() {
                    w.default
                } else {
                    violation.alerts.iter().any(|n| *n == w.name)
                }
            })
            .map(|w| OutboxEntry {
                webhook: w.name.clone(),
                key: entry_key(event, &w.name),
                event: event.clone(),
                created_unix_nanos: now_nanos(),
            })
            .collect()
    }

    /// New entries were stored: deliver them now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }
}

struct Delivery {
    webhook: Arc<Webhook>,
    outbox: Arc<dyn AlertOutbox>,
    client: reqwest::Client,
    wake: Arc<Notify>,
    stop: CancellationToken,
    max_age: Duration,
    events: Arc<InternalEvents>,
}

impl Delivery {
    /// Waits `d`, or until stopped (`false`).
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    async fn record(&self, entry: &OutboxEntry, outcome: Outcome) {
        // The store is where the state lives: keep trying (an entry left
        // pending is only delivered again, never lost).
        loop {
            match self
                .outbox
                .record(&entry.webhook, &entry.key, outcome.clone(), now_nanos())
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(webhook = %self.webhook.name, error = %e, "could not record an alert's delivery");
                    if !self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Delivers `d.webhook`'s pending entries in order until stopped.
async fn deliver(d: Delivery) {
    loop {
        // Woken by a batch stored after this point is not missed.
        let woken = d.wake.notified();
        let pending = match d.outbox.pending(&d.webhook.name, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(webhook = %d.webhook.name, error = %e, "could not read pending alerts");
                if !d.pause(IDLE_POLL).await {
                    return;
                }
                continue;
            }
        };
        d.events.alerts_pending(&d.webhook.name, pending.len());
        if pending.is_empty() {
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = d.stop.cancelled() => return,
            }
            continue;
        }
        for p in pending {
            let mut attempts = p.attempts;
            let mut backoff = FIRST_BACKOFF;
            loop {
                if d.stop.is_cancelled() {
                    return;
                }
                let age = now_nanos().saturating_sub(p.entry.created_unix_nanos);
                if age > i64::try_from(d.max_age.as_nanos()).unwrap_or(i64::MAX) {
                    d.events
                        .alert_given_up(&d.webhook.name, "older than alerts.max_age");
                    let error = "older than alerts.max_age".to_owned();
                    d.record(&p.entry, Outcome::GivenUp { attempts, error })
                        .await;
                    break;
                }
                attempts += 1;
                match d.webhook.post(&d.client, &p.entry).await {
                    Ok(()) => {
                        d.events.alert_delivered();
                        d.record(&p.entry, Outcome::Delivered { attempts }).await;
                        break;
                    }
                    Err(Attempt::Refused(error)) => {
                        d.events.alert_given_up(&d.webhook.name, &error);
                        d.record(&p.entry, Outcome::GivenUp { attempts, error })
                            .await;
                        break;
                    }
                    Err(Attempt::Failed(error)) => {
                        d.events.alert_failed();
                        d.record(&p.entry, Outcome::Failed { attempts, error })
                            .await;
                        if !d.pause(backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }
}
