//! The baseline: an OTLP sink that decodes each request and counts its spans.
//!
//! It is what any collector must do at least (accept the connection, decode
//! the protobuf, answer), built from the same crates and server settings as
//! Tollgate's receivers: tonic with a 4 MiB decode limit, gzip accepted and
//! TCP_NODELAY for gRPC; axum with a 4 MiB body limit for `POST /v1/traces`.
//! `GET /count` on the HTTP port reports the spans decoded, so the bench can
//! check the sink saw every span it was sent.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;

/// Same limit as Tollgate's default `grpc_max_message_bytes` / `http_max_body_bytes`.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Spans decoded so far, across both transports.
#[derive(Debug, Default)]
pub struct SpanCounter(AtomicU64);

impl SpanCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, request: &ExportTraceServiceRequest) {
        self.0.fetch_add(count_spans(request), Ordering::Relaxed);
    }
}

/// Spans in an export request.
pub fn count_spans(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

struct GrpcSink(Arc<SpanCounter>);

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(State(counter): State<Arc<SpanCounter>>, body: Bytes) -> Response {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            counter.add(&request);
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn http_count(State(counter): State<Arc<SpanCounter>>) -> String {
    counter.get().to_string()
}

/// Where the sink listens.
#[derive(Debug, Clone, Copy)]
pub struct SinkAddrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
}

/// Serves both receivers on 127.0.0.1 until `shutdown` completes;
/// `on_ready` gets the bound addresses.
pub async fn serve(
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SinkAddrs),
) -> anyhow::Result<()> {
    let counter = Arc::new(SpanCounter::default());
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    on_ready(SinkAddrs {
        otlp_grpc: grpc.local_addr()?,
        otlp_http: http.local_addr()?,
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let service = TraceServiceServer::new(GrpcSink(Arc::clone(&counter)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
    );

    let app = Router::new()
        .route("/v1/traces", post(http_export))
        .route("/count", get(http_count))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(counter);
    let listener = http.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http_task = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );

    shutdown.await;
    let _ = stop_tx.send(true);
    grpc_task.await??;
    http_task.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spans::RequestPool;

    #[tokio::test]
    async fn counts_every_span_sent_over_http() {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(
            async {
                let _ = stop_rx.await;
            },
            move |a| {
                let _ = addr_tx.send(a);
            },
        ));
        let addrs = addr_rx.await.unwrap();
        let pool = RequestPool::new(25).unwrap();
        let client = reqwest::Client::new();
        for seq in 0..3 {
            let status = client
                .post(format!("http://{}/v1/traces", addrs.otlp_http))
                .header("content-type", "application/x-protobuf")
                .body(pool.render(seq, 1_000_000_000_000))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200);
        }
        let bad = client
            .post(format!("http://{}/v1/traces", addrs.otlp_http))
            .body(vec![0xff, 0xff, 0xff])
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let count = client
            .get(format!("http://{}/count", addrs.otlp_http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(count, "75");
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
