//! Rebuilding what the writer knows from the store: rule counters (so a
//! restart, or a Kafka consumer gaining partitions, keeps budgets), the
//! kill-switch blocks still in force, admin actions, and the calls whose
//! later descriptions must still find them (call identity).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tollgate_rules::Mode;
use tollgate_rules::engine::{Engine, RebuildPlan, ScopeDim, ViolationKind};

use super::CallIdentity;
use crate::admin::AdminLog;
use crate::internal_events::InternalEvents;
use crate::killswitch::KillSwitch;
use crate::query::{EventsQuery, QueryError, QueryStore};
use tollgate_rules::RuleEvent;

/// The store's side of a rebuild.
#[derive(Clone)]
pub struct Restore {
    pub store: Arc<dyn QueryStore>,
    pub admin_log: Arc<dyn AdminLog>,
}

impl Restore {
    /// Replays stored calls into `engine` and `identity`, re-blocks scopes still
    /// over a `block` limit, then re-applies stored admin actions. Returns
    /// the identities of the rule events already stored for the windows
    /// replayed (see [`event_key`]).
    pub async fn run(
        &self,
        engine: &Engine,
        killswitch: &KillSwitch,
        identity: Option<&mut CallIdentity>,
    ) -> HashSet<String> {
        let since = restore(engine, killswitch, identity, self.store.as_ref()).await;
        reapply_admin_actions(engine, killswitch, self.admin_log.as_ref()).await;
        let stored = self
            .store
            .events(EventsQuery {
                since_unix_nanos: since,
                rule_id: None,
                kind: None,
                limit: STORED_EVENTS_MAX,
                within_query_timeout: false,
                ..EventsQuery::default()
            })
            .await;
        match stored {
            Ok(events) => events.iter().map(event_key).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read stored rule events");
                HashSet::new()
            }
        }
    }
}

/// Most stored rule events remembered after a rebuild.
const STORED_EVENTS_MAX: usize = 1_000_000;

/// What makes two rule events the same event: a budget's crossing is one
/// per (rule, scope, threshold, window); any other event is one per call.
///
/// The store writes a batch's rule events before its calls, in two inserts
/// (ClickHouse has no transaction across tables). An instance killed between
/// the two leaves events whose calls are not stored; the instance that reads
/// those calls again emits the same events, and drops them by this key.
pub fn event_key(e: &RuleEvent) -> String {
    match e.kind.as_str() {
        "threshold" | "limit_exceeded" => format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{:?}",
            e.rule_id, e.kind, e.scope, e.threshold, e.window_end_unix_nanos
        ),
        _ => format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            e.rule_id, e.kind, e.trace_id, e.span_id
        ),
    }
}

/// How far back call identities are refilled at start-up (at least the
/// identity horizon's default: later descriptions of a call arrive seconds
/// after the first).
const IDENTITY_REFILL_NANOS: i64 = 10 * 60 * 1_000_000_000;

/// Replays stored calls of every window still open into the engine, and
/// re-blocks the scopes whose `block` rules are still over their limit.
/// The replayed calls also refill the call identities.
async fn restore(
    engine: &Engine,
    killswitch: &KillSwitch,
    mut identity: Option<&mut CallIdentity>,
    store: &dyn QueryStore,
) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let since = engine
        .counted_since(now)
        // Call identities want the last minutes even without budgets.
        .map_or(now - IDENTITY_REFILL_NANOS, |s| {
            s.min(now - IDENTITY_REFILL_NANOS)
        });
    let started = std::time::Instant::now();
    let mut blocks = Vec::new();
    // Nothing replayed is evicted until the replay ends: a counter evicted
    // half-way would be counted again from zero by its later calls.
    let pinned = engine.unstored();
    let replayed = store
        .replay(
            since,
            Box::new(|call| {
                if let Some(identity) = identity.as_deref_mut()
                    && call.start_unix_nanos >= now - IDENTITY_REFILL_NANOS
                {
                    identity.remember_stored(call);
                }
                for v in engine.observe(call) {
                    if v.kind == ViolationKind::LimitExceeded
                        && v.window_end.is_some_and(|end| end > now)
                    {
                        blocks.push(v);
                    }
                }
            }),
        )
        .await;
    drop(pinned);
    match replayed {
        Ok(n) => {
            killswitch.apply(&blocks);
            tracing::info!(
                calls = n,
                took_ms = started.elapsed().as_millis() as u64,
                "rule counters rebuilt from the store"
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not rebuild rule counters from the store; budgets start from zero")
        }
    }
    since
}

/// Applies the stored admin actions still in force, after the counters and
/// rule blocks are back (a stored lift lifts a block the replay re-created).
async fn reapply_admin_actions(engine: &Engine, killswitch: &KillSwitch, log: &dyn AdminLog) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    match log.load(now).await {
        Ok(actions) => {
            for a in &actions {
                if !a.apply(engine, killswitch) {
                    tracing::warn!(action = ?a, "stored admin action names a rule that no longer exists");
                }
            }
            if !actions.is_empty() {
                tracing::info!(actions = actions.len(), "admin actions re-applied");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not read stored admin actions"),
    }
}

/// Reads counters the engine evicted back from the store: the stored calls
/// of the evicted scopes, counted again by the engine's own code.
#[derive(Clone)]
pub struct CounterRebuilder {
    pub store: Arc<dyn QueryStore>,
    pub events: Arc<InternalEvents>,
}

impl CounterRebuilder {
    /// Feeds `plan` the stored calls of its scopes and installs it; returns
    /// how many counters were installed. On a store error nothing is
    /// installed: the counters stay evicted and the next call tries again.
    pub async fn rebuild(
        &self,
        engine: &Engine,
        mut plan: RebuildPlan,
    ) -> Result<usize, QueryError> {
        let started = std::time::Instant::now();
        let scopes = plan.scopes().to_vec();
        let since = plan.since();
        let read = self
            .store
            .replay_scopes(
                since,
                &scopes,
                Box::new(|call| engine.feed(&mut plan, call)),
            )
            .await;
        match read {
            Ok(calls) => {
                let installed = engine.install(plan);
                self.events
                    .ledger_rebuilt(scopes.len(), calls, started.elapsed());
                Ok(installed)
            }
            Err(e) => {
                self.events.ledger_rebuild_failed();
                Err(e)
            }
        }
    }
}

impl CounterRebuilder {
    /// Counts into `engine` (a virtual key's own limits) the stored gateway
    /// calls made with key `key_id` in its open windows.
    pub async fn replay_key(&self, engine: &Engine, key_id: &str) -> Result<u64, QueryError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let Some(since) = engine.counted_since(now) else {
            return Ok(0);
        };
        let scopes = [vec![(ScopeDim::Key, key_id.to_owned())]];
        let mut counted = 0;
        self.store
            .replay_scopes(
                since,
                &scopes,
                Box::new(|call| {
                    if call.mode == Mode::Gateway
                        && call.labels.get("key").map(String::as_str) == Some(key_id)
                    {
                        engine.observe(call);
                        counted += 1;
                    }
                }),
            )
            .await?;
        Ok(counted)
    }
}

impl tollgate_gateway::CounterRebuild for CounterRebuilder {
    fn replay_key<'a>(
        &'a self,
        engine: &'a Engine,
        key_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            CounterRebuilder::replay_key(self, engine, key_id)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn rebuild<'a>(
        &'a self,
        engine: &'a Engine,
        plan: RebuildPlan,
    ) -> futures::future::BoxFuture<'a, Result<usize, String>> {
        Box::pin(async move {
            CounterRebuilder::rebuild(self, engine, plan)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
