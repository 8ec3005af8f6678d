//! Engine tests: each rule type, overrides, and ledger properties.

use std::sync::Arc;

use proptest::prelude::*;

use super::config::RawRule;
use super::*;
use crate::CallRecord;

const DAY: i64 = 86_400 * 1_000_000_000;
/// 2026-11-21T12:00:00Z.
const NOON: i64 = 1_795_262_400 * 1_000_000_000;

fn rules(toml_text: &str) -> RuleSet {
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    let tables = v
        .get("rules")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    compile(&parse_rules(tables).unwrap()).unwrap()
}

fn rule_error(toml_text: &str) -> String {
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    let tables = v
        .get("rules")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    match parse_rules(tables).and_then(|raw: Vec<RawRule>| compile(&raw)) {
        Ok(_) => panic!("compiled"),
        Err(e) => e.to_string(),
    }
}

fn call(project: &str, tokens: u64, at: i64) -> CallRecord {
    CallRecord {
        start_unix_nanos: at,
        project: Some(project.into()),
        request_model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        input_tokens: tokens,
        ..Default::default()
    }
}

fn intent(project: &str, max_output: u64, at: i64) -> CallIntent {
    CallIntent {
        at_unix_nanos: at,
        scope: Scope {
            project: Some(project.into()),
            ..Default::default()
        },
        model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        input_tokens: 0,
        max_output_tokens: max_output,
        ..Default::default()
    }
}

const DAILY_BLOCK: &str = r#"
[[rules]]
id = "daily"
type = "budget"
metric = "tokens"
limit = 10000
scope = ["project"]
window = "day"
action = "block"
"#;

#[test]
fn thresholds_fire_once_each_and_the_limit_blocks() {
    let engine = Engine::new(rules(DAILY_BLOCK));
    let mut kinds = Vec::new();
    for _ in 0..12 {
        for v in engine.observe(&call("search", 1000, NOON)) {
            kinds.push((v.kind, v.threshold, v.used));
        }
    }
    assert_eq!(
        kinds,
        vec![
            (ViolationKind::Threshold, Some(0.8), Some(8000.0)),
            (ViolationKind::Threshold, Some(0.9), Some(9000.0)),
            (ViolationKind::Threshold, Some(1.0), Some(10000.0)),
            (ViolationKind::LimitExceeded, None, Some(11000.0)),
        ]
    );
    // Another project has its own counter.
    assert!(engine.quote(&intent("other", 100, NOON)).is_ok());
    let refusal = engine.quote(&intent("search", 1, NOON)).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::BudgetExceeded);
    assert_eq!(&*refusal.rule_id, "daily");
    assert_eq!(refusal.scope, "project=search");
    assert_eq!(
        (refusal.limit, refusal.used),
        (Some(10000.0), Some(12000.0))
    );
    assert_eq!(refusal.retry_after_s, Some(12 * 3600));
    // The next day starts afresh.
    assert!(engine.quote(&intent("search", 100, NOON + DAY)).is_ok());
}

#[test]
fn admit_reserves_worst_case_and_settle_replaces_it() {
    let engine = Engine::new(rules(DAILY_BLOCK));
    let Decision::Allow(r1) = engine.admit(&intent("p", 6000, NOON)) else {
        panic!()
    };
    // 6000 reserved: a second 6000 would overrun.
    let Decision::Deny(refusal) = engine.admit(&intent("p", 6000, NOON)) else {
        panic!()
    };
    assert_eq!(refusal.used, Some(6000.0));
    // The call used 1000: settling frees the rest.
    engine.settle(r1, &call("p", 1000, NOON));
    assert_eq!(
        engine.usage("daily", &intent("p", 0, NOON), NOON),
        Some((1000.0, 0.0))
    );
    let Decision::Allow(r2) = engine.admit(&intent("p", 6000, NOON)) else {
        panic!()
    };
    // Dropping a reservation (call never made) gives it back.
    drop(r2);
    assert_eq!(
        engine.usage("daily", &intent("p", 0, NOON), NOON),
        Some((1000.0, 0.0))
    );
}

#[test]
fn rate_limits_count_requests_and_tokens_per_rolling_minute() {
    let engine = Engine::new(rules(
        r#"
[[rules]]
id = "per-user"
type = "rate_limit"
scope = ["project"]
requests_per_minute = 3
tokens_per_minute = 1000
"#,
    ));
    for i in 0..3 {
        let Decision::Allow(r) = engine.admit(&intent("p", 10, NOON + i)) else {
            panic!("call {i}")
        };
        engine.settle(r, &call("p", 10, NOON + i));
    }
    let refusal = engine.quote(&intent("p", 10, NOON + 10)).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::RateLimited);
    assert_eq!(refusal.retry_after_s, Some(1));
    // A minute later the window has moved on.
    assert!(
        engine
            .quote(&intent("p", 10, NOON + 61_000_000_000))
            .is_ok()
    );
    // Tokens per minute: one big call is refused on its own.
    let refusal = engine.quote(&intent("q", 2000, NOON)).unwrap_err();
    assert_eq!(refusal.limit, Some(1000.0));
}

#[test]
fn model_access_globs_allow_and_deny() {
    let engine = Engine::new(rules(
        r#"
[[rules]]
id = "models"
type = "model_access"
allow = ["openai/*", "*-haiku*"]
deny = ["*gpt-4.5*"]
"#,
    ));
    let mut i = intent("p", 10, NOON);
    assert!(engine.quote(&i).is_ok());
    i.model = Some("gpt-4.5-preview".into());
    assert_eq!(
        engine.quote(&i).unwrap_err().reason,
        RefusalReason::ModelNotAllowed
    );
    i.provider = Some("anthropic".into());
    i.model = Some("claude-3-5-haiku-20241022".into());
    assert!(engine.quote(&i).is_ok());
    i.model = Some("claude-sonnet-4-5".into());
    assert_eq!(
        engine.quote(&i).unwrap_err().reason,
        RefusalReason::ModelNotAllowed
    );
    let mut r = call("p", 1, NOON);
    r.provider = Some("anthropic".into());
    r.request_model = Some("claude-sonnet-4-5".into());
    let v = engine.observe(&r);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::ModelNotAllowed);
}

#[test]
fn region_lock_allows_only_approved_upstreams() {
    let engine = Engine::new(rules(
        r#"
[[rules]]
id = "eu-only"
type = "region"
allowed = ["eu-*", "*.eu.example.com"]
match = { project = "gdpr-*" }
"#,
    ));
    let mut i = intent("gdpr-app", 10, NOON);
    i.upstream = Some("eu-west-1".into());
    assert!(engine.quote(&i).is_ok());
    i.upstream = Some("us-east-1".into());
    assert_eq!(
        engine.quote(&i).unwrap_err().reason,
        RefusalReason::RegionNotAllowed
    );
    i.upstream = None;
    assert_eq!(
        engine.quote(&i).unwrap_err().reason,
        RefusalReason::RegionNotAllowed
    );
    // The rule only matches gdpr-* projects.
    let mut other = intent("search", 10, NOON);
    other.upstream = Some("us-east-1".into());
    assert!(engine.quote(&other).is_ok());
}

#[test]
fn custom_cel_rules_fire_on_matching_calls() {
    let engine = Engine::new(rules(
        r#"
[[rules]]
id = "long-outputs"
type = "custom"
expression = 'call.output_tokens > 8000 && call.model.startsWith("gpt-4")'
action = "alert"
"#,
    ));
    let mut r = call("p", 10, NOON);
    r.output_tokens = 9000;
    let v = engine.observe(&r);
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].kind, v[0].action),
        (ViolationKind::Custom, config::Action::Alert)
    );
    r.output_tokens = 100;
    assert!(engine.observe(&r).is_empty());
    // Alert-only rules never refuse.
    let mut i = intent("p", 9000, NOON);
    i.model = Some("gpt-4o".into());
    assert!(engine.quote(&i).is_ok());
}

#[test]
fn tier_preset_bursts_then_blocks() {
    let engine = Engine::new(rules(
        r#"
[[rules]]
id = "solo"
type = "budget"
tier = "solo"
scope = ["user"]
action = "block"
"#,
    ));
    let user = |at| CallIntent {
        at_unix_nanos: at,
        scope: Scope {
            user: Some("u".into()),
            ..Default::default()
        },
        max_output_tokens: 10_000,
        ..Default::default()
    };
    let used = |n, at| CallRecord {
        start_unix_nanos: at,
        user: Some("u".into()),
        input_tokens: n,
        ..Default::default()
    };
    // 510K of a 500K plan: over the limit, within the 1.5x burst.
    engine.observe(&used(510_000, NOON));
    assert!(engine.quote(&user(NOON + 1)).is_ok());
    // Past 750K (1.5x) nothing more goes through.
    engine.observe(&used(240_000, NOON + 2));
    let refusal = engine.quote(&user(NOON + 3)).unwrap_err();
    assert_eq!(refusal.limit, Some(750_000.0));
    // Back under 1.5x, but 5 minutes after the burst started it is over.
    let engine2 = Engine::new(rules(
        r#"
[[rules]]
id = "solo"
type = "budget"
tier = "solo"
scope = ["user"]
action = "block"
"#,
    ));
    engine2.observe(&used(510_000, NOON));
    assert!(engine2.quote(&user(NOON + 299_000_000_000)).is_ok());
    let refusal = engine2.quote(&user(NOON + 301_000_000_000)).unwrap_err();
    assert_eq!(refusal.limit, Some(500_000.0));
}

#[test]
fn snooze_and_limit_overrides() {
    let engine = Engine::new(rules(DAILY_BLOCK));
    let scope = intent("p", 0, NOON);
    assert!(engine.set_override(
        "daily",
        &scope,
        Override::Snooze {
            until: NOON + 3_600_000_000_000
        }
    ));
    assert!(!engine.set_override("nope", &scope, Override::Snooze { until: NOON }));
    // Snoozed: usage is counted but nothing fires or refuses.
    assert!(engine.observe(&call("p", 20_000, NOON)).is_empty());
    assert!(engine.quote(&intent("p", 100, NOON)).is_ok());
    // After the snooze the usage counts.
    assert!(
        engine
            .quote(&intent("p", 100, NOON + 3_700_000_000_000))
            .is_err()
    );
    // An admin raise lets the project continue until it expires.
    engine.set_override(
        "daily",
        &scope,
        Override::Limit {
            limit: Some(50_000),
            until: NOON + 2 * 3_600_000_000_000,
        },
    );
    assert!(
        engine
            .quote(&intent("p", 100, NOON + 3_700_000_000_000))
            .is_ok()
    );
}

#[test]
fn bad_rules_are_refused_naming_rule_and_field() {
    let unknown =
        rule_error("[[rules]]\nid = \"r1\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimt = 5\n");
    assert!(
        unknown.contains("r1") && unknown.contains("limt"),
        "{unknown}"
    );
    let negative =
        rule_error("[[rules]]\nid = \"r2\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimit = -5\n");
    assert!(
        negative.contains("`r2`") && negative.contains("`limit`"),
        "{negative}"
    );
    let cel = rule_error(
        "[[rules]]\nid = \"r3\"\ntype = \"custom\"\nexpression = \"call.output_tokens >\"\n",
    );
    assert!(
        cel.contains("`r3`") && cel.contains("`expression`"),
        "{cel}"
    );
    // The CEL runtime reports a bad regex over several lines; the rule's
    // error is one line (found by the cel_rule fuzz target).
    let regex = rule_error(
        "[[rules]]\nid = \"r3b\"\ntype = \"custom\"\nexpression = 'call.error_type.matches(\"H^ra)te.*\")'\n",
    );
    assert!(
        regex.contains("`r3b`") && regex.contains("not a valid regex") && !regex.contains('\n'),
        "{regex:?}"
    );
    let scope = rule_error(
        "[[rules]]\nid = \"r4\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimit = 5\nscope = [\"colour\"]\n",
    );
    assert!(
        scope.contains("`r4`") && scope.contains("`scope`") && scope.contains("colour"),
        "{scope}"
    );
    let tz = rule_error(
        "[[rules]]\nid = \"r5\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimit = 5\ntime_zone = \"Mars/Olympus\"\n",
    );
    assert!(tz.contains("`time_zone`"), "{tz}");
    let dup = rule_error(
        "[[rules]]\nid = \"a\"\ntype = \"custom\"\nexpression = \"true\"\n[[rules]]\nid = \"a\"\ntype = \"custom\"\nexpression = \"true\"\n",
    );
    assert!(dup.contains("twice"), "{dup}");
    assert!(!unknown.contains('\n') && !cel.contains('\n'));
}

#[test]
fn counters_survive_a_reload_that_keeps_the_rule() {
    let engine = Engine::new(rules(DAILY_BLOCK));
    engine.observe(&call("p", 9_500, NOON));
    engine.replace_rules(rules(&DAILY_BLOCK.replace("10000", "9000")));
    let refusal = engine.quote(&intent("p", 100, NOON)).unwrap_err();
    assert_eq!((refusal.limit, refusal.used), (Some(9000.0), Some(9500.0)));
}

#[test]
fn restore_rebuilds_usage_without_reporting_again() {
    let history: Vec<_> = (0..9).map(|i| call("p", 1000, NOON + i)).collect();
    let engine = Engine::new(rules(DAILY_BLOCK));
    assert_eq!(engine.restore(&history), 9);
    assert_eq!(
        engine.usage("daily", &intent("p", 0, NOON), NOON),
        Some((9000.0, 0.0))
    );
    // 80 % and 90 % were crossed before the restart: only 100 % is new.
    let v = engine.observe(&call("p", 1000, NOON + 100));
    assert_eq!(
        v.iter().map(|v| v.threshold).collect::<Vec<_>>(),
        vec![Some(1.0)]
    );
}

#[test]
fn forget_usage_then_restore_counts_only_the_stored_calls_and_keeps_reservations() {
    let engine = Engine::new(rules(DAILY_BLOCK));
    for i in 0..5 {
        engine.observe(&call("p", 1000, NOON + i));
    }
    let Decision::Allow(held) = engine.admit(&intent("p", 500, NOON + 10)) else {
        panic!("admit refused");
    };
    let reserved = engine
        .usage("daily", &intent("p", 0, NOON), NOON + 10)
        .unwrap()
        .1;
    assert!(reserved > 0.0);
    engine.forget_usage();
    assert_eq!(
        engine.usage("daily", &intent("p", 0, NOON), NOON + 10),
        Some((0.0, reserved)),
        "settled usage forgotten, the reservation kept"
    );
    // Another instance stored 9 calls meanwhile: they are the truth now.
    let stored: Vec<_> = (0..9).map(|i| call("p", 1000, NOON + i)).collect();
    engine.restore(&stored);
    assert_eq!(
        engine.usage("daily", &intent("p", 0, NOON), NOON + 10),
        Some((9000.0, reserved))
    );
    drop(held);
    let v = engine.observe(&call("p", 1000, NOON + 100));
    assert_eq!(
        v.iter().map(|v| v.threshold).collect::<Vec<_>>(),
        vec![Some(1.0)],
        "thresholds crossed in the stored calls are not reported again"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Admit { project: u8, max_output: u16 },
    Settle { index: usize, used: u16 },
    Drop { index: usize },
    Observe { project: u8, tokens: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 0u16..4000).prop_map(|(project, max_output)| Op::Admit {
            project,
            max_output
        }),
        (0usize..16, 0u16..4000).prop_map(|(index, used)| Op::Settle { index, used }),
        (0usize..16).prop_map(|index| Op::Drop { index }),
        (0u8..3, 0u16..4000).prop_map(|(project, tokens)| Op::Observe { project, tokens }),
    ]
}

proptest! {
    /// For any interleaving: reservations are always released, counters
    /// equal the sum of settled usage, and settled + reserved never passes
    /// the limit through admits (only observe, which cannot refuse, may).
    #[test]
    fn ledger_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        let engine = Engine::new(rules(DAILY_BLOCK));
        let mut open: Vec<(u8, Reservation)> = Vec::new();
        let mut settled = [0u64; 3];
        for op in ops {
            match op {
                Op::Admit { project, max_output } => {
                    let name = format!("p{project}");
                    let before = engine.usage("daily", &intent(&name, 0, NOON), NOON).unwrap_or((0.0, 0.0));
                    match engine.admit(&intent(&name, u64::from(max_output), NOON)) {
                        Decision::Allow(r) => {
                            // Admitted only if it fits under the limit with everything in flight.
                            prop_assert!(before.0 + before.1 + f64::from(max_output) <= 10_000.0);
                            open.push((project, r));
                        }
                        Decision::Deny(_) => {
                            prop_assert!(before.0 + before.1 + f64::from(max_output) > 10_000.0);
                        }
                    }
                }
                Op::Settle { index, used } => {
                    if !open.is_empty() {
                        let (project, r) = open.remove(index % open.len());
                        engine.settle(r, &call(&format!("p{project}"), u64::from(used), NOON));
                        settled[usize::from(project)] += u64::from(used);
                    }
                }
                Op::Drop { index } => {
                    if !open.is_empty() {
                        open.remove(index % open.len());
                    }
                }
                Op::Observe { project, tokens } => {
                    engine.observe(&call(&format!("p{project}"), u64::from(tokens), NOON));
                    settled[usize::from(project)] += u64::from(tokens);
                }
            }
            for p in 0u8..3 {
                let in_flight: u64 = open.iter().filter(|(q, _)| *q == p).map(|(_, r)| r.held()[0].1).sum();
                let (s, reserved) = engine.usage("daily", &intent(&format!("p{p}"), 0, NOON), NOON).unwrap_or((0.0, 0.0));
                prop_assert_eq!(s, settled[usize::from(p)] as f64);
                prop_assert_eq!(reserved, in_flight as f64);
            }
        }
        drop(open);
        for p in 0u8..3 {
            let (_, reserved) = engine.usage("daily", &intent(&format!("p{p}"), 0, NOON), NOON).unwrap_or((0.0, 0.0));
            prop_assert_eq!(reserved, 0.0, "reservations left after every one ended");
        }
    }
}

/// Concurrent admits never overrun a budget by more than what is in flight:
/// with reservations, by nothing at all.
#[test]
fn concurrent_admits_never_overrun() {
    let engine = Engine::new(rules(DAILY_BLOCK));
    let admitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..8 {
            let engine = engine.clone();
            let admitted = Arc::clone(&admitted);
            s.spawn(move || {
                for _ in 0..50 {
                    if let Decision::Allow(r) = engine.admit(&intent("p", 300, NOON)) {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Each call uses all it reserved.
                        engine.settle(r, &call("p", 300, NOON));
                    }
                }
            });
        }
    });
    let (used, reserved) = engine.usage("daily", &intent("p", 0, NOON), NOON).unwrap();
    assert_eq!(reserved, 0.0);
    assert_eq!(
        used,
        admitted.load(std::sync::atomic::Ordering::SeqCst) as f64 * 300.0
    );
    assert!(used <= 10_000.0, "overran: {used}");
    assert_eq!(used, 9_900.0, "33 calls of 300 fit in 10,000");
}

/// Rules indexed by project still run in declaration order, and a call
/// meets every rule that applies to it, whatever the index says.
#[test]
fn project_index_keeps_rule_order_and_misses_nothing() {
    // One request budget per rule, firing on the first call it meets.
    let mut text = String::new();
    for (id, project) in [
        ("a-global", None),
        ("b-search", Some("search")),
        ("c-glob", Some("sea*")),
        ("d-other", Some("billing")),
        ("e-search", Some("search")),
    ] {
        text.push_str(&format!(
            "[[rules]]\nid = \"{id}\"\ntype = \"budget\"\nmetric = \"requests\"\nlimit = 1\n\
             scope = [\"project\"]\nwindow = \"day\"\naction = \"alert\"\nalert_at = [1.0]\n"
        ));
        if let Some(p) = project {
            text.push_str(&format!("match = {{ project = \"{p}\" }}\n"));
        }
    }
    let set = rules(&text);
    let ids =
        |p: Option<&str>| -> Vec<String> { set.candidates(p).map(|r| r.id.to_string()).collect() };
    assert_eq!(
        ids(Some("search")),
        ["a-global", "b-search", "c-glob", "e-search"]
    );
    assert_eq!(ids(Some("billing")), ["a-global", "c-glob", "d-other"]);
    assert_eq!(ids(None), ["a-global", "c-glob"]);
    // The engine's answers follow: every threshold of search's rules, in order.
    let engine = Engine::new(set.clone());
    let fired: Vec<String> = engine
        .observe(&call("search", 10, NOON))
        .iter()
        .map(|v| v.rule_id.to_string())
        .collect();
    assert_eq!(fired, ["a-global", "b-search", "c-glob", "e-search"]);
}

/// Spans carry whatever times their senders wrote: calls at the ends of
/// the i64 range, in any order, are counted without overflowing the window
/// or burst arithmetic.
#[test]
fn calls_at_the_ends_of_time_are_counted() {
    let engine = Engine::new(rules(
        r#"
[[rules]]
id = "solo"
type = "budget"
tier = "solo"
scope = ["project"]
action = "block"

[[rules]]
id = "rolling"
type = "budget"
metric = "tokens"
limit = 100
window = "hour"
rolling = true
scope = ["project"]
action = "block"

[[rules]]
id = "chatham"
type = "budget"
metric = "requests"
limit = 2
window = "month"
time_zone = "Pacific/Chatham"
scope = ["project"]
"#,
    ));
    let times = [i64::MAX, i64::MIN, i64::MAX - 1, 0, i64::MIN + 1, i64::MAX];
    let mut rolling_over = 0;
    for (i, at) in times.into_iter().enumerate() {
        let mut r = call("p", 60, at);
        r.duration_nanos = if i % 2 == 0 { i64::MAX } else { 0 };
        let fired = engine.observe(&r);
        rolling_over += fired.iter().filter(|v| &*v.rule_id == "rolling").count();
    }
    // The two calls in the last hour of time (i64::MAX, 120 tokens) and
    // the one at i64::MAX again exceed the rolling limit of 100.
    assert!(rolling_over >= 1, "{rolling_over}");
}

/// Now: eviction drops counters whose window ended by the wall clock.
static NOW: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
});

const PER_USER: &str = r#"
[[rules]]
id = "monthly"
type = "budget"
metric = "tokens"
limit = 1000
scope = ["user"]
window = "month"
alert_at = [0.5]
action = "block"

[[rules]]
id = "rpm"
type = "rate_limit"
scope = ["user"]
requests_per_minute = 5
"#;

fn user_call(user: &str, tokens: u64, at: i64) -> CallRecord {
    CallRecord {
        user: Some(user.into()),
        ..call("p", tokens, at)
    }
}

fn user_intent(user: &str, max_output: u64, at: i64) -> CallIntent {
    let mut intent = intent("p", max_output, at);
    intent.scope.user = Some(user.into());
    intent
}

/// Rebuilds what `facts` needs from `stored`, as the collector does from its store.
fn rebuild(engine: &Engine, stored: &[CallRecord], facts: &impl CallFacts, at: i64) -> usize {
    let mut plan = engine.rebuild_plan();
    engine.plan_rebuild(&mut plan, facts, at);
    if plan.is_empty() {
        return 0;
    }
    let since = plan.since();
    for r in stored
        .iter()
        .filter(|r| r.start_unix_nanos + r.duration_nanos >= since)
    {
        engine.feed(&mut plan, r);
    }
    engine.install(plan)
}

#[test]
fn a_rolling_counter_outlives_the_window_it_was_made_in() {
    // Found writing eviction: a rolling counter kept the expiry of its first
    // window, so the sweep forgot an active rate limit a minute after its
    // first call.
    let engine = Engine::new(rules(PER_USER));
    let second = 1_000_000_000;
    for i in 0..130 {
        let at = *NOW + i * second;
        if i % 20 == 0 {
            let Decision::Allow(r) = engine.admit(&user_intent("alice", 1, at)) else {
                panic!("alice refused at {i} s")
            };
            engine.settle(r, &user_call("alice", 1, at));
        }
        // Enough other calls for the ledger to sweep several times.
        for _ in 0..100 {
            engine.quote(&user_intent("bob", 1, at)).unwrap();
        }
    }
    // Calls at 80, 100 and 120 s are within the minute before 130 s.
    let (used, _) = engine
        .usage("rpm", &user_intent("alice", 0, 0), *NOW + 130 * second)
        .unwrap();
    assert_eq!(used, 3.0);
}

#[test]
fn evicted_counters_are_rebuilt_from_the_stored_calls() {
    let engine = Engine::with_max_counters(rules(PER_USER), 64);
    let mut stored = Vec::new();
    for i in 0..200 {
        let c = user_call(&format!("u{i}"), 100, *NOW + i);
        engine.observe(&c);
        stored.push(c);
    }
    let stats = engine.ledger_stats();
    assert!(stats.counters <= 64, "{stats:?}");
    assert!(stats.evictions >= 200 * 2 - 64, "{stats:?}");
    // u0's counters were evicted: admitting without a rebuild is refused,
    // never counted from zero.
    let Decision::Deny(r) = engine.admit(&user_intent("u0", 10, *NOW + 500)) else {
        panic!("admitted without its counters")
    };
    assert_eq!(r.reason, RefusalReason::Rebuilding);
    assert_eq!(
        engine.usage("monthly", &user_intent("u0", 0, 0), *NOW + 500),
        None
    );
    // Rebuilt from the store: both counters, with u0's 100 tokens.
    assert_eq!(
        rebuild(&engine, &stored, &user_intent("u0", 0, 0), *NOW + 500),
        2
    );
    assert_eq!(
        engine.usage("monthly", &user_intent("u0", 0, 0), *NOW + 500),
        Some((100.0, 0.0))
    );
    assert_eq!(engine.ledger_stats().rebuilds, 2);
    // Now the budget is exact: 900 more fit, 901 do not.
    assert_eq!(
        engine
            .quote(&user_intent("u0", 901, *NOW + 500))
            .unwrap_err()
            .reason,
        RefusalReason::BudgetExceeded
    );
    assert!(engine.quote(&user_intent("u0", 900, *NOW + 500)).is_ok());
}

#[test]
fn counters_of_calls_not_stored_yet_are_not_evicted() {
    let engine = Engine::with_max_counters(rules(PER_USER), 64);
    let unstored = engine.unstored();
    for i in 0..100 {
        engine.observe(&user_call(&format!("u{i}"), 100, *NOW + i));
    }
    let stats = engine.ledger_stats();
    assert_eq!(stats.evictions, 0, "{stats:?}");
    assert_eq!(stats.counters, 200);
    assert!(stats.evictions_deferred > 0);
    // Stored: the next new counters make room.
    drop(unstored);
    for i in 100..200 {
        engine.observe(&user_call(&format!("u{i}"), 100, *NOW + i));
    }
    assert!(engine.ledger_stats().counters <= 64 + 64 / 10 + 1);
    // A reservation pins its counters too.
    let Decision::Allow(held) = engine.admit(&user_intent("pinned", 10, *NOW + 300)) else {
        panic!()
    };
    for i in 200..400 {
        engine.observe(&user_call(&format!("u{i}"), 100, *NOW + i));
    }
    assert_eq!(
        engine.usage("monthly", &user_intent("pinned", 0, 0), *NOW + 500),
        Some((0.0, 10.0))
    );
    drop(held);
}

#[test]
fn a_counter_counted_before_its_rebuild_gets_the_stored_calls_added() {
    let engine = Engine::with_max_counters(rules(PER_USER), 16);
    let mut stored = Vec::new();
    for i in 0..40 {
        let c = user_call(&format!("u{i}"), 100, *NOW + i);
        engine.observe(&c);
        stored.push(c);
    }
    // A caller that does not rebuild first (the race the writer can lose).
    let late = user_call("u0", 50, *NOW + 100);
    engine.observe(&late);
    stored.push(late);
    assert_eq!(engine.ledger_stats().counted_before_rebuild, 2);
    assert_eq!(
        rebuild(&engine, &stored, &user_intent("u0", 0, 0), *NOW + 100),
        2
    );
    assert_eq!(
        engine.usage("monthly", &user_intent("u0", 0, 0), *NOW + 100),
        Some((150.0, 0.0))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With a ledger of 16 counters and any sequence of calls from a few
    /// dozen users, rebuilding evicted counters from the stored calls before
    /// counting makes every decision and every event what an engine that
    /// never evicts makes.
    #[test]
    fn eviction_with_rebuild_is_exact(
        calls in proptest::collection::vec((0u8..40, 1u64..300, 0i64..200), 1..300),
        capacity in 16usize..48,
    ) {
        let bounded = Engine::with_max_counters(rules(PER_USER), capacity);
        let unbounded = Engine::new(rules(PER_USER));
        let mut stored: Vec<CallRecord> = Vec::new();
        let mut at = *NOW;
        for (user, tokens, advance_s) in calls {
            at += advance_s * 1_000_000_000;
            let user = format!("u{user}");
            let facts = user_call(&user, tokens, at);
            rebuild(&bounded, &stored, &facts, at);
            let quote = |e: &Engine| e.quote(&user_intent(&user, tokens, at)).map_err(|r| (r.reason, r.used.map(|u| u as u64)));
            prop_assert_eq!(quote(&bounded), quote(&unbounded));
            let fired = |e: &Engine| e.observe(&facts).into_iter().map(|v| (v.rule_id, v.kind, v.used.map(|u| u as u64))).collect::<Vec<_>>();
            prop_assert_eq!(fired(&bounded), fired(&unbounded));
            stored.push(facts);
        }
        prop_assert!(bounded.ledger_stats().counters <= capacity.max(16) + 2);
    }
}

/// Three engines sharing one budget through their leases: together they
/// admit no more than the limit, and refuse with the budget's body once
/// the shared ledger has no room.
#[test]
fn shared_budget_admits_no_more_than_the_limit_across_instances() {
    use super::lease::{LeaseBook, LeasePolicy, LeasePool, monotonic_ms};
    use std::sync::Mutex;

    let mut pool = LeasePool::new();
    let engines: Vec<Engine> = (0..3)
        .map(|_| {
            let e = Engine::new(rules(DAILY_BLOCK));
            e.share_budgets(Arc::new(Mutex::new(LeaseBook::new(LeasePolicy::default()))));
            e
        })
        .collect();
    let mut admitted = 0u64;
    let mut refused = 0;
    for n in 0..60 {
        let i = n % 3;
        let engine = &engines[i];
        let name = format!("i{i}");
        let intent = intent("search", 400, NOON);
        let decision = match engine.admit(&intent) {
            Decision::Deny(r) if r.reason == RefusalReason::LeaseNeeded => {
                assert_eq!(r.short.len(), 1);
                let book = engine.leases().unwrap();
                let req = book
                    .lock()
                    .unwrap()
                    .request(&r.short[0].key, r.short[0].amount, monotonic_ms(), NOON)
                    .unwrap();
                let reply = pool.apply(&name, 0, 10_000, &req);
                book.lock().unwrap().reply(&req.key, &reply, monotonic_ms());
                engine.admit_leased(&intent)
            }
            d => d,
        };
        match decision {
            Decision::Allow(reservation) => {
                admitted += 400;
                // Each call uses 300 of the 400 it reserved.
                engine.settle(reservation, &call("search", 300, NOON));
            }
            Decision::Deny(r) => {
                assert_eq!(r.reason, RefusalReason::BudgetExceeded);
                assert_eq!(&*r.rule_id, "daily");
                assert_eq!(r.limit, Some(10_000.0));
                refused += 1;
            }
        }
    }
    let spent_everywhere: u64 = admitted / 400 * 300;
    assert!(spent_everywhere <= 10_000, "{spent_everywhere}");
    assert!(refused > 0);
    // Without leases each engine alone would have admitted 10,000 / 300.
    assert!(admitted / 400 < 3 * 33, "{admitted}");
    assert!(
        admitted / 400 >= 20,
        "most of the budget is usable: {admitted}"
    );
}

const ORG_ALERTS: &str = r#"
[[rules]]
id = "org-daily"
type = "budget"
metric = "tokens"
limit = 1000
scope = ["org"]
window = "day"
alert_at = [0.5, 0.8, 1.0]
action = "block"
"#;

/// An org-wide budget counted by three instances, each seeing the calls
/// of one project: each crossing is reported once, by the instance whose
/// exchange moved the org's spend past it, at the org's spend.
#[test]
fn shared_budget_crossings_are_reported_once_across_instances() {
    use super::lease::{LeaseBook, LeasePolicy, LeasePool, monotonic_ms};
    use std::sync::Mutex;

    let mut pool = LeasePool::new();
    let engines: Vec<Engine> = (0..3)
        .map(|_| {
            let e = Engine::new(rules(ORG_ALERTS));
            e.share_budgets(Arc::new(Mutex::new(LeaseBook::new(LeasePolicy::default()))));
            e
        })
        .collect();
    let mut fired = Vec::new();
    let mut spent = 0u64;
    for n in 0..30u64 {
        let i = (n % 3) as usize;
        let engine = &engines[i];
        let mut record = call(&format!("p{i}"), 40, NOON);
        record.org = Some("acme".into());
        record.span_id = format!("s{n}");
        // Counted locally: nothing fires before the exchange.
        assert!(engine.observe(&record).is_empty());
        spent += 40;
        let book = engine.leases().unwrap();
        let mut book = book.lock().unwrap();
        let now = monotonic_ms();
        let requests: Vec<_> = book
            .due(now)
            .into_iter()
            .filter_map(|k| book.request(&k, 0, now, NOON))
            .collect();
        let mut moved = Vec::new();
        for req in requests {
            let reply = pool.apply(&format!("i{i}"), 0, 10_000, &req);
            book.reply(&req.key, &reply, now);
            moved.extend(book.moved(&req.key, &reply));
        }
        drop(book);
        for (v, call) in engine.crossings(&moved) {
            assert_eq!(call.span_id, format!("s{n}"));
            assert_eq!(v.scope, "org=acme");
            fired.push((v.kind, v.threshold, v.used.unwrap() as u64, spent));
        }
    }
    assert_eq!(
        fired,
        vec![
            (ViolationKind::Threshold, Some(0.5), 520, 520),
            (ViolationKind::Threshold, Some(0.8), 800, 800),
            (ViolationKind::Threshold, Some(1.0), 1000, 1000),
            (ViolationKind::LimitExceeded, None, 1040, 1040),
        ]
    );
    // Each instance alone saw a third of it: 400 of 1,000.
    let alone = Engine::new(rules(ORG_ALERTS));
    let mut alone_fired = Vec::new();
    for n in 0..10 {
        let mut record = call("p0", 40, NOON);
        record.org = Some("acme".into());
        record.span_id = format!("s{n}");
        alone_fired.extend(alone.observe(&record));
    }
    assert!(alone_fired.is_empty(), "{alone_fired:?}");
}

#[test]
fn blocking_budget_finds_the_cost_budget_a_call_meets() {
    let set = rules(
        r#"
[[rules]]
id = "tokens"
type = "budget"
metric = "tokens"
limit = 10
scope = ["project"]
window = "day"
action = "block"

[[rules]]
id = "cost-alert"
type = "budget"
metric = "cost_usd"
limit = 1.0
scope = ["project"]
window = "day"
action = "alert"

[[rules]]
id = "search-cost"
type = "budget"
metric = "cost_usd"
limit = 5.0
scope = ["project"]
window = "day"
action = "block"
match = { project = "search" }
"#,
    );
    let search = intent("search", 1, NOON);
    let other = intent("billing", 1, NOON);
    let found = set.blocking_budget(config::Metric::CostUsd, &search);
    assert_eq!(found.map(|r| &*r.id), Some("search-cost"));
    assert!(
        set.blocking_budget(config::Metric::CostUsd, &other)
            .is_none(),
        "an alerting budget does not refuse, and the blocking one is search's"
    );
    assert_eq!(
        set.blocking_budget(config::Metric::Tokens, &other)
            .map(|r| &*r.id),
        Some("tokens")
    );
}
