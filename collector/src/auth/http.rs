//! The access check as a middleware, answering refusals the way each
//! listener speaks: JSON on the API, a `google.rpc.Status` on OTLP/HTTP
//! (protobuf or JSON, as the request), a gRPC status on gRPC.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost::Message;

use super::{Auth, Denied, Need, THROTTLE_WINDOW, bearer};

/// How refusals are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `{"error": ..., "message": ...}`.
    Json,
    /// OTLP/HTTP: a `google.rpc.Status` in the request's encoding.
    Otlp,
    /// A gRPC status (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED).
    Grpc,
}

/// One listener's check: what each path needs and how refusals are written.
#[derive(Clone)]
pub struct Guard {
    pub auth: Arc<Auth>,
    pub listener: &'static str,
    pub style: Style,
    /// What a request to this path needs; `None`: nothing (health checks).
    pub need: fn(&str) -> Option<Need>,
}

/// Lets the request in with its [`super::Caller`] and its
/// [`crate::query::Tenant`] in its extensions (the `Authorization` header
/// removed), or answers the refusal.
pub async fn require(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let Some(need) = (guard.need)(req.uri().path()) else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match guard.auth.check(guard.listener, given, peer, need) {
        Ok(caller) => {
            req.headers_mut().remove(header::AUTHORIZATION);
            req.extensions_mut().insert(caller.tenant());
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(denied) => refuse(guard.style, &denied, need, req.headers()),
    }
}

fn refuse(style: Style, denied: &Denied, need: Need, headers: &HeaderMap) -> Response {
    let message = denied.message(need);
    let (status, code, error) = match denied {
        Denied::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
            "too_many_attempts",
        ),
        d if d.is_forbidden() => (
            StatusCode::FORBIDDEN,
            tonic::Code::PermissionDenied,
            "forbidden",
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            "unauthorized",
        ),
    };
    let mut response = match style {
        Style::Grpc => return tonic::Status::new(code, message).into_http(),
        Style::Json => (
            status,
            axum::Json(serde_json::json!({ "error": error, "message": message })),
        )
            .into_response(),
        Style::Otlp => {
            let protobuf = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-protobuf"));
            if protobuf {
                let body = tonic_types::Status {
                    code: code as i32,
                    message,
                    details: Vec::new(),
                }
                .encode_to_vec();
                (
                    status,
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    body,
                )
                    .into_response()
            } else {
                (
                    status,
                    axum::Json(serde_json::json!({ "code": code as i32, "message": message })),
                )
                    .into_response()
            }
        }
    };
    match denied {
        Denied::Throttled => {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(THROTTLE_WINDOW.as_secs()),
            );
        }
        Denied::Missing | Denied::Unknown | Denied::Refused(_)
            if status == StatusCode::UNAUTHORIZED =>
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    response
}
