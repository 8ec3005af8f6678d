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

#[cfg(test)]
mod tests {
    use super::enforcement::v1::{Block, EnforcementState, Scope, WatchRequest};
    use prost::Message as _;

    #[test]
    fn enforcement_state_round_trips_with_the_contract_field_numbers() {
        let state = EnforcementState {
            blocked: true,
            blocks: vec![Block {
                rule_id: "daily-tokens".into(),
                scope: "project=search".into(),
                reason: "budget_exceeded".into(),
                until_unix_nanos: 1_795_300_000_000_000_000,
                limit: 10_000.0,
                used: 12_000.0,
                metric: "tokens".into(),
            }],
            revision: 7,
        };
        let bytes = state.encode_to_vec();
        // Field 1 (`blocked`, varint) comes first: tag 0x08, value 1.
        assert_eq!(&bytes[..2], &[0x08, 0x01]);
        let decoded = EnforcementState::decode(bytes.as_slice()).map_err(|e| e.to_string());
        assert_eq!(decoded, Ok(state));
    }

    #[test]
    fn watch_request_carries_the_scope_as_field_one() {
        let req = WatchRequest {
            scope: Some(Scope {
                project: "search".into(),
                ..Scope::default()
            }),
        };
        // WatchRequest.scope (field 1, bytes) wrapping Scope.project (field 2).
        assert_eq!(
            req.encode_to_vec(),
            [&[0x0a, 0x08, 0x12, 0x06][..], b"search"].concat()
        );
    }
}
