//! Anthropic's error envelope:
//! `{"type": "error", "error": {"type", "message"}, "request_id"}`, with the
//! error type the real API uses for each status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiError, RETRY_AFTER_SECS};

/// Renders `err` as the real API would, with its `request-id`.
pub(crate) fn response(err: &ApiError, request_id: &str) -> Response {
    let status = err.status();
    let (kind, message) = describe(err, status);
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id
    });
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("request-id", value);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    // The real API marks overload and server errors as retryable this way.
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
    }
    response
}

/// `(error.type, message)` for an error.
fn describe(err: &ApiError, status: StatusCode) -> (&'static str, String) {
    match err {
        ApiError::MissingApiKey => (
            "authentication_error",
            "x-api-key header is required".into(),
        ),
        ApiError::UnknownPath { .. } => ("not_found_error", "Not Found".into()),
        ApiError::ResponseNotFound(_) => ("not_found_error", err.to_string()),
        ApiError::InvalidJson(_) | ApiError::InvalidRequest(_) | ApiError::BadKnob(_) => {
            ("invalid_request_error", err.to_string())
        }
        ApiError::Forced(_) | ApiError::ShuttingDown => forced(status),
    }
}

fn forced(status: StatusCode) -> (&'static str, String) {
    let (kind, message) = match status.as_u16() {
        401 => ("authentication_error", "invalid x-api-key"),
        402 => (
            "billing_error",
            "Your credit balance is too low to access the Anthropic API.",
        ),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your per-minute rate limit. Please try again later.",
        ),
        503 | 529 => ("overloaded_error", "Overloaded"),
        504 => ("timeout_error", "Request timed out"),
        500..=502 | 505..=528 | 530..=599 => ("api_error", "Internal server error"),
        _ => (
            "invalid_request_error",
            "Bad request (forced by x-mock-status).",
        ),
    };
    (kind, message.to_owned())
}
