//! The alert outbox: every alert to deliver is a row of the store, written
//! in the same batch as the rule event it announces, and leaves the outbox
//! only once delivered (or given up). A crash or a restart loses none: the
//! dispatcher reads what is pending from the store when it starts.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tollgate_rules::RuleEvent;

use super::SinkError;

/// One alert for one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub webhook: String,
    /// The alert's identity for this webhook: sent as `Idempotency-Key`,
    /// the same on every attempt and after restarts. One per (rule, scope,
    /// kind, threshold, window) — a crossing announced again (replayed
    /// after a crash) has the same key and is stored once.
    pub key: String,
    pub event: RuleEvent,
    pub created_unix_nanos: i64,
}

/// An entry not delivered yet, with the attempts made so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub entry: OutboxEntry,
    pub attempts: u32,
}

/// What happened to one delivery attempt (or to the alert as a whole).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        attempts: u32,
    },
    /// Tried and failed; tried again later.
    Failed {
        attempts: u32,
        error: String,
    },
    /// Not delivered and never will be: too old, or refused for good (a
    /// client error, a redirect).
    GivenUp {
        attempts: u32,
        error: String,
    },
}

impl Outcome {
    /// Attempts made so far, this one included.
    pub fn attempts(&self) -> u32 {
        match self {
            Outcome::Delivered { attempts }
            | Outcome::Failed { attempts, .. }
            | Outcome::GivenUp { attempts, .. } => *attempts,
        }
    }

    pub fn error(&self) -> &str {
        match self {
            Outcome::Delivered { .. } => "",
            Outcome::Failed { error, .. } | Outcome::GivenUp { error, .. } => error,
        }
    }

    pub fn state(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Failed { .. } => "pending",
            Outcome::GivenUp { .. } => "given_up",
        }
    }
}

/// An alert's delivery to one webhook, as `GET /v1/events` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryState {
    pub webhook: String,
    /// `pending`, `delivered` or `given_up`.
    pub state: String,
    pub attempts: u32,
}

/// Where the outbox lives: the store.
pub trait AlertOutbox: Send + Sync {
    /// The oldest entries of `webhook` neither delivered nor given up, in
    /// the order they were stored, at most `limit`.
    fn pending<'a>(
        &'a self,
        webhook: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Pending>, SinkError>>;
    /// Records the outcome of an attempt on entry `key` of `webhook`.
    fn record<'a>(
        &'a self,
        webhook: &'a str,
        key: &'a str,
        outcome: Outcome,
        at_unix_nanos: i64,
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// The deliveries of the alerts with these keys (any webhook).
    fn deliveries<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, DeliveryState)>, SinkError>>;
}

/// The alert identity of `event` (see [`OutboxEntry::key`]) without the
/// webhook: what `GET /v1/events` looks deliveries up by.
pub fn alert_identity(event: &RuleEvent) -> String {
    use std::hash::Hasher;
    // Alerts of rules without windows repeat at most hourly.
    const HOUR: i64 = 3_600 * 1_000_000_000;
    let window = event
        .window_end_unix_nanos
        .unwrap_or_else(|| event.time_unix_nanos.div_euclid(HOUR));
    let mut a = twox_hash::XxHash3_64::with_seed(1);
    let mut b = twox_hash::XxHash3_64::with_seed(2);
    for h in [&mut a, &mut b] {
        for part in [
            event.rule_id.as_bytes(),
            event.scope.as_bytes(),
            event.kind.as_bytes(),
        ] {
            h.write(part);
            h.write_u8(0x1f);
        }
        h.write_u64(event.threshold.map_or(0, f64::to_bits));
        h.write_i64(window);
    }
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

/// The key of `event`'s alert for `webhook`.
pub fn entry_key(event: &RuleEvent, webhook: &str) -> String {
    use std::hash::Hasher;
    let identity = alert_identity(event);
    let mut h = twox_hash::XxHash3_64::with_seed(3);
    h.write(webhook.as_bytes());
    format!("{identity}-{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(threshold: f64, window_end: i64) -> RuleEvent {
        RuleEvent {
            time_unix_nanos: 5,
            rule_id: "daily".into(),
            kind: "threshold".into(),
            scope: "project=search".into(),
            metric: Some("tokens".into()),
            limit: Some(100.0),
            used: Some(80.0),
            threshold: Some(threshold),
            action: "alert".into(),
            window_end_unix_nanos: Some(window_end),
            trace_id: "t".into(),
            span_id: "s".into(),
        }
    }

    #[test]
    fn keys_name_one_crossing_for_one_webhook() {
        let a = event(0.8, 10);
        // The same crossing seen on another call: the same key.
        let mut again = a.clone();
        again.span_id = "other".into();
        again.used = Some(81.0);
        assert_eq!(entry_key(&a, "ops"), entry_key(&again, "ops"));
        assert_ne!(entry_key(&a, "ops"), entry_key(&a, "slack"));
        assert_ne!(entry_key(&a, "ops"), entry_key(&event(0.9, 10), "ops"));
        assert_ne!(entry_key(&a, "ops"), entry_key(&event(0.8, 20), "ops"));
        assert!(entry_key(&a, "ops").starts_with(&alert_identity(&a)));
    }
}
