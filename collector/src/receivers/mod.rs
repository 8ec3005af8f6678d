//! OTLP receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces`.
//! Both hand decoded requests to [`Ingest`], which normalises them and
//! queues the rows; a request is acknowledged only once its rows are queued.

mod ingest;
mod otlp_grpc;
mod otlp_http;

pub use ingest::{Destination, Ingest, IngestRefusal};
pub use otlp_grpc::{OtlpGrpcService, grpc_router};
pub use otlp_http::{
    Encoding as OtlpEncoding, HttpReceiverConfig, decode_export, http_router, memory_refusal,
};
