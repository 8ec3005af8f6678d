//! End to end with `[storage] type = "clickhouse"`: the real binary writes
//! spans received over OTLP into the real ClickHouse engine (chdb behind
//! the test server), answers the query API and the CLI exactly as the
//! embedded store does for the same input, and survives an outage of
//! ClickHouse without losing or duplicating a row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;
use support::{ClickhouseServer, Collector, otlp};

const RULES: &str = r#"
[[rules]]
id = "search-daily"
type = "budget"
metric = "tokens"
limit = 30000
scope = ["project"]
match = { project = "search" }
window = "day"
action = "alert"
"#;

const PROJECTS: [&str; 4] = ["search", "support", "billing", "agents"];
/// (provider, model asked for, model that answered).
const MODELS: [(&str, &str, &str); 4] = [
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
    (
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
    ),
    ("openai", "no-such-model-x", "no-such-model-x-2025-01-01"),
];

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Request `r` of a fixed workload: 50 calls over projects, users, models
/// (one unpriced), some errors, streams, cache tokens and labels.
fn request(r: u64, base: u64) -> ExportTraceServiceRequest {
    let spans = (0..50u64)
        .map(|i| {
            let n = r * 50 + i;
            let (provider, model, answered) = MODELS[(n % 4) as usize];
            // Most calls name a model and are answered by a dated snapshot
            // of it; every seventh names none and only the answer says: both
            // stores must group them under the same name.
            let mut attrs = vec![
                otlp::string("gen_ai.operation.name", "chat"),
                otlp::string("gen_ai.provider.name", provider),
                otlp::string("gen_ai.response.model", answered),
                otlp::int("gen_ai.usage.input_tokens", 100 + (n % 7) as i64 * 50),
                otlp::int("gen_ai.usage.output_tokens", 20 + (n % 5) as i64 * 10),
                otlp::string("tollgate.project", PROJECTS[(n % 3) as usize]),
                otlp::string("user.id", &format!("user-{}", n % 5)),
                otlp::string("gen_ai.response.id", &format!("resp-{n}")),
                otlp::string(
                    "tollgate.label.team",
                    if n.is_multiple_of(2) { "core" } else { "ml" },
                ),
            ];
            if !n.is_multiple_of(7) {
                attrs.push(otlp::string("gen_ai.request.model", model));
            }
            if n.is_multiple_of(6) {
                attrs.push(otlp::int("gen_ai.usage.cache_read.input_tokens", 40));
            }
            if n.is_multiple_of(9) {
                attrs.push(otlp::string("error.type", "rate_limit_exceeded"));
            }
            let mut span = otlp::span(n.to_be_bytes().to_vec(), attrs);
            span.trace_id = [r.to_be_bytes(), 7u64.to_be_bytes()].concat();
            span.start_time_unix_nano = base + n * 1_000_000;
            span.end_time_unix_nano = span.start_time_unix_nano + 250_000_000 + n * 1_000;
            span
        })
        .collect();
    otlp::request(spans)
}

/// Calls among the first `calls` of the workload that name `gpt-4o` as the
/// model asked for (every fourth is a `gpt-4o` call; every seventh names no model).
fn asking_for_gpt_4o(calls: u64) -> u64 {
    (0..calls).filter(|n| n % 4 == 1 && n % 7 != 0).count() as u64
}

/// Requests of `model` in a `/v1/usage?by=model` answer.
fn requests_of(usage: &Value, model: &str) -> Option<u64> {
    usage["rows"]
        .as_array()?
        .iter()
        .find(|r| r["model"] == model)?["requests"]
        .as_u64()
}

/// Rows sorted by span id, for comparing stores.
fn by_span(mut calls: Vec<Value>) -> Vec<Value> {
    calls.sort_by(|a, b| a["span_id"].as_str().cmp(&b["span_id"].as_str()));
    calls
}

/// Usage rows with costs rounded (sums in another order differ in the last bits).
fn rounded(mut v: Value) -> Value {
    for row in v["rows"].as_array_mut().unwrap() {
        let cost = row["cost_usd"].as_f64().unwrap();
        row["cost_usd"] = serde_json::json!((cost * 1e9).round() / 1e9);
    }
    v
}

async fn metric(c: &Collector, name: &str) -> f64 {
    c.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_gives_the_answers_of_the_embedded_store() {
    let Some(server) =
        ClickhouseServer::start("clickhouse_gives_the_answers_of_the_embedded_store")
    else {
        return;
    };
    let ch = Collector::start_with_storage(Some(&server.storage("tg_same")), RULES, &[], &[]);
    let lite = Collector::start(RULES);
    let base = now_nanos() - 60_000_000_000;
    let requests: Vec<Vec<u8>> = (0..6).map(|r| request(r, base).encode_to_vec()).collect();
    for body in &requests {
        assert_eq!(ch.post_traces(body.to_vec()).await, 200);
        assert_eq!(lite.post_traces(body.to_vec()).await, 200);
    }
    let stored = by_span(ch.wait_calls(300).await);
    let expected = by_span(lite.wait_calls(300).await);
    assert_eq!(stored.len(), 300);
    // Every field of every row, as the embedded store has it.
    for (a, b) in stored.iter().zip(&expected) {
        assert_eq!(a, b);
    }
    let unpriced = stored
        .iter()
        .filter(|r| r["cost_source"] == "unpriced")
        .count();
    assert_eq!(unpriced, 75, "one model in four is not in the price table");
    assert!(stored.iter().all(|r| r["labels"]["team"].is_string()));

    // In ClickHouse itself, column by column.
    let totals = server
        .query(
            "SELECT count(), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
                    countIf(cost_usd IS NULL), countIf(error_type = 'rate_limit_exceeded'),
                    uniqExact(project), toTypeName(time)
             FROM tg_same.calls",
        )
        .await;
    let sum = |f: &str| stored.iter().map(|r| r[f].as_u64().unwrap()).sum::<u64>();
    let errors = stored
        .iter()
        .filter(|r| r["error_type"] == "rate_limit_exceeded")
        .count();
    assert_eq!(
        totals.trim(),
        format!(
            "300\t{}\t{}\t{}\t75\t{errors}\t3\tDateTime64(6, \\'UTC\\')",
            sum("input_tokens"),
            sum("output_tokens"),
            sum("cache_read_tokens")
        )
    );
    // The per-minute rollup the dashboards read holds the same totals.
    let rollup = server
        .query(
            "SELECT sum(requests), sum(input_tokens), length(quantilesMerge(0.5, 0.95, 0.99)(latency_ms))
             FROM tg_same.calls_1m",
        )
        .await;
    assert_eq!(rollup.trim(), format!("300\t{}\t3", sum("input_tokens")));

    // The query API and the CLI answer alike.
    for q in [
        "/v1/usage?by=project,model&since=1h",
        "/v1/usage?by=user&since=1h",
        "/v1/usage?by=error_type,provider&since=1h",
        "/v1/usage?by=model&since=1h&project=search",
        "/v1/usage?since=1h",
    ] {
        let (s1, a) = ch.get(q).await;
        let (s2, b) = lite.get(q).await;
        assert_eq!((s1, s2), (200, 200), "{q}");
        assert!(!a["rows"].as_array().unwrap().is_empty(), "{q}");
        assert_eq!(rounded(a), rounded(b), "{q}");
    }
    // Calls are grouped under the model asked for, and only those that did
    // not say under the model that answered.
    let (_, by_model) = ch.get("/v1/usage?by=model&since=1h").await;
    let asked = asking_for_gpt_4o(300);
    assert_eq!(requests_of(&by_model, "gpt-4o"), Some(asked), "{by_model}");
    assert_eq!(
        requests_of(&by_model, "gpt-4o-2024-08-06"),
        Some(75 - asked),
        "{by_model}"
    );
    // Calls filtered by a dimension: the same rows from both stores.
    let ids = |v: Value| {
        let mut ids: Vec<String> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}/{}", r["trace_id"], r["span_id"]))
            .collect();
        ids.sort();
        ids
    };
    let (s1, a) = ch.get("/v1/calls?limit=1000&project=search").await;
    let (s2, b) = lite.get("/v1/calls?limit=1000&project=search").await;
    assert_eq!((s1, s2), (200, 200));
    let (a, b) = (ids(a), ids(b));
    assert!(!a.is_empty() && a.len() < 300, "{}", a.len());
    assert_eq!(a, b);
    let cli_ch = ch.usage_cli(&["--by", "project,model", "--since", "1h"]);
    let cli_lite = lite.usage_cli(&["--by", "project,model", "--since", "1h"]);
    assert_eq!(cli_ch, cli_lite);
    // Rule events: the search project crossed 80 % of its budget in both.
    let events = |v: Value| {
        let mut rows = v["rows"].as_array().unwrap().clone();
        rows.sort_by_key(|e| (e["time_unix_nanos"].as_i64(), e["threshold"].to_string()));
        rows
    };
    let (_, events_ch) = ch.get("/v1/events?since=1h").await;
    let (_, events_lite) = lite.get("/v1/events?since=1h").await;
    let (events_ch, events_lite) = (events(events_ch), events(events_lite));
    assert!(!events_ch.is_empty(), "no rule events");
    assert_eq!(events_ch, events_lite);

    // A retried export is counted and stored once.
    assert_eq!(ch.post_traces(requests[2].clone()).await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&ch, "tollgate_pipeline_duplicates_dropped_total").await < 50.0 {
        assert!(Instant::now() < deadline, "the retry was not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server
            .query("SELECT count() FROM tg_same.calls")
            .await
            .trim(),
        "300"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_clickhouse_loses_and_duplicates_nothing() {
    let Some(mut server) =
        ClickhouseServer::start("an_outage_of_clickhouse_loses_and_duplicates_nothing")
    else {
        return;
    };
    let mut ch = Collector::start_with_storage(
        Some(&server.storage("tg_outage")),
        "[pipeline]\nbatch_max_rows = 100\n",
        &[],
        &[],
    );
    let base = now_nanos() - 60_000_000_000;
    for r in 0..4 {
        assert_eq!(ch.post_traces(request(r, base).encode_to_vec()).await, 200);
    }
    ch.wait_calls(200).await;

    // ClickHouse goes away for 30 s while agents keep sending.
    server.stop();
    let down_at = Instant::now();
    for r in 4..20 {
        assert_eq!(ch.post_traces(request(r, base).encode_to_vec()).await, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(metric(&ch, "tollgate_store_write_errors_total").await >= 1.0);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_at.elapsed())).await;
    server.start_again();

    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&ch, "tollgate_store_rows_written_total").await < 1000.0 {
        assert!(
            Instant::now() < deadline,
            "rows not written after the outage: {}",
            ch.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server
            .query("SELECT count(), uniqExact(trace_id, span_id) FROM tg_outage.calls")
            .await
            .trim(),
        "1000\t1000"
    );
    // Reported once when it began and once when it ended, not per retry.
    let log = ch.stderr();
    assert_eq!(log.matches("store write failed").count(), 1, "{log}");
    assert_eq!(log.matches("store is writable again").count(), 1, "{log}");

    // Counters come back from ClickHouse after a restart.
    ch.restart();
    let (_, usage) = ch.get("/v1/usage?since=1h").await;
    assert_eq!(usage["rows"][0]["requests"], 1000);
    assert!(ch.stderr().contains("rule counters rebuilt from the store"));
}

/// The store itself: a batch written twice (a retry after a timeout whose
/// first attempt did land) is stored once, and counted once in the rollup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once_and_rolled_up_once() {
    use tollgate_collector::sinks::clickhouse::{
        ClickhouseCompression, ClickhouseConfig, ClickhouseStore,
    };
    use tollgate_collector::sinks::{Batch, Sink};
    use tollgate_rules::CallRecord;

    let Some(server) = ClickhouseServer::start("a_retried_batch_is_stored_once_and_rolled_up_once")
    else {
        return;
    };
    let config = ClickhouseConfig {
        url: server.url(),
        database: "tg_retry".into(),
        user: None,
        password: None,
        compression: ClickhouseCompression::None,
        retention_days: Some(30),
        timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(10),
        extra_roots: Default::default(),
    };
    let store = ClickhouseStore::open(&config).await.unwrap();
    let base = now_nanos() as i64;
    let calls: Vec<CallRecord> = (0..20)
        .map(|i| CallRecord {
            start_unix_nanos: base + i,
            duration_nanos: 1_000_000,
            trace_id: "aa".repeat(16),
            span_id: format!("{i:016x}"),
            project: Some("search".into()),
            input_tokens: 10,
            ..Default::default()
        })
        .collect();
    let batch = Batch::new(calls.clone(), vec![]);
    store.write(batch.clone()).await.unwrap();
    store.write(batch).await.unwrap();
    assert_eq!(
        server
            .query("SELECT count(), sum(input_tokens) FROM tg_retry.calls")
            .await
            .trim(),
        "20\t200"
    );
    assert_eq!(
        server
            .query("SELECT sum(requests), sum(input_tokens) FROM tg_retry.calls_1m")
            .await
            .trim(),
        "20\t200"
    );
    // Another batch with other rows is not mistaken for a retry.
    store
        .write(Batch::new(calls[..5].to_vec(), vec![]))
        .await
        .unwrap();
    assert_eq!(
        server
            .query("SELECT count() FROM tg_retry.calls")
            .await
            .trim(),
        "25"
    );
    // Retention is applied as a TTL.
    let ddl = server
        .query("SELECT create_table_query FROM system.tables WHERE database = 'tg_retry' AND name = 'calls'")
        .await;
    assert!(ddl.contains("TTL"), "{ddl}");
    // Opening again finds the schema current and changes nothing.
    ClickhouseStore::open(&config).await.unwrap();
    assert_eq!(
        server
            .query("SELECT count(), max(version) FROM tg_retry.tollgate_migrations")
            .await
            .trim(),
        "7\t7"
    );
}

/// A store written before schema version 5 named calls by the model that
/// answered; the migration renames them by the model asked for, as the
/// embedded store and the rules do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_store_is_migrated_to_the_model_asked_for() {
    let Some(server) = ClickhouseServer::start("an_older_store_is_migrated_to_the_model_asked_for")
    else {
        return;
    };
    let mut ch = Collector::start_with_storage(Some(&server.storage("tg_upgrade")), "", &[], &[]);
    let base = now_nanos() - 60_000_000_000;
    assert_eq!(ch.post_traces(request(0, base).encode_to_vec()).await, 200);
    ch.wait_calls(50).await;
    let renamed = "SELECT countIf(model = request_model), countIf(model = response_model)
                   FROM tg_upgrade.calls WHERE request_model IS NOT NULL";
    let eventually = |sql: &'static str, want: &'static str| {
        let server = &server;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let got = server.query(sql).await;
                if got.trim() == want {
                    return;
                }
                assert!(Instant::now() < deadline, "{sql}: {got}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // 42 of the 50 calls name a model (every seventh does not).
    eventually(renamed, "42\t0").await;

    // Back to what version 4 wrote, and to version 4 itself.
    server
        .query(
            "ALTER TABLE tg_upgrade.calls UPDATE model = coalesce(response_model, request_model)
             WHERE 1",
        )
        .await;
    eventually(renamed, "0\t42").await;
    server
        .query("ALTER TABLE tg_upgrade.tollgate_migrations DELETE WHERE version >= 5")
        .await;
    eventually(
        "SELECT max(version) FROM tg_upgrade.tollgate_migrations",
        "4",
    )
    .await;

    ch.restart();
    eventually(renamed, "42\t0").await;
    eventually(
        "SELECT max(version) FROM tg_upgrade.tollgate_migrations",
        "7",
    )
    .await;
    let (_, by_model) = ch.get("/v1/usage?by=model&since=1h").await;
    assert_eq!(
        requests_of(&by_model, "gpt-4o"),
        Some(asking_for_gpt_4o(50)),
        "{by_model}"
    );
}

/// A second description of a stored call (another instrumentation layer,
/// exported in a later request) updates the row in ClickHouse: one row,
/// with the fields of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_description_updates_the_stored_row() {
    let Some(server) = ClickhouseServer::start("a_late_description_updates_the_stored_row") else {
        return;
    };
    let ch = Collector::start_with_storage(Some(&server.storage("tg_merge")), "", &[], &[]);
    let end = now_nanos();
    let layer = |span: u8, parent: u8, attrs| {
        let mut s = otlp::span(vec![0, 0, 0, 0, 0, 0, 0, span], attrs);
        s.trace_id = vec![5; 16];
        s.parent_span_id = vec![0, 0, 0, 0, 0, 0, 0, parent];
        s.start_time_unix_nano = end - 500_000_000;
        s.end_time_unix_nano = end;
        otlp::request(vec![s])
    };
    // The SDK's own span (child) first, with the response id and cache write...
    let inner = layer(
        0x0b,
        0x0a,
        vec![
            otlp::string("gen_ai.provider.name", "anthropic"),
            otlp::string("gen_ai.operation.name", "chat"),
            otlp::string("gen_ai.request.model", "claude-3-5-haiku-20241022"),
            otlp::string("gen_ai.response.id", "msg_01XFDUDYJgAACzvnptvVoYEL"),
            otlp::int("gen_ai.usage.input_tokens", 272),
            otlp::int("gen_ai.usage.output_tokens", 12),
            otlp::int("gen_ai.usage.cache_write.input_tokens", 256),
            otlp::string("tollgate.project", "merge"),
        ],
    );
    assert_eq!(ch.post_traces(inner.encode_to_vec()).await, 200);
    ch.wait_calls(1).await;
    // ...then the instrumentation's span around it, with the user.
    let outer = layer(
        0x0a,
        0x01,
        vec![
            otlp::string("openinference.span.kind", "LLM"),
            otlp::string("llm.provider", "anthropic"),
            otlp::string("llm.model_name", "claude-3-5-haiku-20241022"),
            otlp::int("llm.token_count.prompt", 272),
            otlp::int("llm.token_count.completion", 12),
            otlp::string("user.id", "u-17"),
            otlp::string("tollgate.project", "merge"),
        ],
    );
    assert_eq!(ch.post_traces(outer.encode_to_vec()).await, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = server
            .query(
                "SELECT count(), any(request_id), any(cache_write_tokens), any(parent_span_id), \
                 any(user_id) FROM tg_merge.calls",
            )
            .await;
        if row.trim() == "1\tmsg_01XFDUDYJgAACzvnptvVoYEL\t256\t0000000000000001\tu-17" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "row not merged: {row}\n{}",
            ch.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
