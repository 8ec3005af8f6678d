//! End to end: one row per real model call on the real binary. Reused
//! provider ids never merge distinct calls (over OTLP and through the
//! gateway); two layers describing one call,
//! exported in two requests in either order, are one row counted once; a
//! forged cost is neither stored nor counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;
use support::otlp::{int, kv, string};
use support::{Collector, wait_for};
use tollgate_mock_provider::{MockConfig, MockProvider, ResponseIds};

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Spans of one instrumentation library, with the resource an agent sends.
fn request(scope: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "support-bot"),
                    string("tollgate.project", "identity"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn call_span(trace: [u8; 16], span: u64, parent: Option<u64>, attrs: Vec<KeyValue>) -> Span {
    let end = now_nanos();
    Span {
        trace_id: trace.to_vec(),
        span_id: span.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: "chat gpt-4o-mini".into(),
        start_time_unix_nano: end - 800_000_000,
        end_time_unix_nano: end,
        attributes: attrs,
        ..Default::default()
    }
}

async fn post(c: &Collector, body: &ExportTraceServiceRequest) -> ExportTraceServiceResponse {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/traces", c.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap()
}

async fn usage(c: &Collector) -> (f64, f64) {
    let (status, body) = c.get("/v1/usage?by=project&since=1h").await;
    assert_eq!(status, 200, "{body}");
    let row = &body["rows"][0];
    (
        row["requests"].as_f64().unwrap_or(0.0),
        row["input_tokens"].as_f64().unwrap_or(0.0),
    )
}

/// A per-project budget on `metric` that blocks past `limit` in `window`.
fn block_rule(metric: &str, limit: u64, window: &str) -> String {
    format!(
        r#"
[[rules]]
id = "budget"
type = "budget"
metric = "{metric}"
limit = {limit}
scope = ["project"]
window = "{window}"
action = "block"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_calls_with_reused_ollama_ids_are_two_thousand_rows() {
    let c = Collector::start("");
    // Ollama's OpenAI-compatible API draws ids as chatcmpl-<0..998>: 2,000
    // distinct calls, one trace each, share 999 ids.
    for chunk in 0..20u64 {
        let spans = (0..100u64)
            .map(|i| {
                let n = chunk * 100 + i;
                let mut trace = [0u8; 16];
                trace[..8].copy_from_slice(&(n + 1).to_be_bytes());
                call_span(
                    trace,
                    n + 1,
                    None,
                    vec![
                        string("gen_ai.provider.name", "ollama"),
                        string("gen_ai.request.model", "llama3.2"),
                        string("gen_ai.response.id", &format!("chatcmpl-{}", n % 999)),
                        int("gen_ai.usage.input_tokens", 10),
                        int("gen_ai.usage.output_tokens", 5),
                    ],
                )
            })
            .collect();
        post(&c, &request("openinference.instrumentation.openai", spans)).await;
    }
    let calls = c.wait_calls(2_000).await;
    assert_eq!(calls.len(), 2_000);
    wait_for("usage", async || usage(&c).await.0 == 2_000.0).await;
    assert_eq!(usage(&c).await, (2_000.0, 20_000.0));
}

/// An instrumentation's span (parent, with the user) and the SDK's own span
/// (child, with the response id and cache tokens), exported in two requests.
fn two_layers(trace: [u8; 16]) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let outer = request(
        "openinference.instrumentation.anthropic",
        vec![call_span(
            trace,
            0x0a,
            Some(0x01),
            vec![
                string("openinference.span.kind", "LLM"),
                string("llm.provider", "anthropic"),
                string("llm.model_name", "claude-3-5-haiku-20241022"),
                int("llm.token_count.prompt", 1_296),
                int("llm.token_count.completion", 12),
                string("user.id", "u-17"),
            ],
        )],
    );
    let inner = request(
        "com.anthropic.sdk.python",
        vec![call_span(
            trace,
            0x0b,
            Some(0x0a),
            vec![
                string("gen_ai.provider.name", "anthropic"),
                string("gen_ai.operation.name", "chat"),
                string("gen_ai.request.model", "claude-3-5-haiku-20241022"),
                string("gen_ai.response.id", "msg_01XFDUDYJgAACzvnptvVoYEL"),
                int("gen_ai.usage.input_tokens", 1_296),
                int("gen_ai.usage.output_tokens", 12),
                int("gen_ai.usage.cache_read.input_tokens", 1_024),
                int("gen_ai.usage.cache_write.input_tokens", 256),
            ],
        )],
    );
    (outer, inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_described_twice_in_two_requests_is_one_row_in_either_order_and_counted_once() {
    let c = Collector::start(&block_rule("tokens", 2_000, "day"));
    let (outer, inner) = two_layers([1; 16]);
    // Inner first (a span ends before its parent), then the parent a moment later.
    post(&c, &inner).await;
    c.wait_calls(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    post(&c, &outer).await;
    // Parent first, in another trace.
    let (outer, inner) = two_layers([2; 16]);
    post(&c, &outer).await;
    c.wait_calls(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    post(&c, &inner).await;

    wait_for("both merges", async || {
        c.metrics()
            .await
            .contains("tollgate_pipeline_calls_merged_total{when=\"late\"} 2")
    })
    .await;
    let calls = c.calls(100).await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    for row in &calls {
        // The union of both descriptions.
        assert_eq!(row["user"], "u-17", "{row}");
        assert_eq!(row["request_id"], "msg_01XFDUDYJgAACzvnptvVoYEL", "{row}");
        assert_eq!(row["cache_read_tokens"], 1_024, "{row}");
        assert_eq!(row["cache_write_tokens"], 256, "{row}");
        assert_eq!(row["input_tokens"], 1_296, "{row}");
        // claude-3-5-haiku: 16 x $0.80 + 1024 x $0.08 + 256 x $1.00 in, 12 x $4.00 out, per million.
        let want = (16.0 * 0.80 + 1024.0 * 0.08 + 256.0 * 1.00 + 12.0 * 4.00) / 1e6;
        assert!(
            (row["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12,
            "{row}"
        );
    }
    // Counted once: 2 x 1,308 tokens over a 2,000 limit blocks; 4 x would too,
    // so read the counter itself.
    assert_eq!(usage(&c).await, (2.0, 2_592.0));
    let (_, state) = c.get("/v1/enforcement?project=identity").await;
    assert_eq!(state["blocks"][0]["used"], 2_616.0, "{state}");
    assert_eq!(
        c.get("/v1/calls?limit=10").await.1["rows"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_cost_is_priced_from_the_table_blocks_nothing_and_the_sender_is_told() {
    let c = Collector::start(&block_rule("cost_usd", 100, "month"));
    let span = call_span(
        [9; 16],
        0x0c,
        None,
        vec![
            string("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.input_tokens", 1_000),
            int("gen_ai.usage.output_tokens", 100),
            kv("tollgate.cost_usd", Value::DoubleValue(1e300)),
        ],
    );
    let answer = post(&c, &request("agent", vec![span])).await;
    let partial = answer.partial_success.expect("the sender is told");
    assert_eq!(partial.rejected_spans, 0, "the call itself is kept");
    assert!(
        partial.error_message.contains("not plausible"),
        "{}",
        partial.error_message
    );
    let calls = c.wait_calls(1).await;
    assert_eq!(calls[0]["cost_source"], "price_table");
    let want = (1_000.0 * 0.15 + 100.0 * 0.60) / 1e6;
    assert!((calls[0]["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12);
    let (_, state) = c.get("/v1/enforcement?project=identity").await;
    assert_eq!(state["blocked"], false, "{state}");
    assert!(
        c.metrics()
            .await
            .contains("tollgate_ingest_costs_replaced_total 1"),
        "{}",
        c.metrics().await
    );
}

/// The collector with the gateway on, in front of `mock`, and a virtual key.
async fn gateway(mock: &MockProvider) -> (Collector, String, String) {
    const ADMIN: &str = "admin-token-for-the-identity-test";
    let c = Collector::start_full(
        &format!(
            r#"
[admin]
token = "{ADMIN}"

[gateway]
enabled = true
listen = "127.0.0.1:0"

[[gateway.providers]]
name = "openai"
kind = "openai"
base_url = "{}/v1"
api_key_env = "TEST_IDENTITY_OPENAI_KEY"
"#,
            mock.base_url()
        ),
        &[],
        &[("TEST_IDENTITY_OPENAI_KEY", "sk-identity-test")],
    );
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/admin/v1/keys", c.api_url()))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "agent", "project": "identity"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let url = format!("http://{}", c.gateway.expect("the gateway is listening"));
    (c, url, key)
}

/// `n` chat calls through the gateway, `concurrency` at a time; all answered 200.
async fn chat_calls(gateway: &str, key: &str, n: usize, concurrency: usize, stream: bool) {
    let client = reqwest::Client::new();
    let statuses: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move {
                let r = client
                    .post(format!("{gateway}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&json!({
                        "model": "gpt-4o-mini",
                        "max_tokens": 8,
                        "stream": stream,
                        "messages": [{"role": "user", "content": format!("call {i}")}],
                    }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                r.bytes().await.unwrap();
                status
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

async fn gateway_rows(c: &Collector, n: usize) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    wait_for(&format!("{n} gateway rows"), async || {
        rows = c
            .calls(10_000)
            .await
            .into_iter()
            .filter(|r| r["mode"] == "gateway")
            .collect();
        rows.len() >= n
    })
    .await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_gateway_calls_to_a_server_reusing_ids_are_two_thousand_rows() {
    let mock = MockProvider::start(MockConfig {
        response_ids: ResponseIds::Cycle(999),
        ..Default::default()
    })
    .await
    .unwrap();
    let (c, url, key) = gateway(&mock).await;
    chat_calls(&url, &key, 2_000, 16, false).await;
    assert_eq!(mock.stats().total_requests, 2_000);
    let rows = gateway_rows(&c, 2_000).await;
    assert_eq!(rows.len(), 2_000);
    let ids: std::collections::HashSet<_> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 999, "the provider's ids really repeat");
    // Settled a moment later: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway_rows(&c, 2_000).await.len(), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_streamed_gateway_call_to_a_provider_with_a_constant_id_is_stored() {
    let mock = MockProvider::start(MockConfig {
        response_ids: ResponseIds::Constant("chatcmpl-constant".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let (c, url, key) = gateway(&mock).await;
    chat_calls(&url, &key, 15, 3, true).await;
    let rows = gateway_rows(&c, 15).await;
    assert_eq!(rows.len(), 15);
    assert!(
        rows.iter()
            .all(|r| r["stream"] == true && r["request_id"] == "chatcmpl-constant")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_description_finds_its_call_after_a_restart() {
    let mut c = Collector::start("");
    let (outer, inner) = two_layers([3; 16]);
    post(&c, &inner).await;
    c.wait_calls(1).await;
    c.restart();
    post(&c, &outer).await;
    wait_for("the late merge", async || {
        c.metrics()
            .await
            .contains("tollgate_pipeline_calls_merged_total{when=\"late\"} 1")
    })
    .await;
    let calls = c.calls(10).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(
        calls[0]["user"], "u-17",
        "the outer span's user is merged in"
    );
    assert_eq!(
        calls[0]["parent_span_id"], "0000000000000001",
        "tied to the run"
    );
}
