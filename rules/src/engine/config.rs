//! Rule configuration as written in `tollgate.toml` (`[[rules]]` tables).
//!
//! One struct per rule type, chosen by `type`; each rejects unknown fields.
//! [`super::compile`] validates these into a [`super::RuleSet`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::window::WindowUnit;

/// What a shared budget does while the shared ledger cannot be reached
/// and the instance's leases no longer cover a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnLedgerError {
    /// Refuse the call (503 `ledger_unavailable`): never over the limit.
    #[default]
    Deny,
    /// Admit it against this instance's own counter: each instance may let
    /// up to the whole limit through while the server is down.
    Allow,
}

/// What a rule does when it trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Record an event and notify the rule's alert sinks.
    #[default]
    Alert,
    /// Refuse calls: HTTP 429/403 in the gateway, kill-switch in observe mode.
    Block,
    /// Record an event only.
    Log,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Block => "block",
            Action::Log => "log",
        }
    }
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Input plus output tokens.
    Tokens,
    /// Cost in US dollars (counted in nano-dollars, exactly).
    CostUsd,
    /// Number of calls.
    Requests,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Tokens => "tokens",
            Metric::CostUsd => "cost_usd",
            Metric::Requests => "requests",
        }
    }
}

/// Plan presets: tokens per day with a burst allowance for 5 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// 500K tokens/day, bursts to 1.5x.
    Solo,
    /// 2M tokens/day, bursts to 2x.
    Professional,
    /// 10M tokens/day, bursts to 3x.
    Team,
    /// 50M tokens/day, bursts to 5x.
    Business,
}

impl Tier {
    /// (tokens per day, burst factor).
    pub fn plan(self) -> (u64, f64) {
        match self {
            Tier::Solo => (500_000, 1.5),
            Tier::Professional => (2_000_000, 2.0),
            Tier::Team => (10_000_000, 3.0),
            Tier::Business => (50_000_000, 5.0),
        }
    }
}

/// Burst allowance: once usage passes the limit, calls may continue up to
/// `factor` x limit for `duration`; after that the plain limit applies.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawBurst {
    /// Multiple of the limit usage may reach during the burst, e.g. 1.5.
    pub factor: f64,
    /// How long the burst may last, e.g. "5m".
    pub duration: String,
}

/// One `[[rules]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawRule {
    Budget(RawBudget),
    RateLimit(RawRateLimit),
    ModelAccess(RawModelAccess),
    Region(RawRegion),
    Custom(RawCustom),
}

/// `type = "budget"`: tokens, cost or requests per scope per window.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Unique rule id, shown in events, alerts and 429 bodies.
    pub id: String,
    /// Dimensions that make one counter: e.g. ["project"] = one budget per
    /// project. Any of org, project, app, environment, user, session, key,
    /// provider, model, route, or `label:<name>`. Empty = one global counter.
    #[serde(default)]
    pub scope: Vec<String>,
    /// Only calls whose dimensions match these values (globs allowed), e.g.
    /// `{ project = "search", model = "gpt-4*" }`.
    #[serde(default, rename = "match")]
    pub filter: BTreeMap<String, String>,
    /// `tokens`, `cost_usd` or `requests`. Implied `tokens` with `tier`.
    pub metric: Option<Metric>,
    /// Limit in the metric's unit (tokens, dollars, calls).
    pub limit: Option<f64>,
    /// Preset: solo, professional, team, business (tokens per day + burst).
    pub tier: Option<Tier>,
    /// minute, hour, day, week or month. Default day.
    pub window: Option<WindowUnit>,
    /// A rolling window (the last hour, day...) instead of calendar resets.
    #[serde(default)]
    pub rolling: bool,
    /// Time zone of calendar windows (IANA name). Default UTC.
    pub time_zone: Option<String>,
    /// Fractions of the limit that raise an event (and alert) once each.
    pub alert_at: Option<Vec<f64>>,
    pub burst: Option<RawBurst>,
    /// alert (default), block or log.
    #[serde(default)]
    pub action: Action,
    /// Alert sinks by name; default: the global sinks.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// With a shared ledger (`[ledger] type = "redis"`) that cannot be
    /// reached: `deny` (default) or `allow`.
    #[serde(default)]
    pub on_ledger_error: OnLedgerError,
}

/// `type = "rate_limit"`: requests and/or tokens per minute per scope.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub id: String,
    #[serde(default)]
    pub scope: Vec<String>,
    #[serde(default, rename = "match")]
    pub filter: BTreeMap<String, String>,
    /// Calls per rolling minute.
    pub requests_per_minute: Option<f64>,
    /// Input plus output tokens per rolling minute.
    pub tokens_per_minute: Option<f64>,
    /// block (default), alert or log.
    pub action: Option<Action>,
    #[serde(default)]
    pub alerts: Vec<String>,
    /// With a shared ledger that cannot be reached: `deny` (default) or
    /// `allow`.
    #[serde(default)]
    pub on_ledger_error: OnLedgerError,
}

/// `type = "model_access"`: allow / deny lists of `provider/model` globs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawModelAccess {
    pub id: String,
    #[serde(default, rename = "match")]
    pub filter: BTreeMap<String, String>,
    /// When not empty, only these may be used, e.g. ["openai/*", "*-mini"].
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never these, even when allowed.
    #[serde(default)]
    pub deny: Vec<String>,
    /// block (default), alert or log.
    pub action: Option<Action>,
    #[serde(default)]
    pub alerts: Vec<String>,
}

/// `type = "region"`: approved provider regions or endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    pub id: String,
    #[serde(default, rename = "match")]
    pub filter: BTreeMap<String, String>,
    /// Globs over the upstream region or address, e.g. ["eu-*", "*.eu.example.com"].
    pub allowed: Vec<String>,
    /// block (default), alert or log.
    pub action: Option<Action>,
    #[serde(default)]
    pub alerts: Vec<String>,
}

/// `type = "custom"`: a CEL expression over `call` and `scope`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCustom {
    pub id: String,
    #[serde(default, rename = "match")]
    pub filter: BTreeMap<String, String>,
    /// E.g. `call.output_tokens > 8000 && call.model.startsWith("gpt-4")`.
    pub expression: String,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub alerts: Vec<String>,
}

impl RawRule {
    /// The rule's id, whatever its type.
    pub fn id(&self) -> &str {
        match self {
            RawRule::Budget(r) => &r.id,
            RawRule::RateLimit(r) => &r.id,
            RawRule::ModelAccess(r) => &r.id,
            RawRule::Region(r) => &r.id,
            RawRule::Custom(r) => &r.id,
        }
    }
}
