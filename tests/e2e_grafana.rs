//! The Grafana dashboards in `deploy/grafana/dashboards` against the real
//! ClickHouse engine. Rows are seeded through the real collector (OTLP
//! spans over several orgs, projects, apps, environments, users and models,
//! with errors, time to first token, a block budget that trips and admin
//! blocks, lifts and overrides), plus the fallback rows only the inline
//! gateway writes. Then every template variable query and every panel
//! target of every dashboard is expanded as the `grafana-clickhouse-datasource`
//! plugin (v4) expands it (`$__conditionalAll` and template variables in the
//! browser, then the backend macros), EXPLAINed and run, and its answer must
//! have the shape the panel draws: time series a time column first (sorted,
//! in the range) then numbers (and string labels), tables exactly the columns
//! their `organize` transformation declares, stats one positive number.
//!
//! Grafana itself is not installable here (see INFRA.md); the expansion
//! below follows the plugin's `applyConditionalAll` and `getMacroArgs`
//! (src/data/CHDatasource.ts), Grafana's variable formats, and the macros
//! of pkg/macros/macros.go as sqlds applies them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
use prost::Message;
use serde_json::{Value, json};
use support::{ClickhouseServer, Collector, otlp};

const DB: &str = "tg_grafana";
const ADMIN: &str = "admin-token-for-the-grafana-test-01";
const DS_TYPE: &str = "grafana-clickhouse-datasource";
const DS_UID: &str = "tollgate-clickhouse";

/// Seeded calls sent over OTLP, one every 5 s for 20 minutes.
const CALLS: u64 = 240;
const STEP_NANOS: u64 = 5_000_000_000;
/// Pairs of gateway rows (a failed primary attempt, then its fallback).
const FALLBACKS: u64 = 3;

/// A block budget on the search project's tokens and a cost alert per
/// user, both over a rolling day (no reset at midnight mid-test).
fn rules() -> String {
    format!(
        r#"
[admin]
token = "{ADMIN}"

[[rules]]
id = "search-daily-tokens"
type = "budget"
metric = "tokens"
limit = 8000
scope = ["project"]
match = {{ project = "search" }}
window = "day"
rolling = true
action = "block"

[[rules]]
id = "user-daily-cost"
type = "budget"
metric = "cost_usd"
limit = 0.01
scope = ["user"]
window = "day"
rolling = true
action = "alert"
"#
    )
}

/// Where a call comes from and what it calls.
#[derive(Clone, Copy)]
struct Profile {
    org: &'static str,
    project: &'static str,
    app: &'static str,
    environment: &'static str,
    provider: &'static str,
    model: &'static str,
}

/// The selection the per-project dashboard is checked with: every third
/// call, and every gateway fallback.
const SELECTION: Profile = Profile {
    org: "acme",
    project: "search",
    app: "search-api",
    environment: "prod",
    provider: "openai",
    model: "gpt-4o-mini",
};

const OTHERS: [Profile; 5] = [
    Profile {
        org: "acme",
        project: "search",
        app: "search-worker",
        environment: "staging",
        provider: "anthropic",
        model: "claude-sonnet-4-5",
    },
    Profile {
        org: "acme",
        project: "support",
        app: "support-bot",
        environment: "prod",
        provider: "openai",
        model: "gpt-4o",
    },
    // Not in the price table: unpriced, never $0.
    Profile {
        org: "globex",
        project: "billing",
        app: "billing-svc",
        environment: "prod",
        provider: "openai",
        model: "no-such-model-x",
    },
    Profile {
        org: "globex",
        project: "agents",
        app: "agent-runner",
        environment: "staging",
        provider: "anthropic",
        model: "claude-sonnet-4-5",
    },
    Profile {
        org: "acme",
        project: "search",
        app: "search-api",
        environment: "prod",
        provider: "openai",
        model: "gpt-4o",
    },
];

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn profile(n: u64) -> Profile {
    if n.is_multiple_of(3) {
        SELECTION
    } else {
        OTHERS[(n % 5) as usize]
    }
}

/// Call `n` of the workload: a resource (app, environment) with one span.
fn seeded_call(n: u64, base: u64) -> ResourceSpans {
    let p = profile(n);
    let mut attrs = vec![
        otlp::string("gen_ai.operation.name", "chat"),
        otlp::string("gen_ai.provider.name", p.provider),
        otlp::string("gen_ai.request.model", p.model),
        otlp::int("gen_ai.usage.input_tokens", 200 + (n % 9) as i64 * 40),
        otlp::int("gen_ai.usage.output_tokens", 30 + (n % 6) as i64 * 15),
        otlp::string("tollgate.org", p.org),
        otlp::string("tollgate.project", p.project),
        otlp::string("gen_ai.response.id", &format!("resp-{n}")),
    ];
    if n % 5 != 4 {
        let user = ["alice", "bob", "carol", "dave"][(n % 5) as usize];
        attrs.push(otlp::string("user.id", user));
    }
    if n.is_multiple_of(4) {
        attrs.push(otlp::int("gen_ai.usage.cache_read.input_tokens", 64));
    }
    if n.is_multiple_of(2) {
        attrs.push(otlp::kv("tollgate.stream", AnyValue::BoolValue(true)));
        attrs.push(otlp::kv(
            "tollgate.ttft_ms",
            AnyValue::DoubleValue(80.0 + (n % 13) as f64 * 10.0),
        ));
    }
    let mut status = None;
    if n.is_multiple_of(5) {
        attrs.push(otlp::string("error.type", "rate_limit_exceeded"));
        attrs.push(otlp::int("http.response.status_code", 429));
    } else if n.is_multiple_of(7) {
        attrs.push(otlp::string("error.type", "timeout"));
    } else if n.is_multiple_of(11) {
        // No error.type: the collector takes the HTTP status.
        attrs.push(otlp::int("http.response.status_code", 503));
        status = Some(Status {
            code: StatusCode::Error as i32,
            message: "upstream unavailable".into(),
        });
    }
    let mut span = otlp::span(n.to_be_bytes().to_vec(), attrs);
    span.trace_id = [0x6au64.to_be_bytes(), n.to_be_bytes()].concat();
    span.start_time_unix_nano = base + n * STEP_NANOS;
    span.end_time_unix_nano = span.start_time_unix_nano + 150_000_000 + (n % 10) * 45_000_000;
    span.status = status;
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                otlp::string("service.name", p.app),
                otlp::string("deployment.environment.name", p.environment),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![span],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Rows the inline gateway writes for a call it retried on another
/// provider (OTLP ingest never sets `attempt`): a failed primary attempt (0)
/// and its fallback (1), both in the selection.
fn fallback_rows(base: u64) -> String {
    let mut rows = Vec::new();
    for i in 0..FALLBACKS {
        let start = base + 37 * STEP_NANOS + i * 90 * STEP_NANOS;
        for attempt in 0..2u64 {
            let ok = attempt == 1;
            let start = start + attempt * 900_000_000;
            rows.push(format!(
                "(fromUnixTimestamp64Nano(toInt64({start})), {start}, 700000000, 'fb{i:030}', '{i:015}{attempt}', \
                 '{org}', '{project}', '{app}', '{env}', '{provider}', 'chat', '{model}', '{model}', 300, {out}, {cost}, \
                 'price_table', '{status}', {error}, {http}, 'gateway', 'allow', {attempt})",
                org = SELECTION.org,
                project = SELECTION.project,
                app = SELECTION.app,
                env = SELECTION.environment,
                model = SELECTION.model,
                provider = if ok { "azure.ai.openai" } else { SELECTION.provider },
                out = if ok { 40 } else { 0 },
                cost = if ok { "0.0001" } else { "0" },
                status = if ok { "ok" } else { "error" },
                error = if ok { "NULL" } else { "'server_error'" },
                http = if ok { "NULL" } else { "500" },
            ));
        }
    }
    format!(
        "INSERT INTO {DB}.calls (time, start_unix_nanos, duration_nanos, trace_id, span_id, org, project, app, \
         environment, provider, operation, request_model, model, input_tokens, output_tokens, cost_usd, \
         cost_source, status, error_type, http_status, mode, decision, attempt) VALUES {}",
        rows.join(", ")
    )
}

async fn wait_for_count(server: &ClickhouseServer, sql: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: u64 = server.query(sql).await.trim().parse().unwrap();
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {n}, expected at least {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn admin(c: &Collector, method: reqwest::Method, path: &str, body: Option<Value>) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}/admin/v1/{path}", c.api_url()))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        r.text().await.unwrap()
    );
}

/// Sends the workload through the collector, trips the rules, makes admin
/// actions and adds the gateway rows; returns the time of the first call.
async fn seed(server: &ClickhouseServer, c: &Collector) -> u64 {
    let base = now_nanos() - CALLS * STEP_NANOS - 30_000_000_000;
    let calls: Vec<ResourceSpans> = (0..CALLS).map(|n| seeded_call(n, base)).collect();
    for chunk in calls.chunks(40) {
        let body = ExportTraceServiceRequest {
            resource_spans: chunk.to_vec(),
        };
        assert_eq!(c.post_traces(body.encode_to_vec()).await, 200);
    }
    c.wait_calls(CALLS as usize).await;
    wait_for_count(
        server,
        &format!(
            "SELECT count() FROM {DB}.rule_events WHERE rule_id = 'search-daily-tokens' AND kind = 'limit_exceeded'"
        ),
        1,
    )
    .await;

    // An admin blocks a project and lifts it again, blocks a user, and
    // snoozes the cost alert for another.
    use reqwest::Method;
    let block = |scope: Value, reason: &str| json!({ "scope": scope, "reason": reason });
    admin(
        c,
        Method::POST,
        "enforcement",
        Some(block(json!({ "project": "audit" }), "security review")),
    )
    .await;
    admin(c, Method::DELETE, "enforcement?project=audit", None).await;
    admin(
        c,
        Method::POST,
        "enforcement",
        Some(block(json!({ "user": "mallory" }), "abuse")),
    )
    .await;
    admin(
        c,
        Method::POST,
        "overrides",
        Some(json!({ "rule_id": "user-daily-cost", "scope": { "user": "bob" }, "kind": "snooze", "for_s": 3600 })),
    )
    .await;
    wait_for_count(
        server,
        &format!("SELECT count() FROM {DB}.admin_actions"),
        4,
    )
    .await;

    server.query(&fallback_rows(base)).await;
    base
}

// ------------------------------------------------------------------ dashboards

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = grafana_dir().join("dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "no dashboards in {}", dir.display());
    out
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(all_panels(&p["panels"]));
    }
    out
}

fn query_variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .collect()
}

fn is_plugin_datasource(ds: &Value) -> bool {
    ds["type"] == DS_TYPE && ds["uid"] == DS_UID
}

// ------------------------------------------------------------------ expansion

/// A template variable's current value.
#[derive(Clone, Debug)]
enum Pick {
    All,
    Values(Vec<String>),
}

/// What a query is expanded with: the time range, the interval and the
/// variables (their current value, and the values their query returned).
struct Scene {
    from_ms: i64,
    to_ms: i64,
    interval_s: i64,
    picks: BTreeMap<String, Pick>,
    options: BTreeMap<String, Vec<String>>,
}

/// The plugin's `getMacroArgs`: the arguments of the call whose `(` is at
/// `open`, split at top-level commas (parentheses in string literals count).
fn macro_args(sql: &str, open: usize) -> Vec<String> {
    let rest = &sql[open..];
    let mut args = Vec::new();
    let mut depth = 0i32;
    let mut last = 1;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 1 => {
                args.push(rest[last..i].to_owned());
                last = i + 1;
                continue;
            }
            _ => continue,
        }
        if depth == 0 {
            args.push(rest[last..i].to_owned());
            return args;
        }
    }
    Vec::new()
}

/// The first variable name in `param`, as the plugin's
/// `/(?<=\$\{)[\w\d]+(?=\})|(?<=\$)[\w\d]+/` finds it.
fn variable_in(param: &str) -> Option<String> {
    let b = param.as_bytes();
    let word = |i: usize| {
        let end = (i..b.len())
            .find(|&j| !(b[j].is_ascii_alphanumeric() || b[j] == b'_'))
            .unwrap_or(b.len());
        (end > i).then_some(end)
    };
    (0..b.len()).find_map(|i| {
        let end = word(i)?;
        if i >= 2 && &b[i - 2..i] == b"${" && b.get(end) == Some(&b'}') {
            return Some(param[i..end].to_owned());
        }
        (i >= 1 && b[i - 1] == b'$').then(|| param[i..end].to_owned())
    })
}

/// The plugin's `applyConditionalAll`: `$__conditionalAll(cond, $var)`
/// becomes `1=1` when `$var` is All (or empty), else `cond`.
fn conditional_all(mut sql: String, scene: &Scene) -> String {
    const MACRO: &str = "$__conditionalAll(";
    while let Some(at) = sql.rfind(MACRO) {
        let params = macro_args(&sql, at + MACRO.len() - 1);
        assert_eq!(
            params.len(),
            2,
            "$__conditionalAll takes a condition and a variable: {sql}"
        );
        let mut phrase = params[0].clone();
        if let Some(name) = variable_in(params[1].trim()) {
            let all = match scene.picks.get(&name) {
                Some(Pick::All) => true,
                Some(Pick::Values(v)) => v.is_empty(),
                None => panic!("$__conditionalAll names ${name}, not a variable of the dashboard"),
            };
            if all {
                phrase = "1=1".into();
            }
        }
        // The plugin uses String.replace: `$$`, `$&`, `` $` `` and `$'` in the
        // condition would be replacement patterns there.
        for special in ["$$", "$&", "$`", "$'"] {
            assert!(
                !phrase.contains(special),
                "{special} in a $__conditionalAll condition: {phrase}"
            );
        }
        let call = format!("{MACRO}{},{})", params[0], params[1]);
        sql = sql.replacen(&call, &phrase, 1);
    }
    sql
}

/// Grafana's template variable interpolation with the data source's
/// `format` (a multi-value variable becomes `'a','b'`) and the formats the
/// dashboards use. `$__…` names are Grafana's or the plugin's: left alone.
fn variables(sql: &str, scene: &Scene) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, format, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').expect("unclosed ${");
            let inner = &braced[..end];
            let (name, format) = inner
                .split_once(':')
                .map_or((inner, None), |(n, f)| (n, Some(f)));
            (name, format, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], None, end)
        };
        if name.is_empty() || name.starts_with("__") {
            out.push('$');
            rest = after;
            continue;
        }
        let values = match scene.picks.get(name) {
            Some(Pick::All) => scene.options[name].clone(),
            Some(Pick::Values(v)) => v.clone(),
            None => panic!("${name} is not a variable of the dashboard: {sql}"),
        };
        let quoted = |v: &String, quote: &str| format!("'{}'", v.replace('\'', quote));
        let text = match format {
            // The data source's own format: joined, not escaped.
            None => format!("'{}'", values.join("','")),
            Some("singlequote") => values
                .iter()
                .map(|v| quoted(v, "\\'"))
                .collect::<Vec<_>>()
                .join(","),
            Some("sqlstring") => values
                .iter()
                .map(|v| quoted(v, "''"))
                .collect::<Vec<_>>()
                .join(","),
            Some(f) => panic!("variable format {f} is not handled by this test: {sql}"),
        };
        out.push_str(&text);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// The plugin's backend macros (pkg/macros/macros.go), applied as sqlds
/// does: `$__name\b(?:\((.*?)\))?`, arguments split at commas and trimmed.
fn macros(sql: &str, scene: &Scene) -> String {
    let (from_s, to_s) = (scene.from_ms.div_euclid(1000), scene.to_ms.div_euclid(1000));
    let (from_ms, to_ms) = (scene.from_ms, scene.to_ms);
    let interval_s = scene.interval_s.max(1);
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..end];
        let mut tail = &after[end..];
        let mut args: Vec<String> = Vec::new();
        if let Some(inner) = tail.strip_prefix('(') {
            // sqlds's regex is not greedy: the arguments end at the first `)`.
            let close = inner.find(')').expect("unclosed macro arguments");
            let text = &inner[..close];
            assert!(
                !text.contains('('),
                "$__{name}({text}...: macro arguments must not hold parentheses (sqlds cuts at the first `)`)"
            );
            args = text.split(',').map(|a| a.trim().to_owned()).collect();
            tail = &inner[close + 1..];
        }
        let one = || {
            assert_eq!(args.len(), 1, "$__{name} takes one argument: {sql}");
            args[0].clone()
        };
        let expansion = match name {
            "fromTime" => format!("toDateTime({from_s})"),
            "toTime" => format!("toDateTime({to_s})"),
            "fromTime_ms" => format!("fromUnixTimestamp64Milli({from_ms})"),
            "toTime_ms" => format!("fromUnixTimestamp64Milli({to_ms})"),
            "timeFilter" => {
                let c = one();
                format!("{c} >= toDateTime({from_s}) AND {c} <= toDateTime({to_s})")
            }
            "timeFilter_ms" => {
                let c = one();
                format!(
                    "{c} >= fromUnixTimestamp64Milli({from_ms}) AND {c} <= fromUnixTimestamp64Milli({to_ms})"
                )
            }
            "timeInterval" => format!(
                "toStartOfInterval(toDateTime({}), INTERVAL {interval_s} second)",
                one()
            ),
            "timeInterval_ms" => format!(
                "toStartOfInterval(toDateTime64({}, 3), INTERVAL {} millisecond)",
                one(),
                interval_s * 1000
            ),
            "interval_s" => interval_s.to_string(),
            other => panic!("macro $__{other} is not one the dashboards may use: {sql}"),
        };
        out.push_str(&expansion);
        rest = tail;
    }
    out.push_str(rest);
    assert!(!out.contains('$'), "unexpanded `$` left: {out}");
    out
}

/// Browser side first (conditional alls, variables), then the backend.
fn expand(sql: &str, scene: &Scene) -> String {
    macros(
        &variables(&conditional_all(sql.to_owned(), scene), scene),
        scene,
    )
}

// ------------------------------------------------------------------ answers

/// A `TabSeparatedWithNamesAndTypes` answer.
struct Answer {
    names: Vec<String>,
    types: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn parse_answer(text: &str) -> Answer {
    let mut lines = text.lines();
    let split = |l: &str| l.split('\t').map(str::to_owned).collect::<Vec<_>>();
    let names = split(lines.next().unwrap_or_default());
    let types = split(lines.next().unwrap_or_default());
    let rows = lines.map(split).collect();
    Answer { names, types, rows }
}

fn base_type(t: &str) -> &str {
    let mut t = t;
    for wrapper in ["Nullable(", "LowCardinality("] {
        while let Some(inner) = t.strip_prefix(wrapper) {
            t = inner.strip_suffix(')').unwrap_or(inner);
        }
    }
    if let Some(inner) = t.strip_prefix("Nullable(") {
        t = inner.strip_suffix(')').unwrap_or(inner);
    }
    t
}

fn is_time(t: &str) -> bool {
    base_type(t).starts_with("DateTime") || base_type(t).starts_with("Date")
}

fn is_number(t: &str) -> bool {
    let b = base_type(t);
    ["UInt", "Int", "Float", "Decimal"]
        .iter()
        .any(|p| b.starts_with(p))
}

fn is_text(t: &str) -> bool {
    let b = base_type(t);
    b == "String" || b.starts_with("FixedString") || b.starts_with("Enum")
}

fn number(cell: &str) -> Option<f64> {
    (cell != "\\N").then(|| cell.parse::<f64>().ok()).flatten()
}

fn column<'a>(a: &'a Answer, name: &str) -> Vec<&'a str> {
    let i = a
        .names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", a.names));
    a.rows.iter().map(|r| r[i].as_str()).collect()
}

struct Checker<'a> {
    server: &'a ClickhouseServer,
    queries: usize,
    panels: usize,
}

impl Checker<'_> {
    /// EXPLAINs and runs `sql` as the panel would; returns its answer.
    async fn run(&mut self, what: &str, raw: &str, scene: &Scene) -> Answer {
        let sql = expand(raw, scene);
        let plan = self
            .server
            .select_in(DB, &format!("EXPLAIN {sql}"))
            .await
            .unwrap_or_else(|e| panic!("{what}: EXPLAIN failed: {e}\n{sql}"));
        assert!(plan.lines().count() > 2, "{what}: empty plan\n{sql}");
        let text = self
            .server
            .select_in(DB, &sql)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"));
        let answer = parse_answer(&text);
        assert!(!answer.rows.is_empty(), "{what}: no rows\n{sql}");
        assert_eq!(answer.names.len(), answer.types.len(), "{what}");
        self.queries += 1;
        answer
    }

    /// Resolves the dashboard's query variables in order (each may use the
    /// ones before it), checking each answer; returns their options.
    async fn variables(&mut self, dash: &str, d: &Value, scene: &mut Scene) {
        for v in query_variables(d) {
            let name = v["name"].as_str().unwrap().to_owned();
            let what = format!("{dash} variable ${name}");
            let a = self
                .run(&what, v["query"]["rawSql"].as_str().unwrap(), scene)
                .await;
            assert_eq!(a.names.len(), 1, "{what}: one column of values");
            assert!(is_text(&a.types[0]), "{what}: values are strings");
            let values: Vec<String> = a.rows.iter().map(|r| r[0].clone()).collect();
            if let Some(Pick::Values(picked)) = scene.picks.get(&name) {
                for p in picked {
                    assert!(values.contains(p), "{what}: {p} not offered in {values:?}");
                }
            }
            scene.options.insert(name, values);
        }
    }

    async fn panel(&mut self, dash: &str, p: &Value, scene: &Scene) -> Vec<Answer> {
        let title = p["title"].as_str().unwrap_or("?");
        let kind = p["type"].as_str().unwrap();
        let mut answers = Vec::new();
        for t in p["targets"].as_array().into_iter().flatten() {
            let what = format!("{dash} / {title} ({kind})");
            let raw = t["rawSql"].as_str().unwrap();
            let a = self.run(&what, raw, scene).await;
            match t["format"].as_i64() {
                Some(0) => check_time_series(&what, &a, scene),
                Some(1) if kind == "stat" => check_stat(&what, &a),
                Some(1) => check_table(&what, p, &a),
                f => panic!("{what}: format {f:?}"),
            }
            for o in p["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if o["matcher"]["id"] == "byName" {
                    let name = o["matcher"]["options"].as_str().unwrap();
                    assert!(
                        a.names.iter().any(|n| n == name),
                        "{what}: override for {name}, not a column of {:?}",
                        a.names
                    );
                }
            }
            answers.push(a);
        }
        self.panels += 1;
        answers
    }
}

/// A time column first, sorted and in the range (Grafana's long-to-wide
/// needs that), then numbers, or strings that become series labels.
fn check_time_series(what: &str, a: &Answer, scene: &Scene) {
    assert!(
        is_time(&a.types[0]),
        "{what}: first column {} is {}, not a time",
        a.names[0],
        a.types[0]
    );
    let mut numbers = 0;
    for (n, t) in a.names.iter().zip(&a.types).skip(1) {
        assert!(
            is_number(t) || is_text(t),
            "{what}: column {n} is {t}, neither a number nor a label"
        );
        numbers += usize::from(is_number(t));
    }
    assert!(numbers > 0, "{what}: no value column in {:?}", a.names);
    let times: Vec<&str> = a.rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "{what}: not sorted by time: {times:?}"
    );
    let (lo, hi) = range_text(scene);
    assert!(
        times.iter().all(|t| *t >= lo.as_str() && *t <= hi.as_str()),
        "{what}: times outside {lo} .. {hi}: {times:?}"
    );
    let positive = a.rows.iter().any(|r| {
        r.iter()
            .zip(&a.types)
            .skip(1)
            .any(|(c, t)| is_number(t) && number(c).is_some_and(|x| x > 0.0))
    });
    assert!(positive, "{what}: nothing but zeros");
}

/// `YYYY-MM-DD hh:mm:ss` (UTC, as the server writes times) of the start of
/// the first interval and of the end of the range.
fn range_text(scene: &Scene) -> (String, String) {
    let from = scene.from_ms.div_euclid(1000);
    let start = from - from.rem_euclid(scene.interval_s.max(1));
    (utc_text(start), utc_text(scene.to_ms.div_euclid(1000) + 1))
}

fn utc_text(unix_s: i64) -> String {
    // Days to civil date (Howard Hinnant's algorithm).
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One row of positive numbers.
fn check_stat(what: &str, a: &Answer) {
    assert_eq!(a.rows.len(), 1, "{what}: a stat reads one row");
    for ((n, t), c) in a.names.iter().zip(&a.types).zip(&a.rows[0]) {
        assert!(is_number(t), "{what}: {n} is {t}, not a number");
        let x = number(c).unwrap_or(f64::NAN);
        assert!(x.is_finite() && x > 0.0, "{what}: {n} = {c}");
    }
}

/// Exactly the columns the table's `organize` transformation orders and
/// renames, in that order.
fn check_table(what: &str, p: &Value, a: &Answer) {
    let organize = p["transformations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == "organize")
        .unwrap_or_else(|| {
            panic!("{what}: a table declares its columns with an organize transformation")
        });
    let mut declared: Vec<(i64, &str)> = organize["options"]["indexByName"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (v.as_i64().unwrap(), k.as_str()))
        .collect();
    declared.sort();
    let declared: Vec<&str> = declared.into_iter().map(|(_, k)| k).collect();
    assert_eq!(a.names, declared, "{what}: columns");
    for name in organize["options"]["renameByName"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(declared.contains(&name.as_str()), "{what}: renames {name}");
    }
}

// ------------------------------------------------------------------ the tests

/// The seeded scenes the dashboards are checked in.
#[derive(Clone, Copy, PartialEq)]
enum Seen {
    /// Every variable All.
    Everything,
    /// The selection: one value for each variable.
    Selection,
    /// Several projects and models.
    Several,
}

impl Seen {
    const ALL: [Seen; 3] = [Seen::Everything, Seen::Selection, Seen::Several];

    fn name(self) -> &'static str {
        match self {
            Seen::Everything => "all",
            Seen::Selection => "one value each",
            Seen::Several => "several values",
        }
    }

    fn interval_s(self) -> i64 {
        match self {
            Seen::Several => 300,
            _ => 60,
        }
    }

    /// The variables picked; the others are All.
    fn picks(self) -> Vec<(&'static str, Pick)> {
        let one = |v: &str| Pick::Values(vec![v.to_owned()]);
        let many = |v: &[&str]| Pick::Values(v.iter().map(|s| (*s).to_owned()).collect());
        match self {
            Seen::Everything => vec![],
            Seen::Selection => vec![
                ("org", one(SELECTION.org)),
                ("project", one(SELECTION.project)),
                ("app", one(SELECTION.app)),
                ("environment", one(SELECTION.environment)),
                ("model", one(SELECTION.model)),
            ],
            Seen::Several => vec![
                ("project", many(&["search", "support"])),
                ("model", many(&["gpt-4o-mini", "gpt-4o"])),
            ],
        }
    }
}

/// Seeded values the answers must show, by panel title.
fn check_values(what: &str, title: &str, answers: &[Answer], seen: Seen) {
    let a = &answers[0];
    match title {
        "Requests" => {
            let selected = (0..CALLS).filter(|n| n.is_multiple_of(3)).count() as u64;
            let expected = match seen {
                Seen::Everything => CALLS + 2 * FALLBACKS,
                Seen::Selection => selected + 2 * FALLBACKS,
                Seen::Several => return,
            };
            assert_eq!(a.rows[0][0], expected.to_string(), "{what}");
        }
        "Blocked scopes" => {
            let rows: Vec<(String, String, String)> = a
                .rows
                .iter()
                .map(|r| (r[2].clone(), r[3].clone(), r[6].clone()))
                .collect();
            let has = |rule: &str, scope: &str, state: &str| {
                rows.contains(&(rule.into(), scope.into(), state.into()))
            };
            assert!(
                has("search-daily-tokens", "project=search", "active"),
                "{what}: {rows:?}"
            );
            // A user block applies to every project.
            assert!(has("admin", "user=mallory", "active"), "{what}: {rows:?}");
            // Lifted by the admin, and a project of its own.
            assert_eq!(
                has("admin", "project=audit", "lifted"),
                seen == Seen::Everything,
                "{what}: {rows:?}"
            );
        }
        "Budget use" => {
            let rules = column(a, "rule_id");
            let ratios = column(a, "use_ratio");
            let search = rules
                .iter()
                .position(|r| *r == "search-daily-tokens")
                .unwrap_or_else(|| panic!("{what}: {rules:?}"));
            assert!(number(ratios[search]).unwrap() >= 1.0, "{what}: {ratios:?}");
        }
        "Errors by code" if a.names[0] == "error" => {
            let codes: Vec<(&str, &str)> = column(a, "error")
                .into_iter()
                .zip(column(a, "http_status"))
                .collect();
            for code in [
                ("rate_limit_exceeded", "429"),
                ("timeout", "\\N"),
                ("503", "503"),
                ("server_error", "500"),
            ] {
                assert!(codes.contains(&code), "{what}: {code:?} not in {codes:?}");
            }
        }
        "Admin actions" => {
            let actions = column(a, "action");
            for action in ["block", "lift", "override"] {
                assert!(actions.contains(&action), "{what}: {actions:?}");
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_runs_on_clickhouse() {
    let Some(server) = ClickhouseServer::start("every_dashboard_panel_runs_on_clickhouse") else {
        return;
    };
    let c = Collector::start_with_storage(Some(&server.storage(DB)), &rules(), &[], &[]);
    let base = seed(&server, &c).await;
    let from_ms = (base / 1_000_000) as i64 - 60_000;
    let to_ms = (now_nanos() / 1_000_000) as i64 + 60_000;

    let mut checker = Checker {
        server: &server,
        queries: 0,
        panels: 0,
    };
    let dashboards = dashboards();
    for (file, d) in &dashboards {
        let names: Vec<String> = query_variables(d)
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        for seen in Seen::ALL {
            let picks = seen.picks();
            // A dashboard without variables has one scene only.
            if names.is_empty() && !picks.is_empty() {
                continue;
            }
            let mut scene = Scene {
                from_ms,
                to_ms,
                interval_s: seen.interval_s(),
                picks: names.iter().map(|n| (n.clone(), Pick::All)).collect(),
                options: BTreeMap::new(),
            };
            for (n, p) in picks {
                assert!(scene.picks.contains_key(n), "{file}: no variable {n}");
                scene.picks.insert(n.to_owned(), p);
            }
            let dash = format!("{file} [{}]", seen.name());
            checker.variables(&dash, d, &mut scene).await;
            for p in all_panels(&d["panels"]) {
                if p["type"] == "row" {
                    continue;
                }
                let answers = checker.panel(&dash, p, &scene).await;
                let title = p["title"].as_str().unwrap();
                check_values(&format!("{dash} / {title}"), title, &answers, seen);
            }
        }
    }
    let distinct: usize = dashboards
        .iter()
        .map(|(_, d)| {
            all_panels(&d["panels"])
                .iter()
                .filter(|p| p["type"] != "row")
                .count()
        })
        .sum();
    println!(
        "grafana: {} dashboards, {distinct} panels, {} panel runs, {} queries (each EXPLAINed, then run) passed",
        dashboards.len(),
        checker.panels,
        checker.queries
    );
}

/// Without ClickHouse: the provisioning files and the dashboards fit each
/// other and the plugin's target format.
#[test]
fn dashboards_are_provisioned_on_the_clickhouse_data_source() {
    let dir = grafana_dir();
    let datasource =
        std::fs::read_to_string(dir.join("provisioning/datasources/clickhouse.yaml")).unwrap();
    for needle in [
        format!("type: {DS_TYPE}"),
        format!("uid: {DS_UID}"),
        "${CLICKHOUSE_HOST}".into(),
        "${CLICKHOUSE_PORT}".into(),
        "${CLICKHOUSE_USER}".into(),
        "${CLICKHOUSE_PASSWORD}".into(),
        "defaultDatabase: tollgate".into(),
    ] {
        assert!(
            datasource.contains(&needle),
            "clickhouse.yaml lacks {needle}"
        );
    }
    let provider =
        std::fs::read_to_string(dir.join("provisioning/dashboards/tollgate.yaml")).unwrap();
    assert!(
        provider.contains("type: file") && provider.contains("path: /var/lib/grafana/dashboards")
    );

    let mut uids = Vec::new();
    for (file, d) in dashboards() {
        uids.push(d["uid"].as_str().unwrap().to_owned());
        let panels = all_panels(&d["panels"]);
        let mut ids: Vec<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), panels.len(), "{file}: panel ids are unique");
        for p in panels {
            let title = p["title"].as_str().unwrap();
            if p["type"] == "row" {
                assert!(p.get("targets").is_none(), "{file} / {title}");
                continue;
            }
            assert!(
                is_plugin_datasource(&p["datasource"]),
                "{file} / {title}: datasource"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file} / {title}: no query");
            for t in targets {
                assert!(is_plugin_datasource(&t["datasource"]), "{file} / {title}");
                assert_eq!(t["editorType"], "sql", "{file} / {title}");
                let (format, query_type) = match p["type"].as_str().unwrap() {
                    "timeseries" => (0, "timeseries"),
                    _ => (1, "table"),
                };
                assert_eq!(t["format"], format, "{file} / {title}: format");
                assert_eq!(t["queryType"], query_type, "{file} / {title}: queryType");
                let sql = t["rawSql"].as_str().unwrap();
                // Unqualified tables: the data source's default database.
                assert!(!sql.contains("tollgate."), "{file} / {title}: {sql}");
            }
        }
        for v in query_variables(&d) {
            let name = v["name"].as_str().unwrap();
            assert!(is_plugin_datasource(&v["datasource"]), "{file} ${name}");
            assert_eq!(v["query"]["editorType"], "sql", "{file} ${name}");
            assert_eq!(v["multi"], true, "{file} ${name}");
            assert_eq!(v["includeAll"], true, "{file} ${name}");
        }
    }
    // The dashboards link to each other by these.
    assert_eq!(uids, ["tollgate-overview", "tollgate-project"]);
}

#[test]
fn expansion_follows_the_plugin() {
    let scene = Scene {
        from_ms: 1_700_000_000_500,
        to_ms: 1_700_003_600_900,
        interval_s: 60,
        picks: BTreeMap::from([
            (
                "project".to_owned(),
                Pick::Values(vec!["search".into(), "o'neil".into()]),
            ),
            ("org".to_owned(), Pick::All),
        ]),
        options: BTreeMap::from([("org".to_owned(), vec!["acme".into(), "globex".into()])]),
    };
    let sql = "SELECT $__timeInterval(minute) AS t FROM calls_1m WHERE $__timeFilter(minute) \
               AND $__conditionalAll(project IN (${project:singlequote}), $project) \
               AND $__conditionalAll(org IN (${org:singlequote}), $org) AND org IN ($org) \
               AND time > $__fromTime_ms LIMIT $__interval_s";
    assert_eq!(
        expand(sql, &scene),
        "SELECT toStartOfInterval(toDateTime(minute), INTERVAL 60 second) AS t FROM calls_1m \
         WHERE minute >= toDateTime(1700000000) AND minute <= toDateTime(1700003600) \
         AND project IN ('search','o\\'neil') AND 1=1 AND org IN ('acme','globex') \
         AND time > fromUnixTimestamp64Milli(1700000000500) LIMIT 60"
    );
    assert_eq!(utc_text(1_700_000_000), "2023-11-14 22:13:20");
    assert_eq!(variable_in("${project}"), Some("project".into()));
    assert_eq!(variable_in(" $model"), Some("model".into()));
}
