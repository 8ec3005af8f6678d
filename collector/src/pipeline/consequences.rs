//! What follows the rules' violations of a call, in one place for both
//! modes: spans observed by the writer (`RuleStage`) and calls settled by
//! the gateway (`crate::gateway::QueueRows`). Each violation becomes a rule
//! event (stored with the batch) and the alerts announcing it; `block`
//! rules over their limit become kill-switch blocks; the row names the
//! rules that fired.

use std::collections::HashSet;
use std::sync::Arc;

use tollgate_rules::engine::Violation;
use tollgate_rules::{CallRecord, RuleEvent};

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
}
