//! Errors of the HTTP API, mapped to a status and a JSON body in one place.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::query::QueryError;

/// An API failure. The body is `{"error": <code>, "message": <why>}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    NotReady(String),
    /// The store stopped the query at the query timeout.
    #[error(
        "the query ran longer than the {}s query timeout (api.query_timeout) and was stopped; \
         narrow it: a shorter `since`, fewer `by` dimensions, a filter such as `project=NAME`, \
         or a smaller `limit`",
        .0.as_secs_f64()
    )]
    Timeout(Duration),
    /// Outside what the caller's key may read.
    #[error("{0}")]
    Forbidden(String),
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) => ApiError::BadRequest(m),
            QueryError::Store(m) => ApiError::Store(m),
            QueryError::Timeout { timeout } => ApiError::Timeout(timeout),
            QueryError::Forbidden(m) => ApiError::Forbidden(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, mut body) = match &self {
            ApiError::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "bad_request" }),
            ),
            ApiError::Store(m) => {
                tracing::warn!(error = %m, "query failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({ "error": "store_error" }),
                )
            }
            ApiError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                serde_json::json!({ "error": "forbidden" }),
            ),
            ApiError::NotReady(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": "not_ready" }),
            ),
            // 503 as Prometheus answers a query timeout: the server gave
            // up, the same request would time out again.
            ApiError::Timeout(timeout) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({
                    "error": "query_timeout",
                    "timeout_seconds": timeout.as_secs_f64(),
                }),
            ),
        };
        body["message"] = message.into();
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(e: ApiError) -> (StatusCode, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_timeout_is_503_naming_the_timeout_and_how_to_narrow_the_query() {
        let e = ApiError::from(QueryError::Timeout {
            timeout: Duration::from_millis(2500),
        });
        let (status, body) = parts(e).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "query_timeout");
        assert_eq!(body["timeout_seconds"], 2.5);
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("2.5s query timeout"), "{message}");
        assert!(message.contains("shorter `since`"), "{message}");
        let (status, body) = parts(ApiError::BadRequest("bad `by`".into())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            serde_json::json!({"error": "bad_request", "message": "bad `by`"})
        );
    }
}
