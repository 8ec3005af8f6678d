//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::Service;

use super::ingest::{Ingest, IngestRefusal, RETRY_AFTER_SECS};
use crate::internal_events::{Refusal, Transport};
use crate::query::Tenant;

/// The tonic service behind `TraceService/Export`.
#[derive(Debug, Clone)]
pub struct OtlpGrpcService {
    ingest: Arc<Ingest>,
}

#[tonic::async_trait]
impl TraceService for OtlpGrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        let tenant = request
            .extensions()
            .get::<Tenant>()
            .cloned()
            .unwrap_or_default();
        match self
            .ingest
            .export(Transport::Grpc, &tenant, request.into_inner())
            .await
        {
            Ok(response) => Ok(tonic::Response::new(response)),
            Err(IngestRefusal::QueueFull) => Err(queue_full()),
            Err(IngestRefusal::TooManyRows(why)) => Err(Status::resource_exhausted(why)),
            Err(IngestRefusal::ShuttingDown) => Err(Status::unavailable(
                "the collector is shutting down; retry later",
            )),
            Err(IngestRefusal::Unavailable(why)) => Err(Status::with_error_details(
                Code::Unavailable,
                format!("{why}; retry later"),
                ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS))),
            )),
        }
    }
}

/// The gRPC routes, ready to serve: `max_message_bytes` caps each message
/// after decompression; gzip is accepted.
pub fn grpc_router(ingest: Arc<Ingest>, max_message_bytes: usize) -> tonic::service::Routes {
    let service = TraceServiceServer::new(OtlpGrpcService {
        ingest: Arc::clone(&ingest),
    })
    .max_decoding_message_size(max_message_bytes)
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip);
    let service = OtlpStatusCodes {
        inner: service,
        ingest,
    };
    tonic::service::Routes::new(service)
}

/// Gives input errors the codes OTLP clients act on. Tonic answers a message
/// over the size limit with OUT_OF_RANGE (OTLP: RESOURCE_EXHAUSTED; its
/// decompression-bomb check already says so) and an undecodable message
/// with INTERNAL (OTLP: INVALID_ARGUMENT, not retryable). `Export` itself
/// never answers either code, so they are rewritten on this service only,
/// and each refusal is counted.
#[derive(Debug, Clone)]
struct OtlpStatusCodes<S> {
    inner: S,
    ingest: Arc<Ingest>,
}

impl<S> tonic::server::NamedService for OtlpStatusCodes<S>
where
    S: tonic::server::NamedService,
{
    const NAME: &'static str = S::NAME;
}

const GRPC_RESOURCE_EXHAUSTED: &str = "8";

/// (code tonic answers, code OTLP wants, how the refusal is counted).
const REWRITES: [(&str, &str, Refusal, &str); 2] = [
    (
        "11",
        GRPC_RESOURCE_EXHAUSTED,
        Refusal::TooLarge,
        "message over the size limit",
    ),
    ("13", "3", Refusal::Malformed, "undecodable message"),
];

/// The answer to an export refused because the queue is full.
fn queue_full() -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        "the collector's queue is full; retry later",
        ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS))),
    )
}

impl<S, B, RB> Service<Request<B>> for OtlpStatusCodes<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A full queue refuses before tonic reads and decodes the message.
        if self.ingest.refuse_before_decode(Transport::Grpc) {
            let refused = queue_full().into_http();
            return Box::pin(async move { Ok(refused) });
        }
        let fut = self.inner.call(req);
        let ingest = Arc::clone(&self.ingest);
        Box::pin(async move {
            let mut response = fut.await?;
            let headers = response.headers_mut();
            let status = headers.get("grpc-status").map(HeaderValue::as_bytes);
            if let Some((_, otlp_code, refusal, detail)) = REWRITES
                .iter()
                .find(|(tonic_code, ..)| status == Some(tonic_code.as_bytes()))
            {
                headers.insert("grpc-status", HeaderValue::from_static(otlp_code));
                ingest
                    .events()
                    .request_refused(Transport::Grpc, *refusal, detail);
            } else if status == Some(GRPC_RESOURCE_EXHAUSTED.as_bytes())
                && headers
                    .get("grpc-message")
                    .is_some_and(|m| m.as_bytes().starts_with(b"Error%20decompressing"))
            {
                ingest.events().request_refused(
                    Transport::Grpc,
                    Refusal::TooLarge,
                    "decompressed message over the size limit",
                );
            }
            Ok(response)
        })
    }
}
