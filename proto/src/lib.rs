//! Wire types shared by Tollgate's components.
//!
//! OTLP types are not regenerated here: they come from the maintained
//! `opentelemetry-proto` crate and are re-exported so every crate agrees on
//! one version. Tollgate's own control-plane protocol (kill-switch watch)
//! is generated from `proto/` by the build script and lives beside them.

pub use opentelemetry_proto::tonic as otlp;

/// The OTLP trace service: request/response types and the tonic server.
pub mod trace {
    pub use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_client::TraceServiceClient,
        trace_service_server::{TraceService, TraceServiceServer},
    };
    pub use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    pub use opentelemetry_proto::tonic::resource::v1::Resource;
    pub use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
    };
}

/// Tollgate's kill-switch protocol: agents watch whether their scope is
/// blocked and refuse model calls without contacting the provider.
pub mod enforcement {
    /// Version 1 of `tollgate.enforcement`: `Scope`, `Block`,
    /// `EnforcementState`, the `Enforcement` service's server and client.
    pub mod v1 {
        // Generated code: its style is tonic-prost-build's, not ours.
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("tollgate.enforcement.v1");
    }
}
