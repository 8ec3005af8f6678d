//! Enforcement: both modes run the same rules, and what follows their
//! violations is decided here, once.
//!
//! | | admitted | counted | followed |
//! |---|---|---|---|
//! | gateway call | `Engine::admit` (`inline-gateway/src/proxy/handle.rs`), before the provider sees it | `Engine::settle` (`inline-gateway/src/proxy/call.rs`) | [`Enforcer::follow_settled`] (`crate::gateway`'s row sinks) |
//! | observed span | (after the fact) | [`Enforcer::observe`] (the writer's `RuleStage`) | [`Enforcer::observe`] |
//! | shared budget | leases (`collector/src/ledger`) | reported to the shared ledger | [`Enforcer::follow_crossings`] |
//!
//! One [`Engine`] (rules, ledger, overrides, leases) serves all three. What
//! follows a violation, wherever it came from: a rule event (stored with
//! the batch), the alerts announcing it (into the outbox with it), a
//! kill-switch block for `block` rules over their limit, and the rule's id
//! in the row's `rules_fired`.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tollgate_rules::engine::lease::CallRef;
use tollgate_rules::engine::{Engine, Violation};
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

/// The rules engine and what follows its violations: events, alerts,
/// blocks and `rules_fired`. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Enforcer {
    pub engine: Engine,
    pub killswitch: KillSwitch,
    pub alerts: Alerts,
    pub events: Arc<InternalEvents>,
}

impl Enforcer {
    /// Counts an observed call against every rule and follows what fired
    /// (see [`Enforcer::follow`]).
    pub fn observe(
        &self,
        call: &mut CallRecord,
        already_stored: &mut HashSet<String>,
        out: &mut Followed,
    ) {
        let violations = self.engine.observe(call);
        self.follow(call, &violations, None, already_stored, out);
    }

    /// Counts the usage a later description of a call already stored added
    /// (`extra` carries only that usage) and follows what fired: the events
    /// name the stored row's span, `span_id`.
    pub fn observe_extra(
        &self,
        extra: &mut CallRecord,
        span_id: &str,
        already_stored: &mut HashSet<String>,
        out: &mut Followed,
    ) {
        let violations = self.engine.observe_extra(extra);
        self.follow(extra, &violations, Some(span_id), already_stored, out);
    }

    /// Follows `violations` of `call`: names the rules on the row, appends
    /// an event per violation and its alerts to `out` (an event whose key
    /// is in `already_stored` was stored before a crash: it is taken out
    /// of the set and neither stored nor alerted again), and sets the
    /// blocks. `event_span` gives the events another row's span id (a
    /// correction counted for a row already stored).
    fn follow(
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

    /// Follows the `violations` of a call the gateway admitted and settled
    /// (against [`Enforcer::engine`]): nothing of it was stored before, and
    /// its events carry its own span.
    pub fn follow_settled(&self, call: &mut CallRecord, violations: &[Violation]) -> Followed {
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
