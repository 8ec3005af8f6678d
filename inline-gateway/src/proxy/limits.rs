//! Per-key limits ([`crate::KeyLimits`]): each limited key gets a small rules
//! engine of its own (budgets scoped on the key), compiled the first time the
//! key is seen and kept while its limits stay the same. Before the key's
//! first call in a process its counters are read back from the stored
//! calls made with it ([`KeyEngine::restored`]), so a restart keeps them;
//! changing a key's limits starts them afresh from the stored calls too.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::OnceCell;

use tollgate_rules::engine::config::{Action, Metric, RawBudget, RawRule};
use tollgate_rules::engine::window::WindowUnit;
use tollgate_rules::engine::{Engine, compile};

use crate::keys::{KeyLimits, VirtualKey};

#[derive(Debug, Default)]
pub(crate) struct KeyLimiter {
    engines: RwLock<HashMap<String, (KeyLimits, KeyEngine)>>,
}

/// A key's engine, and whether its counters were read back from the store.
#[derive(Debug, Clone)]
pub(crate) struct KeyEngine {
    pub engine: Engine,
    /// Set once the stored calls made with the key are counted.
    pub restored: Arc<OnceCell<()>>,
}

fn budget(id: &str, metric: Metric, limit: f64, window: WindowUnit, rolling: bool) -> RawRule {
    RawRule::Budget(RawBudget {
        id: id.to_owned(),
        scope: vec!["key".to_owned()],
        filter: BTreeMap::new(),
        metric: Some(metric),
        limit: Some(limit),
        tier: None,
        window: Some(window),
        rolling,
        time_zone: None,
        alert_at: None,
        burst: None,
        action: Action::Block,
        alerts: Vec::new(),
        // A key's own limits are counted in each instance.
        on_ledger_error: Default::default(),
    })
}

/// The rules a key's limits stand for; their ids name the limit.
pub(crate) fn rules_of(l: &KeyLimits) -> Vec<RawRule> {
    let mut out = Vec::new();
    let as_f64 = |v: u64| v as f64;
    if let Some(v) = l.tokens_per_day {
        out.push(budget(
            "key.tokens_per_day",
            Metric::Tokens,
            as_f64(v),
            WindowUnit::Day,
            false,
        ));
    }
    if let Some(v) = l.tokens_per_month {
        out.push(budget(
            "key.tokens_per_month",
            Metric::Tokens,
            as_f64(v),
            WindowUnit::Month,
            false,
        ));
    }
    if let Some(v) = l.cost_usd_per_day {
        out.push(budget(
            "key.cost_usd_per_day",
            Metric::CostUsd,
            v,
            WindowUnit::Day,
            false,
        ));
    }
    if let Some(v) = l.cost_usd_per_month {
        out.push(budget(
            "key.cost_usd_per_month",
            Metric::CostUsd,
            v,
            WindowUnit::Month,
            false,
        ));
    }
    if let Some(v) = l.requests_per_minute {
        out.push(budget(
            "key.requests_per_minute",
            Metric::Requests,
            as_f64(v),
            WindowUnit::Minute,
            true,
        ));
    }
    if let Some(v) = l.tokens_per_minute {
        out.push(budget(
            "key.tokens_per_minute",
            Metric::Tokens,
            as_f64(v),
            WindowUnit::Minute,
            true,
        ));
    }
    out
}

impl KeyLimiter {
    /// The engine counting `key`'s limits; `None` when it has none.
    pub(crate) fn engine(&self, key: &VirtualKey) -> Option<KeyEngine> {
        if key.limits.is_empty() {
            return None;
        }
        {
            let engines = self.engines.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((limits, engine)) = engines.get(&key.id)
                && *limits == key.limits
            {
                return Some(engine.clone());
            }
        }
        let rules = match compile(&rules_of(&key.limits)) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %key.id, error = %e, "gateway: a key's limits do not compile; they are not enforced");
                return None;
            }
        };
        let engine = KeyEngine {
            engine: Engine::new(rules),
            restored: Arc::new(OnceCell::new()),
        };
        let mut engines = self.engines.write().unwrap_or_else(PoisonError::into_inner);
        let entry = engines
            .entry(key.id.clone())
            .or_insert_with(|| (key.limits.clone(), engine.clone()));
        if entry.0 != key.limits {
            *entry = (key.limits.clone(), engine);
        }
        Some(entry.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_compiles_and_engines_are_reused() {
        let limits = KeyLimits {
            tokens_per_day: Some(1000),
            tokens_per_month: Some(10_000),
            cost_usd_per_day: Some(1.5),
            cost_usd_per_month: Some(20.0),
            requests_per_minute: Some(60),
            tokens_per_minute: Some(500),
        };
        assert_eq!(compile(&rules_of(&limits)).unwrap().rules.len(), 6);
        let limiter = KeyLimiter::default();
        let mut key = VirtualKey::new("k", "s");
        assert!(limiter.engine(&key).is_none());
        key.limits = limits;
        let a = limiter.engine(&key).unwrap();
        let b = limiter.engine(&key).unwrap();
        assert_eq!(a.engine.rules().rules.len(), b.engine.rules().rules.len());
        assert!(Arc::ptr_eq(&a.restored, &b.restored));
    }
}
