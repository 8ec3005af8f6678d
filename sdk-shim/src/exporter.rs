//! OTLP exporter set-up with the resource attributes the collector reads,
//! and the `ingest` key a collector that requires keys asks for.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::MetadataMap;

use crate::attributes::names;
use crate::key::VirtualKey;

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
    /// Never carries the key itself, which would then be printed.
    #[error(
        "the ingest key is empty or contains characters a header cannot carry; give it exactly as it was issued (tg-...)"
    )]
    IngestKey,
}

/// Where and how spans are exported: [`init_tracer_provider`] with the
/// options it does not take.
///
/// ```no_run
/// # async fn example() -> Result<(), tollgate_sdk::SdkError> {
/// use tollgate_sdk::{ExporterConfig, ExporterProtocol};
///
/// let provider = ExporterConfig::new("http://127.0.0.1:4317", ExporterProtocol::Grpc, "search-bot")
///     .with_environment("prod")
///     .with_ingest_key("tg-...")
///     .init_tracer_provider()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExporterConfig {
    /// The collector's OTLP endpoint; for HTTP protocols the base URL
    /// (`http://host:4318`), to which `/v1/traces` is appended.
    pub endpoint: String,
    pub protocol: ExporterProtocol,
    /// `service.name`: Tollgate's app.
    pub app: String,
    /// `deployment.environment.name`, when set.
    pub environment: Option<String>,
    /// An `ingest` key, for a collector that requires keys (`[auth] mode =
    /// "keys"`): sent as `Authorization: Bearer <key>` with every export
    /// (gRPC metadata or HTTP header). Never printed.
    ///
    /// `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>` (or
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`) works too, with no code
    /// change; when both are set, the variable wins.
    pub ingest_key: Option<VirtualKey>,
}

impl ExporterConfig {
    /// Spans of `app` to `endpoint`, with no environment and no key.
    pub fn new(
        endpoint: impl Into<String>,
        protocol: ExporterProtocol,
        app: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            app: app.into(),
            environment: None,
            ingest_key: None,
        }
    }

    /// Sets [`environment`](Self::environment).
    #[must_use]
    pub fn with_environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// Sets [`ingest_key`](Self::ingest_key).
    #[must_use]
    pub fn with_ingest_key(mut self, key: impl Into<String>) -> Self {
        self.ingest_key = Some(VirtualKey(key.into()));
        self
    }

    /// A tracer provider exporting in batches, with `service.name` and,
    /// when given, `deployment.environment.name`. Must be called inside a
    /// Tokio runtime.
    pub fn init_tracer_provider(&self) -> Result<SdkTracerProvider, SdkError> {
        let endpoint = self.endpoint.as_str();
        let build_err = |source| SdkError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        };
        let exporter = match self.protocol {
            ExporterProtocol::Grpc => SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_metadata(grpc_metadata(self.ingest_key.as_ref())?)
                .build()
                .map_err(build_err)?,
            ExporterProtocol::HttpProtobuf | ExporterProtocol::HttpJson => {
                let proto = if self.protocol == ExporterProtocol::HttpJson {
                    Protocol::HttpJson
                } else {
                    Protocol::HttpBinary
                };
                SpanExporter::builder()
                    .with_http()
                    .with_protocol(proto)
                    .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                    .with_headers(http_headers(self.ingest_key.as_ref())?)
                    .build()
                    .map_err(build_err)?
            }
        };
        let mut attrs = vec![KeyValue::new(names::SERVICE_NAME, self.app.clone())];
        if let Some(env) = &self.environment {
            attrs.push(KeyValue::new(
                names::DEPLOYMENT_ENVIRONMENT_NAME,
                env.clone(),
            ));
        }
        let resource = Resource::builder_empty().with_attributes(attrs).build();
        Ok(SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build())
    }
}

/// `authorization: Bearer <key>` for OTLP/gRPC, marked sensitive.
fn grpc_metadata(key: Option<&VirtualKey>) -> Result<MetadataMap, SdkError> {
    let mut metadata = MetadataMap::new();
    if let Some(key) = key {
        if key.is_empty() {
            return Err(SdkError::IngestKey);
        }
        let value = key.bearer_metadata().map_err(|_| SdkError::IngestKey)?;
        metadata.insert("authorization", value);
    }
    Ok(metadata)
}

/// `authorization: Bearer <key>` for OTLP/HTTP. The exporter takes plain
/// strings (and percent-decodes them), so the value is checked here, where
/// a bad key can still be reported, and escaped where it contains `%`.
fn http_headers(key: Option<&VirtualKey>) -> Result<HashMap<String, String>, SdkError> {
    let mut headers = HashMap::new();
    if let Some(key) = key {
        if key.is_empty() {
            return Err(SdkError::IngestKey);
        }
        key.bearer_header().map_err(|_| SdkError::IngestKey)?;
        headers.insert(
            "authorization".to_owned(),
            format!("Bearer {}", key.0.replace('%', "%25")),
        );
    }
    Ok(headers)
}

/// A tracer provider exporting to `endpoint` in batches, with
/// `service.name = app` and, when given, `deployment.environment.name`.
///
/// For HTTP protocols `endpoint` is the base URL (`http://host:4318`); the
/// `/v1/traces` path is appended. Must be called inside a Tokio runtime.
///
/// A collector that requires keys needs an `ingest` key: set
/// `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>`, or use
/// [`ExporterConfig::with_ingest_key`].
pub fn init_tracer_provider(
    endpoint: &str,
    protocol: ExporterProtocol,
    app: &str,
    environment: Option<&str>,
) -> Result<SdkTracerProvider, SdkError> {
    let mut config = ExporterConfig::new(endpoint, protocol, app);
    config.environment = environment.map(str::to_owned);
    config.init_tracer_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tg-ingest-s3cr3t";

    #[test]
    fn no_key_sends_no_authorization() {
        assert!(grpc_metadata(None).unwrap().is_empty());
        assert!(http_headers(None).unwrap().is_empty());
    }

    #[test]
    fn the_ingest_key_becomes_a_sensitive_bearer_header() {
        let key = VirtualKey::from(SECRET);
        let metadata = grpc_metadata(Some(&key)).unwrap();
        let value = metadata.get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer tg-ingest-s3cr3t");
        assert!(value.is_sensitive());
        assert!(!format!("{metadata:?}").contains(SECRET));

        let headers = http_headers(Some(&key)).unwrap();
        assert_eq!(headers["authorization"], "Bearer tg-ingest-s3cr3t");
        // The exporter percent-decodes header values: a `%` must survive.
        let odd = http_headers(Some(&VirtualKey::from("tg-a%20b"))).unwrap();
        assert_eq!(odd["authorization"], "Bearer tg-a%2520b");
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_an_error_without_the_key() {
        for key in [VirtualKey::from("tg-line\nbreak"), VirtualKey::from("")] {
            for err in [
                grpc_metadata(Some(&key)).unwrap_err(),
                http_headers(Some(&key)).unwrap_err(),
            ] {
                assert!(matches!(err, SdkError::IngestKey));
                assert!(!err.to_string().contains("tg-line"));
            }
        }
    }

    #[test]
    fn debug_of_the_config_hides_the_key() {
        let config = ExporterConfig::new("http://127.0.0.1:4317", ExporterProtocol::Grpc, "bot")
            .with_ingest_key(SECRET);
        let debug = format!("{config:?}");
        assert!(
            debug.contains("ingest_key: Some(VirtualKey(..))"),
            "{debug}"
        );
        assert!(!debug.contains(SECRET));
    }
}
