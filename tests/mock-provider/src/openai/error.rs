//! OpenAI's error envelope:
//! `{"error": {"message", "type", "param": null, "code"}}`, with the types
//! and codes the real API uses for each status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiError, RETRY_AFTER_SECS};

/// Renders `err` as the real API would, with its `x-request-id`.
pub(crate) fn response(err: &ApiError, request_id: &str) -> Response {
    let status = err.status();
    let (kind, code, message) = describe(err, status);
    let body = json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    });
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    response
}

/// `(type, code, message)` for an error.
fn describe(err: &ApiError, status: StatusCode) -> (&'static str, Option<&'static str>, String) {
    match err {
        ApiError::MissingApiKey => (
            "invalid_request_error",
            None,
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                .to_owned(),
        ),
        ApiError::UnknownPath { method, path } => (
            "invalid_request_error",
            None,
            format!("Invalid URL ({method} {path})"),
        ),
        ApiError::InvalidJson(_) | ApiError::InvalidRequest(_) | ApiError::BadKnob(_) => {
            ("invalid_request_error", None, err.to_string())
        }
        ApiError::ResponseNotFound(_) => ("invalid_request_error", None, err.to_string()),
        ApiError::Forced(_) | ApiError::ShuttingDown => forced(status),
    }
}

fn forced(status: StatusCode) -> (&'static str, Option<&'static str>, String) {
    let (kind, code, message) = match status.as_u16() {
        401 => (
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
        ),
        403 => (
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
            "Country, region, or territory not supported",
        ),
        404 => (
            "invalid_request_error",
            Some("model_not_found"),
            "The model does not exist or you do not have access to it.",
        ),
        429 => (
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. \
             Please try again in 1s.",
        ),
        503 => (
            "server_error",
            None,
            "The engine is currently overloaded, please try again later",
        ),
        500..=502 | 504..=599 => (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        _ => (
            "invalid_request_error",
            None,
            "Bad request (forced by x-mock-status).",
        ),
    };
    (kind, code, message.to_owned())
}
