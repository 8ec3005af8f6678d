//! Compiling raw rules into a [`RuleSet`]: validated once, cheap to evaluate.

use std::collections::HashMap;
use std::sync::Arc;

use chrono_tz::Tz;

use globset::{Glob, GlobMatcher};

use super::cel::CustomExpression;
use super::config::{Action, Metric, OnLedgerError, RawBudget, RawRule};
use super::scope::{CallFacts, ScopeDim, rule_hash};
use super::window::{BoundsCache, Window, WindowKind, WindowUnit};

/// Default alert thresholds: 80, 90 and 100 % of the limit.
pub const DEFAULT_ALERT_AT: [f64; 3] = [0.8, 0.9, 1.0];

/// A rule that does not compile. Displayed as one line naming rule and field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    #[error("rule `{rule}`: `{field}`: {message}")]
    Invalid {
        rule: String,
        field: String,
        message: String,
    },
    #[error("rules[{index}]: {message}")]
    Unreadable { index: usize, message: String },
    #[error("rule `{0}` is defined twice; rule ids must be unique")]
    Duplicate(String),
}

/// A rule's error, on one line whatever the message says (a regex error
/// from the CEL runtime spans several lines with a caret under the fault).
fn invalid(rule: &str, field: &str, message: impl Into<String>) -> RuleError {
    let message: String = message.into();
    let message = if message.contains(['\n', '\r']) {
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        message
    };
    RuleError::Invalid {
        rule: rule.to_owned(),
        field: field.to_owned(),
        message,
    }
}

/// A usage limit on counters keyed by scope.
#[derive(Debug, Clone)]
pub struct BudgetRule {
    pub metric: Metric,
    /// In the metric's unit: tokens, requests, or nano-dollars.
    pub limit: u64,
    pub window: Window,
    /// Ascending fractions of the limit, each reported once per window.
    pub thresholds: Vec<f64>,
    pub burst: Option<Burst>,
    /// The last calendar window computed for this rule.
    pub bounds: BoundsCache,
    /// Shared budgets, the ledger unreachable: refuse or admit locally.
    pub on_ledger_error: OnLedgerError,
}

impl BudgetRule {
    /// The window containing `t`: `[start, end)`, see [`Window::bounds`].
    pub fn bounds(&self, t: i64) -> (i64, i64) {
        self.bounds.bounds(&self.window, t)
    }
}

/// A compiled burst allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    pub factor: f64,
    pub duration_nanos: i64,
}

/// What a rule checks.
#[derive(Debug, Clone)]
pub enum RuleKind {
    Budget(BudgetRule),
    ModelAccess {
        /// `None` = everything not denied is allowed.
        allow: Option<Patterns>,
        deny: Patterns,
    },
    Region {
        allowed: Patterns,
    },
    Custom(Arc<CustomExpression>),
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub id: Arc<str>,
    /// Keys the rule's counters; a reload keeping the id keeps its counters.
    pub hash: u64,
    /// Dimensions that make one counter.
    pub scope: Vec<ScopeDim>,
    /// Index of `scope` in [`RuleSet::scope_lists`] (set by [`RuleSet::new`]).
    pub scope_slot: usize,
    /// The rule applies only to calls matching every filter.
    pub filter: Vec<(ScopeDim, ValueMatch)>,
    pub action: Action,
    pub alerts: Vec<String>,
    pub kind: RuleKind,
}

impl CompiledRule {
    /// Whether a call with `facts` meets every filter of the rule.
    pub fn applies_to(&self, facts: &impl CallFacts) -> bool {
        self.filter
            .iter()
            .all(|(dim, m)| facts.dim(dim).is_some_and(|v| m.is_match(v)))
    }
}

/// Every rule, compiled.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<CompiledRule>,
    /// Rules whose filter names one project exactly (`match.project =
    /// "search"`), by that project: a call only meets its own project's.
    by_project: HashMap<Box<str>, Vec<usize>>,
    /// Every other rule.
    unindexed: Vec<usize>,
    /// The distinct `scope` lists of the rules, so that a call hashes each once.
    pub(crate) scope_lists: Vec<Vec<ScopeDim>>,
    /// Rules by the hash of their id (what counter keys carry).
    by_hash: HashMap<u64, usize>,
}

impl RuleSet {
    /// `rules`, indexed.
    pub fn new(mut rules: Vec<CompiledRule>) -> Self {
        let mut by_project: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut unindexed = Vec::new();
        let mut scope_lists: Vec<Vec<ScopeDim>> = Vec::new();
        for rule in &mut rules {
            rule.scope_slot = match scope_lists.iter().position(|l| *l == rule.scope) {
                Some(slot) => slot,
                None => {
                    scope_lists.push(rule.scope.clone());
                    scope_lists.len() - 1
                }
            };
        }
        for (i, rule) in rules.iter().enumerate() {
            let project = rule.filter.iter().find_map(|(dim, m)| match (dim, m) {
                (ScopeDim::Project, ValueMatch::Exact(p)) => Some(p.clone()),
                _ => None,
            });
            match project {
                Some(p) => by_project.entry(p).or_default().push(i),
                None => unindexed.push(i),
            }
        }
        let by_hash = rules.iter().enumerate().map(|(i, r)| (r.hash, i)).collect();
        Self {
            rules,
            by_project,
            unindexed,
            scope_lists,
            by_hash,
        }
    }

    /// The rule whose id hashes to `hash` (a counter key's `rule`).
    pub fn by_hash(&self, hash: u64) -> Option<&CompiledRule> {
        self.by_hash.get(&hash).and_then(|i| self.rules.get(*i))
    }

    /// The first budget on `metric` that refuses calls (`action = "block"`)
    /// and whose filter `facts` match, if any: what a call that cannot be
    /// measured in `metric` (an unpriced model under a cost budget) would
    /// escape.
    pub fn blocking_budget(&self, metric: Metric, facts: &impl CallFacts) -> Option<&CompiledRule> {
        self.candidates(facts.dim(&ScopeDim::Project)).find(|r| {
            r.action == Action::Block
                && matches!(&r.kind, RuleKind::Budget(b) if b.metric == metric)
                && r.applies_to(facts)
        })
    }

    /// The rules a call of `project` may meet, in rule order. Their
    /// filters still have to be checked; the others cannot match.
    pub fn candidates<'a>(
        &'a self,
        project: Option<&str>,
    ) -> impl Iterator<Item = &'a CompiledRule> + 'a {
        let own: &[usize] = project
            .and_then(|p| self.by_project.get(p))
            .map_or(&[], Vec::as_slice);
        let (mut a, mut b) = (self.unindexed.iter().peekable(), own.iter().peekable());
        std::iter::from_fn(move || {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x < y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            }?;
            self.rules.get(*next)
        })
    }
}

/// Reads `[[rules]]` tables one by one so an error names the rule.
pub fn parse_rules(tables: Vec<toml::Value>) -> Result<Vec<super::config::RawRule>, RuleError> {
    tables
        .into_iter()
        .enumerate()
        .map(|(index, table)| {
            let id = table.get("id").and_then(|v| v.as_str()).map(str::to_owned);
            table.try_into::<RawRule>().map_err(|e| {
                let message = e.to_string().trim().replace('\n', " ");
                match id {
                    Some(rule) => RuleError::Invalid {
                        rule,
                        field: "type".to_owned(),
                        message,
                    },
                    None => RuleError::Unreadable { index, message },
                }
            })
        })
        .collect()
}

fn scope_dims(rule: &str, scope: &[String]) -> Result<Vec<ScopeDim>, RuleError> {
    scope
        .iter()
        .map(|s| {
            ScopeDim::parse(s).ok_or_else(|| {
                invalid(
                    rule,
                    "scope",
                    format!(
                        "unknown dimension `{s}`; use org, project, app, environment, user, session, key, provider, model, route or label:<name>"
                    ),
                )
            })
        })
        .collect()
}

/// A `match` filter value or a pattern of a list: most are plain names or
/// a prefix, suffix or infix glob, checked without a regex; the rest go
/// through `globset`.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    Glob(GlobMatcher),
}

/// A list of glob patterns (model allow / deny lists, regions): matches
/// when any pattern does.
#[derive(Debug, Clone, Default)]
pub struct Patterns(Vec<ValueMatch>);

impl Patterns {
    pub fn is_match(&self, value: &str) -> bool {
        self.0.iter().any(|p| p.is_match(value))
    }
}

impl ValueMatch {
    fn new(pattern: &str) -> Result<Self, globset::Error> {
        let meta = |s: &str| s.contains(['*', '?', '[', ']', '{', '}', '\\']);
        if !meta(pattern) {
            return Ok(Self::Exact(pattern.into()));
        }
        if let Some(head) = pattern.strip_suffix('*')
            && !meta(head)
        {
            return Ok(Self::Prefix(head.into()));
        }
        if let Some(tail) = pattern.strip_prefix('*')
            && !meta(tail)
        {
            return Ok(Self::Suffix(tail.into()));
        }
        if let Some(middle) = pattern.strip_prefix('*').and_then(|p| p.strip_suffix('*'))
            && !meta(middle)
        {
            return Ok(Self::Contains(middle.into()));
        }
        Ok(Self::Glob(Glob::new(pattern)?.compile_matcher()))
    }

    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == &**s,
            // `*` matches `/` too, as in `globset` by default.
            Self::Prefix(s) => value.starts_with(&**s),
            Self::Suffix(s) => value.ends_with(&**s),
            Self::Contains(s) => value.contains(&**s),
            Self::Glob(g) => g.is_match(value),
        }
    }
}

fn filters(
    rule: &str,
    filter: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(ScopeDim, ValueMatch)>, RuleError> {
    filter
        .iter()
        .map(|(k, v)| {
            let dim = ScopeDim::parse(k)
                .ok_or_else(|| invalid(rule, &format!("match.{k}"), "unknown dimension"))?;
            let matcher = ValueMatch::new(v)
                .map_err(|e| invalid(rule, &format!("match.{k}"), e.to_string()))?;
            Ok((dim, matcher))
        })
        .collect()
}

fn globs(rule: &str, field: &str, patterns: &[String]) -> Result<Patterns, RuleError> {
    patterns
        .iter()
        .map(|p| ValueMatch::new(p).map_err(|e| invalid(rule, field, format!("`{p}`: {e}"))))
        .collect::<Result<_, _>>()
        .map(Patterns)
}

fn non_negative(rule: &str, field: &str, v: f64) -> Result<f64, RuleError> {
    if !v.is_finite() || v < 0.0 {
        return Err(invalid(
            rule,
            field,
            format!("{v} must be a finite, non-negative number"),
        ));
    }
    Ok(v)
}

fn duration(rule: &str, field: &str, s: &str) -> Result<i64, RuleError> {
    let d =
        humantime::parse_duration(s).map_err(|e| invalid(rule, field, format!("`{s}`: {e}")))?;
    i64::try_from(d.as_nanos()).map_err(|_| invalid(rule, field, "too long"))
}

fn compile_budget(b: &RawBudget) -> Result<RuleKind, RuleError> {
    let id = b.id.as_str();
    let (metric, limit, mut burst) = match (b.tier, b.limit) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                id,
                "tier",
                "set either `tier` or `limit`, not both",
            ));
        }
        (Some(tier), None) => {
            if b.metric.is_some_and(|m| m != Metric::Tokens) {
                return Err(invalid(id, "metric", "tier presets count tokens"));
            }
            let (tokens, factor) = tier.plan();
            let burst = Burst {
                factor,
                duration_nanos: 5 * 60 * 1_000_000_000,
            };
            (Metric::Tokens, tokens as f64, Some(burst))
        }
        (None, Some(limit)) => {
            let metric = b
                .metric
                .ok_or_else(|| invalid(id, "metric", "required: tokens, cost_usd or requests"))?;
            (metric, non_negative(id, "limit", limit)?, None)
        }
        (None, None) => return Err(invalid(id, "limit", "required (or a `tier` preset)")),
    };
    let limit = match metric {
        Metric::CostUsd => (limit * 1e9).round() as u64,
        Metric::Tokens | Metric::Requests => limit.round() as u64,
    };
    if let Some(raw) = &b.burst {
        let factor = non_negative(id, "burst.factor", raw.factor)?;
        if factor < 1.0 {
            return Err(invalid(id, "burst.factor", "must be at least 1.0"));
        }
        burst = Some(Burst {
            factor,
            duration_nanos: duration(id, "burst.duration", &raw.duration)?,
        });
    }
    let tz: Tz = match &b.time_zone {
        None => Tz::UTC,
        Some(name) => name.parse().map_err(|_| {
            invalid(
                id,
                "time_zone",
                format!("unknown time zone `{name}`; use an IANA name such as Europe/Paris"),
            )
        })?,
    };
    if b.rolling && b.time_zone.is_some() {
        return Err(invalid(
            id,
            "time_zone",
            "rolling windows have no time zone",
        ));
    }
    let mut thresholds = b
        .alert_at
        .clone()
        .unwrap_or_else(|| DEFAULT_ALERT_AT.to_vec());
    for t in &thresholds {
        if !t.is_finite() || *t <= 0.0 {
            return Err(invalid(
                id,
                "alert_at",
                format!("{t} must be a fraction above 0, e.g. 0.8"),
            ));
        }
    }
    if thresholds.len() > 32 {
        return Err(invalid(id, "alert_at", "at most 32 thresholds"));
    }
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    Ok(RuleKind::Budget(BudgetRule {
        metric,
        limit,
        window: Window {
            unit: b.window.unwrap_or(WindowUnit::Day),
            kind: if b.rolling {
                WindowKind::Rolling
            } else {
                WindowKind::Calendar(tz)
            },
        },
        thresholds,
        burst,
        bounds: BoundsCache::default(),
        on_ledger_error: b.on_ledger_error,
    }))
}

fn rate_limit_window() -> Window {
    Window {
        unit: WindowUnit::Minute,
        kind: WindowKind::Rolling,
    }
}

/// Validates and compiles `raw` rules.
pub fn compile(raw: &[RawRule]) -> Result<RuleSet, RuleError> {
    let mut rules = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::new();
    for r in raw {
        let id = r.id();
        if id.trim().is_empty() {
            return Err(invalid("", "id", "must not be empty"));
        }
        if !seen.insert(id.to_owned()) {
            return Err(RuleError::Duplicate(id.to_owned()));
        }
        let base = |scope: &[String],
                    filter,
                    action,
                    alerts: &[String],
                    kind|
         -> Result<CompiledRule, RuleError> {
            Ok(CompiledRule {
                id: Arc::from(id),
                hash: rule_hash(id),
                scope: scope_dims(id, scope)?,
                scope_slot: 0,
                filter: filters(id, filter)?,
                action,
                alerts: alerts.to_vec(),
                kind,
            })
        };
        match r {
            RawRule::Budget(b) => {
                rules.push(base(
                    &b.scope,
                    &b.filter,
                    b.action,
                    &b.alerts,
                    compile_budget(b)?,
                )?);
            }
            RawRule::RateLimit(rl) => {
                let action = rl.action.unwrap_or(Action::Block);
                if rl.requests_per_minute.is_none() && rl.tokens_per_minute.is_none() {
                    return Err(invalid(
                        id,
                        "requests_per_minute",
                        "set requests_per_minute and/or tokens_per_minute",
                    ));
                }
                for (field, limit, metric) in [
                    (
                        "requests_per_minute",
                        rl.requests_per_minute,
                        Metric::Requests,
                    ),
                    ("tokens_per_minute", rl.tokens_per_minute, Metric::Tokens),
                ] {
                    let Some(limit) = limit else { continue };
                    let limit = non_negative(id, field, limit)?.round() as u64;
                    let mut rule = base(
                        &rl.scope,
                        &rl.filter,
                        action,
                        &rl.alerts,
                        RuleKind::Budget(BudgetRule {
                            metric,
                            limit,
                            window: rate_limit_window(),
                            thresholds: vec![1.0],
                            burst: None,
                            bounds: BoundsCache::default(),
                            on_ledger_error: rl.on_ledger_error,
                        }),
                    )?;
                    // Two counters per rule: keep their keys apart.
                    rule.hash = rule_hash(&format!("{id}#{field}"));
                    rules.push(rule);
                }
            }
            RawRule::ModelAccess(m) => {
                if m.allow.is_empty() && m.deny.is_empty() {
                    return Err(invalid(id, "allow", "set `allow` and/or `deny`"));
                }
                let allow = if m.allow.is_empty() {
                    None
                } else {
                    Some(globs(id, "allow", &m.allow)?)
                };
                let deny = globs(id, "deny", &m.deny)?;
                rules.push(base(
                    &[],
                    &m.filter,
                    m.action.unwrap_or(Action::Block),
                    &m.alerts,
                    RuleKind::ModelAccess { allow, deny },
                )?);
            }
            RawRule::Region(g) => {
                if g.allowed.is_empty() {
                    return Err(invalid(
                        id,
                        "allowed",
                        "list at least one region or endpoint",
                    ));
                }
                let allowed = globs(id, "allowed", &g.allowed)?;
                rules.push(base(
                    &[],
                    &g.filter,
                    g.action.unwrap_or(Action::Block),
                    &g.alerts,
                    RuleKind::Region { allowed },
                )?);
            }
            RawRule::Custom(c) => {
                let expr = CustomExpression::compile(&c.expression)
                    .map_err(|e| invalid(id, "expression", e))?;
                rules.push(base(
                    &[],
                    &c.filter,
                    c.action,
                    &c.alerts,
                    RuleKind::Custom(Arc::new(expr)),
                )?);
            }
        }
    }
    Ok(RuleSet::new(rules))
}

#[cfg(test)]
mod value_match_tests {
    use super::ValueMatch;

    #[test]
    fn plain_prefix_suffix_and_full_globs() {
        let cases = [
            ("search", "search", true),
            ("search", "search2", false),
            ("team-*", "team-a", true),
            ("team-*", "xteam-a", false),
            ("*-mini", "gpt-4o-mini", true),
            ("*-mini", "gpt-4o", false),
            ("gpt-4?", "gpt-4o", true),
            ("{a,b}*", "beta", true),
            ("{a,b}*", "gamma", false),
            ("openai/*", "openai/gpt-4o", true),
            ("*gpt-4.5*", "openai/gpt-4.5-preview", true),
            ("*gpt-4.5*", "gpt-4.50", true),
            ("*gpt-4.5*", "gpt-4o", false),
            ("**", "", true),
            ("*a*b*", "xaxbx", true),
            ("eu-*", "eu-west-1", true),
            ("*.eu.example.com", "api.eu.example.com", true),
        ];
        for (pattern, value, expected) in cases {
            let m = ValueMatch::new(pattern).unwrap();
            assert_eq!(m.is_match(value), expected, "{pattern} vs {value}");
            // The same answer as globset itself.
            let g = globset::Glob::new(pattern).unwrap().compile_matcher();
            assert_eq!(g.is_match(value), expected, "globset: {pattern} vs {value}");
        }
        assert!(matches!(
            ValueMatch::new("x").unwrap(),
            ValueMatch::Exact(_)
        ));
        assert!(matches!(
            ValueMatch::new("x*").unwrap(),
            ValueMatch::Prefix(_)
        ));
        assert!(matches!(
            ValueMatch::new("*x").unwrap(),
            ValueMatch::Suffix(_)
        ));
        assert!(matches!(
            ValueMatch::new("*x*").unwrap(),
            ValueMatch::Contains(_)
        ));
        assert!(matches!(
            ValueMatch::new("x*y").unwrap(),
            ValueMatch::Glob(_)
        ));
    }
}
