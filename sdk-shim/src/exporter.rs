//! OTLP exporter set-up with the resource attributes the collector reads.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::attributes::names;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExporterProtocol {
    /// OTLP/gRPC, usually port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies, usually port 4318.
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies, usually port 4318.
    HttpJson,
}

/// Errors setting up the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// A tracer provider exporting to `endpoint` in batches, with
/// `service.name = app` and, when given, `deployment.environment.name`.
///
/// For HTTP protocols `endpoint` is the base URL (`http://host:4318`); the
/// `/v1/traces` path is appended. Must be called inside a Tokio runtime.
pub fn init_tracer_provider(
    endpoint: &str,
    protocol: ExporterProtocol,
    app: &str,
    environment: Option<&str>,
) -> Result<SdkTracerProvider, SdkError> {
    let build_err = |source| SdkError::Exporter {
        endpoint: endpoint.to_owned(),
        source,
    };
    let exporter = match protocol {
        ExporterProtocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(build_err)?,
        ExporterProtocol::HttpProtobuf | ExporterProtocol::HttpJson => {
            let proto = if protocol == ExporterProtocol::HttpJson {
                Protocol::HttpJson
            } else {
                Protocol::HttpBinary
            };
            SpanExporter::builder()
                .with_http()
                .with_protocol(proto)
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build()
                .map_err(build_err)?
        }
    };
    let mut attrs = vec![KeyValue::new(names::SERVICE_NAME, app.to_owned())];
    if let Some(env) = environment {
        attrs.push(KeyValue::new(
            names::DEPLOYMENT_ENVIRONMENT_NAME,
            env.to_owned(),
        ));
    }
    let resource = Resource::builder_empty().with_attributes(attrs).build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}
