//! The engine: `admit`, `settle`, `observe`, `quote` over a compiled rule
//! set and one ledger. Pure and synchronous; safe to share across threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};

use super::call_view::CallView;
use super::compile::{BudgetRule, CompiledRule, RuleKind, RuleSet};
use super::config::{Action, Metric, OnLedgerError};
use super::lease::{
    CallRef, CounterSubject, LeaseBook, LeaseShort, LeaseWindow, SpendMoved, monotonic_ms,
};
use super::ledger::{Ask, Counter, CounterKey, Ledger, LedgerStats};
use super::scope::{
    CallFacts, CallIntent, ScopeDim, ScopeHashes, scope_hash, scope_label, scope_pairs,
};
use super::window::WindowKind;
use crate::CallRecord;

/// Bit of `Counter::crossed` marking "limit exceeded already reported".
const EXCEEDED_BIT: u32 = 1 << 31;

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    BudgetExceeded,
    RateLimited,
    ModelNotAllowed,
    RegionNotAllowed,
    CustomRule,
    /// The scope is blocked (kill-switch).
    Blocked,
    /// A counter of the call was evicted from memory and is being rebuilt
    /// from the store: try again in a moment.
    Rebuilding,
    /// The instance's lease on a shared budget does not cover the call:
    /// get more from the shared ledger ([`Refusal::short`]) and admit again
    /// with [`Engine::admit_leased`].
    LeaseNeeded,
    /// The shared ledger cannot be reached, the leases held do not cover
    /// the call, and the budget's `on_ledger_error` is `deny`.
    LedgerUnavailable,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Threshold => "threshold",
            ViolationKind::LimitExceeded => "limit_exceeded",
            ViolationKind::ModelNotAllowed => "model_not_allowed",
            ViolationKind::RegionNotAllowed => "region_not_allowed",
            ViolationKind::Custom => "custom",
        }
    }
}

impl RefusalReason {
    /// The `error` code of refusal bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::BudgetExceeded => "budget_exceeded",
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::ModelNotAllowed => "model_not_allowed",
            RefusalReason::RegionNotAllowed => "region_not_allowed",
            RefusalReason::CustomRule => "rule_violation",
            RefusalReason::Blocked => "blocked",
            RefusalReason::Rebuilding => "budget_rebuilding",
            RefusalReason::LeaseNeeded => "budget_lease_needed",
            RefusalReason::LedgerUnavailable => "ledger_unavailable",
        }
    }
}

/// A refused call: what agents get back (as JSON) to act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub rule_id: Arc<str>,
    /// `project=search,user=alice`.
    pub scope: String,
    pub metric: Option<Metric>,
    /// In the metric's unit (dollars for cost).
    pub limit: Option<f64>,
    pub used: Option<f64>,
    /// When trying again may succeed (window end), in seconds.
    pub retry_after_s: Option<u64>,
    /// [`RefusalReason::LeaseNeeded`]: the shared budgets to lease more of.
    pub short: Vec<LeaseShort>,
}

/// What happened to a call that the collector records and acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// Usage crossed an `alert_at` threshold.
    Threshold,
    /// Usage went over the (burst-adjusted) limit.
    LimitExceeded,
    ModelNotAllowed,
    RegionNotAllowed,
    Custom,
}

/// An event of a rule on one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rule_id: Arc<str>,
    pub kind: ViolationKind,
    pub scope: String,
    /// The same scope as (dimension, value) pairs.
    pub scope_dims: Vec<(String, String)>,
    pub metric: Option<Metric>,
    pub limit: Option<f64>,
    pub used: Option<f64>,
    pub threshold: Option<f64>,
    pub action: Action,
    /// End of the window (Unix nanoseconds): when a block lifts by itself.
    pub window_end: Option<i64>,
    pub alerts: Vec<String>,
    /// Whether people should be notified: false for an exceeded limit that
    /// a 100 % threshold alert already announced (no burst in between).
    pub notify: bool,
}

/// Worst-case usage held for an admitted call. Dropping it gives the
/// reservation back; [`Engine::settle`] replaces it by the actual usage.
#[derive(Debug)]
pub struct Reservation {
    held: Vec<(CounterKey, u64)>,
    ledger: Arc<Mutex<Ledger>>,
    /// Shared budgets: the same amounts, taken from the instance's leases.
    leases: Option<Arc<Mutex<LeaseBook>>>,
}

impl Reservation {
    fn release(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if let Some(book) = &self.leases {
            let mut book = lock(book);
            for (key, amount) in &self.held {
                book.release(key, *amount);
            }
        }
        let mut ledger = lock(&self.ledger);
        for (key, amount) in self.held.drain(..) {
            ledger.release(&key, amount);
        }
    }

    /// Counters and amounts held.
    pub fn held(&self) -> &[(CounterKey, u64)] {
        &self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// The decision on a call about to be made.
#[derive(Debug)]
pub enum Decision {
    Allow(Reservation),
    Deny(Refusal),
}

/// A temporary change to a rule for one scope.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Override {
    /// The rule ignores the scope until then.
    Snooze { until: i64 },
    /// The limit is replaced (`None`: lifted) until then.
    Limit { limit: Option<u64>, until: i64 },
}

/// Which question `check` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Admit,
    /// Admit, leases having just been asked for.
    AdmitLeased,
    /// Admit, the shared ledger being unreachable.
    LedgerDown,
    /// What `admit` would say, reserving nothing.
    Quote,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the ledger half-updated
    // (every update is one assignment), so its state stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The rules engine. Clone it freely: clones share rules and counters.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    rules: Arc<RwLock<Arc<RuleSet>>>,
    ledger: Arc<Mutex<Ledger>>,
    overrides: Arc<Mutex<HashMap<(u64, u64), Override>>>,
    /// Whether `overrides` may hold anything: calls skip its lock when not.
    any_overrides: Arc<AtomicBool>,
    /// Set when budgets are shared with other instances: `block` budgets
    /// admit against this instance's leases, and every budget's spend is
    /// reported to the shared ledger (see [`super::lease`]).
    leases: Arc<OnceLock<Arc<Mutex<LeaseBook>>>>,
}

fn nanos_to_secs_ceil(n: i64) -> u64 {
    u64::try_from(n.max(0)).unwrap_or(0).div_ceil(1_000_000_000)
}

fn display(metric: Metric, units: u64) -> f64 {
    match metric {
        Metric::CostUsd => units as f64 / 1e9,
        Metric::Tokens | Metric::Requests => units as f64,
    }
}

fn cost_units(cost: Option<f64>) -> u64 {
    cost.filter(|c| c.is_finite() && *c > 0.0)
        .map_or(0, |c| (c * 1e9).round() as u64)
}

/// The ceiling of a counter: the limit, raised by the burst allowance
/// from the first time usage passed the limit until the burst runs out.
fn with_burst(b: &BudgetRule, limit: u64, over_since: Option<i64>, now: i64) -> u64 {
    match b.burst {
        Some(burst)
            if over_since.is_none_or(|since| now.saturating_sub(since) < burst.duration_nanos) =>
        {
            (limit as f64 * burst.factor).floor() as u64
        }
        _ => limit,
    }
}

/// The counter of `rule` for a scope at time `at`, and when its window ends.
fn counter_key(rule: &CompiledRule, b: &BudgetRule, scope: u64, at: i64) -> (CounterKey, i64) {
    let (start, end) = b.bounds(at);
    let window_start = if matches!(b.window.kind, WindowKind::Rolling) {
        0
    } else {
        start
    };
    (
        CounterKey {
            rule: rule.hash,
            scope,
            window_start,
        },
        end,
    )
}

/// What a model-access, region or custom rule finds wrong with a call.
/// `names` caches the call's model names across the rules of one call.
fn breach<'a, F: CallFacts>(
    rule: &CompiledRule,
    facts: &'a F,
    names: &mut Option<[String; 2]>,
    view: impl FnOnce() -> CallView<'a>,
) -> Option<ViolationKind> {
    match &rule.kind {
        RuleKind::ModelAccess { allow, deny } => {
            let model = facts.dim(&ScopeDim::Model)?;
            let names = names
                .get_or_insert_with(|| model_candidates(facts.dim(&ScopeDim::Provider), model));
            let denied = names.iter().any(|n| deny.is_match(n));
            let allowed = allow
                .as_ref()
                .is_none_or(|a| names.iter().any(|n| a.is_match(n)));
            (denied || !allowed).then_some(ViolationKind::ModelNotAllowed)
        }
        RuleKind::Region { allowed } => facts
            .upstream()
            .is_none_or(|u| !allowed.is_match(u))
            .then_some(ViolationKind::RegionNotAllowed),
        RuleKind::Custom(expr) => expr.eval(&view()).then_some(ViolationKind::Custom),
        RuleKind::Budget(_) => None,
    }
}

fn model_candidates<'a>(provider: Option<&'a str>, model: &'a str) -> [String; 2] {
    [
        provider.map_or_else(|| model.to_owned(), |p| format!("{p}/{model}")),
        model.to_owned(),
    ]
}

impl Engine {
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules: Arc::new(RwLock::new(Arc::new(rules))),
            ..Default::default()
        }
    }

    /// An engine whose ledger holds at most `max_counters` counters; past
    /// it, idle counters are evicted and rebuilt from the store when their
    /// scope calls again (see [`RebuildPlan`]).
    pub fn with_max_counters(rules: RuleSet, max_counters: usize) -> Self {
        Self {
            ledger: Arc::new(Mutex::new(Ledger::with_capacity(max_counters))),
            ..Self::new(rules)
        }
    }

    /// This engine's budgets are shared with other instances through
    /// `book`, which something else keeps in touch with the shared ledger.
    /// Every clone of the engine shares them from then on; the first book
    /// given stays. Share after counters were restored from the store
    /// (stored calls are in the shared ledger already).
    pub fn share_budgets(&self, book: Arc<Mutex<LeaseBook>>) {
        let _ = self.leases.set(book);
    }

    /// The lease book, when budgets are shared.
    pub fn leases(&self) -> Option<&Arc<Mutex<LeaseBook>>> {
        self.leases.get()
    }

    /// Evicts counters down to the capacity if over it (counters of calls
    /// not stored yet may have kept it over); call once calls were stored.
    pub fn trim_ledger(&self) {
        lock(&self.ledger).trim();
    }

    /// Counters held, evicted and rebuilt.
    pub fn ledger_stats(&self) -> LedgerStats {
        lock(&self.ledger).stats()
    }

    /// Marks the calls counted from now on as not stored yet, until the
    /// returned guard is dropped: their counters are not evicted meanwhile
    /// (a rebuild from the store would miss them). Take it before counting
    /// calls whose rows are on their way to the store; drop it once they
    /// are written (or lost).
    pub fn unstored(&self) -> Unstored {
        let tick = lock(&self.ledger).unstored_from();
        Unstored {
            tick,
            ledger: Arc::clone(&self.ledger),
        }
    }

    /// Adds to `plan` the counters `facts` counts against (at `at`) that
    /// were evicted and must be rebuilt from the store first.
    pub fn plan_rebuild(&self, plan: &mut RebuildPlan, facts: &impl CallFacts, at: i64) {
        if !plan.active {
            return;
        }
        let ledger = lock(&self.ledger);
        let rules = Arc::clone(&plan.rules);
        let mut scopes = ScopeHashes::new(&rules.scope_lists, facts);
        for (index, rule) in rules.rules.iter().enumerate() {
            let RuleKind::Budget(b) = &rule.kind else {
                continue;
            };
            if !rule.applies_to(facts) {
                continue;
            }
            let scope = scopes.get(rule.scope_slot);
            let (key, _) = counter_key(rule, b, scope, at);
            if plan.wanted.contains_key(&key) || !ledger.needs_rebuild(&key, &b.window, at) {
                continue;
            }
            let since = match b.window.kind {
                WindowKind::Rolling => at.saturating_sub(b.window.unit.nominal_nanos()),
                WindowKind::Calendar(_) => b.bounds(at).0,
            };
            plan.since = plan.since.min(since);
            plan.at = plan.at.max(at);
            plan.wanted.insert(key, index);
            plan.scopes.push(
                rule.scope
                    .iter()
                    .map(|d| (d.clone(), facts.dim(d).unwrap_or("").to_owned()))
                    .collect(),
            );
        }
    }

    /// Counts a stored call into the counters `plan` rebuilds.
    pub fn feed(&self, plan: &mut RebuildPlan, record: &CallRecord) {
        if plan.wanted.is_empty() {
            return;
        }
        let at = record
            .start_unix_nanos
            .saturating_add(record.duration_nanos);
        let rules = Arc::clone(&plan.rules);
        let mut scopes = ScopeHashes::new(&rules.scope_lists, record);
        for (index, rule) in rules.rules.iter().enumerate() {
            let RuleKind::Budget(b) = &rule.kind else {
                continue;
            };
            if !plan.rule_wanted(index) || !rule.applies_to(record) {
                continue;
            }
            let scope = scopes.get(rule.scope_slot);
            let (key, _) = counter_key(rule, b, scope, at);
            if plan.wanted.get(&key) == Some(&index) {
                self.count(
                    &mut plan.scratch,
                    rule,
                    b,
                    scope,
                    record,
                    at,
                    &mut Vec::new(),
                    Counting::Replay,
                    &mut Vec::new(),
                );
            }
        }
    }

    /// Puts the counters `plan` rebuilt in the ledger (those nobody rebuilt
    /// meanwhile). Returns how many were installed.
    pub fn install(&self, plan: RebuildPlan) -> usize {
        let RebuildPlan {
            rules,
            wanted,
            mut scratch,
            at,
            ..
        } = plan;
        let mut ledger = lock(&self.ledger);
        let mut n = 0;
        for (key, index) in wanted {
            let Some(RuleKind::Budget(b)) = rules.rules.get(index).map(|r| &r.kind) else {
                continue;
            };
            let counter = scratch
                .take(&key)
                .unwrap_or_else(|| Counter::fresh(&b.window, b.bounds(at).1));
            n += usize::from(ledger.install(key, &b.window, at, counter));
        }
        n
    }

    /// The earliest time a call still counts in some budget of these rules
    /// at `now` (the start of the longest open window), or `None` without
    /// budgets: what a rebuild from stored calls must read from.
    pub fn counted_since(&self, now: i64) -> Option<i64> {
        self.rules()
            .rules
            .iter()
            .filter_map(|r| match &r.kind {
                RuleKind::Budget(b) => Some(match b.window.kind {
                    WindowKind::Rolling => now.saturating_sub(b.window.unit.nominal_nanos()),
                    WindowKind::Calendar(_) => b.bounds(now).0,
                }),
                _ => None,
            })
            .min()
    }

    /// A plan to rebuild evicted counters, for the current rules.
    pub fn rebuild_plan(&self) -> RebuildPlan {
        RebuildPlan {
            rules: self.rules(),
            wanted: HashMap::new(),
            scratch: Ledger::default(),
            scopes: Vec::new(),
            since: i64::MAX,
            at: i64::MIN,
            active: lock(&self.ledger).may_need_rebuild(),
        }
    }

    /// Replaces the rules (hot reload). Counters of rules whose id stays are kept.
    pub fn replace_rules(&self, rules: RuleSet) {
        let mut guard = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        *guard = Arc::new(rules);
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.rules.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets an override of `rule_id` for the scope of `facts`.
    pub fn set_override(&self, rule_id: &str, facts: &impl CallFacts, o: Override) -> bool {
        let rules = self.rules();
        let mut found = false;
        let mut overrides = lock(&self.overrides);
        for rule in rules.rules.iter().filter(|r| &*r.id == rule_id) {
            overrides.insert((rule.hash, scope_hash(&rule.scope, facts)), o);
            self.any_overrides.store(true, Ordering::Release);
            found = true;
        }
        found
    }

    fn override_of(&self, rule: &CompiledRule, scope: u64, now: i64) -> Option<Override> {
        if !self.any_overrides.load(Ordering::Acquire) {
            return None;
        }
        let mut overrides = lock(&self.overrides);
        let o = *overrides.get(&(rule.hash, scope))?;
        let until = match o {
            Override::Snooze { until } | Override::Limit { until, .. } => until,
        };
        if now >= until {
            overrides.remove(&(rule.hash, scope));
            return None;
        }
        Some(o)
    }

    /// The limit in force for a scope after overrides; `None` = no limit
    /// (snoozed or lifted).
    fn limit_in_force(
        &self,
        rule: &CompiledRule,
        b: &BudgetRule,
        scope: u64,
        now: i64,
    ) -> Option<u64> {
        match self.override_of(rule, scope, now) {
            Some(Override::Snooze { .. }) | Some(Override::Limit { limit: None, .. }) => None,
            Some(Override::Limit { limit: Some(l), .. }) => Some(l),
            None => Some(b.limit),
        }
    }

    /// Checks a call before it runs and reserves its worst-case usage on
    /// every budget it counts against, atomically.
    ///
    /// With shared budgets, a call the instance's leases do not cover is
    /// refused with [`RefusalReason::LeaseNeeded`]: lease more, then call
    /// [`Engine::admit_leased`].
    pub fn admit(&self, intent: &CallIntent) -> Decision {
        self.decide(intent, Pass::Admit)
    }

    /// `admit` once more leases were asked for: a budget the leases still
    /// do not cover is exceeded (the shared ledger had no more room).
    pub fn admit_leased(&self, intent: &CallIntent) -> Decision {
        self.decide(intent, Pass::AdmitLeased)
    }

    /// `admit` when more leases could not be had (the shared ledger is
    /// unreachable): a budget the leases do not cover refuses the call or,
    /// with `on_ledger_error = "allow"`, admits it against this instance's
    /// own counter (its spend is reported once the server is back).
    pub fn admit_unleased(&self, intent: &CallIntent) -> Decision {
        self.decide(intent, Pass::LedgerDown)
    }

    fn decide(&self, intent: &CallIntent, pass: Pass) -> Decision {
        match self.check(intent, pass) {
            Ok(held) => Decision::Allow(Reservation {
                held,
                ledger: Arc::clone(&self.ledger),
                leases: self.leases().cloned(),
            }),
            Err(r) => Decision::Deny(r),
        }
    }

    /// What `admit` would say, without reserving anything.
    pub fn quote(&self, intent: &CallIntent) -> Result<(), Refusal> {
        self.check(intent, Pass::Quote).map(|_| ())
    }

    fn check(&self, intent: &CallIntent, pass: Pass) -> Result<Vec<(CounterKey, u64)>, Refusal> {
        let reserve = pass != Pass::Quote;
        let rules = self.rules();
        let now = intent.at_unix_nanos;
        let mut asks: Vec<(Ask, &CompiledRule, &BudgetRule)> = Vec::new();
        let mut names = None;
        let mut scopes = ScopeHashes::new(&rules.scope_lists, intent);
        let project = intent.dim(&ScopeDim::Project);
        for rule in rules.candidates(project).filter(|r| r.applies_to(intent)) {
            let b = match &rule.kind {
                RuleKind::Budget(b) => b,
                _ if rule.action != Action::Block => continue,
                _ => match breach(rule, intent, &mut names, || CallView::of_intent(intent)) {
                    None => continue,
                    Some(kind) => {
                        return Err(Refusal {
                            reason: match kind {
                                ViolationKind::ModelNotAllowed => RefusalReason::ModelNotAllowed,
                                ViolationKind::RegionNotAllowed => RefusalReason::RegionNotAllowed,
                                _ => RefusalReason::CustomRule,
                            },
                            rule_id: Arc::clone(&rule.id),
                            scope: scope_label(&rule.scope, intent),
                            metric: None,
                            limit: None,
                            used: None,
                            retry_after_s: None,
                            short: Vec::new(),
                        });
                    }
                },
            };
            if rule.action != Action::Block {
                continue;
            }
            let scope = scopes.get(rule.scope_slot);
            // The burst-adjusted ceiling is set under the ledger lock below.
            let Some(limit) = self.limit_in_force(rule, b, scope, now) else {
                continue;
            };
            let amount = match b.metric {
                Metric::Tokens => intent.input_tokens.saturating_add(intent.max_output_tokens),
                Metric::Requests => 1,
                Metric::CostUsd => cost_units(intent.worst_case_cost_usd),
            };
            let (key, end) = counter_key(rule, b, scope, now);
            let ask = Ask {
                key,
                window: b.window,
                amount,
                ceiling: limit,
                expires_at: end,
            };
            asks.push((ask, rule, b));
        }
        let mut ledger = lock(&self.ledger);
        ledger.maybe_sweep(now);
        // A counter evicted since the caller rebuilt it (or never rebuilt):
        // counting from zero would forget its stored usage.
        if let Some((_, rule, _)) = asks
            .iter()
            .find(|(a, ..)| ledger.needs_rebuild(&a.key, &a.window, now))
        {
            return Err(Refusal {
                reason: RefusalReason::Rebuilding,
                rule_id: Arc::clone(&rule.id),
                scope: scope_label(&rule.scope, intent),
                metric: None,
                limit: None,
                used: None,
                retry_after_s: Some(1),
                short: Vec::new(),
            });
        }
        for (ask, _, b) in &mut asks {
            let over_since = ledger.get(&ask.key).and_then(|c| c.over_since);
            ask.ceiling = with_burst(b, ask.ceiling, over_since, now);
        }
        let plain: Vec<Ask> = asks.iter().map(|(a, ..)| *a).collect();
        let outcome = if reserve {
            ledger.try_reserve(&plain, now)
        } else {
            // The same check, undone at once: quotes never hold anything.
            ledger.try_reserve(&plain, now).map(|()| {
                for a in &plain {
                    ledger.release(&a.key, a.amount);
                }
            })
        };
        let exceeded = |index: usize, used: u64| {
            let (ask, rule, b) = &asks[index];
            let rolling = matches!(b.window.kind, WindowKind::Rolling);
            Refusal {
                reason: if rolling && b.window.unit == super::window::WindowUnit::Minute {
                    RefusalReason::RateLimited
                } else {
                    RefusalReason::BudgetExceeded
                },
                rule_id: Arc::clone(&rule.id),
                scope: scope_label(&rule.scope, intent),
                metric: Some(b.metric),
                limit: Some(display(b.metric, ask.ceiling)),
                used: Some(display(b.metric, used)),
                retry_after_s: Some(if rolling {
                    nanos_to_secs_ceil(b.window.bucket_nanos())
                } else {
                    nanos_to_secs_ceil(ask.expires_at.saturating_sub(now))
                }),
                short: Vec::new(),
            }
        };
        match outcome {
            Ok(()) if reserve => {
                let Some(book) = self.leases().filter(|_| !plain.is_empty()) else {
                    return Ok(plain.iter().map(|a| (a.key, a.amount)).collect());
                };
                // Shared budgets: the call must also fit this instance's
                // leases (what the shared ledger let it admit).
                let leased: Vec<_> = plain
                    .iter()
                    .map(|a| {
                        let window = LeaseWindow::of(&a.window, a.expires_at);
                        (a.key, window, Some(a.ceiling), a.amount)
                    })
                    .collect();
                let mut book = lock(book);
                match book.try_take(&leased, monotonic_ms()) {
                    Ok(()) => Ok(plain.iter().map(|a| (a.key, a.amount)).collect()),
                    Err(short) => {
                        let denied = short.iter().find_map(|s| {
                            let i = plain.iter().position(|a| a.key == s.key)?;
                            (asks[i].2.on_ledger_error == OnLedgerError::Deny).then_some(i)
                        });
                        if pass == Pass::LedgerDown && denied.is_none() {
                            // Every budget short of lease allows: the local
                            // counters (reserved on above) are the limit now.
                            book.take_anyway(&leased, monotonic_ms());
                            return Ok(plain.iter().map(|a| (a.key, a.amount)).collect());
                        }
                        for a in &plain {
                            ledger.release(&a.key, a.amount);
                        }
                        let index = plain
                            .iter()
                            .position(|a| a.key == short[0].key)
                            .unwrap_or(0);
                        if let (Pass::LedgerDown, Some(index)) = (pass, denied) {
                            let mut r = exceeded(index, 0);
                            r.reason = RefusalReason::LedgerUnavailable;
                            r.used = None;
                            r.retry_after_s = Some(1);
                            return Err(r);
                        }
                        if pass == Pass::AdmitLeased {
                            // Every instance together: spent and held.
                            let (spent, held) = book.seen(&short[0].key).unwrap_or_default();
                            return Err(exceeded(index, spent.saturating_add(held)));
                        }
                        let mut r = exceeded(index, 0);
                        r.reason = RefusalReason::LeaseNeeded;
                        r.used = None;
                        r.retry_after_s = None;
                        r.short = short;
                        Err(r)
                    }
                }
            }
            Ok(()) => Ok(Vec::new()),
            Err(no_room) if no_room.index < asks.len() => {
                Err(exceeded(no_room.index, no_room.used))
            }
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Replaces a reservation by the call's actual usage. On each counter
    /// the reserved amount is given back and the actual added under one
    /// lock, so a concurrent `admit` never sees the call's usage missing.
    pub fn settle(&self, mut reservation: Reservation, record: &CallRecord) -> Vec<Violation> {
        let mut held = std::mem::take(&mut reservation.held);
        let out = self.observe_holding(record, &mut held, Counting::Call);
        // Reservations on counters the call did not settle (its window
        // ended meanwhile, or the rule went away in a reload).
        if !held.is_empty() {
            if let Some(book) = self.leases() {
                let mut book = lock(book);
                for (key, amount) in &held {
                    book.release(key, *amount);
                }
            }
            let mut ledger = lock(&self.ledger);
            for (key, amount) in held {
                ledger.release(&key, amount);
            }
        }
        out
    }

    /// Counts a finished call against every rule; returns what fired.
    pub fn observe(&self, record: &CallRecord) -> Vec<Violation> {
        self.observe_holding(record, &mut Vec::new(), Counting::Call)
    }

    /// Counts usage learnt after a call was observed (a later description of
    /// the same call reported more): `extra`'s tokens and cost are added to
    /// the budgets of its scopes, no request is counted, and rules that look
    /// at the call rather than at usage (model access, region, custom) are
    /// not evaluated again. Returns what fired.
    pub fn observe_extra(&self, extra: &CallRecord) -> Vec<Violation> {
        self.observe_holding(extra, &mut Vec::new(), Counting::Extra)
    }

    /// `observe`, releasing the amounts of `held` on the counters it settles.
    fn observe_holding(
        &self,
        record: &CallRecord,
        held: &mut Vec<(CounterKey, u64)>,
        counting: Counting,
    ) -> Vec<Violation> {
        let rules = self.rules();
        let at = record
            .start_unix_nanos
            .saturating_add(record.duration_nanos);
        let mut out = Vec::new();
        let mut names = None;
        let mut scopes = ScopeHashes::new(&rules.scope_lists, record);
        // Taken at the first budget, then held for the rest of the call.
        let mut ledger = None;
        let project = record.dim(&ScopeDim::Project);
        for rule in rules.candidates(project).filter(|r| r.applies_to(record)) {
            let violation = |kind| Violation {
                rule_id: Arc::clone(&rule.id),
                kind,
                scope: scope_label(&rule.scope, record),
                scope_dims: scope_pairs(&rule.scope, record),
                metric: None,
                limit: None,
                used: None,
                threshold: None,
                action: rule.action,
                window_end: None,
                alerts: rule.alerts.clone(),
                notify: true,
            };
            match &rule.kind {
                RuleKind::ModelAccess { .. } | RuleKind::Region { .. } | RuleKind::Custom(_)
                    if counting == Counting::Extra => {}
                RuleKind::ModelAccess { .. } | RuleKind::Region { .. } | RuleKind::Custom(_) => {
                    if let Some(kind) =
                        breach(rule, record, &mut names, || CallView::of_record(record))
                    {
                        out.push(violation(kind));
                    }
                }
                RuleKind::Budget(b) => {
                    let scope = scopes.get(rule.scope_slot);
                    let ledger = ledger.get_or_insert_with(|| lock(&self.ledger));
                    self.count(ledger, rule, b, scope, record, at, held, counting, &mut out);
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn count(
        &self,
        ledger: &mut Ledger,
        rule: &CompiledRule,
        b: &BudgetRule,
        scope: u64,
        record: &CallRecord,
        at: i64,
        held: &mut Vec<(CounterKey, u64)>,
        counting: Counting,
        out: &mut Vec<Violation>,
    ) {
        let amount = match b.metric {
            Metric::Tokens => record.total_tokens(),
            Metric::Requests if counting == Counting::Extra => 0,
            Metric::Requests => 1,
            Metric::CostUsd => cost_units(record.cost_usd),
        };
        let rolling = matches!(b.window.kind, WindowKind::Rolling);
        let (key, end) = counter_key(rule, b, scope, at);
        let (snoozed, limit) = match self.override_of(rule, scope, at) {
            Some(Override::Snooze { .. }) => (true, None),
            Some(Override::Limit { limit, .. }) => (false, limit),
            None => (false, Some(b.limit)),
        };
        let reserved = held
            .iter()
            .position(|(k, _)| *k == key)
            .map(|i| held.swap_remove(i).1);
        if let Some(reserved) = reserved {
            ledger.release(&key, reserved);
        }
        let shared = self.leases().filter(|_| counting != Counting::Replay);
        if let Some(book) = shared {
            let mut book = lock(book);
            match reserved {
                Some(reserved) => book.settle(&key, reserved, amount, at),
                None => book.observe(key, LeaseWindow::of(&b.window, end), limit, amount, at),
            }
            if amount > 0 {
                let subject = || CounterSubject {
                    rule_id: Arc::clone(&rule.id),
                    scope: scope_label(&rule.scope, record),
                    scope_dims: scope_pairs(&rule.scope, record),
                    window_end: end,
                    call: CallRef::default(),
                };
                book.note_call(&key, subject, &record.trace_id, &record.span_id, at);
            }
        }
        let counter = ledger.settle(key, &b.window, at, amount, end);
        if shared.is_some() {
            // A shared budget's thresholds are crossed by the spend of every
            // instance: the exchange that moves it past one says so
            // (`Engine::crossings`), once for all of them.
            return;
        }
        let (Some(limit), false) = (limit, snoozed) else {
            return;
        };
        let used = counter.settled(&b.window, at);
        let crossed = counter.crossed;
        let ceiling = with_burst(b, limit, counter.over_since, at);
        let base = |kind, threshold| Violation {
            rule_id: Arc::clone(&rule.id),
            kind,
            scope: scope_label(&rule.scope, record),
            scope_dims: scope_pairs(&rule.scope, record),
            metric: Some(b.metric),
            limit: Some(display(b.metric, limit)),
            used: Some(display(b.metric, used)),
            threshold,
            action: rule.action,
            window_end: Some(end),
            alerts: rule.alerts.clone(),
            notify: true,
        };
        for (i, t) in b.thresholds.iter().enumerate() {
            let bit = 1u32 << i;
            let reached = used as f64 >= t * limit as f64;
            if reached && crossed & bit == 0 {
                counter.crossed |= bit;
                out.push(base(ViolationKind::Threshold, Some(*t)));
            } else if !reached && rolling {
                // Usage left a rolling window: the threshold may fire again.
                counter.crossed &= !bit;
            }
        }
        if used > limit && counter.over_since.is_none() {
            counter.over_since = Some(at);
        }
        if used > ceiling && crossed & EXCEEDED_BIT == 0 {
            counter.crossed |= EXCEEDED_BIT;
            let mut v = base(ViolationKind::LimitExceeded, None);
            v.limit = Some(display(b.metric, ceiling));
            v.notify = b.burst.is_some() || !b.thresholds.contains(&1.0);
            out.push(v);
        } else if used <= ceiling && rolling {
            counter.crossed &= !EXCEEDED_BIT;
        }
    }

    /// The thresholds (and limits) of shared budgets that exchanges with
    /// the shared ledger moved the spend past: each increase of a shared
    /// counter is in exactly one exchange of one instance, so each
    /// crossing is reported once, by that instance, whichever instances
    /// counted the calls. A counter whose rule is gone reports nothing.
    pub fn crossings(&self, moved: &[SpendMoved]) -> Vec<(Violation, CallRef)> {
        let rules = self.rules();
        let mut out = Vec::new();
        for m in moved {
            let Some((rule, b)) = rules.by_hash(m.key.rule).and_then(|r| match &r.kind {
                RuleKind::Budget(b) => Some((r, b)),
                _ => None,
            }) else {
                continue;
            };
            let at = m.subject.call.ended_at;
            let limit = match self.override_of(rule, m.key.scope, at) {
                Some(Override::Snooze { .. }) => None,
                Some(Override::Limit { limit, .. }) => limit,
                None => Some(b.limit),
            };
            let Some(limit) = limit else {
                continue;
            };
            let ceiling = {
                let mut ledger = lock(&self.ledger);
                match ledger.get_mut(&m.key) {
                    Some(counter) => {
                        if m.after > limit && counter.over_since.is_none() {
                            counter.over_since = Some(at);
                        }
                        with_burst(b, limit, counter.over_since, at)
                    }
                    None => limit,
                }
            };
            let base = |kind, threshold| Violation {
                rule_id: Arc::clone(&rule.id),
                kind,
                scope: m.subject.scope.clone(),
                scope_dims: m.subject.scope_dims.clone(),
                metric: Some(b.metric),
                limit: Some(display(b.metric, limit)),
                used: Some(display(b.metric, m.after)),
                threshold,
                action: rule.action,
                window_end: Some(m.subject.window_end),
                alerts: rule.alerts.clone(),
                notify: true,
            };
            for t in &b.thresholds {
                let mark = t * limit as f64;
                if (m.before as f64) < mark && m.after as f64 >= mark {
                    out.push((
                        base(ViolationKind::Threshold, Some(*t)),
                        m.subject.call.clone(),
                    ));
                }
            }
            if m.before <= ceiling && m.after > ceiling {
                let mut v = base(ViolationKind::LimitExceeded, None);
                v.limit = Some(display(b.metric, ceiling));
                v.notify = b.burst.is_some() || !b.thresholds.contains(&1.0);
                out.push((v, m.subject.call.clone()));
            }
        }
        out
    }

    /// Forgets all settled usage and crossed thresholds, keeping what admitted
    /// calls still hold reserved; followed by [`Engine::restore`] when the
    /// calls this engine counts change (a Kafka consumer gained partitions).
    pub fn forget_usage(&self) {
        lock(&self.ledger).forget_settled();
    }

    /// Rebuilds counters from stored calls (start-up): thresholds already
    /// crossed are marked so they are not reported again.
    pub fn restore<'a>(&self, records: impl IntoIterator<Item = &'a CallRecord>) -> usize {
        let mut n = 0;
        for r in records {
            self.observe_holding(r, &mut Vec::new(), Counting::Replay);
            n += 1;
        }
        n
    }

    /// Usage settled and reserved on the counter of `rule_id` for `facts` at `now`,
    /// in the metric's unit.
    pub fn usage(&self, rule_id: &str, facts: &impl CallFacts, now: i64) -> Option<(f64, f64)> {
        let rules = self.rules();
        let rule = rules.rules.iter().find(|r| &*r.id == rule_id)?;
        let RuleKind::Budget(b) = &rule.kind else {
            return None;
        };
        let (key, _) = counter_key(rule, b, scope_hash(&rule.scope, facts), now);
        let ledger = lock(&self.ledger);
        let c = ledger.get(&key)?;
        Some((
            display(b.metric, c.settled(&b.window, now)),
            display(b.metric, c.reserved),
        ))
    }
}

/// Calls counted whose rows are not stored yet: see [`Engine::unstored`].
#[derive(Debug)]
pub struct Unstored {
    tick: u64,
    ledger: Arc<Mutex<Ledger>>,
}

impl Drop for Unstored {
    fn drop(&mut self) {
        lock(&self.ledger).stored(self.tick);
    }
}

/// Evicted counters to rebuild from the stored calls: filled by
/// [`Engine::plan_rebuild`] for the calls about to be counted, fed every
/// stored call that ended since [`RebuildPlan::since`] with
/// [`Engine::feed`], then installed with [`Engine::install`]. Counting
/// reuses the engine's own code, so a rebuilt counter is what the counter
/// would hold had it never been evicted (as after a restart).
#[derive(Debug)]
pub struct RebuildPlan {
    rules: Arc<RuleSet>,
    /// Counter -> index of its rule in `rules`.
    wanted: HashMap<CounterKey, usize>,
    scratch: Ledger,
    scopes: Vec<Vec<(ScopeDim, String)>>,
    since: i64,
    at: i64,
    /// Whether anything was evicted when the plan was made.
    active: bool,
}

impl RebuildPlan {
    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Counters to rebuild.
    pub fn len(&self) -> usize {
        self.wanted.len()
    }

    /// Stored calls that ended at or after this time are to be fed.
    pub fn since(&self) -> i64 {
        self.since
    }

    /// The scope of each counter to rebuild, as (dimension, value) pairs
    /// (an empty value: the call has no such dimension).
    pub fn scopes(&self) -> &[Vec<(ScopeDim, String)>] {
        &self.scopes
    }

    fn rule_wanted(&self, index: usize) -> bool {
        self.wanted.values().any(|i| *i == index)
    }
}

/// What `observe` counts: a whole call, or usage added to one already counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    Call,
    Extra,
    /// A stored call counted again (start-up, rebuild): already in the
    /// shared ledger, so it is not reported there.
    Replay,
}
