//! Errors of the HTTP API, mapped to a status and a JSON body in one place.

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
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) => ApiError::BadRequest(m),
            QueryError::Store(m) => ApiError::Store(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        };
        if let ApiError::Store(m) = &self {
            tracing::warn!(error = %m, "query failed");
        }
        let body = serde_json::json!({ "error": code, "message": self.to_string() });
        (status, Json(body)).into_response()
    }
}
