//! The `ingest` key reaches the collector: spans exported over OTLP/gRPC
//! and OTLP/HTTP to a local server that records each request's path and
//! `Authorization` header (its answers do not matter here).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::net::TcpListener;
use tollgate_sdk::{ExporterConfig, ExporterProtocol};

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `(path, Authorization)` of every request received.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Serves HTTP/1 and HTTP/2 without TLS, as the collector's ports do.
async fn recording_server() -> Result<(String, Seen)> {
    async fn record(State(seen): State<Seen>, request: Request) -> Response {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Ok(mut seen) = seen.lock() {
            seen.push((request.uri().path().to_owned(), authorization));
        }
        if request.uri().path() == GRPC_PATH {
            // A trailers-only gRPC answer; the exporter's verdict on it
            // is not what this test checks.
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from_static("0"));
            response
        } else {
            StatusCode::OK.into_response()
        }
    }
    let seen = Seen::default();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, seen))
}

/// Ends one span and flushes it out, off the runtime's workers (the
/// exporter blocks on them).
async fn export_one_span(provider: SdkTracerProvider) -> Result<()> {
    provider.tracer("keys").start("chat gpt-4o-mini");
    let flushed = tokio::task::spawn_blocking(move || {
        // The recording server's answers may count as failed exports.
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    });
    tokio::time::timeout(Duration::from_secs(20), flushed)
        .await
        .context("the export did not finish")??;
    Ok(())
}

fn seen_on(seen: &Seen, path: &str) -> Vec<Option<String>> {
    seen.lock()
        .map(|s| {
            s.iter()
                .filter(|(p, _)| p == path)
                .map(|(_, a)| a.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_key_is_sent_over_grpc_and_http() -> Result<()> {
    let (url, seen) = recording_server().await?;
    for protocol in [ExporterProtocol::Grpc, ExporterProtocol::HttpProtobuf] {
        let provider = ExporterConfig::new(&url, protocol, "keyed-agent")
            .with_ingest_key("tg-ingest-1")
            .init_tracer_provider()?;
        export_one_span(provider).await?;
    }
    let bearer = Some("Bearer tg-ingest-1".to_owned());
    let grpc = seen_on(&seen, GRPC_PATH);
    assert!(!grpc.is_empty(), "no gRPC export arrived: {seen:?}");
    assert!(grpc.iter().all(|a| *a == bearer), "{grpc:?}");
    let http = seen_on(&seen, "/v1/traces");
    assert!(!http.is_empty(), "no HTTP export arrived: {seen:?}");
    assert!(http.iter().all(|a| *a == bearer), "{http:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_no_authorization_is_sent() -> Result<()> {
    // Unless the environment adds one, which this test cannot rule out.
    if std::env::var_os("OTEL_EXPORTER_OTLP_HEADERS").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_HEADERS").is_some()
    {
        return Ok(());
    }
    let (url, seen) = recording_server().await?;
    let provider = ExporterConfig::new(&url, ExporterProtocol::HttpProtobuf, "keyless-agent")
        .init_tracer_provider()?;
    export_one_span(provider).await?;
    assert_eq!(seen_on(&seen, "/v1/traces"), vec![None]);
    Ok(())
}
