//! What follows the rules' violations of a call, in one place for both
//! modes: spans observed by the writer (`RuleStage`) and calls settled by
//! the gateway (`crate::gateway::QueueRows`). Each violation becomes a rule
//! event (stored with the batch) and the alerts announcing it; `block`
//! rules over their limit become kill-switch blocks; the row names the
//! rules that fired.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tollgate_rules::engine::Violation;
use tollgate_rules::engine::lease::CallRef;
use tollgate_rules::{CallRecord, RuleEvent};

use super::queue::RowQueue;
use super::restore::event_key;
use crate::alerts::Alerts;
use crate::internal_events::InternalEvents;
use crate::killswitch::KillSwitch;
use crate::sinks::OutboxEntry;

/// The events and alerts that violations produced, to store with the rows.
#[derive(Debug, Default)]
pub struct Followed {
    pub events: Vec<RuleEvent>,
    pub alerts: Vec<OutboxEntry>,
}

/// Turns violations into events, alerts, blocks and `rules_fired`.
#[derive(Clone)]
pub struct Consequences {
    pub killswitch: KillSwitch,
    pub alerts: Alerts,
    pub events: Arc<InternalEvents>,
}

impl Consequences {
    /// Follows `violations` of `call`: names the rules on the row, appends
    /// an event per violation and its alerts to `out` (an event whose key
    /// is in `already_stored` was stored before a crash: it is taken out
    /// of the set and neither stored nor alerted again), and sets the
    /// blocks. `event_span` gives the events another row's span id (a
    /// correction counted for a row already stored).
    pub fn follow(
        &self,
        call: &mut CallRecord,
        violations: &[Violation],
        event_span: Option<&str>,
        already_stored: &mut HashSet<String>,
        out: &mut Followed,
    ) {
        if violations.is_empty() {
            return;
        }
        let before = out.events.len();
        for v in violations {
            if !call.rules_fired.iter().any(|r| **r == *v.rule_id) {
                call.rules_fired.push(v.rule_id.to_string());
            }
            let mut event = RuleEvent::new(call, v);
            if let Some(span) = event_span {
                event.span_id = span.to_owned();
            }
            if !already_stored.is_empty() && already_stored.remove(&event_key(&event)) {
                continue;
            }
            out.alerts.extend(self.alerts.entries(v, &event));
            out.events.push(event);
        }
        self.killswitch.apply(violations);
        self.events.rule_events(out.events.len() - before);
    }

    /// [`Consequences::follow`] for one call the gateway settled: nothing
    /// of it was stored before, and its events carry its own span.
    pub fn follow_call(&self, call: &mut CallRecord, violations: &[Violation]) -> Followed {
        let mut out = Followed::default();
        self.follow(call, violations, None, &mut HashSet::new(), &mut out);
        out
    }

    /// Follows the thresholds of shared budgets that exchanges with the
    /// shared ledger found crossed (not a call's evaluation: the spend of
    /// every instance crossed them): each event names the last call of
    /// this instance counted on the budget.
    pub fn follow_crossings(&self, crossings: Vec<(Violation, CallRef)>) -> Followed {
        let mut out = Followed::default();
        for (violation, call) in crossings {
            let mut record = CallRecord {
                trace_id: call.trace_id,
                span_id: call.span_id,
                start_unix_nanos: call.ended_at,
                ..CallRecord::default()
            };
            self.follow(
                &mut record,
                std::slice::from_ref(&violation),
                None,
                &mut HashSet::new(),
                &mut out,
            );
        }
        out
    }

    /// Follows the crossings `rx` brings until it closes: their events and
    /// alerts are queued for the store like a batch's (no rows: they take
    /// no room in the queue, so only a shutdown refuses them).
    pub async fn follow_shared_budgets(
        self,
        mut rx: mpsc::UnboundedReceiver<Vec<(Violation, CallRef)>>,
        queue: RowQueue,
    ) {
        while let Some(crossings) = rx.recv().await {
            let followed = self.follow_crossings(crossings);
            if let Err(e) =
                queue.try_push_with_events(Vec::new(), followed.events, followed.alerts, None)
            {
                tracing::warn!(error = %e, "a shared budget's rule events could not be queued for the store");
            }
        }
    }
}
