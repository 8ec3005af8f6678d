//! End to end: the real `tollgate` binary receives spans exported by the
//! Rust `opentelemetry-otlp` exporter over gRPC, HTTP/protobuf and
//! HTTP/JSON, and stores rows whose every field is checked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use support::{Collector, find};
use tollgate_sdk::{ExporterProtocol, ModelCall, Scope, call_attributes, init_tracer_provider};

/// Exports one span for `call`, flushes, and returns its (trace id, span id) in hex.
async fn export(provider: SdkTracerProvider, call: ModelCall, scope: Scope) -> (String, String) {
    let tracer = provider.tracer("e2e");
    let mut span = tracer
        .span_builder(format!("{} {}", call.operation, call.request_model))
        .with_kind(SpanKind::Client)
        .with_start_time(call.start)
        .with_attributes(call_attributes(&call, &scope))
        .start(&tracer);
    let ids = (
        span.span_context().trace_id().to_string(),
        span.span_context().span_id().to_string(),
    );
    if let Some(e) = &call.error_type {
        span.set_status(Status::error(e.clone()));
    }
    span.end_with_timestamp(call.end);
    tokio::task::spawn_blocking(move || {
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
    ids
}

fn gpt4o_mini_call(start: SystemTime, response_id: &str) -> ModelCall {
    let mut call = ModelCall::new("openai", "chat", "gpt-4o-mini");
    call.response_model = Some("gpt-4o-mini-2024-07-18".into());
    call.response_id = Some(response_id.into());
    call.input_tokens = Some(200_000);
    call.output_tokens = Some(50_000);
    call.cache_read_tokens = Some(100_000);
    call.finish_reason = Some("stop".into());
    call.stream = true;
    call.time_to_first_token = Some(Duration::from_millis(150));
    call.conversation_id = Some("conv-42".into());
    call.agent_name = Some("triage".into());
    call.server_address = Some("api.openai.com".into());
    call.start = start;
    call.end = start + Duration::from_millis(1_250);
    call
}

fn scope(project: &str) -> Scope {
    Scope {
        org: Some("acme".into()),
        project: Some(project.into()),
        user: Some("alice".into()),
        route: Some("support-chat".into()),
        labels: vec![("team".into(), "core".into())],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_from_grpc_and_http_protobuf_and_json_are_exact() {
    let collector = Collector::start("");
    let start = SystemTime::now() - Duration::from_secs(5);
    let protocols = [
        (ExporterProtocol::Grpc, collector.grpc_url(), "grpc"),
        (
            ExporterProtocol::HttpProtobuf,
            collector.http_url(),
            "http-protobuf",
        ),
        (
            ExporterProtocol::HttpJson,
            collector.http_url(),
            "http-json",
        ),
    ];
    let mut sent = Vec::new();
    for (protocol, endpoint, project) in &protocols {
        let provider =
            init_tracer_provider(endpoint, *protocol, "support-bot", Some("prod")).unwrap();
        let (trace, span) = export(
            provider,
            gpt4o_mini_call(start, &format!("chatcmpl-{project}")),
            scope(project),
        )
        .await;
        assert_eq!((trace.len(), span.len()), (32, 16));
        sent.push((*project, trace, span));
    }
    // A failed call, reported over gRPC: error type, no usage.
    let provider = init_tracer_provider(
        &collector.grpc_url(),
        ExporterProtocol::Grpc,
        "billing",
        None,
    )
    .unwrap();
    let mut failed = ModelCall::new("anthropic", "chat", "claude-3-5-haiku-20241022");
    failed.error_type = Some("rate_limit_error".into());
    failed.http_status = Some(429);
    failed.start = start;
    failed.end = start + Duration::from_millis(80);
    export(provider, failed, scope("failing")).await;

    let calls = collector.wait_calls(4).await;
    assert_eq!(calls.len(), 4, "{calls:#?}");
    for (project, trace, span) in &sent {
        let c = find(&calls, "project", project);
        assert_eq!(c["trace_id"], *trace);
        assert_eq!(c["span_id"], *span);
        assert_eq!(c["request_id"], format!("chatcmpl-{project}"));
        assert_eq!(c["org"], "acme");
        assert_eq!(c["app"], "support-bot");
        assert_eq!(c["environment"], "prod");
        assert_eq!(c["route"], "support-chat");
        assert_eq!(c["user"], "alice");
        assert_eq!(c["session"], "conv-42");
        assert_eq!(c["agent_name"], "triage");
        assert_eq!(c["provider"], "openai");
        assert_eq!(c["operation"], "chat");
        assert_eq!(c["request_model"], "gpt-4o-mini");
        assert_eq!(c["response_model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(c["input_tokens"], 200_000);
        assert_eq!(c["output_tokens"], 50_000);
        assert_eq!(c["cache_read_tokens"], 100_000);
        assert_eq!(c["cache_write_tokens"], 0);
        // gpt-4o-mini list price: $0.15 input, $0.075 cached input, $0.60 output per million:
        // 100k x 0.15 + 100k x 0.075 + 50k x 0.60 = $0.0525.
        let cost = c["cost_usd"].as_f64().unwrap();
        assert!((cost - 0.0525).abs() < 1e-9, "{project}: cost {cost}");
        assert_eq!(c["cost_source"], "price_table");
        assert!(c["price_version"].as_str().is_some_and(|v| !v.is_empty()));
        assert_eq!(c["status"], "ok");
        assert!(c["error_type"].is_null());
        assert_eq!(c["stream"], true);
        assert_eq!(c["ttft_nanos"], 150_000_000);
        assert_eq!(c["duration_nanos"], 1_250_000_000);
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(c["mode"], "observe");
        assert_eq!(c["upstream"], "api.openai.com");
        assert_eq!(c["labels"]["team"], "core");
        let start_ns = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert_eq!(c["start_unix_nanos"], start_ns);
    }
    let f = find(&calls, "project", "failing");
    assert_eq!(f["status"], "error");
    assert_eq!(f["error_type"], "rate_limit_error");
    assert_eq!(f["http_status"], 429);
    assert_eq!(f["app"], "billing");
    assert!(f["environment"].is_null());
    assert_eq!(f["provider"], "anthropic");
    assert_eq!(f["input_tokens"], 0);
    // A refused call without usage was not billed: priced at zero, not unpriced.
    assert_eq!(f["cost_usd"], 0.0);

    // The usage API adds them up by project and model.
    let (status, body) = collector.get("/v1/usage?by=project,model&since=1h").await;
    assert_eq!(status, 200);
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let grpc = rows.iter().find(|r| r["project"] == "grpc").unwrap();
    assert_eq!(grpc["model"], "gpt-4o-mini");
    assert_eq!(grpc["requests"], 1);
    assert_eq!(grpc["input_tokens"], 200_000);
    assert_eq!(grpc["output_tokens"], 50_000);
    assert!((grpc["cost_usd"].as_f64().unwrap() - 0.0525).abs() < 1e-9);

    // The CLI shows the same numbers.
    let table = collector.usage_cli(&["--by", "project,model", "--since", "1h"]);
    assert!(
        table.contains("http-json") && table.contains("gpt-4o-mini"),
        "{table}"
    );
    assert!(
        table.contains("4 requests, 600000 input tokens, 150000 output tokens, $0.1575"),
        "{table}"
    );

    let metrics = collector.metrics().await;
    assert!(
        metrics.contains("tollgate_ingest_spans_total{outcome=\"accepted\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_store_rows_written_total 4"),
        "{metrics}"
    );
}

/// `n` model calls with span ids `first..first + n`, started a second ago.
fn recent_calls(first: u64, n: u64) -> Vec<u8> {
    use prost::Message;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (first..first + n)
        .map(|id| {
            let mut span = support::otlp::span(
                id.to_be_bytes().to_vec(),
                vec![
                    support::otlp::string("gen_ai.request.model", "gpt-4o-mini"),
                    support::otlp::int("gen_ai.usage.input_tokens", 100),
                    support::otlp::string("tollgate.project", "retries"),
                ],
            );
            span.start_time_unix_nano = now - 1_000_000_000;
            span.end_time_unix_nano = now;
            span
        })
        .collect();
    support::otlp::request(spans).encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_export_is_stored_once_also_after_a_restart() {
    let mut collector = Collector::start("");
    let first = recent_calls(0, 20);
    assert_eq!(collector.post_traces(first.clone()).await, 200);
    assert_eq!(collector.post_traces(first.clone()).await, 200);
    // Batches land in order: once the next call is stored, so is the retry.
    assert_eq!(collector.post_traces(recent_calls(20, 1)).await, 200);
    let calls = collector.wait_calls(21).await;
    assert_eq!(calls.len(), 21);
    // The restarted collector remembers the calls of the last minutes.
    collector.restart();
    assert_eq!(collector.post_traces(first).await, 200);
    assert_eq!(collector.post_traces(recent_calls(21, 1)).await, 200);
    let calls = collector.wait_calls(22).await;
    assert_eq!(
        calls.len(),
        22,
        "a retry after the restart was stored again"
    );
    assert!(
        collector
            .metrics()
            .await
            .contains("tollgate_pipeline_duplicates_dropped_total 20"),
        "{}",
        collector.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_query_errors() {
    let collector = Collector::start("");
    assert_eq!(collector.get("/healthz").await.0, 200);
    let (status, body) = collector.get("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    let (status, body) = collector.get("/v1/usage?by=colour").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].as_str().unwrap().contains("colour"));
    let (status, _) = collector.get("/v1/usage?since=forever").await;
    assert_eq!(status, 400);
    let (status, _) = collector.get("/v1/calls?limit=0").await;
    assert_eq!(status, 400);
    let (status, body) = collector.get("/v1/usage?by=project&since=1h").await;
    assert_eq!(
        (status, body["rows"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

#[test]
fn wrong_config_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[storage]\ntype = \"sqlite\"\npaht = \"./x\"\n").unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("paht"), "{stderr}");

    let out = std::process::Command::new(support::bin())
        .args(["serve"])
        .env("TOLLGATE_API__LISTEN", "not-an-address")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("api.listen") && stderr.contains("not-an-address"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
