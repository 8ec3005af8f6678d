//! The rules-engine workload: rule sets of a given size with the mix of a
//! large deployment, and calls spread over many scopes.
//!
//! The first [`BASE_RULES`] rules apply to every call (org, project, user
//! and model budgets, a per-user rate limit, the model allow list, the EU
//! region lock, two CEL rules). The rest are per-project rules, ten at a
//! time for one project: budgets, rate limits, a model deny list and, every
//! fifth block, a CEL rule. Limits are far above what a run can use, so
//! the engine stays on its allow path: nothing is refused and no threshold
//! is crossed (the benchmark counts both to show it).

use std::fmt::Write as _;

use tollgate_rules::CallRecord;
use tollgate_rules::engine::config::RawRule;
use tollgate_rules::engine::{CallIntent, RuleSet, Scope, compile, parse_rules};

/// Rule counts benchmarked.
pub const SIZES: [usize; 3] = [10, 100, 1_000];
/// Projects and users the calls are spread over: one call for each
/// (project, user) pair, then round again.
pub const PROJECTS: usize = 50;
pub const USERS: usize = 200;
/// Rules that apply to every call; the rest match one project each.
pub const BASE_RULES: usize = 10;
/// Simulated time between two calls (1,000 calls/s).
pub const STEP_NANOS: i64 = 1_000_000;
/// Simulated start: 2026-11-21T12:00:00Z, far from a day boundary.
pub const START_UNIX_NANOS: i64 = 1_795_262_400 * 1_000_000_000;
/// `max_tokens` of every request: the worst case reserved by `admit`.
pub const MAX_OUTPUT_TOKENS: u64 = 1_024;
/// Calls from projects with this prefix are served from an EU region.
const EU_PREFIX: &str = "eu-";

/// (provider, model, USD per million input tokens, per million output tokens).
const MODELS: [(&str, &str, f64, f64); 6] = [
    ("openai", "gpt-4o-mini", 0.15, 0.60),
    ("openai", "gpt-4o", 2.50, 10.00),
    ("anthropic", "claude-sonnet-4-5", 3.00, 15.00),
    ("anthropic", "claude-3-5-haiku-20241022", 0.80, 4.00),
    ("gcp.gemini", "gemini-2.0-flash", 0.10, 0.40),
    ("openai", "o3-mini", 1.10, 4.40),
];

const BASE: &str = r#"
[[rules]]
id = "org-daily-cost"
type = "budget"
metric = "cost_usd"
limit = 250000
window = "day"
action = "alert"

[[rules]]
id = "project-daily-tokens"
type = "budget"
metric = "tokens"
limit = 5000000000
scope = ["project"]
window = "day"
time_zone = "America/New_York"
action = "block"

[[rules]]
id = "user-rolling-cost"
type = "budget"
metric = "cost_usd"
limit = 5000
scope = ["user"]
window = "day"
rolling = true
action = "block"

[[rules]]
id = "model-daily-requests"
type = "budget"
metric = "requests"
limit = 50000000
scope = ["model"]
window = "day"
alert_at = [0.5, 0.9]
action = "alert"

[[rules]]
id = "user-rate"
type = "rate_limit"
scope = ["user"]
requests_per_minute = 10000
tokens_per_minute = 50000000

[[rules]]
id = "approved-models"
type = "model_access"
allow = ["openai/*", "anthropic/claude-*", "gcp.gemini/gemini-*"]
deny = ["*gpt-4.5*", "*-preview*"]

[[rules]]
id = "eu-data-residency"
type = "region"
allowed = ["eu-*", "*.eu.example.com"]
match = { project = "eu-*" }

[[rules]]
id = "long-outputs"
type = "custom"
expression = 'call.output_tokens > 8000 && call.model.startsWith("gpt-4")'
action = "alert"

[[rules]]
id = "project-user-rolling-tokens"
type = "budget"
metric = "tokens"
limit = 500000000
scope = ["project", "user"]
window = "day"
rolling = true
action = "block"

[[rules]]
id = "costly-call"
type = "custom"
expression = 'call.cost_usd > 2.0 && call.environment != "batch"'
action = "block"
"#;

/// Name of project `p`; the last fifth are EU projects.
pub fn project_name(p: usize) -> String {
    if p >= PROJECTS - PROJECTS / 5 {
        format!("{EU_PREFIX}proj-{p:02}")
    } else {
        format!("proj-{p:02}")
    }
}

/// The `j`-th per-project rule, as a `[[rules]]` table.
fn project_rule(out: &mut String, j: usize) -> std::fmt::Result {
    let project = project_name((j / 10) % PROJECTS);
    let id = format!("{project}-r{j}");
    let m = format!(r#"match = {{ project = "{project}" }}"#);
    writeln!(out, "\n[[rules]]\nid = \"{id}\"")?;
    match j % 10 {
        0 => writeln!(
            out,
            "type = \"budget\"\nmetric = \"tokens\"\nlimit = 200000000\nscope = [\"user\"]\nwindow = \"day\"\naction = \"block\"\n{m}"
        ),
        1 => writeln!(
            out,
            "type = \"budget\"\nmetric = \"cost_usd\"\nlimit = 20000\nscope = [\"project\"]\nwindow = \"day\"\nrolling = true\naction = \"alert\"\n{m}"
        ),
        2 => writeln!(
            out,
            "type = \"rate_limit\"\nscope = [\"project\", \"user\"]\nrequests_per_minute = 600\ntokens_per_minute = 2000000\n{m}"
        ),
        3 => writeln!(
            out,
            "type = \"budget\"\nmetric = \"requests\"\nlimit = 1000000\nscope = [\"user\"]\nwindow = \"day\"\ntime_zone = \"Europe/Berlin\"\naction = \"block\"\nmatch = {{ project = \"{project}\", model = \"gpt-4o*\" }}"
        ),
        4 => writeln!(
            out,
            "type = \"budget\"\nmetric = \"cost_usd\"\nlimit = 2000\nscope = [\"project\", \"user\"]\nwindow = \"day\"\nalert_at = [0.5, 0.8, 1.0]\naction = \"block\"\n{m}"
        ),
        5 => writeln!(
            out,
            "type = \"model_access\"\ndeny = [\"openai/o1-pro*\", \"anthropic/claude-opus-*\"]\n{m}"
        ),
        6 => writeln!(
            out,
            "type = \"budget\"\nmetric = \"tokens\"\nlimit = 200000000\nscope = [\"session\"]\nwindow = \"day\"\nrolling = true\naction = \"alert\"\n{m}"
        ),
        7 => writeln!(
            out,
            "type = \"rate_limit\"\nscope = [\"project\"]\nrequests_per_minute = 20000\nmatch = {{ project = \"{project}\", environment = \"prod\" }}"
        ),
        8 => writeln!(
            out,
            "type = \"budget\"\nmetric = \"tokens\"\nlimit = 1000000000\nscope = [\"model\"]\nwindow = \"day\"\ntime_zone = \"Asia/Tokyo\"\naction = \"log\"\n{m}"
        ),
        _ if (j / 10).is_multiple_of(5) => writeln!(
            out,
            "type = \"custom\"\nexpression = 'call.labels[\"team\"] == \"research\" && call.total_tokens > 100000'\naction = \"alert\"\n{m}"
        ),
        _ => writeln!(
            out,
            "type = \"budget\"\nmetric = \"requests\"\nlimit = 5000000\nscope = [\"user\"]\nwindow = \"day\"\nrolling = true\naction = \"alert\"\n{m}"
        ),
    }
}

/// `n` rules as they would be written in `tollgate.toml`.
pub fn rules_toml(n: usize) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    let mut tables = BASE.split("[[rules]]").skip(1).take(n);
    for table in tables.by_ref() {
        write!(out, "[[rules]]{table}")?;
    }
    for j in 0..n.saturating_sub(BASE_RULES) {
        project_rule(&mut out, j)?;
    }
    Ok(out)
}

/// `n` rules, parsed as the collector parses them.
pub fn raw_rules(n: usize) -> anyhow::Result<Vec<RawRule>> {
    let text = rules_toml(n)?;
    let value: toml::Value = toml::from_str(&text)?;
    let tables = value
        .get("rules")
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(parse_rules(tables)?)
}

/// `n` rules, compiled.
pub fn rule_set(n: usize) -> anyhow::Result<RuleSet> {
    Ok(compile(&raw_rules(n)?)?)
}

/// How many rules of each kind a set of `n` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mix {
    pub calendar_budgets: usize,
    pub rolling_budgets: usize,
    pub rate_limits: usize,
    pub model_access: usize,
    pub region: usize,
    pub custom: usize,
    /// After compilation (a rate limit with RPM and TPM makes two).
    pub compiled: usize,
}

impl Mix {
    pub fn of(n: usize) -> anyhow::Result<Self> {
        let raw = raw_rules(n)?;
        let mut mix = Mix {
            compiled: compile(&raw)?.rules.len(),
            ..Mix::default()
        };
        for r in &raw {
            match r {
                RawRule::Budget(b) if b.rolling => mix.rolling_budgets += 1,
                RawRule::Budget(_) => mix.calendar_budgets += 1,
                RawRule::RateLimit(_) => mix.rate_limits += 1,
                RawRule::ModelAccess(_) => mix.model_access += 1,
                RawRule::Region(_) => mix.region += 1,
                RawRule::Custom(_) => mix.custom += 1,
            }
        }
        Ok(mix)
    }

    pub fn total(&self) -> usize {
        self.calendar_budgets
            + self.rolling_budgets
            + self.rate_limits
            + self.model_access
            + self.region
            + self.custom
    }
}

/// The `k`-th call of a round, before and after it ran.
fn call(k: usize) -> (CallIntent, CallRecord) {
    // k -> (project, user) is one-to-one over a round: 51 and USERS are coprime.
    let p = k % PROJECTS;
    let u = (k / PROJECTS * (PROJECTS + 1) + p) % USERS;
    let (provider, model, price_in, price_out) = MODELS[k % MODELS.len()];
    let project = project_name(p);
    let upstream = if project.starts_with(EU_PREFIX) {
        "eu-west-1"
    } else {
        "us-east-1"
    };
    let environment = if k % 5 == 4 { "staging" } else { "prod" };
    let input_tokens = 200 + (k * 31 % 1_800) as u64;
    let output_tokens = 50 + (k * 13 % 800) as u64;
    let cost = |out: u64| (input_tokens as f64 * price_in + out as f64 * price_out) / 1e6;
    let labels: std::collections::BTreeMap<String, String> =
        [("team".to_owned(), format!("team-{}", p % 8))].into();
    let intent = CallIntent {
        at_unix_nanos: START_UNIX_NANOS,
        scope: Scope {
            org: Some("acme".to_owned()),
            project: Some(project.clone()),
            app: Some(format!("app-{}", p % 5)),
            environment: Some(environment.to_owned()),
            user: Some(format!("user-{u:03}")),
            session: Some(format!("s-{}", k % 1_000)),
            key: Some(format!("key-{p:02}")),
            route: Some("/v1/chat/completions".to_owned()),
        },
        provider: Some(provider.to_owned()),
        model: Some(model.to_owned()),
        upstream: Some(upstream.to_owned()),
        labels: labels.clone(),
        input_tokens,
        max_output_tokens: MAX_OUTPUT_TOKENS,
        worst_case_cost_usd: Some(cost(MAX_OUTPUT_TOKENS)),
    };
    let record = CallRecord {
        start_unix_nanos: START_UNIX_NANOS,
        duration_nanos: 800_000_000,
        org: intent.scope.org.clone(),
        project: Some(project),
        app: intent.scope.app.clone(),
        environment: intent.scope.environment.clone(),
        route: intent.scope.route.clone(),
        user: intent.scope.user.clone(),
        session: intent.scope.session.clone(),
        provider: intent.provider.clone(),
        operation: Some("chat".to_owned()),
        request_model: intent.model.clone(),
        response_model: Some(format!("{model}-2025")),
        input_tokens,
        output_tokens,
        cost_usd: Some(cost(output_tokens)),
        upstream: intent.upstream.clone(),
        labels,
        ..CallRecord::default()
    };
    (intent, record)
}

/// Calls in rotation over every (project, user) pair, the clock moving
/// [`STEP_NANOS`] per call. Built once; `next` only sets timestamps.
#[derive(Debug)]
pub struct Calls {
    calls: Vec<(CallIntent, CallRecord)>,
    next: usize,
    now: i64,
}

impl Default for Calls {
    fn default() -> Self {
        Self::new()
    }
}

impl Calls {
    pub fn new() -> Self {
        Self {
            calls: (0..PROJECTS * USERS).map(call).collect(),
            next: 0,
            now: START_UNIX_NANOS,
        }
    }

    /// Distinct calls in a round.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The next call, stamped with the current simulated time.
    pub fn next_call(&mut self) -> (&CallIntent, &CallRecord) {
        let i = self.next;
        self.next = (i + 1) % self.calls.len();
        self.now += STEP_NANOS;
        let (intent, record) = &mut self.calls[i];
        intent.at_unix_nanos = self.now;
        record.start_unix_nanos = self.now;
        (intent, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_rules::engine::{Decision, Engine};

    #[test]
    fn sizes_compile_with_the_stated_mix() {
        for n in SIZES {
            let mix = Mix::of(n).unwrap();
            assert_eq!(mix.total(), n);
            assert!(mix.custom >= 2 && mix.custom * 20 <= n.max(40), "{mix:?}");
            assert!(mix.calendar_budgets > 0 && mix.rolling_budgets > 0);
            assert!(mix.rate_limits > 0 && mix.model_access > 0 && mix.region == 1);
        }
    }

    #[test]
    fn a_round_covers_every_project_user_pair() {
        let mut calls = Calls::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..calls.len() {
            let (i, _) = calls.next_call();
            seen.insert((i.scope.project.clone(), i.scope.user.clone()));
        }
        assert_eq!(seen.len(), PROJECTS * USERS);
    }

    #[test]
    fn calls_stay_on_the_allow_path() {
        let engine = Engine::new(rule_set(1_000).unwrap());
        let mut calls = Calls::new();
        for _ in 0..calls.len() {
            let (intent, record) = calls.next_call();
            let Decision::Allow(r) = engine.admit(intent) else {
                panic!("refused: {intent:?}");
            };
            assert_eq!(engine.settle(r, record), vec![]);
        }
    }
}
