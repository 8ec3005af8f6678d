//! OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies,
//! optionally gzip-compressed.
//!
//! The body limit applies twice: to the bytes as sent, and to the
//! decompressed bytes, so a small gzip bomb cannot inflate past it. Errors
//! follow the OTLP/HTTP spec: a `google.rpc.Status` body in the request's
//! encoding (JSON when the encoding is unknown).

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::ingest::{Ingest, IngestRefusal, RETRY_AFTER_SECS};
use crate::internal_events::{Refusal, Transport};
use crate::listen::BodyTimeout;
use crate::memory::MemoryRefusal;
use crate::query::Tenant;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// Limits of the HTTP receiver.
#[derive(Debug, Clone, Copy)]
pub struct HttpReceiverConfig {
    /// Largest body, as sent and after decompression.
    pub max_body_bytes: usize,
}

#[derive(Clone)]
struct HttpState {
    ingest: Arc<Ingest>,
    config: HttpReceiverConfig,
}

/// The `/v1/traces` route.
pub fn http_router(ingest: Arc<Ingest>, config: HttpReceiverConfig) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        // The handler enforces its own limit (raw and decompressed).
        .layer(DefaultBodyLimit::disable())
        .with_state(HttpState { ingest, config })
}

/// How an OTLP/HTTP body is encoded (its `content-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`
    Protobuf,
    /// `application/json` (OTLP's JSON mapping: hex ids, string int64s)
    Json,
}

/// Decodes a (decompressed) `/v1/traces` body; the error is the decoder's.
pub fn decode_export(
    encoding: Encoding,
    bytes: Bytes,
) -> Result<ExportTraceServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(bytes).map_err(|e| e.to_string()),
        Encoding::Json => {
            serde_json::from_slice::<ExportTraceServiceRequest>(&bytes).map_err(|e| e.to_string())
        }
    }
}

/// An OTLP/HTTP error answer.
struct Failure {
    status: StatusCode,
    grpc_code: i32,
    message: String,
    encoding: Encoding,
    retry_after: Option<u64>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = tonic_types::Status {
            code: self.grpc_code,
            message: self.message.clone(),
            details: Vec::new(),
        };
        let (content_type, body) = match self.encoding {
            Encoding::Protobuf => (PROTOBUF, status.encode_to_vec()),
            Encoding::Json => (
                JSON,
                serde_json::json!({ "code": self.grpc_code, "message": self.message })
                    .to_string()
                    .into_bytes(),
            ),
        };
        let mut response =
            (self.status, [(header::CONTENT_TYPE, content_type)], body).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn fail(
    state: &HttpState,
    refusal: Refusal,
    status: StatusCode,
    grpc_code: tonic::Code,
    message: String,
    encoding: Encoding,
) -> Failure {
    state
        .ingest
        .events()
        .request_refused(Transport::Http, refusal, &message);
    Failure {
        status,
        grpc_code: grpc_code as i32,
        message,
        encoding,
        retry_after: None,
    }
}

async fn export(
    State(state): State<HttpState>,
    tenant: Option<Extension<Tenant>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = tenant.map(|t| t.0).unwrap_or_default();
    match handle(&state, &tenant, &headers, body).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn handle(
    state: &HttpState,
    tenant: &Tenant,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let limit = state.config.max_body_bytes;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let encoding = match content_type.as_deref() {
        Some(PROTOBUF) => Encoding::Protobuf,
        Some(JSON) => Encoding::Json,
        other => {
            return Err(fail(
                state,
                Refusal::UnsupportedMediaType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                format!(
                    "unsupported content-type {}; send {PROTOBUF} or {JSON}",
                    other.map_or_else(|| "(none)".to_owned(), |t| format!("`{t}`"))
                ),
                Encoding::Json,
            ));
        }
    };
    let too_large = |what: &str| {
        fail(
            state,
            Refusal::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
            format!(
                "{what} exceeds the limit of {limit} bytes (receivers.otlp.http_max_body_bytes)"
            ),
            encoding,
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large("request body"));
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            too_large("request body")
        } else if let Some(timeout) = find_source::<BodyTimeout>(&e) {
            fail(
                state,
                Refusal::Malformed,
                StatusCode::REQUEST_TIMEOUT,
                tonic::Code::DeadlineExceeded,
                timeout.to_string(),
                encoding,
            )
        } else {
            fail(
                state,
                Refusal::Malformed,
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                format!("cannot read the request body: {e}"),
                encoding,
            )
        }
    })?;
    // A full queue refuses before the body is decompressed and decoded.
    // (After it is read: an HTTP/1.1 answer sent while the client is still
    // sending would cost it the connection, and the client an error.)
    if state.ingest.refuse_before_decode(Transport::Http) {
        return Err(queue_full(encoding));
    }

    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let bytes: Bytes = match content_encoding.as_deref() {
        None | Some("") | Some("identity") => raw,
        Some("gzip") => {
            let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
            // Read one byte past the limit to tell "exactly at" from "over".
            let read = flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            match read {
                Ok(n) if n > limit => return Err(too_large("decompressed request body")),
                Ok(_) => Bytes::from(out),
                Err(e) => {
                    return Err(fail(
                        state,
                        Refusal::Malformed,
                        StatusCode::BAD_REQUEST,
                        tonic::Code::InvalidArgument,
                        format!("invalid gzip body: {e}"),
                        encoding,
                    ));
                }
            }
        }
        Some(other) => {
            return Err(fail(
                state,
                Refusal::UnsupportedMediaType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                format!("unsupported content-encoding `{other}`; send gzip or no encoding"),
                encoding,
            ));
        }
    };

    let request = decode_export(encoding, bytes).map_err(|e| {
        fail(
            state,
            Refusal::Malformed,
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            format!("malformed OTLP export request: {e}"),
            encoding,
        )
    })?;

    match state.ingest.export(Transport::Http, tenant, request).await {
        Ok(response) => Ok(success(&response, encoding)),
        Err(IngestRefusal::QueueFull) => Err(queue_full(encoding)),
        Err(IngestRefusal::ShuttingDown) => Err(Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            grpc_code: tonic::Code::Unavailable as i32,
            message: "the collector is shutting down; retry later".to_owned(),
            encoding,
            retry_after: Some(RETRY_AFTER_SECS),
        }),
        Err(IngestRefusal::Unavailable(why)) => Err(Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            grpc_code: tonic::Code::Unavailable as i32,
            message: format!("{why}; retry later"),
            encoding,
            retry_after: Some(RETRY_AFTER_SECS),
        }),
        Err(IngestRefusal::TooManyRows(why)) => Err(Failure {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            grpc_code: tonic::Code::ResourceExhausted as i32,
            message: why,
            encoding,
            retry_after: None,
        }),
    }
}

/// The answer to an export the memory limiter refused before reading it.
pub fn memory_refusal(parts: &http::request::Parts, why: MemoryRefusal) -> Response {
    let encoding = match parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
    {
        Some(t) if t.starts_with(PROTOBUF.as_bytes()) => Encoding::Protobuf,
        _ => Encoding::Json,
    };
    Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        grpc_code: tonic::Code::ResourceExhausted as i32,
        message: why.message().to_owned(),
        encoding,
        retry_after: Some(crate::memory::RETRY_AFTER_SECS),
    }
    .into_response()
}

fn queue_full(encoding: Encoding) -> Failure {
    Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        grpc_code: tonic::Code::Unavailable as i32,
        message: "the collector's queue is full; retry later".to_owned(),
        encoding,
        retry_after: Some(RETRY_AFTER_SECS),
    }
}

fn success(response: &ExportTraceServiceResponse, encoding: Encoding) -> Response {
    match encoding {
        Encoding::Protobuf => {
            ([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response()
        }
        Encoding::Json => match serde_json::to_vec(response) {
            Ok(body) => ([(header::CONTENT_TYPE, JSON)], body).into_response(),
            Err(_) => ([(header::CONTENT_TYPE, JSON)], b"{}".to_vec()).into_response(),
        },
    }
}

/// Whether a body read failed on the length limit (and not on the connection).
fn is_length_limit(e: &axum::Error) -> bool {
    find_source::<http_body_util::LengthLimitError>(e).is_some()
}

/// The first error of type `T` in `e`'s source chain.
fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OTLP/JSON as the specification writes it (and JS/Python exporters
    /// send it): hex ids, 64-bit integers as strings, enums as numbers.
    #[test]
    fn decodes_spec_style_otlp_json() {
        let body = r#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"support-bot"}}]},
          "scopeSpans":[{"scope":{"name":"agent"},"spans":[{
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "name":"chat gpt-4o","kind":3,
            "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
            "attributes":[
              {"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o"}},
              {"key":"gen_ai.usage.input_tokens","value":{"intValue":"1200"}},
              {"key":"gen_ai.usage.output_tokens","value":{"intValue":300}}],
            "status":{"code":2,"message":"boom"}}]}]}]}"#;
        let request: ExportTraceServiceRequest = serde_json::from_str(body).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(hex::encode(&span.span_id), "eee19b7ec3c1b174");
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.kind, 3);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
        let attrs = &span.attributes;
        assert_eq!(
            attrs[1].value.as_ref().and_then(|v| v.value.clone()),
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(1200))
        );
    }
}
