//! The rules stage: every call goes through [`Enforcer::observe`] before it
//! is stored.

use std::collections::HashSet;

use std::sync::Arc;

use tollgate_rules::CallRecord;

use crate::ledger::SharedBudgets;

use super::enforcer::{Enforcer, Followed};
use super::identity::CallMerge;
use super::restore::CounterRebuilder;

/// What the writer runs on each batch before writing it.
#[derive(Clone)]
pub struct RuleStage {
    /// The rules, and what follows their violations.
    pub enforcer: Enforcer,
    /// Keys ([`event_key`]) of rule events already in the store, from the
    /// last rebuild: emitted again, they are neither stored nor alerted.
    pub already_stored: HashSet<String>,
    /// Reads counters the engine evicted back from the store.
    pub rebuilder: Option<CounterRebuilder>,
    /// Budgets shared with other instances: the spend of observed calls is
    /// reported there before they are stored.
    pub shared: Option<Arc<SharedBudgets>>,
}

impl RuleStage {
    /// Reads back from the store the evicted counters that `calls` (and the
    /// later descriptions in `merges`) are about to be counted on.
    pub async fn rebuild(&self, calls: &[CallRecord], merges: &[CallMerge]) {
        let Some(rebuilder) = &self.rebuilder else {
            return;
        };
        let mut plan = self.enforcer.engine.rebuild_plan();
        let ended = |c: &CallRecord| c.start_unix_nanos.saturating_add(c.duration_nanos);
        // Gateway calls were admitted (and rebuilt) by the gateway.
        for c in calls.iter().filter(|c| !c.settled) {
            self.enforcer.engine.plan_rebuild(&mut plan, c, ended(c));
        }
        for m in merges.iter().filter(|m| !m.correction.is_zero()) {
            self.enforcer
                .engine
                .plan_rebuild(&mut plan, &m.description, ended(&m.description));
        }
        if plan.is_empty() {
            return;
        }
        if let Err(e) = rebuilder.rebuild(&self.enforcer.engine, plan).await {
            tracing::warn!(error = %e, "could not read evicted counters back from the store; they are completed once it answers");
        }
    }

    /// Observes every call of `calls` (queue order); their events and
    /// alerts go to `out`.
    pub fn evaluate(&mut self, calls: &mut [CallRecord], out: &mut Followed) {
        for call in calls.iter_mut() {
            // Gateway calls were admitted and settled against the same engine.
            if call.settled {
                continue;
            }
            self.enforcer.observe(call, &mut self.already_stored, out);
        }
    }

    /// Reports the spend just counted to the shared ledger, when budgets
    /// are shared, before the calls are stored: once they are, a Kafka
    /// consumer commits their offsets and would not count them again after
    /// a crash. When the ledger cannot be reached the calls are stored all
    /// the same and their spend is reported once it is back.
    pub async fn report(&self) {
        if let Some(shared) = &self.shared
            && let Err(e) = shared.report_observed().await
        {
            tracing::debug!(error = %e, "observed spend not reported to the shared ledger yet");
        }
    }

    /// Counts the usage that later descriptions of already-counted calls
    /// added (see [`CallMerge::correction`]); their events (given the
    /// stored row's span id) and alerts go to `out`.
    pub fn correct(&mut self, merges: &[CallMerge], out: &mut Followed) {
        for m in merges.iter().filter(|m| !m.correction.is_zero()) {
            let mut extra = m.description.clone();
            extra.input_tokens = m.correction.tokens;
            extra.output_tokens = 0;
            extra.cost_usd = Some(m.correction.cost_usd);
            self.enforcer
                .observe_extra(&mut extra, &m.span_id, &mut self.already_stored, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use tollgate_rules::engine::{Engine, compile, parse_rules};

    use super::*;
    use crate::alerts::Alerts;
    use crate::config::AlertsSection;
    use crate::internal_events::InternalEvents;
    use crate::pipeline::restore::event_key;

    fn stage(already_stored: HashSet<String>) -> RuleStage {
        let v: toml::Value = toml::from_str(
            r#"
[[rules]]
id = "daily"
type = "budget"
metric = "tokens"
limit = 100
scope = ["project"]
window = "day"
alert_at = [0.5]
action = "alert"
"#,
        )
        .unwrap();
        let tables = v["rules"].as_array().unwrap().clone();
        let events = InternalEvents::new();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::sinks::sqlite::SqliteStore::open(dir.path()).unwrap();
        let (alerts, _task) = Alerts::start(
            &AlertsSection::default(),
            &crate::tls::OutboundRoots::default(),
            Arc::new(store),
            Arc::clone(&events),
        );
        RuleStage {
            enforcer: Enforcer {
                engine: Engine::new(compile(&parse_rules(tables).unwrap()).unwrap()),
                killswitch: crate::killswitch::KillSwitch::new(),
                alerts,
                events,
            },
            already_stored,
            rebuilder: None,
            shared: None,
        }
    }

    fn calls() -> Vec<CallRecord> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        (0..2)
            .map(|i| CallRecord {
                start_unix_nanos: now + i,
                span_id: format!("s{i}"),
                project: Some("p".into()),
                input_tokens: 30,
                ..Default::default()
            })
            .collect()
    }

    #[tokio::test]
    async fn an_event_already_stored_is_not_stored_again() {
        // First pass: the 50 % crossing is an event.
        let mut first = stage(HashSet::new());
        let mut followed = Followed::default();
        first.evaluate(&mut calls(), &mut followed);
        let out = followed.events;
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].threshold, Some(0.5));
        // The same calls read again after a crash that stored the event
        // but not the calls: the crossing is recognised and dropped.
        let mut again = stage([event_key(&out[0])].into());
        let mut out_again = Followed::default();
        let mut calls = calls();
        again.evaluate(&mut calls, &mut out_again);
        assert!(out_again.events.is_empty(), "{out_again:?}");
        assert_eq!(calls[1].rules_fired, vec!["daily".to_owned()]);
        assert!(again.already_stored.is_empty());
    }
}
