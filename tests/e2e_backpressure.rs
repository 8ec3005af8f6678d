//! End to end: when the store falls behind, the queue fills and receivers
//! push back (HTTP 503 + Retry-After, gRPC RESOURCE_EXHAUSTED + RetryInfo)
//! instead of growing; SIGTERM drains every acknowledged row into the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use support::{Collector, otlp};
use tonic_types::StatusExt;

/// A request of `n` model-call spans whose span ids start at `first`.
fn request(first: u64, n: u64) -> ExportTraceServiceRequest {
    otlp::request(
        (first..first + n)
            .map(|i| {
                otlp::span(
                    i.to_be_bytes().to_vec(),
                    vec![
                        otlp::string("gen_ai.request.model", "gpt-4o-mini"),
                        otlp::int("gen_ai.usage.input_tokens", 100),
                    ],
                )
            })
            .collect(),
    )
}

async fn post(c: &Collector, req: &ExportTraceServiceRequest) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/traces", c.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_pushes_back_and_sigterm_drains_acknowledged_rows() {
    let mut c = Collector::start_full(
        "[pipeline]\nqueue_capacity_rows = 20\nbatch_max_rows = 10\nshutdown_timeout = \"60s\"\n",
        &[],
        &[("TOLLGATE_RECEIVERS__OTLP__HTTP_MAX_BODY_BYTES", "67108864")],
    );

    // Another process holds the database: the store cannot write.
    let lock = rusqlite::Connection::open(c.db_path()).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();

    // 4 x 5 rows fill the queue; each is acknowledged.
    for i in 0..4 {
        let r = post(&c, &request(i * 5, 5)).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    // The next request is pushed back over HTTP...
    let r = post(&c, &request(100, 5)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    // A full queue refuses before decoding the request: even a body that
    // does not decode is told to retry (it would get 400 once decoded).
    // The body is still read first: a 48 MiB one gets its answer, not a
    // connection closed under it, twice on one keep-alive connection.
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let garbage = client
            .post(format!("{}/v1/traces", c.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(vec![0xff_u8; 48 << 20])
            .send()
            .await
            .expect("an answer, not a connection closed mid-request");
        assert_eq!(garbage.status(), 503);
    }
    // ...and over gRPC, with the OTLP retry hint.
    let mut client = TraceServiceClient::connect(c.grpc_url()).await.unwrap();
    let status = client.export(request(200, 5)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    // gRPC also refuses before decoding: an undecodable message (a gRPC
    // frame of garbage) is told RESOURCE_EXHAUSTED, not INVALID_ARGUMENT.
    let mut frame = vec![0_u8];
    frame.extend_from_slice(&64_u32.to_be_bytes());
    frame.extend_from_slice(&[0xff_u8; 64]);
    let garbage = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .post(format!(
            "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            c.grpc_url()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.headers()["grpc-status"], "8");

    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_queue_depth_rows 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_queue_capacity_rows 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains("transport=\"http\",outcome=\"queue_full\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("transport=\"grpc\",outcome=\"queue_full\"} 2"),
        "{metrics}"
    );

    // SIGTERM while the store is still locked; free it after SQLite's 5 s
    // busy timeout has failed at least one write (logged once, retried).
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(6500));
        lock.execute_batch("COMMIT").unwrap();
        drop(lock);
    });
    let exit = c.terminate();
    releaser.join().unwrap();
    assert!(exit.success(), "exit {exit:?}; stderr:\n{}", c.stderr());

    // Every acknowledged row is in the store, none of the refused ones.
    let db = rusqlite::Connection::open(c.db_path()).unwrap();
    let mut ids: Vec<String> = db
        .prepare("SELECT span_id FROM calls ORDER BY span_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    ids.dedup();
    let expected: Vec<String> = (0..20u64).map(|i| format!("{i:016x}")).collect();
    assert_eq!(ids, expected);
    let stderr = c.stderr();
    assert_eq!(
        stderr.matches("store write failed").count(),
        1,
        "outage logged once:\n{stderr}"
    );
    assert!(stderr.contains("store is writable again"), "{stderr}");
}
