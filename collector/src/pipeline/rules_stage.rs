//! The rules stage: every call goes through the engine's `observe` before it
//! is stored. Rows get the ids of the rules that fired; each violation
//! becomes a rule event (stored with the batch), an alert, and, for `block`
//! rules over their limit, a kill-switch block.

use std::sync::Arc;

use tollgate_rules::engine::Engine;
use tollgate_rules::{CallRecord, Mode, RuleEvent};

use crate::alerts::Alerts;
use crate::internal_events::InternalEvents;
use crate::killswitch::KillSwitch;

/// What the writer runs on each batch before writing it.
#[derive(Clone)]
pub struct RuleStage {
    pub engine: Engine,
    pub killswitch: KillSwitch,
    pub alerts: Alerts,
    pub events: Arc<InternalEvents>,
}

impl RuleStage {
    /// Observes every call of `calls` (queue order) and appends the events to `out`.
    pub fn evaluate(&self, calls: &mut [CallRecord], out: &mut Vec<RuleEvent>) {
        let before = out.len();
        for call in calls.iter_mut() {
            // Gateway calls were admitted and settled against the same engine.
            if call.mode == Mode::Gateway {
                continue;
            }
            let violations = self.engine.observe(call);
            if violations.is_empty() {
                continue;
            }
            for v in &violations {
                if !call.rules_fired.iter().any(|r| **r == *v.rule_id) {
                    call.rules_fired.push(v.rule_id.to_string());
                }
                let event = RuleEvent::new(call, v);
                self.alerts.notify(v, &event);
                out.push(event);
            }
            self.killswitch.apply(&violations);
        }
        self.events.rule_events(out.len() - before);
    }
}
