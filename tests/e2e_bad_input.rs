//! End to end: malformed, oversized and absurd input gets the OTLP-correct
//! status and a body saying why, memory stays bounded, nothing panics, and
//! the collector keeps serving afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::Collector;
use support::otlp::{self, kv, request};

const MIB: usize = 1024 * 1024;

fn span(id: u8, attrs: Vec<KeyValue>) -> Span {
    otlp::span(vec![id; 8], attrs)
}

fn good_request(id: u8) -> ExportTraceServiceRequest {
    request(vec![span(
        id,
        vec![
            kv(
                "gen_ai.request.model",
                Value::StringValue("gpt-4o-mini".into()),
            ),
            kv("gen_ai.usage.input_tokens", Value::IntValue(10)),
            kv("tollgate.project", Value::StringValue("bad-input".into())),
        ],
    )])
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gzip stream of `size` zero bytes, compressed chunk by chunk.
fn gzip_zeros(size: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; MIB];
    for _ in 0..size / MIB {
        e.write_all(&chunk).unwrap();
    }
    e.finish().unwrap()
}

async fn post(
    c: &Collector,
    content_type: &str,
    encoding: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Option<String>, Vec<u8>) {
    post_with(&reqwest::Client::new(), c, content_type, encoding, body).await
}

/// HTTP/2 client: an early 413 ends the stream cleanly while the client is
/// still sending (HTTP/1.1 clients see a broken pipe instead).
fn h2() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

async fn post_with(
    client: &reqwest::Client,
    c: &Collector,
    content_type: &str,
    encoding: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut req = client
        .post(format!("{}/v1/traces", c.http_url()))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.bytes().await.unwrap().to_vec())
}

fn status_message(body: &[u8]) -> (i32, String) {
    let s = tonic_types::Status::decode(body).unwrap();
    (s.code, s.message)
}

fn json_message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["message"].as_str().unwrap().to_owned()
}

/// Sends one raw gRPC frame (`compressed` flag, payload) and returns the grpc-status.
async fn grpc_raw(c: &Collector, compressed: bool, payload: Vec<u8>) -> (String, String) {
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(u8::from(compressed));
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut req = client
        .post(format!(
            "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            c.grpc_url()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame);
    if compressed {
        req = req.header("grpc-encoding", "gzip");
    }
    let r = req.send().await.unwrap();
    let h = r.headers();
    let status = h
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let message = h
        .get("grpc-message")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_gets_precise_errors_and_bounded_memory() {
    let c = Collector::start("");
    let started_kib = c.peak_rss_kib();
    let valid = good_request(1).encode_to_vec();

    // Truncated protobuf: 400 with a google.rpc.Status in protobuf.
    let (status, _, body) = post(
        &c,
        "application/x-protobuf",
        None,
        valid[..valid.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let (code, message) = status_message(&body);
    assert_eq!(code, tonic::Code::InvalidArgument as i32);
    assert!(message.contains("malformed OTLP"), "{message}");

    // Malformed JSON: 400 with a JSON body.
    let (status, _, body) = post(
        &c,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(json_message(&body).contains("malformed OTLP"));

    // Wrong content type: 415 naming what to send.
    let (status, _, body) = post(&c, "text/plain", None, valid.clone()).await;
    assert_eq!(status, 415);
    let m = json_message(&body);
    assert!(
        m.contains("text/plain") && m.contains("application/x-protobuf"),
        "{m}"
    );

    // Unknown content encoding and broken gzip.
    let (status, _, _) = post(&c, "application/x-protobuf", Some("br"), valid.clone()).await;
    assert_eq!(status, 415);
    let (status, _, body) = post(
        &c,
        "application/x-protobuf",
        Some("gzip"),
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(status_message(&body).1.contains("gzip"));

    // 50 MiB body against the 4 MiB default: 413, without buffering it,
    // whether the length is announced or the body is streamed.
    let (status, _, body) = post_with(
        &h2(),
        &c,
        "application/x-protobuf",
        None,
        vec![0x0a; 50 * MIB],
    )
    .await;
    assert_eq!(status, 413);
    let (code, message) = status_message(&body);
    assert_eq!(code, tonic::Code::ResourceExhausted as i32);
    assert!(message.contains("4194304"), "{message}");
    let chunks = (0..50).map(|_| Ok::<_, std::io::Error>(vec![0x0a; MIB]));
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, _, _) = post_with(&h2(), &c, "application/x-protobuf", None, streamed).await;
    assert_eq!(status, 413);

    // Gzip bomb: 256 MiB of zeros in ~256 KiB; the decompressed cap applies.
    let bomb = gzip_zeros(256 * MIB);
    assert!(bomb.len() < 4 * MIB);
    let (status, _, body) = post(&c, "application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(status, 413);
    assert!(status_message(&body).1.contains("decompressed"));

    // A gzip body within limits is accepted.
    let (status, _, _) = post(&c, "application/x-protobuf", Some("gzip"), gzip(&valid)).await;
    assert_eq!(status, 200);

    // Absurd, negative and non-numeric values: partial success, the good span stored.
    let mixed = request(vec![
        span(
            2,
            vec![
                kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
                kv("gen_ai.usage.input_tokens", Value::IntValue(-3)),
            ],
        ),
        span(
            3,
            vec![
                kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
                kv("gen_ai.usage.output_tokens", Value::IntValue(i64::MAX)),
            ],
        ),
        span(
            4,
            vec![
                kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
                kv("gen_ai.usage.input_tokens", Value::DoubleValue(f64::NAN)),
            ],
        ),
        // Missing attributes: a chat span without model or usage is kept, unpriced.
        span(
            5,
            vec![
                kv("gen_ai.operation.name", Value::StringValue("chat".into())),
                kv("gen_ai.request.model", Value::StringValue("".into())),
            ],
        ),
        span(
            6,
            vec![
                kv("gen_ai.operation.name", Value::StringValue("chat".into())),
                kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
            ],
        ),
    ]);
    let (status, _, body) = post(&c, "application/x-protobuf", None, mixed.encode_to_vec()).await;
    assert_eq!(status, 200);
    let response =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
            &body[..],
        )
        .unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 3);
    assert!(
        partial.error_message.contains("negative"),
        "{}",
        partial.error_message
    );

    // Stored: the gzip span (1), the model-less chat span (5), the usage-less one (6).
    let calls = c.wait_calls(3).await;
    assert_eq!(calls.len(), 3, "{calls:#?}");
    let gzipped = calls
        .iter()
        .find(|r| r["span_id"] == "0101010101010101")
        .unwrap();
    assert_eq!(gzipped["input_tokens"], 10);
    let no_model = calls
        .iter()
        .find(|r| r["span_id"] == "0505050505050505")
        .unwrap();
    assert!(no_model["request_model"].is_null());
    assert_eq!(no_model["cost_source"], "unpriced");
    let no_usage = calls
        .iter()
        .find(|r| r["span_id"] == "0606060606060606")
        .unwrap();
    assert_eq!(no_usage["cost_source"], "unpriced");
    assert!(no_usage["cost_usd"].is_null());

    // Memory stayed bounded: nothing near the 50 MiB body or the 256 MiB
    // bomb was held (the 4 MiB limit, buffers and allocator arenas are).
    let grown = c.peak_rss_kib() - started_kib;
    assert!(grown < 32 * 1024, "peak RSS grew by {grown} KiB");

    let metrics = c.metrics().await;
    assert!(
        metrics.contains("transport=\"http\",outcome=\"too_large\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("transport=\"http\",outcome=\"malformed\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_ingest_spans_total{outcome=\"rejected\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_input_gets_otlp_status_codes() {
    let mut c = Collector::start("");
    let started_kib = c.peak_rss_kib();

    // Garbage protobuf: INVALID_ARGUMENT (tonic's INTERNAL rewritten).
    let (status, message) = grpc_raw(&c, false, vec![0xff, 0xff, 0xff, 0x0f, 0x01]).await;
    assert_eq!(status, "3", "{message}");

    // Over the 4 MiB message limit: RESOURCE_EXHAUSTED.
    let (status, message) = grpc_raw(&c, false, vec![0x0a; 5 * MIB]).await;
    assert_eq!(status, "8", "{message}");

    // Gzip bomb: RESOURCE_EXHAUSTED while decompressing, memory bounded.
    let (status, message) = grpc_raw(&c, true, gzip_zeros(256 * MIB)).await;
    assert_eq!(status, "8", "{message}");
    let grown = c.peak_rss_kib() - started_kib;
    assert!(grown < 32 * 1024, "peak RSS grew by {grown} KiB");

    // The official client still gets through, with partial success reported.
    let mut client = TraceServiceClient::connect(c.grpc_url()).await.unwrap();
    let mut req = good_request(9);
    req.resource_spans[0].scope_spans[0].spans.push(span(
        10,
        vec![
            kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
            kv("gen_ai.usage.input_tokens", Value::StringValue("-1".into())),
        ],
    ));
    let response = client.export(req).await.unwrap().into_inner();
    assert_eq!(response.partial_success.unwrap().rejected_spans, 1);
    let calls = c.wait_calls(1).await;
    assert_eq!(calls[0]["span_id"], "0909090909090909");
    assert!(c.is_running());
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("transport=\"grpc\",outcome=\"too_large\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("transport=\"grpc\",outcome=\"malformed\"} 1"),
        "{metrics}"
    );
}
